//! Rate limits, quotas and in-flight caps per consumer through a real gateway: admission
//! accuracy under a steady overload, isolation between consumers, every 429 code with its
//! headers, cost in rows, permits released on abort and upstream errors, and a reload that
//! raises a limit without resetting the counts.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::{Arc, Barrier};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use modelgate_e2e::client::{self, Conn, Response};
use modelgate_e2e::gateway::{GatewayProcess, Setup};
use modelgate_e2e::repo_root;
use modelgate_e2e::upstream::{Behaviour, Upstream};
use serde_json::{Value, json};

const INFER: &str = "/v2/models/digits/infer";

/// `[auth]` with a key store in the gateway's temp dir.
const AUTH: &str = "[auth]\nkey_store = \"keys.json\"\n\n";

/// A path-prefix route to `upstream` that needs a credential and checks no body.
fn http_route(name: &str, upstream: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = {name:?}\npath_prefix = \"/{name}\"\nvalidate = {{ protocol = \"none\" }}\n{extra}\
         [routes.http]\nupstreams = [{upstream:?}]\n\n"
    )
}

/// The bundled digits model on an authenticated model route, with `extra` route keys.
fn digits_route(extra: &str) -> String {
    let models = repo_root().join("models");
    format!(
        "[[routes]]\nname = \"digits\"\nmodel = \"digits\"\n{extra}[routes.embedded]\nonnx = {:?}\nmetadata = {:?}\n\n",
        models.join("digits.onnx"),
        models.join("digits.json"),
    )
}

fn issue(setup: &Setup, consumer: &str, plan: &str) -> String {
    setup.issue_key(consumer, plan, "*")
}

fn get_raw(path: &str, key: &str) -> Vec<u8> {
    format!("GET {path} HTTP/1.1\r\nHost: t\r\nx-api-key: {key}\r\n\r\n").into_bytes()
}

fn get(addr: SocketAddr, path: &str, key: &str) -> Response {
    client::send(addr, &get_raw(path, key))
}

fn post(addr: SocketAddr, path: &str, key: &str, body: &[u8]) -> Response {
    client::post_json(addr, path, body, &format!("x-api-key: {key}\r\n"))
}

/// Waits out the last 10 s of an hour, so an hourly quota window cannot start over
/// during the test.
fn away_from_an_hour_boundary() {
    let into_hour = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        % 3600;
    if into_hour > 3590 {
        std::thread::sleep(Duration::from_secs(3601 - into_hour));
    }
}

fn holdout_rows() -> Vec<Value> {
    let text = std::fs::read_to_string(repo_root().join("models/digits_holdout.json")).unwrap();
    let v: Value = serde_json::from_str(&text).unwrap();
    v["rows"].as_array().unwrap().clone()
}

/// A v2 request for the digits model with `n` held-out rows.
fn batch(n: usize) -> Vec<u8> {
    let rows = holdout_rows();
    let data: Vec<Value> = rows.iter().cycle().take(n).cloned().collect();
    json!({"inputs": [{"name": "input", "shape": [n, 64], "datatype": "FP32", "data": data}]})
        .to_string()
        .into_bytes()
}

fn header_u64(r: &Response, name: &str) -> u64 {
    r.header(name)
        .unwrap_or_else(|| panic!("{name} missing on {} {:?}", r.status, r.headers))
        .parse()
        .unwrap_or_else(|_| panic!("{name} is not a number: {:?}", r.header(name)))
}

/// `(RateLimit-Limit, RateLimit-Remaining, RateLimit-Reset)`, each required.
fn limit_headers(r: &Response) -> (u64, u64, u64) {
    (
        header_u64(r, "ratelimit-limit"),
        header_u64(r, "ratelimit-remaining"),
        header_u64(r, "ratelimit-reset"),
    )
}

