//! Model-extraction detection through a real gateway: benign consumers get rounded
//! probabilities and are never flagged; a random-probing consumer gets top-1 labels from its
//! first out-of-distribution query on and is then blocked (403 `extraction_suspected`),
//! listed by the admin API, and cleared by an operator; trusted consumers get full precision.

#![allow(clippy::unwrap_used)]

use modelgate_e2e::client::{self, Conn, get};
use modelgate_e2e::digits::{INFER, infer, output, probe_until_blocked};
use modelgate_e2e::gateway::{ADMIN_TOKEN, GatewayProcess, Setup, admin_get};
use modelgate_e2e::{holdout, random_rows, repo_root};

fn setup() -> Setup {
    let models = repo_root().join("models");
    GatewayProcess::setup(&format!(
        "[auth]\nkey_store = \"keys.json\"\n\n[plans.default]\nrate = \"1000/s\"\nburst = 1000\n\n\
         [[routes]]\nname = \"digits\"\nmodel = \"digits\"\n[routes.embedded]\nonnx = {:?}\nmetadata = {:?}\n\
         [routes.extraction]\nprofile = {:?}\ntrusted = [\"partner\"]\n",
        models.join("digits.onnx"),
        models.join("digits.json"),
        models.join("digits.profile.json"),
    ))
}

fn issue(setup: &Setup, consumer: &str) -> String {
    setup.issue_key(consumer, "default", "digits")
}

#[test]
fn benign_is_rounded_probing_is_hardened_then_blocked_and_operators_can_clear() {
    let setup = setup();
    let (benign, attacker, partner) = (
        issue(&setup, "benign"),
        issue(&setup, "attacker"),
        issue(&setup, "partner"),
    );
    let gw = setup.start();
    let (rows, _) = holdout();

    // Benign replay: every answer 200, probabilities rounded to 2 decimals.
    let mut conn = Conn::open(gw.addr).unwrap();
    for row in rows.iter().take(40) {
        let r = infer(&mut conn, &benign, row);
        assert_eq!(r.status, 200);
        for p in output(&r, "probabilities").unwrap() {
            assert!(
                ((p * 100.0).round() - p * 100.0).abs() < 1e-3,
                "{p} not rounded"
            );
        }
    }
    // A trusted consumer gets full precision.
    let r = infer(&mut conn, &partner, &rows[0]);
    assert!(
        output(&r, "probabilities")
            .unwrap()
            .iter()
            .any(|p| ((p * 100.0).round() - p * 100.0).abs() > 1e-3),
        "trusted output rounded"
    );

    // Random probing: the first random row is itself out of distribution, so its answer is
    // already a top-1 label (before the consumer is a suspect); blocked soon after.
    let probing = probe_until_blocked(&mut conn, &attacker, 60, 0x9e3779b97f4a7c15);
    let hardened_at = probing
        .hardened_at
        .expect("random probing was never hardened");
    assert_eq!(hardened_at, 1, "first top-1 answer at query {hardened_at}");
    let blocked_at = probing
        .blocked_at
        .expect("random probing was never blocked");

    // The benign consumer is untouched.
    assert_eq!(infer(&mut conn, &benign, &rows[41]).status, 200);

    // Metrics count the detector's actions per route; the block is also a denial.
    gw.metrics_with(&[
        "modelgate_extraction_actions_total{route=\"digits\",action=\"harden_query\"}",
        "modelgate_extraction_actions_total{route=\"digits\",action=\"harden\"}",
        "modelgate_extraction_actions_total{route=\"digits\",action=\"block\"}",
        "modelgate_denials_total{stage=\"extraction\",code=\"extraction_suspected\"}",
    ]);

    // The admin API lists the attacker (and only it) to the admin token's holder (the
    // suspects themselves must not learn where they stand), and an operator clears it.
    assert_eq!(get(gw.admin, "/admin/suspects").status, 401);
    let wrong = "GET /admin/suspects HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\n\r\n";
    assert_eq!(client::send(gw.admin, wrong.as_bytes()).status, 401);
    let suspects = admin_get(gw.admin, "/admin/suspects").json();
    let listed = suspects["routes"]["digits"].as_array().unwrap();
    assert!(listed.iter().any(|s| s["name"] == "attacker"), "{suspects}");
    assert!(!listed.iter().any(|s| s["name"] == "benign"));
    let raw = format!(
        "DELETE /admin/suspects/consumer:attacker HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n"
    );
    assert_eq!(client::send(gw.admin, raw.as_bytes()).status, 200);
    assert_eq!(
        infer(&mut conn, &attacker, &rows[0]).status,
        200,
        "still blocked after clear (blocked at {blocked_at})"
    );
    let logs = gw.logs();
    assert!(
        logs.contains("\"event\":\"extraction_suspected\"")
            && logs.contains("\"consumer\":\"attacker\"")
    );
}

