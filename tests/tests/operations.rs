//! Operations surface: Prometheus metrics and JSON access/audit lines.

#![allow(clippy::unwrap_used)]

use modelgate_e2e::client::{get, post_json};
use modelgate_e2e::gateway::{GatewayProcess, digits_route};

#[test]
fn metrics_count_requests_by_route_status_and_code_and_logs_are_json_lines() {
    let gw = GatewayProcess::start(&digits_route());
    assert_eq!(get(gw.addr, "/v2/models/digits").status, 200);
    assert_eq!(get(gw.addr, "/v2/models/digits").status, 200);
    assert_eq!(
        post_json(gw.addr, "/v2/models/digits/infer", b"{", "").status,
        400
    );
    assert_eq!(get(gw.addr, "/nowhere").status, 404);
    let expected = [
        "modelgate_requests_total{route=\"digits\",status=\"200\",code=\"\"} 2",
        "modelgate_requests_total{route=\"digits\",status=\"400\",code=\"invalid_json\"} 1",
        "modelgate_requests_total{route=\"none\",status=\"404\",code=\"route_not_found\"} 1",
        "modelgate_request_duration_seconds_count{route=\"digits\"} 3",
        "modelgate_config_generation 1",
    ];
    // Requests are counted when they are logged, just after the response is written.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    let text = loop {
        let metrics = get(gw.admin, "/metrics");
        assert_eq!(metrics.status, 200);
        assert!(
            metrics
                .header("content-type")
                .unwrap()
                .starts_with("text/plain")
        );
        let text = String::from_utf8(metrics.body).unwrap();
        if expected.iter().all(|l| text.contains(l)) || std::time::Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    };
    for line in expected {
        assert!(text.contains(line), "missing {line:?} in\n{text}");
    }
    // Access records are whole JSON objects, one per line.
    std::thread::sleep(std::time::Duration::from_millis(100));
    let logs = gw.logs();
    let access: Vec<serde_json::Value> = logs
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap())
        .filter(|v: &serde_json::Value| v.get("duration_us").is_some())
        .collect();
    assert_eq!(access.len(), 4, "{logs}");
    let bad = access
        .iter()
        .find(|v| v["status"] == 400)
        .expect("the 400 is logged");
    assert_eq!(bad["code"], "invalid_json");
    assert_eq!(bad["route"], "digits");
    let config = get(gw.admin, "/admin/config");
    assert_eq!(config.status, 200);
    assert_eq!(config.json()["generation"], 1);
}