/// A 429 with `code`, a JSON body, `Retry-After` and the `RateLimit-*` headers; returns
/// (Retry-After, RateLimit-Limit, RateLimit-Remaining).
fn assert_refused(r: &Response, code: &str) -> (u64, u64, u64) {
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, code),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
    let retry = header_u64(r, "retry-after");
    assert!(retry >= 1, "Retry-After {retry}");
    let (limit, remaining, _) = limit_headers(r);
    (retry, limit, remaining)
}

fn assert_admitted(r: &Response) -> (u64, u64, u64) {
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    limit_headers(r)
}

/// Sends `count` GETs at `per_second` from `t0` on, spread over `workers` keep-alive
/// connections (request i is due at `t0 + i / per_second`, whatever came before it).
fn paced(
    addr: SocketAddr,
    key: &str,
    per_second: u32,
    count: u32,
    workers: u32,
    t0: Instant,
) -> Vec<Response> {
    let interval = Duration::from_secs(1) / per_second;
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            let key = key.to_string();
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr).unwrap();
                let mut got = Vec::new();
                for i in (w..count).step_by(workers as usize) {
                    let due = t0 + interval * i;
                    if let Some(wait) = due.checked_duration_since(Instant::now()) {
                        std::thread::sleep(wait);
                    }
                    let raw = get_raw("/echo/x", &key);
                    let r = match conn.request(&raw) {
                        Ok(r) => r,
                        Err(_) => {
                            conn = Conn::open(addr).unwrap();
                            conn.request(&raw).unwrap()
                        }
                    };
                    got.push(r);
                }
                got
            })
        })
        .collect();
    handles
        .into_iter()
        .flat_map(|h| h.join().unwrap())
        .collect()
}

#[test]
fn twice_the_rate_for_ten_seconds_admits_rate_times_ten_plus_burst() {
    let up = Upstream::start(Behaviour::Echo);
    let setup = GatewayProcess::setup(&format!(
        "{AUTH}[plans.metered]\nrate = \"20/s\"\nburst = 10\n\n{}",
        http_route("echo", &up.url(), "")
    ));
    let greedy = issue(&setup, "greedy", "metered");
    let polite = issue(&setup, "polite", "metered");
    let gw = setup.start();
    let addr = gw.addr;

    let t0 = Instant::now() + Duration::from_millis(200);
    let polite_run = std::thread::spawn(move || paced(addr, &polite, 10, 100, 2, t0));
    let greedy_responses = paced(addr, &greedy, 40, 400, 4, t0);
    let polite_responses = polite_run.join().unwrap();

    let mut admitted = 0;
    for r in &greedy_responses {
        if r.status == 200 {
            let (limit, remaining, _) = assert_admitted(r);
            assert_eq!(limit, 10);
            assert!(remaining < 10);
            admitted += 1;
        } else {
            let (retry, limit, remaining) = assert_refused(r, "rate_limited");
            assert_eq!((retry, limit, remaining), (1, 10, 0));
        }
    }
    // rate × 10 s + burst = 20 × 10 + 10, within 2 %.
    let expected = 20.0 * 10.0 + 10.0;
    let error = (f64::from(admitted) - expected).abs() / expected;
    eprintln!("{admitted} of 400 admitted (expected {expected})");
    assert!(
        error <= 0.02,
        "{admitted} of 400 admitted, expected {expected} ± 2 %"
    );
    // The other consumer, at half its rate at the same time, never notices.
    assert_eq!(polite_responses.len(), 100);
    for r in &polite_responses {
        assert_admitted(r);
    }
    assert_eq!(up.seen().len(), admitted as usize + 100);
}

