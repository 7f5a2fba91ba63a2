//! HTTP upstreams through a real gateway: forwarding fidelity, pooling, round-robin,
//! rewrites, upstream failures (502/504), and that refused requests send nothing upstream.

#![allow(clippy::unwrap_used)]

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use modelgate_e2e::client::{self, Conn, get, post_bytes, post_json};
use modelgate_e2e::gateway::GatewayProcess;
use modelgate_e2e::upstream::{Behaviour, Upstream};

/// A one-upstream route with its `[connect, read, total]` timeouts.
fn timed_route(
    name: &str,
    prefix: &str,
    upstream: &str,
    [connect, read, total]: [&str; 3],
) -> String {
    http_route(name, prefix, &[upstream.to_string()], "").replace(
        "[routes.http]\n",
        &format!(
            "[routes.http]\nconnect_timeout = {connect:?}\nread_timeout = {read:?}\ntotal_timeout = {total:?}\n"
        ),
    )
}

fn http_route(name: &str, prefix: &str, upstreams: &[String], extra: &str) -> String {
    let list: Vec<String> = upstreams.iter().map(|u| format!("{u:?}")).collect();
    format!(
        "[[routes]]\nname = {name:?}\npath_prefix = {prefix:?}\npublic = true\n{extra}\n[routes.http]\nupstreams = [{}]\n",
        list.join(", ")
    )
}

#[test]
fn method_path_query_body_and_end_to_end_headers_pass_through() {
    let up = Upstream::start(Behaviour::Echo);
    let gw = GatewayProcess::start(&http_route("echo", "/echo", &[up.url()], ""));
    let body = br#"{"prompt":"hi","n":1}"#;
    let raw = post_bytes(
        "/echo/v1/predict?x=1&y=%20z",
        body,
        "X-Custom: kept\r\nConnection: keep-alive, X-Drop\r\nX-Drop: gone\r\nKeep-Alive: timeout=5\r\nTE: trailers\r\nX-Forwarded-For: 10.9.9.9\r\n\
         traceparent: 00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01\r\n",
    );
    let r = client::send(gw.addr, &raw);
    assert_eq!(r.status, 200);
    // Response: end-to-end headers kept, hop-by-hop (and those listed in Connection) dropped.
    assert_eq!(r.header("x-upstream"), Some("yes"));
    assert_eq!(r.header("x-hop"), None);

    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    let s = &seen[0];
    assert_eq!(s.method, "POST");
    assert_eq!(s.target, "/echo/v1/predict?x=1&y=%20z");
    assert_eq!(s.body, body);
    assert_eq!(s.header("x-custom"), Some("kept"));
    assert_eq!(s.header("content-type"), Some("application/json"));
    assert_eq!(
        s.header("content-length"),
        Some(body.len().to_string().as_str())
    );
    for hop in ["x-drop", "keep-alive", "te", "transfer-encoding"] {
        assert_eq!(s.header(hop), None, "{hop} forwarded");
    }
    assert_eq!(s.header("x-forwarded-for"), Some("10.9.9.9, 127.0.0.1"));
    assert_eq!(
        s.header("traceparent"),
        Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01")
    );
}

#[test]
fn chunked_request_is_forwarded_with_content_length_and_trace_is_started() {
    let up = Upstream::start(Behaviour::Echo);
    let gw = GatewayProcess::start(&http_route("echo", "/echo", &[up.url()], ""));
    let r = client::send(
        gw.addr,
        b"PUT /echo/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n",
    );
    assert_eq!(r.status, 200);
    let s = &up.seen()[0];
    assert_eq!(
        (s.method.as_str(), s.body.as_slice()),
        ("PUT", &b"abcde"[..])
    );
    assert_eq!(s.header("content-length"), Some("5"));
    let tp = s.header("traceparent").expect("traceparent set");
    assert_eq!(tp.len(), 55, "{tp}");
    assert!(tp.starts_with("00-"));
}

