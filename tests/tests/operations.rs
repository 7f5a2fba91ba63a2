//! Operations surface: Prometheus metrics and JSON access/audit lines.

#![allow(clippy::unwrap_used)]

use modelgate_e2e::client::{get, post_json};
use modelgate_e2e::gateway::{GatewayProcess, admin_get, digits_route};
use modelgate_e2e::upstream::{Behaviour, Upstream};

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
        "modelgate_requests_total{route=\"digits\",model=\"digits\",status=\"200\",code=\"\"} 2",
        "modelgate_requests_total{route=\"digits\",model=\"digits\",status=\"400\",code=\"invalid_json\"} 1",
        "modelgate_requests_total{route=\"none\",model=\"\",status=\"404\",code=\"route_not_found\"} 1",
        "modelgate_request_duration_seconds_count{route=\"digits\"} 3",
        "modelgate_config_generation 1",
    ];
    gw.metrics_with(&expected);
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
    assert_eq!(bad["model"], "digits");
    // The config view is the admin token's holder's; health and metrics stay open.
    assert_eq!(get(gw.admin, "/admin/config").status, 401);
    assert_eq!(get(gw.admin, "/healthz").status, 200);
    let config = admin_get(gw.admin, "/admin/config");
    assert_eq!(config.status, 200);
    let view = config.json();
    assert_eq!(view["generation"], 1);
    assert_eq!(view["config"]["routes"][0]["name"], "digits");
    assert_eq!(view["config"]["server"]["grace_period"], "1s");
    assert_eq!(view["config"]["server"]["listen"], gw.addr.to_string());
    // Secrets are named, never shown: the admin token's env var, not its value.
    assert_eq!(
        view["config"]["server"]["admin_token"]["env"],
        "MG_TEST_ADMIN_TOKEN"
    );
    assert!(!String::from_utf8_lossy(&config.body).contains(modelgate_e2e::gateway::ADMIN_TOKEN));
}

#[test]
fn limiter_decisions_and_denials_by_stage_are_counted() {
    let up = Upstream::start(Behaviour::Echo);
    let setup = GatewayProcess::setup(&format!(
        "[auth]\nkey_store = \"keys.json\"\n[plans.default]\nrate = \"1/m\"\nburst = 2\n\n\
         [[routes]]\nname = \"echo\"\npath_prefix = \"/echo\"\n[routes.http]\nupstreams = [{:?}]\n",
        up.url()
    ));
    let key = setup.issue_key("acme", "default", "*");
    let gw = setup.start();
    let with_key = format!("x-api-key: {key}\r\n");
    for status in [200, 200, 429] {
        let r = post_json(gw.addr, "/echo/x", b"{}", &with_key);
        assert_eq!(r.status, status);
    }
    assert_eq!(post_json(gw.addr, "/echo/x", b"{}", "").status, 401);
    gw.metrics_with(&[
            "modelgate_ratelimit_decisions_total{route=\"echo\",decision=\"admitted\",limited_by=\"\"} 2",
            "modelgate_ratelimit_decisions_total{route=\"echo\",decision=\"rate_limited\",limited_by=\"consumer\"} 1",
            "modelgate_denials_total{stage=\"rate_limit\",code=\"rate_limited\"} 1",
            "modelgate_denials_total{stage=\"auth\",code=\"missing_credentials\"} 1",
    ]);
    // The access log carries the decision too; no consumer id reaches a metric label.
    let logs = gw.logs_with("\"ratelimit\":\"rate_limited\"");
    assert!(logs.contains("\"ratelimit\":\"rate_limited\""), "{logs}");
    // Forwarded requests log the upstream time and what the gateway added to it.
    let forwarded = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["status"] == 200)
        .unwrap();
    let (total, upstream, added) = (
        forwarded["duration_us"].as_u64().unwrap(),
        forwarded["upstream_us"].as_u64().unwrap(),
        forwarded["gateway_us"].as_u64().unwrap(),
    );
    // (each rounded down to whole microseconds)
    assert!(total.abs_diff(upstream + added) <= 1, "{forwarded}");
    let metrics = String::from_utf8(get(gw.admin, "/metrics").body).unwrap();
    assert!(!metrics.contains("acme"));
}