/// In a batch, only the row that is itself out of distribution is answered with its label
/// alone: the natural row next to it gets the same answer it gets on its own.
#[test]
fn a_suspicious_row_in_a_batch_is_answered_with_its_label_only() {
    let setup = setup();
    let (alone, batcher) = (issue(&setup, "alone"), issue(&setup, "batcher"));
    let gw = setup.start();
    let (rows, _) = holdout();
    let random = random_rows(1, 0x5eed).remove(0);
    let mut conn = Conn::open(gw.addr).unwrap();
    let natural = output(&infer(&mut conn, &alone, &rows[0]), "probabilities").unwrap();

    let data = [rows[0].clone(), random].concat();
    let body = serde_json::json!({"inputs": [{
        "name": "input", "shape": [2, 64], "datatype": "FP32", "data": data,
    }]});
    let r = conn
        .request(&client::post_bytes(
            INFER,
            body.to_string().as_bytes(),
            &format!("x-api-key: {batcher}\r\n"),
        ))
        .unwrap();
    assert_eq!(r.status, 200);
    let p = output(&r, "probabilities").unwrap();
    assert_eq!(p[..10], natural[..], "the natural row's answer changed");
    assert_eq!(p[10..].iter().filter(|x| **x == 1.0).count(), 1, "{p:?}");
    assert_eq!(p[10..].iter().filter(|x| **x == 0.0).count(), 9, "{p:?}");
    gw.metrics_with(&[
        "modelgate_extraction_actions_total{route=\"digits\",action=\"harden_query\"} 1\n",
    ]);
}

#[test]
fn a_throttled_prober_gets_a_cut_rate_before_the_block() {
    let models = repo_root().join("models");
    let setup = GatewayProcess::setup(&format!(
        "[auth]\nkey_store = \"keys.json\"\n\n[plans.default]\nrate = \"20/s\"\nburst = 20\n\n\
         [[routes]]\nname = \"digits\"\nmodel = \"digits\"\n[routes.embedded]\nonnx = {:?}\nmetadata = {:?}\n\
         [routes.extraction]\nprofile = {:?}\n",
        models.join("digits.onnx"),
        models.join("digits.json"),
        models.join("digits.profile.json"),
    ));
    let attacker = issue(&setup, "attacker");
    let gw = setup.start();
    let mut conn = Conn::open(gw.addr).unwrap();
    let mut statuses = Vec::new();
    for row in random_rows(40, 7) {
        let r = infer(&mut conn, &attacker, &row);
        statuses.push(r.status);
        if r.status == 403 {
            break;
        }
        if r.status == 429 {
            assert_eq!(r.error_code(), "rate_limited");
        }
    }
    // Within the plan (20/s, burst 20) nothing would be refused: the 429s come from the cut
    // rate (a tenth of the plan) the throttle rung imposes.
    assert!(statuses.contains(&429), "never throttled: {statuses:?}");
    let first_429 = statuses.iter().position(|s| *s == 429).unwrap();
    assert!(first_429 < 20, "{statuses:?}");
}
