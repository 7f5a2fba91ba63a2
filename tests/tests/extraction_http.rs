//! Model-extraction detection on an HTTP-backed route, through real gateway processes: the
//! upstream is a second gateway serving the bundled model (real KServe v2 answers) or a
//! scripted upstream. Benign consumers get rounded probabilities, a random prober is
//! hardened then blocked with nothing more reaching the upstream, and answers the gateway
//! cannot check never reach a consumer.

#![allow(clippy::unwrap_used)]

use modelgate_e2e::client::{self, Conn, post_bytes};
use modelgate_e2e::digits::{INFER, infer, infer_body, infer_with, output, probe_until_blocked};
use modelgate_e2e::gateway::{GatewayProcess, Setup, digits_route};
use modelgate_e2e::upstream::{Behaviour, Upstream};
use modelgate_e2e::{holdout, repo_root};
use serde_json::{Value, json};

/// A gateway whose `digits` route forwards to `upstream` with extraction detection on.
fn setup(upstream: &str, extraction: &str) -> Setup {
    let models = repo_root().join("models");
    GatewayProcess::setup(&format!(
        "[auth]\nkey_store = \"keys.json\"\n\n[plans.default]\nrate = \"1000/s\"\nburst = 1000\n\n\
         [[routes]]\nname = \"digits\"\nmodel = \"digits\"\n[routes.validate]\nmetadata = {:?}\n\
         [routes.http]\nupstreams = [{upstream:?}]\n\
         [routes.extraction]\nprofile = {:?}\ntrusted = [\"partner\"]\n{extraction}",
        models.join("digits.json"),
        models.join("digits.profile.json"),
    ))
}

/// `GET` the model's v2 metadata as the holder of `key`.
fn metadata(conn: &mut Conn, key: &str) -> client::Response {
    conn.request(
        format!("GET /v2/models/digits HTTP/1.1\r\nHost: t\r\nx-api-key: {key}\r\n\r\n").as_bytes(),
    )
    .unwrap()
}

fn is_rounded(p: &[f64]) -> bool {
    p.iter()
        .all(|x| ((x * 100.0).round() - x * 100.0).abs() < 1e-3)
}

#[test]
fn an_http_route_scores_hardens_and_blocks_like_an_embedded_one() {
    let backend = GatewayProcess::start(&digits_route());
    let setup = setup(&format!("http://{}", backend.addr), "");
    let [benign, attacker, partner] =
        ["benign", "attacker", "partner"].map(|c| setup.issue_key(c, "default", "digits"));
    let gw = setup.start();
    let (rows, _) = holdout();
    let mut conn = Conn::open(gw.addr).unwrap();
    let mut forwarded = 0;

    // Benign replay: answered, probabilities rounded to 2 decimals, the label kept.
    for row in rows.iter().take(30) {
        let r = infer(&mut conn, &benign, row);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        forwarded += 1;
        assert!(is_rounded(&output(&r, "probabilities").unwrap()));
        assert_eq!(output(&r, "label").unwrap().len(), 1);
    }
    // A trusted consumer gets the upstream's answer unchanged.
    let r = infer(&mut conn, &partner, &rows[0]);
    forwarded += 1;
    assert!(!is_rounded(&output(&r, "probabilities").unwrap()));

    // What could not be checked is refused before the upstream: a request leaving out
    // the scored output, and a model sub-path other than metadata, ready and infer.
    let r = infer_with(&mut conn, &benign, &rows[1], Some(&["label"]));
    assert_eq!((r.status, r.error_code().as_str()), (422, "invalid_input"));
    let r = infer_with(
        &mut conn,
        &benign,
        &rows[1],
        Some(&["label", "probabilities"]),
    );
    assert_eq!(r.status, 200);
    forwarded += 1;
    let r = conn
        .request(&post_bytes(
            "/v2/models/digits/explain",
            b"{}",
            &format!("x-api-key: {benign}\r\n"),
        ))
        .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (404, "route_not_found")
    );
    // Metadata still passes through.
    let r = metadata(&mut conn, &benign);
    assert_eq!(r.status, 200);
    forwarded += 1;

    // Random probing: top-1 labels within 10 queries, then blocked.
    let probing = probe_until_blocked(&mut conn, &attacker, 60, 0x9e3779b97f4a7c15);
    forwarded += probing.answered;
    let hardened_at = probing
        .hardened_at
        .expect("random probing was never hardened");
    assert!(hardened_at <= 10, "hardened only at query {hardened_at}");
    assert!(
        probing.blocked_at.is_some(),
        "random probing was never blocked"
    );
    // Blocked: refused again, metadata included, and nothing of it reaches the upstream.
    for row in &rows[..3] {
        assert_eq!(infer(&mut conn, &attacker, row).status, 403);
    }
    let r = metadata(&mut conn, &attacker);
    assert_eq!(r.status, 403);
    assert_eq!(infer(&mut conn, &benign, &rows[40]).status, 200);
    forwarded += 1;
    backend.metrics_with(&[&format!(
        "modelgate_requests_total{{route=\"digits\",model=\"digits\",status=\"200\",code=\"\"}} {forwarded}"
    )]);
    gw.metrics_with(&[
        "modelgate_extraction_actions_total{route=\"digits\",action=\"harden\"}",
        "modelgate_extraction_actions_total{route=\"digits\",action=\"block\"}",
    ]);
    assert!(gw.logs().contains("\"event\":\"extraction_suspected\""));
}

