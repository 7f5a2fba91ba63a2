//! A real `modelgate serve` process on free loopback ports, killed on drop.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use crate::{client, free_port, repo_root};

/// The admin token the harness configures (through an env var) for the `/admin/` endpoints.
pub const ADMIN_TOKEN: &str = "test-admin-token-0123456789";

/// The `[server]` line that keeps the reload file watcher off.
const WATCH_OFF: &str = "watch = false\n";
/// The `[server]` line that keeps upstream health checks off (their TCP connects would
/// show in the tests' upstream connection counts).
const CHECKS_OFF: &str = "upstream_checks = false\n";

/// A public route serving the bundled digits model from the embedded backend.
pub fn digits_route() -> String {
    let models = repo_root().join("models");
    format!(
        "[[routes]]\nname = \"digits\"\nmodel = \"digits\"\npublic = true\n[routes.embedded]\nonnx = {:?}\nmetadata = {:?}\n",
        models.join("digits.onnx"),
        models.join("digits.json"),
    )
}

/// The gateway binary: `MODELGATE_BIN`, else `modelgate` in this test binary's target dir.
pub fn binary() -> PathBuf {
    if let Some(path) = std::env::var_os("MODELGATE_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    // target/<profile>/deps/<test> → target/<profile>/modelgate; a bin (extraction-eval) sits
    // in target/<profile>/ itself.
    let dir = exe.parent().expect("exe dir");
    let path = [Some(dir), dir.parent()]
        .into_iter()
        .flatten()
        .map(|d| d.join("modelgate"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| dir.join("modelgate"));
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build --bin modelgate`; scripts/test.sh does)",
        path.display()
    );
    path
}

/// A config written to a temp dir, ready to start (or to run CLI commands against).
pub struct Setup {
    pub dir: tempfile::TempDir,
    port: u16,
    admin_port: u16,
    env: Vec<(String, String)>,
}

impl Setup {
    /// The config file's path.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("modelgate.toml")
    }

    /// Adds `lines` (each ending in a newline) to the `[server]` section.
    pub fn server(self, lines: &str) -> Setup {
        self.replace_line("[server]\n", &format!("[server]\n{lines}"))
    }

    /// Turns upstream health checks on, every `interval` (e.g. `"100ms"`).
    pub fn upstream_checks(self, interval: &str) -> Setup {
        self.replace_line(
            CHECKS_OFF,
            &format!("upstream_check_interval = {interval:?}\n"),
        )
    }

    fn replace_line(self, line: &str, with: &str) -> Setup {
        let path = self.config_path();
        let config = std::fs::read_to_string(&path).expect("read config");
        std::fs::write(&path, config.replacen(line, with, 1)).expect("write config");
        self
    }

    /// Turns the file watcher on, polling every `interval` (e.g. `"100ms"`).
    pub fn watch(self, interval: &str) -> Setup {
        self.replace_line(WATCH_OFF, &format!("watch_interval = {interval:?}\n"))
    }

    /// Sets the shutdown grace period (1 s unless set here), e.g. `"10s"`.
    pub fn grace_period(self, period: &str) -> Setup {
        self.replace_line(
            "grace_period = \"1s\"\n",
            &format!("grace_period = {period:?}\n"),
        )
    }

    /// Sets an environment variable for the gateway and CLI processes.
    pub fn env(mut self, key: &str, value: &str) -> Setup {
        self.env.push((key.to_string(), value.to_string()));
        self
    }

    /// Runs `modelgate <args...> --config <this config>`.
    pub fn cli(&self, args: &[&str]) -> Output {
        Command::new(binary())
            .args(args)
            .arg("--config")
            .arg(self.config_path())
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .output()
            .expect("run modelgate")
    }

    /// Issues an API key with `modelgate keys issue` and returns it (the CLI prints it once).
    pub fn issue_key(&self, consumer: &str, plan: &str, models: &str) -> String {
        let out = self.cli(&[
            "keys",
            "issue",
            "--consumer",
            consumer,
            "--plan",
            plan,
            "--models",
            models,
        ]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let key = String::from_utf8(out.stdout)
            .expect("utf-8 key")
            .trim()
            .to_string();
        assert!(key.starts_with("mg_"), "not a key: {key}");
        key
    }

    /// Starts the gateway and waits until `/healthz` answers (the snapshot is loaded; `/readyz`
    /// may still wait for upstream checks).
    pub fn start(self) -> GatewayProcess {
        self.try_start().expect("gateway did not start")
    }

    /// Like [`start`](Self::start) but returns the gateway's output when it fails to start.
    pub fn try_start(self) -> Result<GatewayProcess, String> {
        let log = |name: &str| std::fs::File::create(self.dir.path().join(name)).expect("log file");
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(self.config_path())
            .env("RUST_LOG", "info")
            .env("MG_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .spawn()
            .expect("spawn modelgate");
        let mut gateway = GatewayProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], self.port)),
            admin: SocketAddr::from(([127, 0, 0, 1], self.admin_port)),
            setup: self,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Ok(Some(status)) = gateway.child.try_wait() {
                return Err(format!(
                    "modelgate exited with {status}:\n{}",
                    gateway.logs()
                ));
            }
            let ready = client::Conn::open(gateway.admin)
                .and_then(|mut c| c.request(b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n"))
                .is_ok_and(|r| r.status == 200);
            if ready && client::Conn::open(gateway.addr).is_ok() {
                return Ok(gateway);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(format!(
            "modelgate was not ready within 60 s:\n{}",
            gateway.logs()
        ))
    }
}

/// A running gateway.
pub struct GatewayProcess {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub setup: Setup,
}

impl GatewayProcess {
    /// Writes a config with `[server]` on free ports (admin token from an env var, no file
    /// watcher: tests reload explicitly, see [`Setup::watch`]) plus `rest` (limits, auth,
    /// routes...), relative paths resolving in a fresh temp dir.
    pub fn setup(rest: &str) -> Setup {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, admin_port) = (free_port(), free_port());
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nthreads = 2\n\
             pid_file = {:?}\nupgrade_sock = {:?}\ngrace_period = \"1s\"\nadmin_token_env = \"MG_TEST_ADMIN_TOKEN\"\n{WATCH_OFF}{CHECKS_OFF}\n{rest}",
            dir.path().join("modelgate.pid"),
            dir.path().join("upgrade.sock"),
        );
        std::fs::write(dir.path().join("modelgate.toml"), config).expect("write config");
        Setup {
            dir,
            port,
            admin_port,
            env: Vec::new(),
        }
    }

    /// Sets up and starts a gateway with `rest` as the config after `[server]`.
    pub fn start(rest: &str) -> GatewayProcess {
        Self::setup(rest).start()
    }

    /// Everything the process wrote to stdout and stderr so far.
    /// `/metrics` once every `expected` line is in it (requests are counted when they are
    /// logged, just after the response is written); panics naming the first missing line
    /// after 5 s.
    pub fn metrics_with(&self, expected: &[&str]) -> String {
        let mut text = String::new();
        crate::eventually(Duration::from_secs(5), || {
            let metrics = client::get(self.admin, "/metrics");
            assert_eq!(metrics.status, 200);
            assert!(
                metrics
                    .header("content-type")
                    .is_some_and(|t| t.starts_with("text/plain"))
            );
            text = String::from_utf8_lossy(&metrics.body).into_owned();
            expected.iter().all(|l| text.contains(l))
        });
        for line in expected {
            assert!(text.contains(line), "missing {line:?} in\n{text}");
        }
        text
    }

    /// The logs once they contain `needle` (access lines are written just after the
    /// response), or as they are after 5 s.
    pub fn logs_with(&self, needle: &str) -> String {
        let mut logs = String::new();
        crate::eventually(Duration::from_secs(5), || {
            logs = self.logs();
            logs.contains(needle)
        });
        logs
    }

    pub fn logs(&self) -> String {
        let read = |name: &str| {
            std::fs::read_to_string(self.setup.dir.path().join(name)).unwrap_or_default()
        };
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }

    /// `POST /admin/reload` with the admin token; returns the admin API's answer.
    pub fn reload(&self) -> client::Response {
        let raw = format!(
            "POST /admin/reload HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\n\r\n"
        );
        client::send(self.admin, raw.as_bytes())
    }

    /// Starts a second gateway on the same config with `--upgrade`: it waits for this
    /// one's listening sockets, which this one hands over on SIGQUIT. Output goes to
    /// `upgrade.log` in the setup's directory; the caller owns (and must kill) the child.
    pub fn start_upgrade(&self) -> Child {
        let log = std::fs::File::create(self.setup.dir.path().join("upgrade.log")).expect("log");
        Command::new(binary())
            .args(["serve", "--upgrade", "--config"])
            .arg(self.setup.config_path())
            .env("RUST_LOG", "info")
            .env("MG_TEST_ADMIN_TOKEN", ADMIN_TOKEN)
            .envs(self.setup.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("spawn the upgrading modelgate")
    }

    /// Waits up to `within` for the process to exit; its status if it did.
    pub fn wait_exit(&mut self, within: Duration) -> Option<std::process::ExitStatus> {
        let deadline = Instant::now() + within;
        while Instant::now() < deadline {
            if let Ok(Some(status)) = self.child.try_wait() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        None
    }

    /// Sends SIGHUP to the process.
    pub fn sighup(&self) {
        self.signal("HUP");
    }

    /// Sends a signal (`HUP`, `TERM`, ...) to the process.
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .args([&format!("-{name}"), &self.child.id().to_string()])
            .status()
            .expect("run kill");
        assert!(status.success());
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `GET path` on the admin listener `admin` with the harness's admin token.
pub fn admin_get(admin: SocketAddr, path: &str) -> client::Response {
    client::send(
        admin,
        format!("GET {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n")
            .as_bytes(),
    )
}
