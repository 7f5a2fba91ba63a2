//! A real `modelgate serve` process on free loopback ports, killed on drop.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{client, free_port, repo_root};

/// A running gateway.
pub struct GatewayProcess {
    child: Child,
    pub addr: SocketAddr,
    pub admin: SocketAddr,
    pub dir: tempfile::TempDir,
}

/// The route section serving the bundled digits model from the embedded backend.
pub fn digits_route() -> String {
    let models = repo_root().join("models");
    format!(
        "[[routes]]\nname = \"digits\"\nmodel = \"digits\"\n[routes.embedded]\nonnx = {:?}\nmetadata = {:?}\n",
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
    // target/<profile>/deps/<test> → target/<profile>/modelgate
    let path = exe
        .parent()
        .and_then(Path::parent)
        .map(|dir| dir.join("modelgate"))
        .expect("target dir");
    assert!(
        path.is_file(),
        "{} is missing: build it first (`cargo build --bin modelgate`; scripts/test.sh does)",
        path.display()
    );
    path
}

impl GatewayProcess {
    /// Starts the gateway with `[server]` on free ports plus `rest` (limits, routes...),
    /// and waits until `/readyz` answers.
    pub fn start(rest: &str) -> GatewayProcess {
        Self::try_start(rest).expect("gateway did not start")
    }

    /// Like [`start`](Self::start) but returns the gateway's output when it fails to start.
    pub fn try_start(rest: &str) -> Result<GatewayProcess, String> {
        let dir = tempfile::tempdir().expect("temp dir");
        let (port, admin_port) = (free_port(), free_port());
        let config = format!(
            "[server]\nlisten = \"127.0.0.1:{port}\"\nadmin_listen = \"127.0.0.1:{admin_port}\"\nthreads = 2\n\
             pid_file = {:?}\nupgrade_sock = {:?}\ngrace_period = \"1s\"\n\n{rest}",
            dir.path().join("modelgate.pid"),
            dir.path().join("upgrade.sock"),
        );
        let config_path = dir.path().join("modelgate.toml");
        std::fs::write(&config_path, config).expect("write config");
        let log = |name: &str| std::fs::File::create(dir.path().join(name)).expect("log file");
        let child = Command::new(binary())
            .args(["serve", "--config"])
            .arg(&config_path)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(log("stdout.log"))
            .stderr(log("stderr.log"))
            .spawn()
            .expect("spawn modelgate");
        let mut gateway = GatewayProcess {
            child,
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            admin: SocketAddr::from(([127, 0, 0, 1], admin_port)),
            dir,
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
                .and_then(|mut c| c.request(b"GET /readyz HTTP/1.1\r\nHost: t\r\n\r\n"))
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

    /// Everything the process wrote to stdout and stderr so far.
    pub fn logs(&self) -> String {
        let read =
            |name: &str| std::fs::read_to_string(self.dir.path().join(name)).unwrap_or_default();
        format!("{}{}", read("stdout.log"), read("stderr.log"))
    }

    /// The path of the config file the gateway was started with.
    pub fn config_path(&self) -> PathBuf {
        self.dir.path().join("modelgate.toml")
    }
}

impl Drop for GatewayProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