#[test]
fn keep_alive_pool_reuses_upstream_connections_and_round_robins() {
    let (a, b) = (
        Upstream::start(Behaviour::Echo),
        Upstream::start(Behaviour::Echo),
    );
    let gw = GatewayProcess::start(&http_route("rr", "/rr", &[a.url(), b.url()], ""));
    let mut conn = Conn::open(gw.addr).unwrap();
    for _ in 0..20 {
        let r = conn
            .request(b"GET /rr/x HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(r.status, 200);
    }
    assert_eq!(a.seen().len(), 10);
    assert_eq!(b.seen().len(), 10);
    // Sequential requests reuse pooled connections instead of opening one each.
    assert!(
        a.connection_count() + b.connection_count() <= 6,
        "{} + {}",
        a.connection_count(),
        b.connection_count()
    );
}

#[test]
fn pooled_connections_the_upstream_closed_are_replaced_not_failed() {
    let up = Upstream::start(Behaviour::EchoThenClose);
    let gw = GatewayProcess::start(&http_route("c", "/c", &[up.url()], ""));
    let mut conn = Conn::open(gw.addr).unwrap();
    for i in 0..10 {
        let body = format!("{{\"n\":{i}}}");
        let raw = format!(
            "POST /c/x HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        );
        let r = conn.request(raw.as_bytes()).unwrap();
        assert_eq!(r.status, 200, "request {i}");
        if i % 3 == 0 {
            // Back to back, the upstream's close may not have arrived yet: the gateway then
            // finds out on the pooled connection and retries on a new one.
            continue;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let bodies: Vec<Vec<u8>> = up.seen().into_iter().map(|s| s.body).collect();
    let expected: Vec<Vec<u8>> = (0..10)
        .map(|i| format!("{{\"n\":{i}}}").into_bytes())
        .collect();
    assert_eq!(
        bodies, expected,
        "each request reached the upstream once, in order"
    );
    assert_eq!(up.connection_count(), 10);
}

#[test]
fn request_bodies_larger_than_one_write_arrive_whole() {
    let up = Upstream::start(Behaviour::Echo);
    let gw = GatewayProcess::start(&http_route("big", "/big", &[up.url()], ""));
    let mut conn = Conn::open(gw.addr).unwrap();
    // Up to 64 KiB the body leaves in one write with the head, past it in a second.
    for len in [100, 16 * 1024, 64 * 1024 - 150, 64 * 1024 + 1, 600_000] {
        let body: Vec<u8> = (0..len).map(|i| b'a' + (i % 26) as u8).collect();
        let mut raw = format!("POST /big/x HTTP/1.1\r\nHost: t\r\nContent-Length: {len}\r\n\r\n")
            .into_bytes();
        raw.extend_from_slice(&body);
        let r = conn.request(&raw).unwrap();
        assert_eq!(r.status, 200, "{len} bytes");
        assert_eq!(up.seen().last().unwrap().body, body, "{len} bytes");
    }
    assert_eq!(up.connection_count(), 1, "one pooled connection throughout");
}

#[test]
fn rewrite_prefix_and_upstream_base_path() {
    let up = Upstream::start(Behaviour::Echo);
    let routes = format!(
        "{}\n{}",
        http_route("rw", "/openai", &[up.url()], "")
            .replace("[routes.http]\n", "[routes.http]\nrewrite_prefix = \"/\"\n"),
        http_route("base", "/base", &[format!("{}/api", up.url())], ""),
    );
    let gw = GatewayProcess::start(&routes);
    assert_eq!(get(gw.addr, "/openai/v1/chat?q=1").status, 200);
    assert_eq!(get(gw.addr, "/openai").status, 200);
    assert_eq!(get(gw.addr, "/base/x").status, 200);
    let targets: Vec<String> = up.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(targets, ["/v1/chat?q=1", "/", "/api/base/x"]);
}

#[test]
fn model_route_to_http_backend_forwards_v2_paths() {
    let up = Upstream::start(Behaviour::Echo);
    let gw = GatewayProcess::start(&format!(
        "[[routes]]\nname = \"remote\"\nmodel = \"remote\"\npublic = true\nvalidate = {{ protocol = \"none\" }}\n[routes.http]\nupstreams = [{:?}]\n",
        up.url()
    ));
    let r = post_json(gw.addr, "/v2/models/remote/infer", b"{}", "");
    assert_eq!(r.status, 200);
    assert_eq!(get(gw.addr, "/v2/models/remote/explain").status, 200);
    let targets: Vec<String> = up.seen().into_iter().map(|s| s.target).collect();
    assert_eq!(
        targets,
        ["/v2/models/remote/infer", "/v2/models/remote/explain"]
    );
}

#[test]
fn refused_upstream_is_502_and_reset_is_502() {
    let closed = format!("http://127.0.0.1:{}", modelgate_e2e::free_port());
    let reset = Upstream::start(Behaviour::Reset);
    let routes = format!(
        "{}{}",
        http_route("down", "/down", &[closed], ""),
        http_route("reset", "/reset", &[reset.url()], "")
    );
    let gw = GatewayProcess::start(&routes);
    let r = get(gw.addr, "/down/x");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
    let r = get(gw.addr, "/reset/x");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (502, "upstream_unavailable")
    );
    assert!(reset.connection_count() >= 1);
}

#[test]
fn stalled_upstream_gives_504_within_the_timeout() {
    let stalled = Upstream::start(Behaviour::Stall(Duration::from_secs(30)));
    let route = timed_route("slow", "/slow", &stalled.url(), ["500ms", "400ms", "1s"]);
    let gw = GatewayProcess::start(&route);
    let started = Instant::now();
    let r = get(gw.addr, "/slow/x");
    let took = started.elapsed();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (504, "upstream_timeout")
    );
    assert!(took < Duration::from_secs(3), "took {took:?}");

    // The total timeout bounds an upstream that keeps trickling under the read timeout too.
    let route = timed_route("slow2", "/slow2", &stalled.url(), ["500ms", "10s", "700ms"]);
    let gw = GatewayProcess::start(&route);
    let started = Instant::now();
    let r = get(gw.addr, "/slow2/x");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (504, "upstream_timeout")
    );
    assert!(started.elapsed() < Duration::from_secs(3));

    // A body trickling in under the read timeout is cut off at the total timeout: the
    // client has the head and part of the body, then the connection closes.
    let trickle = Upstream::start(Behaviour::Trickle(Duration::from_millis(50)));
    let route = timed_route(
        "trickle",
        "/trickle",
        &trickle.url(),
        ["500ms", "400ms", "1s"],
    );
    let gw = GatewayProcess::start(&route);
    let started = Instant::now();
    let mut conn = Conn::open(gw.addr).expect("connect");
    conn.send(b"GET /trickle/x HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    assert_eq!(conn.read_head().expect("head").status, 200);
    let mut more = 0;
    while !conn.is_closed(Duration::from_secs(5)) {
        more += 1;
        assert!(more < 1000, "the whole body arrived");
    }
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(950) && took < Duration::from_secs(3),
        "closed after {took:?}"
    );
}

#[test]
fn a_client_that_stops_reading_is_cut_off_at_the_total_timeout() {
    // A streamed response larger than the loopback socket buffers: the gateway's writes to
    // a client that reads nothing wait, and the route's total timeout ends the wait.
    const LEN: usize = 32 << 20;
    let raw = format!(
        "HTTP/1.1 200 OK\r\nContent-Length: {LEN}\r\n\r\n{}",
        "x".repeat(LEN)
    );
    let up = Upstream::start(Behaviour::Raw(Box::leak(raw.into_boxed_str())));
    let route = timed_route("big", "/big", &up.url(), ["500ms", "10s", "1s"]);
    let gw = GatewayProcess::start(&route);
    let mut stream = std::net::TcpStream::connect(gw.addr).expect("connect");
    stream
        .write_all(b"GET /big/x HTTP/1.1\r\nHost: t\r\n\r\n")
        .expect("send");
    std::thread::sleep(Duration::from_secs(3));
    // Now read everything the gateway sent before it gave up and closed.
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .expect("timeout");
    let mut received = Vec::new();
    let _ = stream.read_to_end(&mut received);
    assert!(received.starts_with(b"HTTP/1.1 200"), "the response began");
    assert!(received.len() < LEN, "the whole body arrived");
    // The gateway gave up on its own at the total timeout, not once the client read again.
    let logs = gw.logs_with("\"path\":\"/big/x\"");
    let line = logs
        .lines()
        .find(|l| l.contains("\"path\":\"/big/x\""))
        .expect("access line");
    let access: serde_json::Value = serde_json::from_str(line).expect("json access line");
    assert_eq!(access["error"], "WriteTimedout", "{line}");
    let took = access["duration_us"].as_u64().expect("duration");
    assert!(
        (900_000..2_000_000).contains(&took),
        "the request lasted {took} µs"
    );
}

#[test]
fn refused_requests_send_nothing_upstream() {
    let up = Upstream::start(Behaviour::Echo);
    let route = http_route(
        "capped",
        "/capped",
        &[up.url()],
        "methods = [\"POST\"]\nmax_body_bytes = 100",
    );
    let gw = GatewayProcess::start(&route);
    // Declared over the cap.
    let r = post_json(gw.addr, "/capped/x", &[b'a'; 101], "");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "payload_too_large")
    );
    // Chunked, passing the cap while streaming.
    let chunk = format!("{:x}\r\n{}\r\n", 80, "b".repeat(80));
    let mut raw =
        b"POST /capped/x HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n".to_vec();
    raw.extend(chunk.as_bytes());
    raw.extend(chunk.as_bytes());
    let r = client::send(gw.addr, &raw);
    assert_eq!(r.status, 413);
    // Wrong method, malformed framing, traversal.
    assert_eq!(get(gw.addr, "/capped/x").status, 405);
    assert_eq!(
        client::send(gw.addr, b"POST /capped/x HTTP/1.1\r\nHost: t\r\n\r\n").status,
        411
    );
    assert_eq!(get(gw.addr, "/capped/../x").status, 400);
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        up.connection_count(),
        0,
        "a refused request reached the upstream"
    );
    // And an accepted one does.
    assert_eq!(
        post_json(gw.addr, "/capped/x", &[b'a'; 100], "").status,
        200
    );
    assert_eq!(up.connection_count(), 1);
}

#[test]
fn large_upstream_response_streams_back_intact() {
    const BIG: &str = "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n";
    let up = Upstream::start(Behaviour::Raw(BIG));
    let gw = GatewayProcess::start(&http_route("big", "/big", &[up.url()], ""));
    let mut conn = Conn::open(gw.addr).unwrap();
    for _ in 0..3 {
        let r = conn
            .request(b"GET /big HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!((r.status, r.body.as_slice()), (200, &b"hello world"[..]));
    }
}