#[test]
fn quota_exhausted_and_unconfigured_plans_and_public_routes() {
    let up = Upstream::start(Behaviour::Echo);
    let setup = GatewayProcess::setup(&format!(
        "{AUTH}[plans.tiny]\nrate = \"100/s\"\nburst = 100\nquota = \"3/hour\"\n\n{}\
         [[routes]]\nname = \"open\"\npath_prefix = \"/open\"\npublic = true\n[routes.http]\nupstreams = [{:?}]\n\n",
        http_route("echo", &up.url(), ""),
        up.url()
    ));
    let tiny = issue(&setup, "tiny", "tiny");
    let ghost = issue(&setup, "ghost", "no-such-plan");
    let gw = setup.start();

    away_from_an_hour_boundary();
    // The quota is the binding limit: its numbers are reported.
    for left in [2, 1, 0] {
        let (limit, remaining, reset) = assert_admitted(&get(gw.addr, "/echo/x", &tiny));
        assert_eq!((limit, remaining), (3, left));
        assert!((1..=3600).contains(&reset), "reset {reset}");
    }
    let r = get(gw.addr, "/echo/x", &tiny);
    let (retry, limit, remaining) = assert_refused(&r, "quota_exhausted");
    assert!(retry <= 3600, "Retry-After {retry}");
    assert_eq!((limit, remaining), (3, 0));
    assert_eq!(up.seen().len(), 3);

    // A plan that is not configured (and no [plans.default]): the built-in 10/s, burst 20.
    let (limit, remaining, _) = assert_admitted(&get(gw.addr, "/echo/x", &ghost));
    assert_eq!((limit, remaining), (20, 19));
    for _ in 0..19 {
        assert_admitted(&get(gw.addr, "/echo/x", &ghost));
    }
    assert_refused(&get(gw.addr, "/echo/x", &ghost), "rate_limited");

    // Public routes are not limited per consumer and carry no RateLimit headers.
    let mut conn = Conn::open(gw.addr).unwrap();
    for _ in 0..50 {
        let r = conn
            .request(b"GET /open/x HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(r.status, 200);
        assert_eq!(r.header("ratelimit-limit"), None);
    }
}

#[test]
fn plans_default_replaces_the_built_in_default() {
    let up = Upstream::start(Behaviour::Echo);
    let setup = GatewayProcess::setup(&format!(
        "{AUTH}[plans.default]\nrate = \"1/m\"\nburst = 2\n\n{}",
        http_route("echo", &up.url(), "")
    ));
    let ghost = issue(&setup, "ghost", "no-such-plan");
    let gw = setup.start();
    assert_eq!(
        assert_admitted(&get(gw.addr, "/echo/x", &ghost)).0,
        2,
        "[plans.default] not applied"
    );
    assert_admitted(&get(gw.addr, "/echo/x", &ghost));
    let (retry, _, _) = assert_refused(&get(gw.addr, "/echo/x", &ghost), "rate_limited");
    assert!(retry > 20, "Retry-After {retry} for 1/min");
}

#[test]
fn cost_is_rows_and_a_batch_above_the_burst_is_refused_without_consuming() {
    let up = Upstream::start(Behaviour::Echo);
    let setup = GatewayProcess::setup(&format!(
        "{AUTH}{}{}{}",
        digits_route("[routes.limits]\nrate = \"1/m\"\nburst = 10\n"),
        http_route(
            "fixed",
            &up.url(),
            "cost = 4\n[routes.limits]\nrate = \"1/m\"\nburst = 10\n"
        ),
        tf_route(&up.url(), "[routes.limits]\nrate = \"1/m\"\nburst = 10\n"),
    ));
    let big = issue(&setup, "big", "standard");
    let fives = issue(&setup, "fives", "standard");
    let gw = setup.start();

    // 32 rows against a burst of 10: refused at once, retrying cannot help (no Retry-After).
    let r = post(gw.addr, INFER, &big, &batch(32));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "cost_exceeds_burst"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("retry-after"), None);
    assert_eq!(limit_headers(&r).0, 10);
    assert_eq!(limit_headers(&r).1, 10, "the refused batch consumed units");
    // It consumed nothing: a whole burst's worth still passes, one row at a time or at once.
    let (_, remaining, _) = assert_admitted(&post(gw.addr, INFER, &big, &batch(1)));
    assert_eq!(remaining, 9);
    let (_, remaining, _) = assert_admitted(&post(gw.addr, INFER, &big, &batch(9)));
    assert_eq!(remaining, 0);
    assert_refused(&post(gw.addr, INFER, &big, &batch(1)), "rate_limited");

    // A batch of 5 costs 5: two pass, the third is refused.
    let r = post(gw.addr, INFER, &fives, &batch(5));
    let (limit, remaining, _) = assert_admitted(&r);
    assert_eq!((limit, remaining), (10, 5));
    assert_eq!(r.json()["outputs"][0]["shape"][0], 5);
    assert_eq!(
        assert_admitted(&post(gw.addr, INFER, &fives, &batch(5))).1,
        0
    );
    let (retry, limit, _) =
        assert_refused(&post(gw.addr, INFER, &fives, &batch(5)), "rate_limited");
    assert_eq!(limit, 10);
    assert!(retry > 60, "Retry-After {retry}: 5 units at 1/min");

    // A fixed cost: 4 units per request whatever the body, so two of three pass.
    assert_eq!(assert_admitted(&get(gw.addr, "/fixed/x", &fives)).1, 6);
    assert_eq!(assert_admitted(&get(gw.addr, "/fixed/x", &fives)).1, 2);
    assert_refused(&get(gw.addr, "/fixed/x", &fives), "rate_limited");
    assert_eq!(up.seen().len(), 2);

    // TF-Serving `instances` cost one unit per row too.
    let instances = |n: usize| {
        json!({"instances": vec![json!({"features": [1, 2, 3, 4], "ids": [1, 2]}); n]})
            .to_string()
            .into_bytes()
    };
    let r = post(gw.addr, "/tf:predict", &big, &instances(7));
    assert_eq!(assert_admitted(&r).1, 3);
    assert_refused(
        &post(gw.addr, "/tf:predict", &big, &instances(4)),
        "rate_limited",
    );
    assert_eq!(up.seen().len(), 3);
}