/// A raw `200` HTTP response with a JSON body.
fn raw_200(body: &str) -> &'static str {
    Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .into_boxed_str(),
    )
}

fn v2_answer() -> String {
    json!({
        "model_name": "digits",
        "outputs": [
            {"name": "logits", "datatype": "FP32", "shape": [1, 10],
             "data": [0.5, 7.25, -1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.125]},
            {"name": "probabilities", "datatype": "FP32", "shape": [1, 10],
             "data": [[0.001234, 0.987654, 0.0011, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001, 0.005012]]},
            {"name": "label", "datatype": "INT64", "shape": [1], "data": [1]}
        ]
    })
    .to_string()
}

#[test]
fn answers_the_gateway_cannot_check_never_reach_a_consumer() {
    let (rows, _) = holdout();
    let row = &rows[0];
    let start = |behaviour: Behaviour, extraction: &str| {
        let upstream = Upstream::start(behaviour);
        let setup = setup(&upstream.url(), extraction);
        let keys = ["benign", "partner"].map(|c| setup.issue_key(c, "default", "digits"));
        (setup.start(), keys, upstream)
    };

    // A v2 answer with logits: rounded probabilities and the label for an untrusted
    // consumer, logits dropped; everything for a trusted one.
    let (gw, [benign, partner], _up) = start(Behaviour::Raw(raw_200(&v2_answer())), "");
    let mut conn = Conn::open(gw.addr).unwrap();
    let r = infer(&mut conn, &benign, row);
    assert_eq!(r.status, 200);
    // (the default dither reports each entry that rounds to 0 as 0 or 0.01)
    let p = output(&r, "probabilities").unwrap();
    assert_eq!((p[1], p[9]), (0.99, 0.01), "{p:?}");
    assert!(p.iter().all(|x| [0.0, 0.01, 0.99].contains(x)), "{p:?}");
    assert_eq!(output(&r, "label").unwrap(), [1.0]);
    assert!(output(&r, "logits").is_none(), "{}", r.json());
    assert_eq!(r.json()["model_name"], "digits");
    assert_eq!(
        r.header("content-length").unwrap(),
        r.body.len().to_string()
    );
    let r = infer(&mut conn, &partner, row);
    assert_eq!(
        r.json(),
        serde_json::from_str::<Value>(&v2_answer()).unwrap()
    );

    // Not v2 JSON, the scored output missing or of another size, or over the response
    // cap: 502 `upstream_invalid_response` for every consumer.
    for (body, extraction) in [
        ("not json".to_string(), ""),
        (r#"{"outputs":[{"name":"label","datatype":"INT64","shape":[1],"data":[1]}]}"#.into(), ""),
        (
            r#"{"outputs":[{"name":"probabilities","datatype":"FP32","shape":[1,2],"data":[0.5,0.5]}]}"#
                .into(),
            "",
        ),
        (v2_answer(), "max_response_bytes = 64\n"),
    ] {
        let (gw, [benign, partner], up) = start(Behaviour::Raw(raw_200(&body)), extraction);
        for key in [&benign, &partner] {
            let r = client::post_json(
                gw.addr,
                INFER,
                &infer_body(row, None),
                &format!("x-api-key: {key}\r\n"),
            );
            assert_eq!(
                (r.status, r.error_code().as_str()),
                (502, "upstream_invalid_response"),
                "{body}"
            );
            assert!(!String::from_utf8_lossy(&r.body).contains("0.98"));
        }
        assert_eq!(up.seen().len(), 2);
        assert!(gw.logs_with("upstream response refused").contains("upstream response refused"));
    }

    // The upstream's own errors pass as they are; it is asked for no content coding.
    let error = "HTTP/1.1 400 Bad Request\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{\"error\":\"nope\"}\n";
    let (gw, [benign, _], up) = start(Behaviour::Raw(error), "");
    let r = client::post_json(
        gw.addr,
        INFER,
        &infer_body(row, None),
        &format!("x-api-key: {benign}\r\naccept-encoding: gzip\r\n"),
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json(), json!({"error": "nope"}));
    assert_eq!(up.seen()[0].header("accept-encoding"), None);
}
