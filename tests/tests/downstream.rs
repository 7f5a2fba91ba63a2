//! The client connection itself (`gateway/src/http_service.rs`): malformed heads and
//! `CONNECT` answered with a JSON error and a close, keep-alive across many requests, a
//! request head bounded in time however slowly it trickles in, and idle connections
//! closed as soon as a graceful shutdown begins.

use std::time::{Duration, Instant};

use modelgate_e2e::client::Conn;
use modelgate_e2e::gateway::{GatewayProcess, digits_route};

const LIVE: &[u8] = b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n";

#[test]
fn malformed_heads_and_connect_get_a_json_error_and_a_close() {
    let gw = GatewayProcess::start(&digits_route());
    let cases: [(&[u8], u16, &str); 4] = [
        (b"GARBAGE\r\n\r\n", 400, "bad_request"),
        (b"GET / HTTP/1.1\r\nHost t\r\n\r\n", 400, "bad_request"),
        (
            b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}",
            400,
            "bad_request",
        ),
        (
            b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n",
            405,
            "method_not_allowed",
        ),
    ];
    for (raw, status, code) in cases {
        let mut conn = Conn::open(gw.addr).unwrap();
        let r = conn.request(raw).unwrap();
        let shown = String::from_utf8_lossy(raw);
        assert_eq!(
            (r.status, r.error_code().as_str(), r.header("connection")),
            (status, code, Some("close")),
            "{shown}"
        );
        assert_eq!(r.header("content-type"), Some("application/json"));
        assert!(conn.is_closed(Duration::from_secs(5)), "{shown}");
    }
    // None of it broke the gateway.
    assert_eq!(
        Conn::open(gw.addr).unwrap().request(LIVE).unwrap().status,
        200
    );
}

#[test]
fn one_connection_carries_many_requests() {
    let gw = GatewayProcess::start(&digits_route());
    let mut conn = Conn::open(gw.addr).unwrap();
    for i in 0..200 {
        let r = conn.request(LIVE).unwrap();
        assert_eq!(r.status, 200, "request {i}");
        assert_eq!(r.header("connection"), Some("keep-alive"), "request {i}");
    }
    // A refusal that leaves nothing unread keeps the connection too.
    let r = conn
        .request(b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 404);
    assert_eq!(conn.request(LIVE).unwrap().status, 200);
}

#[test]
fn idle_connections_close_when_shutdown_begins() {
    let mut gw = GatewayProcess::setup(&digits_route())
        .grace_period("10s")
        .start();
    let mut idle = Conn::open(gw.addr).unwrap();
    assert_eq!(idle.request(LIVE).unwrap().status, 200);
    let signalled = Instant::now();
    gw.signal("TERM");
    // Closed as the shutdown begins, not when the 10 s grace period or the 60 s keep-alive
    // ends: the gateway itself is still running.
    assert!(idle.is_closed(Duration::from_secs(5)));
    assert!(
        signalled.elapsed() < Duration::from_secs(5),
        "closed after {:?}",
        signalled.elapsed()
    );
    assert!(gw.wait_exit(Duration::from_millis(1)).is_none());
}

#[test]
fn a_request_head_must_arrive_within_the_header_timeout() {
    let gw = GatewayProcess::start(&format!(
        "[limits]\nheader_read_timeout = \"1500ms\"\n\n{}",
        digits_route()
    ));
    let started = Instant::now();
    // A head that trickles in, a header line every 200 ms: every read is recent, yet the
    // connection closes at the deadline instead of being held for ever.
    let mut slow = Conn::open(gw.addr).unwrap();
    slow.send(b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n")
        .unwrap();
    let mut closed_after = None;
    for i in 0..50 {
        if slow.is_closed(Duration::from_millis(200)) {
            closed_after = Some(started.elapsed());
            break;
        }
        if slow.send(format!("X-Drip-{i}: x\r\n").as_bytes()).is_err() {
            closed_after = Some(started.elapsed());
            break;
        }
    }
    let closed_after = closed_after.expect("a trickling head held the connection for 10 s");
    assert!(
        closed_after >= Duration::from_millis(1400) && closed_after < Duration::from_secs(5),
        "closed after {closed_after:?}"
    );

    // A kept-alive connection that answered a request may idle up to the same bound.
    let mut idle = Conn::open(gw.addr).unwrap();
    assert_eq!(idle.request(LIVE).unwrap().status, 200);
    std::thread::sleep(Duration::from_millis(700));
    assert_eq!(idle.request(LIVE).unwrap().status, 200);
    let answered = Instant::now();
    assert!(idle.is_closed(Duration::from_secs(5)));
    assert!(
        answered.elapsed() >= Duration::from_millis(1400),
        "{:?}",
        answered.elapsed()
    );
}