/// A TF-Serving `:predict` route for the test fixture's two-input contract.
fn tf_route(upstream: &str, extra: &str) -> String {
    format!(
        "[[routes]]\nname = \"tf\"\npath_prefix = \"/tf\"\n{extra}[routes.validate]\nprotocol = \"tf_serving\"\n\
         metadata = {:?}\n[routes.http]\nupstreams = [{upstream:?}]\n\n",
        repo_root().join("tests/fixtures/remote_metadata.json")
    )
}

#[test]
fn refused_requests_consume_nothing() {
    let up = Upstream::start(Behaviour::Echo);
    let setup = GatewayProcess::setup(&format!(
        "{AUTH}[plans.p]\nrate = \"1000/s\"\nburst = 1000\nconcurrency = 1\nquota = \"100/hour\"\n\n\
         [[routes]]\nname = \"m\"\nmodel = \"m\"\nvalidate = {{ protocol = \"none\" }}\n\
         [routes.model_limit]\nrate = \"1000/s\"\nburst = 1000\nquota = \"2/hour\"\n[routes.http]\nupstreams = [{:?}]\n\n{}{}",
        up.url(),
        http_route("b", &up.url(), ""),
        http_route(
            "c",
            &up.url(),
            "[routes.limits]\nrate = \"1/m\"\nburst = 1\nconcurrency = 1\n"
        ),
    ));
    let key = issue(&setup, "p", "p");
    let gw = setup.start();
    away_from_an_hour_boundary();
    let infer = "/v2/models/m/infer";
    // The consumer's own quota is the binding limit on its successes: 100 per hour.
    for left in [99, 98] {
        let (limit, remaining, _) = assert_admitted(&send_post_when_free(gw.addr, infer, &key));
        assert_eq!((limit, remaining), (100, left));
    }
    // The model's quota (2/hour) refuses after the consumer's quota was taken: given back.
    for _ in 0..5 {
        let r = send_post_when_free(gw.addr, infer, &key);
        assert_refused(&r, "quota_exhausted");
    }
    let (_, remaining, _) = assert_admitted(&send_when_free(gw.addr, "/b/x", &key));
    assert_eq!(remaining, 97, "refused requests used the consumer's quota");
    // A rate-limited refusal gives back the in-flight permit it took (cap 1, per consumer).
    assert_admitted(&send_when_free(gw.addr, "/c/x", &key));
    for _ in 0..3 {
        assert_refused(&send_when_free(gw.addr, "/c/x", &key), "rate_limited");
    }
    let (_, remaining, _) = assert_admitted(&send_when_free(gw.addr, "/b/x", &key));
    assert_eq!(remaining, 96);
    assert_eq!(up.seen().len(), 5);
}

