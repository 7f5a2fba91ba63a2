//! How the gateway reads HTTP upstreams' responses (its own HTTP/1.1 client): every framing
//! RFC 9112 allows arrives intact; a connection is pooled only when its response ended
//! cleanly and both sides allow keep-alive; ambiguous or malformed responses are refused
//! with 502 `upstream_invalid_response`, or, once the response has begun, the client
//! connection is dropped — nothing half-guessed reaches the client.

#![allow(clippy::unwrap_used)]

use modelgate_e2e::client::{self, Conn, get};
use modelgate_e2e::gateway::GatewayProcess;
use modelgate_e2e::upstream::{Behaviour, Upstream};

/// One upstream per behaviour, each behind the public route `/<i>`.
fn gateway_for(behaviours: &[Behaviour]) -> (GatewayProcess, Vec<Upstream>) {
    let upstreams: Vec<Upstream> = behaviours.iter().cloned().map(Upstream::start).collect();
    let routes: String = upstreams
        .iter()
        .enumerate()
        .map(|(i, up)| {
            format!(
                "[[routes]]\nname = \"r{i}\"\npath_prefix = \"/{i}\"\npublic = true\n[routes.http]\nupstreams = [{:?}]\n",
                up.url()
            )
        })
        .collect();
    (GatewayProcess::start(&routes), upstreams)
}

fn request(method: &str, route: usize) -> Vec<u8> {
    format!("{method} /{route}/x HTTP/1.1\r\nHost: t\r\n\r\n").into_bytes()
}

#[test]
fn every_valid_framing_arrives_intact_on_a_pooled_connection() {
    let cases: [(&'static str, &[u8]); 6] = [
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4;name=value\r\nabcd\r\n3 \r\nefg\r\n0\r\nX-Trailer: dropped\r\n\r\n",
            b"abcdefg",
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello",
            b"hello",
        ),
        (
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
            b"ok",
        ),
        ("HTTP/1.1 204 No Content\r\n\r\n", b""),
        ("HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n", b""),
        (
            "HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 4\r\n\r\n1.0!",
            b"1.0!",
        ),
    ];
    let behaviours: Vec<Behaviour> = cases.iter().map(|(raw, _)| Behaviour::Raw(raw)).collect();
    let (gw, upstreams) = gateway_for(&behaviours);
    let mut conn = Conn::open(gw.addr).unwrap();
    for (i, (raw, body)) in cases.iter().enumerate() {
        for round in 0..3 {
            let r = conn.request(&request("GET", i)).unwrap();
            let status = if raw.contains("204") { 204 } else { 200 };
            assert_eq!(
                (r.status, r.body.as_slice()),
                (status, *body),
                "{raw:?} #{round}"
            );
        }
        assert_eq!(upstreams[i].connection_count(), 1, "{raw:?} pooled");
    }
}

#[test]
fn a_body_delimited_by_the_upstream_closing_arrives_whole() {
    let (gw, upstreams) = gateway_for(&[Behaviour::RawThenClose(
        "HTTP/1.1 200 OK\r\nX-Kind: close-delimited\r\n\r\nuntil the end",
    )]);
    for _ in 0..2 {
        let r = client::send(gw.addr, &request("GET", 0));
        assert_eq!((r.status, r.body.as_slice()), (200, &b"until the end"[..]));
        assert_eq!(r.header("x-kind"), Some("close-delimited"));
    }
    assert_eq!(upstreams[0].connection_count(), 2);
}

#[test]
fn head_responses_end_at_their_head_and_keep_the_connection() {
    let (gw, upstreams) = gateway_for(&[Behaviour::Raw(
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nX-Head: yes\r\n\r\n",
    )]);
    let mut conn = Conn::open(gw.addr).unwrap();
    for _ in 0..3 {
        conn.send(&request("HEAD", 0)).unwrap();
        let r = conn.read_head().unwrap();
        assert_eq!((r.status, r.header("x-head")), (200, Some("yes")));
        assert_eq!(r.header("content-length"), Some("5"));
    }
    let r = conn.request(&request("HEAD", 0)).map(|_| ());
    assert!(r.is_err(), "a HEAD response has no body to read");
    assert_eq!(upstreams[0].connection_count(), 1);
}

#[test]
fn ambiguous_or_malformed_response_heads_are_502() {
    let too_large = format!(
        "HTTP/1.1 200 OK\r\nX-Big: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(70_000)
    );
    let cases = [
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
        "HTTP/1.1 200 OK\r\nContent-Length: five\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\nhello",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, identity\r\n\r\n0\r\n\r\n",
        "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\r\n",
        "HTTP/1.1 2000 OK\r\n\r\n",
        Box::leak(too_large.into_boxed_str()),
    ];
    let behaviours: Vec<Behaviour> = cases.iter().map(|raw| Behaviour::Raw(raw)).collect();
    let (gw, _upstreams) = gateway_for(&behaviours);
    for (i, raw) in cases.iter().enumerate() {
        let r = get(gw.addr, &format!("/{i}/x"));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (502, "upstream_invalid_response"),
            "{:?}",
            &raw[..raw.len().min(80)]
        );
    }
}

#[test]
fn connections_are_pooled_only_when_the_response_ended_cleanly() {
    let cases = [
        // Bytes after the response's end (a smuggled second response).
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nokHTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsmuggl",
        "HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nok",
        "HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nok",
    ];
    let behaviours: Vec<Behaviour> = cases.iter().map(|raw| Behaviour::Raw(raw)).collect();
    let (gw, upstreams) = gateway_for(&behaviours);
    let mut conn = Conn::open(gw.addr).unwrap();
    for (i, raw) in cases.iter().enumerate() {
        for _ in 0..3 {
            let r = conn.request(&request("GET", i)).unwrap();
            assert_eq!((r.status, r.body.as_slice()), (200, &b"ok"[..]), "{raw:?}");
        }
        assert_eq!(upstreams[i].connection_count(), 3, "{raw:?} was pooled");
    }
}

#[test]
fn a_body_that_breaks_off_drops_the_client_connection() {
    let (gw, _upstreams) = gateway_for(&[
        Behaviour::RawThenClose("HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort"),
        Behaviour::Raw(
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX0\r\n\r\n",
        ),
    ]);
    for route in 0..2 {
        let mut conn = Conn::open(gw.addr).unwrap();
        let r = conn.request(&request("GET", route));
        assert!(r.is_err(), "route {route}: a broken body read as {r:?}");
    }
    // The gateway itself carries on.
    assert_eq!(get(gw.addr, "/v2/health/live").status, 200);
}
