//! Reload under load: 10 reloads (alternating limits and routes) while clients keep
//! sending; not one request may fail or be reset.

#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::Duration;

use modelgate_e2e::client::{Conn, post_bytes};
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