#[test]
fn model_limit_is_shared_by_every_consumer() {
    let up = Upstream::start(Behaviour::Echo);
    let setup = GatewayProcess::setup(&format!(
        "{AUTH}[[routes]]\nname = \"shared\"\nmodel = \"shared\"\nvalidate = {{ protocol = \"none\" }}\n\
         [routes.model_limit]\nrate = \"1/m\"\nburst = 3\n[routes.http]\nupstreams = [{:?}]\n",
        up.url()
    ));
    let a = issue(&setup, "a", "standard");
    let b = issue(&setup, "b", "standard");
    let gw = setup.start();
    let path = "/v2/models/shared/infer";
    for key in [&a, &b, &a] {
        assert_admitted(&post(gw.addr, path, key, b"{}"));
    }
    // Both consumers are far below their own limits, but the model's budget is spent.
    assert_refused(&post(gw.addr, path, &b, b"{}"), "rate_limited");
    assert_refused(&post(gw.addr, path, &a, b"{}"), "rate_limited");
    assert_eq!(up.seen().len(), 3);
}

#[test]
fn an_unlimited_plan_skips_the_consumer_limits_but_not_the_model_limit() {
    let up = Upstream::start(Behaviour::Echo);
    let setup = GatewayProcess::setup(&format!(
        "{AUTH}[plans.internal]\nunlimited = true\n[plans.default]\nrate = \"1/m\"\nburst = 2\n\n{}\
         [[routes]]\nname = \"shared\"\nmodel = \"shared\"\nvalidate = {{ protocol = \"none\" }}\n\
         [routes.model_limit]\nrate = \"1/m\"\nburst = 3\n[routes.http]\nupstreams = [{:?}]\n",
        http_route("echo", &up.url(), ""),
        up.url()
    ));
    let svc = issue(&setup, "svc", "internal");
    let other = issue(&setup, "other", "default");
    let gw = setup.start();
    // Far beyond the default plan's burst of 2, and no RateLimit-* headers.
    for _ in 0..20 {
        let r = get(gw.addr, "/echo/x", &svc);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        assert_eq!(r.header("ratelimit-limit"), None);
    }
    assert_admitted(&get(gw.addr, "/echo/x", &other));
    assert_admitted(&get(gw.addr, "/echo/x", &other));
    assert_refused(&get(gw.addr, "/echo/x", &other), "rate_limited");
    // The model's budget (3) binds the unlimited consumer too.
    let path = "/v2/models/shared/infer";
    for _ in 0..3 {
        assert_eq!(post(gw.addr, path, &svc, b"{}").status, 200);
    }
    assert_refused(&post(gw.addr, path, &svc, b"{}"), "rate_limited");
    assert_eq!(up.seen().len(), 20 + 2 + 3);
}