#[test]
fn audit_records_go_to_their_own_file_when_configured() {
    let up = Upstream::start(Behaviour::Echo);
    let setup = GatewayProcess::setup(&format!(
        "[auth]\nkey_store = \"keys.json\"\n\n[[routes]]\nname = \"echo\"\npath_prefix = \"/echo\"\n\
         [routes.http]\nupstreams = [{:?}]\n",
        up.url()
    ))
    .server("audit_log = \"audit.jsonl\"\n");
    let key = setup.issue_key("acme", "default", "*");
    let gw = setup.start();
    let wrong = format!("x-api-key: {}x\r\n", &key[..key.len() - 1]);
    assert_eq!(post_json(gw.addr, "/echo/x", b"{}", &wrong).status, 401);
    assert_eq!(gw.reload().status, 200);

    let path = gw.setup.config_path().with_file_name("audit.jsonl");
    let mut events = Vec::new();
    for _ in 0..100 {
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        events = text
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["event"].clone())
            .collect();
        if events.len() >= 3 {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    // The CLI's key change, the gateway's auth failure and reload, in order.
    assert_eq!(
        events,
        ["key_issued", "auth_failure", "reload"],
        "{events:?}"
    );
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600);
    let audit = std::fs::read_to_string(&path).unwrap();
    let secret = key.rsplit('_').next().unwrap();
    assert!(
        !audit.contains(secret),
        "a key secret reached the audit log"
    );
    // Not on stderr as well: the access log stays there (written just after the response,
    // so wait for it), the audit log does not.
    let logs = gw.logs_with("\"duration_us\"");
    assert!(logs.contains("\"duration_us\""), "{logs}");
    assert!(!logs.contains("\"event\":\"auth_failure\""), "{logs}");
}

#[test]
fn readyz_needs_an_upstream_up_for_every_http_route() {
    let up = Upstream::start(Behaviour::Echo);
    let dead = format!("http://127.0.0.1:{}", modelgate_e2e::free_port());
    let gw = GatewayProcess::setup(&format!(
        "{}[[routes]]\nname = \"live\"\npath_prefix = \"/live\"\npublic = true\n[routes.http]\nupstreams = [{:?}]\n\n\
         [[routes]]\nname = \"half\"\npath_prefix = \"/half\"\npublic = true\n[routes.http]\nupstreams = [{:?}, {dead:?}]\n\n\
         [[routes]]\nname = \"gone\"\npath_prefix = \"/gone\"\npublic = true\n[routes.http]\nupstreams = [{dead:?}]\n",
        digits_route(),
        up.url(),
        up.url(),
    ))
    .upstream_checks("100ms")
    .start();
    let expected = [
        format!(
            "modelgate_upstream_up{{route=\"gone\",upstream=\"{}\"}} 0",
            &dead[7..]
        ),
        format!(
            "modelgate_upstream_up{{route=\"half\",upstream=\"{}\"}} 0",
            &dead[7..]
        ),
        format!(
            "modelgate_upstream_up{{route=\"live\",upstream=\"{}\"}} 1",
            &up.url()[7..]
        ),
    ];
    gw.metrics_with(&expected.iter().map(String::as_str).collect::<Vec<_>>());
    let r = get(gw.admin, "/readyz");
    assert_eq!(r.status, 503);
    let body = r.json();
    assert_eq!(body["ready"], false);
    // Only the route with no upstream up holds readiness back.
    let unready: Vec<&String> = body["routes_without_upstreams"]
        .as_object()
        .unwrap()
        .keys()
        .collect();
    assert_eq!(unready, ["gone"]);
    assert_eq!(
        get(gw.admin, "/healthz").status,
        200,
        "liveness is not readiness"
    );

    // Without that route the gateway is ready; the other routes' health survives the reload.
    let path = gw.setup.config_path();
    let config = std::fs::read_to_string(&path).unwrap();
    let cut = config.find("[[routes]]\nname = \"gone\"").unwrap();
    std::fs::write(&path, &config[..cut]).unwrap();
    assert_eq!(gw.reload().status, 200);
    let r = get(gw.admin, "/readyz");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["ready"], true);
}
