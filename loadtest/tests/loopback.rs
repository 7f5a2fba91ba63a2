//! End-to-end runs against the in-process upstream on 127.0.0.1:0.

#![allow(clippy::unwrap_used)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use modelgate_loadtest::client::{RequestPool, Url};
use modelgate_loadtest::report::Report;
use modelgate_loadtest::runner::{RunConfig, run};
use modelgate_loadtest::samples::{Samples, build_infer_bodies};
use modelgate_loadtest::schedule::Mode;
use modelgate_loadtest::upstream::{UpstreamConfig, serve};
use tokio::net::TcpListener;

const SAMPLES: &[u8] =
    br#"{"rows": [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9, 10, 11]], "labels": [3, 3, 5]}"#;

async fn start_upstream(body: &[u8]) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let cfg = UpstreamConfig {
        body: body.to_vec(),
        delay: Duration::ZERO,
    };
    tokio::spawn(serve(listener, cfg));
    addr
}

fn config(addr: SocketAddr, mode: Mode, check_labels: bool) -> RunConfig {
    let url = Url::parse(&format!("http://{addr}/v2/models/digits/infer")).unwrap();
    let samples = Samples::from_slice(SAMPLES).unwrap();
    let built = build_infer_bodies(&samples, 2, "input", 3);
    let mut pool = RequestPool::build(
        "POST",
        &url,
        &[("X-Api-Key".into(), "k".into())],
        &built.bodies,
    );
    if check_labels {
        pool = pool.with_labels(built.labels.unwrap());
    }
    RunConfig {
        addr,
        pool: Arc::new(pool),
        connections: 4,
        mode,
        duration: Duration::from_millis(300),
        warmup: Duration::from_millis(50),
        timeout: Duration::from_secs(2),
        check_labels,
    }
}

fn assert_all_ok(r: &Report) {
    let s = &r.stats;
    assert!(s.completed > 0);
    assert_eq!(s.sent, s.completed, "every sent request completes");
    assert_eq!(
        s.errors.request_failures() + s.errors.connect,
        0,
        "{:?}",
        s.errors
    );
    assert_eq!(s.statuses().get(&200), Some(&s.completed));
    assert_eq!(s.statuses().len(), 1);
    assert_eq!(s.latency_us.len(), s.completed);
    assert!(r.duration >= Duration::from_millis(250), "{:?}", r.duration);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn closed_loop_against_upstream() {
    let addr = start_upstream(br#"{"ok":true}"#).await;
    let r = run(config(addr, Mode::Closed { concurrency: 3 }, false))
        .await
        .unwrap();
    assert_all_ok(&r);
    assert_eq!(
        (r.mode, r.concurrency, r.target_rate),
        ("closed", Some(3), None)
    );
    let j = r.to_json();
    assert_eq!(j["requests"], j["completed"]);
    assert_eq!(j["statuses"]["200"], j["completed"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn open_loop_against_upstream() {
    let addr = start_upstream(br#"{"ok":true}"#).await;
    let r = run(config(addr, Mode::Open { rate: 2000.0 }, false))
        .await
        .unwrap();
    assert_all_ok(&r);
    // 2000/s over a 300 ms window (after 50 ms warmup): exactly 600 due and sent.
    assert_eq!(r.stats.sent, 600);
    assert_eq!(r.stats.unsent, 0);
    assert_eq!((r.mode, r.target_rate), ("open", Some(2000.0)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn label_checking_reports_accuracy() {
    // Every response predicts label 3 for both rows of the batch.
    let addr = start_upstream(
        br#"{"outputs":[{"name":"label","datatype":"INT64","shape":[2],"data":[3,3]}]}"#,
    )
    .await;
    let r = run(config(addr, Mode::Closed { concurrency: 2 }, true))
        .await
        .unwrap();
    assert_all_ok(&r);
    // Bodies cycle through rows (0,1), (2,0), (1,2) with labels (3,3), (5,3), (3,5).
    let acc = r.accuracy().unwrap();
    assert!((0.6..0.7).contains(&acc), "accuracy {acc}");
    assert_eq!(r.stats.label_parse_errors, 0);
}

#[tokio::test(flavor = "current_thread")]
async fn unreachable_target_counts_connect_errors() {
    // Bind then drop to get a port with (almost certainly) nothing listening.
    let addr = TcpListener::bind("127.0.0.1:0")
        .await
        .unwrap()
        .local_addr()
        .unwrap();
    let mut cfg = config(addr, Mode::Closed { concurrency: 1 }, false);
    cfg.connections = 1;
    cfg.duration = Duration::from_millis(100);
    cfg.warmup = Duration::ZERO;
    let r = run(cfg).await.unwrap();
    assert_eq!((r.stats.sent, r.stats.completed), (0, 0));
    assert!(r.stats.errors.connect >= 1);
}

#[test]
fn cli_upstream_and_run_json() {
    let exe = env!("CARGO_BIN_EXE_modelgate-loadtest");
    let mut upstream = Command::new(exe)
        .args(["upstream", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    BufReader::new(upstream.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let addr = line
        .trim()
        .strip_prefix("listening on ")
        .unwrap()
        .to_owned();

    let out = Command::new(exe)
        .args([
            "run",
            "--url",
            &format!("http://{addr}/"),
            "--connections",
            "2",
        ])
        .args(["--duration", "200ms", "--json", "-H", "X-Api-Key: secret"])
        .output()
        .unwrap();
    upstream.kill().unwrap();
    upstream.wait().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let j: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(j["mode"], "closed");
    assert!(j["completed"].as_u64().unwrap() > 0);
    assert_eq!(j["requests"], j["completed"]);
    assert_eq!(j["statuses"]["200"], j["completed"]);
    for key in ["p50", "p90", "p99", "p999", "max", "mean"] {
        assert!(j["latency_us"][key].is_number(), "{key}");
    }
    assert!(j["rps"].as_f64().unwrap() > 0.0);
    assert!(j["duration_s"].as_f64().unwrap() > 0.0);
    assert!(j["target_rate"].is_null());
}

#[test]
fn cli_usage_errors_exit_2() {
    let exe = env!("CARGO_BIN_EXE_modelgate-loadtest");
    let cases: &[&[&str]] = &[
        &["run", "--url", "https://127.0.0.1:1/"],
        &["run", "--url", "127.0.0.1:1"],
        &[
            "run",
            "--url",
            "http://127.0.0.1:1/",
            "--samples",
            "/nonexistent/samples.json",
        ],
        &["run", "--url", "http://127.0.0.1:1/", "--duration", "10x"],
        &[
            "run",
            "--url",
            "http://127.0.0.1:1/",
            "--connections",
            "2",
            "--concurrency",
            "3",
        ],
    ];
    for args in cases {
        let out = Command::new(exe).args(*args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(!out.stderr.is_empty());
    }
}