#[test]
fn too_many_concurrent_requests_get_429() {
    let slow = Upstream::start(Behaviour::Stall(Duration::from_secs(1)));
    let setup = GatewayProcess::setup(&format!(
        "{AUTH}[plans.pair]\nrate = \"100/s\"\nburst = 100\nconcurrency = 2\n\n{}",
        http_route("slow", &slow.url(), "")
    ));
    let key = issue(&setup, "pair", "pair");
    let gw = setup.start();
    let addr = gw.addr;
    let barrier = Arc::new(Barrier::new(3));
    let handles: Vec<_> = (0..3)
        .map(|_| {
            let (barrier, key) = (Arc::clone(&barrier), key.clone());
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr).unwrap();
                barrier.wait();
                conn.request(&get_raw("/slow/x", &key)).unwrap()
            })
        })
        .collect();
    let mut responses: Vec<Response> = handles.into_iter().map(|h| h.join().unwrap()).collect();
    responses.sort_by_key(|r| r.status);
    assert_eq!(
        responses.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 429]
    );
    assert_admitted(&responses[0]);
    let (retry, limit, remaining) = assert_refused(&responses[2], "too_many_concurrent");
    assert_eq!((retry, limit, remaining), (1, 2, 0));
    assert_eq!(slow.seen().len(), 2);
    // Both permits came back when the responses ended.
    assert_admitted(&send_when_free(gw.addr, "/slow/x", &key));
}

#[test]
fn permits_are_released_on_client_abort_and_upstream_errors() {
    let stalled = Upstream::start(Behaviour::Stall(Duration::from_millis(1500)));
    let fast = Upstream::start(Behaviour::Echo);
    let reset = Upstream::start(Behaviour::Reset);
    let closed = format!("http://127.0.0.1:{}", modelgate_e2e::free_port());
    let hung = Upstream::start(Behaviour::Stall(Duration::from_secs(30)));
    let setup = GatewayProcess::setup(&format!(
        "{AUTH}[plans.single]\nrate = \"1000/s\"\nburst = 1000\nconcurrency = 1\n\n{}{}{}{}{}",
        http_route("slow", &stalled.url(), ""),
        http_route("fast", &fast.url(), ""),
        http_route("reset", &reset.url(), ""),
        http_route("down", &closed, ""),
        http_route("hung", &hung.url(), "").replace(
            "[routes.http]\n",
            "[routes.http]\nconnect_timeout = \"200ms\"\ntotal_timeout = \"500ms\"\n"
        ),
    ));
    let key = issue(&setup, "single", "single");
    let gw = setup.start();

    // A request in flight holds the only permit (the cap is per consumer, across routes).
    let mut aborted = Conn::open(gw.addr).unwrap();
    aborted.send(&get_raw("/slow/x", &key)).unwrap();
    std::thread::sleep(Duration::from_millis(300));
    assert_refused(&get(gw.addr, "/fast/x", &key), "too_many_concurrent");
    // The client goes away mid-way: the permit comes back (at the latest when the stalled
    // exchange ends), never leaks.
    drop(aborted);
    let dropped = Instant::now();
    let freed = loop {
        let r = get(gw.addr, "/fast/x", &key);
        if r.status == 200 {
            break dropped.elapsed();
        }
        assert_refused(&r, "too_many_concurrent");
        assert!(
            dropped.elapsed() < Duration::from_secs(5),
            "permit still held 5 s after the client aborted"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!("permit released {freed:?} after the client aborted");
    assert_eq!(stalled.seen().len(), 1);

    // Upstream failures (reset, refused connection, timeout) release it too.
    for _ in 0..3 {
        let r = send_when_free(gw.addr, "/reset/x", &key);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (502, "upstream_unavailable")
        );
        assert_admitted(&send_when_free(gw.addr, "/fast/x", &key));
        let r = send_when_free(gw.addr, "/down/x", &key);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (502, "upstream_unavailable")
        );
        assert_admitted(&send_when_free(gw.addr, "/fast/x", &key));
    }
    let r = send_when_free(gw.addr, "/hung/x", &key);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (504, "upstream_timeout")
    );
    assert_admitted(&send_when_free(gw.addr, "/fast/x", &key));
}

