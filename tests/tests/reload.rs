//! Reload under load: 10 reloads (alternating limits and routes) while clients keep
//! sending; not one request may fail or be reset.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use modelgate_e2e::client::{self, Conn, post_bytes};
use modelgate_e2e::eventually;
use modelgate_e2e::gateway::{GatewayProcess, digits_route};
use modelgate_e2e::upstream::{Behaviour, Upstream};

fn config(upstream: &str, variant: usize) -> String {
    let extra_route = if variant % 2 == 1 {
        format!(
            "[[routes]]\nname = \"extra\"\npath_prefix = \"/extra\"\npublic = true\n[routes.http]\nupstreams = [{upstream:?}]\n"
        )
    } else {
        String::new()
    };
    format!(
        "[limits]\nmax_body_bytes = {}\n\n{}\n[[routes]]\nname = \"echo\"\npath_prefix = \"/echo\"\npublic = true\n\
         [routes.http]\nupstreams = [{upstream:?}]\n\n{extra_route}",
        100_000 + variant * 1000,
        digits_route(),
    )
}

#[test]
fn ten_reloads_under_steady_load_lose_no_request() {
    let up = Upstream::start(Behaviour::Echo);
    let gw = GatewayProcess::start(&config(&up.url(), 0));
    let stop = Arc::new(AtomicBool::new(false));
    let ok = Arc::new(AtomicUsize::new(0));
    let failures = Arc::new(AtomicUsize::new(0));
    let infer = post_bytes(
        "/v2/models/digits/infer",
        br#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","data":[0,0,2,13,16,9,0,0,0,0,12,12,7,16,3,0,0,1,14,3,0,16,4,0,0,0,0,4,10,16,6,0,0,0,0,13,16,16,9,0,0,0,0,5,13,1,0,0,0,0,0,11,9,0,0,0,0,0,1,16,4,0,0,0]}]}"#,
        "",
    );
    let clients: Vec<_> = (0..4)
        .map(|i| {
            let (stop, ok, failures, infer) =
                (stop.clone(), ok.clone(), failures.clone(), infer.clone());
            let addr = gw.addr;
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr).unwrap();
                while !stop.load(Ordering::Relaxed) {
                    let raw: &[u8] = if i % 2 == 0 {
                        &infer
                    } else {
                        b"POST /echo/x HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\n\r\n{}"
                    };
                    match conn.request(raw) {
                        Ok(r) if r.status == 200 => {
                            ok.fetch_add(1, Ordering::Relaxed);
                        }
                        other => {
                            eprintln!("failed: {:?}", other.map(|r| r.status));
                            failures.fetch_add(1, Ordering::Relaxed);
                            conn = Conn::open(addr).unwrap();
                        }
                    }
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    for variant in 1..=10 {
        std::fs::write(
            gw.setup.config_path(),
            gateway_config(&gw, &config(&up.url(), variant)),
        )
        .unwrap();
        let r = gw.reload();
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.json()["generation"], variant as u64 + 1);
        std::thread::sleep(Duration::from_millis(150));
    }
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let (ok, failures) = (ok.load(Ordering::Relaxed), failures.load(Ordering::Relaxed));
    assert!(ok > 100, "only {ok} requests completed");
    assert_eq!(
        failures,
        0,
        "{failures} of {} requests failed across reloads",
        ok + failures
    );
}

/// The running gateway's `[server]` section followed by `rest`.
fn gateway_config(gw: &GatewayProcess, rest: &str) -> String {
    let current = std::fs::read_to_string(gw.setup.config_path()).unwrap();
    let server = current.split("\n\n").next().unwrap();
    format!("{server}\n\n{rest}")
}

#[test]
fn sigterm_lets_an_in_flight_request_finish() {
    let up = Upstream::start(Behaviour::Stall(Duration::from_millis(800)));
    let gw = GatewayProcess::start(&format!(
        "[[routes]]\nname = \"slow\"\npath_prefix = \"/slow\"\npublic = true\n[routes.http]\nupstreams = [{:?}]\n",
        up.url()
    ));
    let addr = gw.addr;
    let in_flight = std::thread::spawn(move || {
        let mut conn = Conn::open(addr).unwrap();
        conn.request(b"GET /slow/x HTTP/1.1\r\nHost: t\r\n\r\n")
            .map(|r| r.status)
    });
    // Let the request reach the stalled upstream, then ask the gateway to stop.
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(up.connection_count(), 1);
    gw.signal("TERM");
    assert_eq!(
        in_flight.join().unwrap().unwrap(),
        200,
        "the in-flight request was cut off"
    );
}

fn generation(gw: &GatewayProcess) -> u64 {
    client::get(gw.admin, "/readyz").json()["generation"]
        .as_u64()
        .unwrap()
}

#[test]
fn changed_files_are_reloaded_once_without_a_signal() {
    let up = Upstream::start(Behaviour::Echo);
    let route = |name: &str| {
        format!(
            "[[routes]]\nname = {name:?}\npath_prefix = \"/{name}\"\n[routes.http]\nupstreams = [{:?}]\n\n",
            up.url()
        )
    };
    let auth = "[auth]\nkey_store = \"keys.json\"\n\n";
    let setup = GatewayProcess::setup(&format!("{auth}{}", route("a"))).watch("100ms");
    let key = setup.issue_key("acme", "default", "*");
    let gw = setup.start();
    let get = |path: &str, key: &str| {
        client::send(
            gw.addr,
            format!("GET {path} HTTP/1.1\r\nHost: t\r\nx-api-key: {key}\r\n\r\n").as_bytes(),
        )
        .status
    };
    assert_eq!(get("/b/x", &key), 404);
    assert_eq!(generation(&gw), 1);

    // The config file changes: the new route is served, after exactly one reload.
    let path = gw.setup.config_path();
    std::fs::write(
        &path,
        gateway_config(&gw, &format!("{auth}{}{}", route("a"), route("b"))),
    )
    .unwrap();
    assert!(eventually(Duration::from_secs(5), || get("/b/x", &key) == 200));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(generation(&gw), 2, "one change, one reload");

    // A file the config names changes: a key issued by the CLI works without a signal.
    let fresh = gw.setup.issue_key("later", "default", "*");
    assert!(eventually(Duration::from_secs(5), || get("/a/x", &fresh) == 200));
    assert_eq!(generation(&gw), 3);

    // A broken config is refused once (no retry loop); the live one keeps serving.
    std::fs::write(&path, "[server\nbroken").unwrap();
    assert!(eventually(Duration::from_secs(5), || gw
        .logs()
        .contains("reload refused")));
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(get("/b/x", &key), 200);
    assert_eq!(generation(&gw), 3);
    assert_eq!(gw.logs().matches("reload refused").count(), 1);
}

#[test]
fn a_new_binary_takes_over_the_sockets_without_refusing_a_connection() {
    let up = Upstream::start(Behaviour::Echo);
    let mut old = GatewayProcess::start(&format!(
        "[[routes]]\nname = \"echo\"\npath_prefix = \"/echo\"\npublic = true\n[routes.http]\nupstreams = [{:?}]\n",
        up.url()
    ));
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Arc<[AtomicUsize; 4]> = Arc::new(Default::default());
    const OK: usize = 0;
    const REFUSED: usize = 1; // connect failed: nobody was accepting
    const CLOSED: usize = 2; // accepted, then closed without an answer
    const ERROR: usize = 3; // an answer other than 200
    // Each request on a fresh connection.
    let clients: Vec<_> = (0..2)
        .map(|_| {
            let (stop, counts, addr) = (stop.clone(), counts.clone(), old.addr);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    let outcome = match Conn::open(addr) {
                        Err(_) => REFUSED,
                        Ok(mut c) => match c.request(
                            b"GET /echo/x HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n",
                        ) {
                            Ok(r) if r.status == 200 => OK,
                            Ok(_) => ERROR,
                            Err(_) => CLOSED,
                        },
                    };
                    counts[outcome].fetch_add(1, Ordering::Relaxed);
                }
            })
        })
        .collect();
    std::thread::sleep(Duration::from_millis(300));
    let mut new = old.start_upgrade();
    std::thread::sleep(Duration::from_millis(500)); // the new process waits on upgrade_sock
    old.signal("QUIT");
    // The old process hands its sockets over, keeps serving 5 s (Pingora's close timeout),
    // then drains for the grace period (1 s) and exits.
    let exited = old.wait_exit(Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500)); // served by the new process alone
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let new_alive = new.try_wait().unwrap().is_none();
    let pid_file = std::fs::read_to_string(old.setup.config_path().with_file_name("modelgate.pid"))
        .unwrap_or_default();
    let served_after = client::get(old.addr, "/echo/x").status;
    let _ = new.kill();
    let _ = new.wait();
    let upgrade_log =
        std::fs::read_to_string(old.setup.config_path().with_file_name("upgrade.log")).unwrap();
    assert!(
        exited.is_some(),
        "the old process did not exit:\n{}",
        old.logs()
    );
    assert!(new_alive, "the new process died:\n{upgrade_log}");
    assert_eq!(served_after, 200, "nobody serves after the upgrade");
    assert_eq!(
        pid_file.trim(),
        new.id().to_string(),
        "the pid file names the new process"
    );
    let [ok, refused, closed, errors] =
        [OK, REFUSED, CLOSED, ERROR].map(|i| counts[i].load(Ordering::Relaxed));
    assert!(ok > 100, "only {ok} requests completed");
    // The listening sockets never close: no connection is refused, no request gets an
    // error. A connection the old process accepted just as it stopped can still be closed
    // unanswered (Pingora closes connections with no request read yet when it shuts
    // down); that race is rare (seen at most once in ~14 000 here), so allow 0.1 %.
    assert_eq!(
        (refused, errors),
        (0, 0),
        "refused or failed requests ({ok} ok)"
    );
    assert!(
        closed * 1000 <= ok,
        "{closed} connections closed unanswered of {ok}"
    );
}