/// `GET path`, retried for up to 1 s while refused as `too_many_concurrent`: the permit of
/// the request that just answered may still be held for a moment (see
/// `a_sequential_client_never_exceeds_a_concurrency_of_one`), but a leaked one never comes back.
fn send_when_free(addr: SocketAddr, path: &str, key: &str) -> Response {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let r = get(addr, path, key);
        if r.status != 429 || r.error_code() != "too_many_concurrent" || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Like [`send_when_free`], for an empty JSON `POST`.
fn send_post_when_free(addr: SocketAddr, path: &str, key: &str) -> Response {
    let deadline = Instant::now() + Duration::from_secs(1);
    loop {
        let r = post(addr, path, key, b"{}");
        if r.status != 429 || r.error_code() != "too_many_concurrent" || Instant::now() > deadline {
            return r;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn a_sequential_client_never_exceeds_a_concurrency_of_one() {
    let fast = Upstream::start(Behaviour::Echo);
    let setup = GatewayProcess::setup(&format!(
        "{AUTH}[plans.single]\nrate = \"10000/s\"\nburst = 10000\nconcurrency = 1\n\n{}",
        http_route("fast", &fast.url(), ""),
    ));
    let key = issue(&setup, "single", "single");
    let gw = setup.start();
    // One request at a time, each on a fresh connection (as a client with a connection pool
    // may well do): the previous response has fully arrived before the next request leaves.
    let refused: Vec<String> = (0..1000)
        .map(|_| get(gw.addr, "/fast/x", &key))
        .filter(|r| r.status != 200)
        .map(|r| format!("{} {}", r.status, r.error_code()))
        .collect();
    assert!(
        refused.is_empty(),
        "{} of 1000 sequential requests refused: {:?}",
        refused.len(),
        &refused[..refused.len().min(5)]
    );
}

/// The running gateway's `[server]` section followed by `rest`.
fn gateway_config(gw: &GatewayProcess, rest: &str) -> String {
    let current = std::fs::read_to_string(gw.setup.config_path()).unwrap();
    let server = current.split("\n\n").next().unwrap();
    format!("{server}\n\n{rest}")
}

#[test]
fn reload_that_raises_a_limit_keeps_the_counts() {
    let up = Upstream::start(Behaviour::Echo);
    let config = |rate: &str| {
        format!(
            "{AUTH}[plans.metered]\nrate = {rate:?}\nburst = 3\n\n{}",
            http_route("echo", &up.url(), "")
        )
    };
    let setup = GatewayProcess::setup(&config("1/m"));
    let key = issue(&setup, "metered", "metered");
    let gw = setup.start();
    for left in [2, 1, 0] {
        assert_eq!(assert_admitted(&get(gw.addr, "/echo/x", &key)).1, left);
    }
    let (retry, _, _) = assert_refused(&get(gw.addr, "/echo/x", &key), "rate_limited");
    assert!(retry > 10, "Retry-After {retry} under 1/min");

    // Raise the rate 120×: the emptied bucket stays empty (no fresh burst)...
    std::fs::write(gw.setup.config_path(), gateway_config(&gw, &config("2/s"))).unwrap();
    let r = gw.reload();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let (retry, limit, remaining) = assert_refused(&get(gw.addr, "/echo/x", &key), "rate_limited");
    assert_eq!(
        (retry, limit, remaining),
        (1, 3, 0),
        "the reload reset the counts"
    );
    // ...and refills at the new rate: a full burst of 3 after 1.5 s (under 1/min: none).
    std::thread::sleep(Duration::from_millis(1700));
    for left in [2, 1, 0] {
        assert_eq!(assert_admitted(&get(gw.addr, "/echo/x", &key)).1, left);
    }
    assert_refused(&get(gw.addr, "/echo/x", &key), "rate_limited");
    assert_eq!(up.seen().len(), 6);
}
