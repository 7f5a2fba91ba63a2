//! The embedded ONNX backend through a real gateway process: KServe v2 endpoints,
//! agreement with tract run directly, held-out accuracy, and every error case.

#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;

use modelgate_e2e::client::{self, Conn, get, post_bytes, post_json};
use modelgate_e2e::gateway::{GatewayProcess, digits_route};
use modelgate_e2e::{holdout, repo_root};
use serde_json::{Value, json};
use tract_onnx::prelude::*;

const INFER: &str = "/v2/models/digits/infer";

fn infer_body(rows: &[Vec<f32>]) -> Vec<u8> {
    let data: Vec<f32> = rows.iter().flatten().copied().collect();
    json!({"id": "t", "inputs": [{"name": "input", "shape": [rows.len(), 64], "datatype": "FP32", "data": data}]})
        .to_string()
        .into_bytes()
}

fn output<'a>(response: &'a Value, name: &str) -> &'a Value {
    response["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == name)
        .unwrap()
}

fn start() -> GatewayProcess {
    GatewayProcess::start(&digits_route())
}

#[test]
fn inference_matches_tract_run_directly() {
    let gw = start();
    let (rows, _) = holdout();
    let batch = &rows[..32];
    let r = post_json(gw.addr, INFER, &infer_body(batch), "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let v = r.json();
    assert_eq!(v["id"], "t");
    assert_eq!(v["model_name"], "digits");
    let probs = output(&v, "probabilities");
    assert_eq!(probs["shape"], json!([32, 10]));
    assert_eq!(probs["datatype"], "FP32");

    let model = tract_onnx::onnx()
        .model_for_path(repo_root().join("models/digits.onnx"))
        .unwrap()
        .into_optimized()
        .unwrap()
        .into_runnable()
        .unwrap();
    let flat: Vec<f32> = batch.iter().flatten().copied().collect();
    let input = Tensor::from_shape(&[32, 64], &flat).unwrap();
    let out = model.run(tvec!(input.into())).unwrap();
    let direct_probs = out[0]
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<f32>()
        .unwrap()
        .to_vec();
    let direct_labels = out[1]
        .try_as_plain_ram()
        .unwrap()
        .as_slice::<i64>()
        .unwrap()
        .to_vec();

    let got: Vec<f32> = probs["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect();
    assert_eq!(got.len(), direct_probs.len());
    for (a, b) in got.iter().zip(&direct_probs) {
        assert!((a - b).abs() <= 1e-6, "gateway {a} vs tract {b}");
    }
    let labels: Vec<i64> = output(&v, "label")["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_i64().unwrap())
        .collect();
    assert_eq!(labels, direct_labels);
}

#[test]
fn held_out_accuracy_through_the_gateway_is_at_least_95_percent() {
    let gw = start();
    let (rows, labels) = holdout();
    let mut conn = Conn::open(gw.addr).unwrap();
    let mut correct = 0;
    for (chunk, expected) in rows.chunks(32).zip(labels.chunks(32)) {
        let r = conn
            .request(&post_bytes(INFER, &infer_body(chunk), ""))
            .unwrap();
        assert_eq!(r.status, 200);
        let v = r.json();
        let got = output(&v, "label")["data"].as_array().unwrap().clone();
        correct += got
            .iter()
            .zip(expected)
            .filter(|(g, e)| g.as_i64() == Some(**e))
            .count();
    }
    let accuracy = correct as f64 / labels.len() as f64;
    assert!(labels.len() >= 300, "held-out set too small");
    assert!(accuracy >= 0.95, "accuracy {accuracy}");
}

#[test]
fn v2_health_metadata_and_requested_outputs() {
    let gw = start();
    assert_eq!(
        get(gw.addr, "/v2/health/live").json(),
        json!({"live": true})
    );
    assert_eq!(
        get(gw.addr, "/v2/health/ready").json(),
        json!({"ready": true})
    );
    assert_eq!(get(gw.addr, "/v2").json()["name"], "modelgate");
    let meta = get(gw.addr, "/v2/models/digits").json();
    assert_eq!(meta["name"], "digits");
    assert_eq!(meta["inputs"][0]["shape"], json!([-1, 64]));
    assert_eq!(
        get(gw.addr, "/v2/models/digits/ready").json()["ready"],
        true
    );
    assert_eq!(
        get(gw.addr, "/v2/models/digits/versions/1/ready").status,
        200
    );
    assert_eq!(
        get(gw.addr, "/v2/models/digits/versions/9/ready").error_code(),
        "model_not_found"
    );
    assert_eq!(get(gw.admin, "/healthz").status, 200);

    let (rows, _) = holdout();
    let body = json!({
        "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": rows[0], "parameters": {"x": 1}}],
        "outputs": [{"name": "label"}],
        "parameters": {"priority": 1}
    });
    let v = post_json(gw.addr, INFER, body.to_string().as_bytes(), "").json();
    assert_eq!(v["outputs"].as_array().unwrap().len(), 1);
    assert_eq!(v["outputs"][0]["name"], "label");
    assert!(v.get("id").is_none());
}

fn expect_error(addr: SocketAddr, raw: &[u8], status: u16, code: &str) {
    let r = client::send(addr, raw);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (status, code),
        "{}",
        String::from_utf8_lossy(raw)
    );
    assert_eq!(r.header("content-type"), Some("application/json"));
}

#[test]
fn every_error_case_is_a_specific_json_error() {
    let gw = start();
    let a = gw.addr;
    expect_error(
        a,
        b"GET /nowhere HTTP/1.1\r\nHost: t\r\n\r\n",
        404,
        "route_not_found",
    );
    expect_error(
        a,
        b"GET /v2/models/other/infer HTTP/1.1\r\nHost: t\r\n\r\n",
        404,
        "model_not_found",
    );
    expect_error(
        a,
        b"GET /v2/models/digits/explain HTTP/1.1\r\nHost: t\r\n\r\n",
        404,
        "route_not_found",
    );
    expect_error(
        a,
        b"GET /v2/models/digits/infer HTTP/1.1\r\nHost: t\r\n\r\n",
        405,
        "method_not_allowed",
    );
    let r = client::send(a, b"DELETE /v2/models/digits HTTP/1.1\r\nHost: t\r\n\r\n");
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, HEAD")));
    expect_error(
        a,
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: t\r\n\r\n",
        411,
        "length_required",
    );
    expect_error(
        a,
        &post_bytes(INFER, b"{\"inputs\": [", ""),
        400,
        "invalid_json",
    );
    expect_error(a, &post_bytes(INFER, b"\xff\xfe", ""), 400, "invalid_json");
    expect_error(
        a,
        &post_bytes(INFER, b"{\"inputs\": 5}", ""),
        422,
        "invalid_input",
    );
    let wrong_shape = json!({"inputs": [{"name": "input", "shape": [1, 63], "datatype": "FP32", "data": vec![0; 63]}]});
    expect_error(
        a,
        &post_bytes(INFER, wrong_shape.to_string().as_bytes(), ""),
        422,
        "invalid_input",
    );
    let too_big_batch = json!({"inputs": [{"name": "input", "shape": [65, 64], "datatype": "FP32", "data": vec![0; 65 * 64]}]});
    expect_error(
        a,
        &post_bytes(INFER, too_big_batch.to_string().as_bytes(), ""),
        422,
        "invalid_input",
    );
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    expect_error(
        a,
        &post_bytes(INFER, deep.as_bytes(), ""),
        400,
        "invalid_json",
    );
    expect_error(
        a,
        b"GET /v2/../admin HTTP/1.1\r\nHost: t\r\n\r\n",
        400,
        "bad_request",
    );
    // Conflicting framing never reaches the pipeline: Pingora's HTTP parser refuses the head,
    // answered with 400 and a close (request smuggling defence; tests/tests/downstream.rs).
    let r = client::send(a, b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\n{}");
    assert_eq!((r.status, r.header("connection")), (400, Some("close")));
    // Declared too large: refused before the body is read, and the connection is closed.
    let mut conn = Conn::open(a).unwrap();
    let r = conn
        .request(
            b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: t\r\nContent-Length: 2000000\r\n\r\n",
        )
        .unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "payload_too_large")
    );
    assert!(conn.is_closed(std::time::Duration::from_secs(5)));
    // Nothing above broke the gateway.
    assert_eq!(get(a, "/v2/health/live").status, 200);
}

#[test]
fn chunked_body_over_the_cap_is_refused_while_streaming() {
    let gw = GatewayProcess::start(&format!(
        "[limits]\nmax_body_bytes = 1000\n\n{}",
        digits_route()
    ));
    let mut conn = Conn::open(gw.addr).unwrap();
    conn.send(
        b"POST /v2/models/digits/infer HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n\r\n",
    )
    .unwrap();
    let chunk = format!("{:x}\r\n{}\r\n", 600, "a".repeat(600));
    conn.send(chunk.as_bytes()).unwrap();
    conn.send(chunk.as_bytes()).unwrap();
    // The client has not finished its body: the answer comes without waiting for the end.
    let r = conn.read_response().unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (413, "payload_too_large")
    );
}

#[test]
fn expect_100_continue_is_answered_for_an_acceptable_body() {
    let gw = start();
    let (rows, _) = holdout();
    let body = infer_body(&rows[..1]);
    let mut conn = Conn::open(gw.addr).unwrap();
    conn.send(
        format!("POST {INFER} HTTP/1.1\r\nHost: t\r\nExpect: 100-continue\r\nContent-Length: {}\r\n\r\n", body.len())
            .as_bytes(),
    )
    .unwrap();
    let interim = conn.read_response().unwrap();
    assert_eq!(interim.status, 100);
    conn.send(&body).unwrap();
    assert_eq!(conn.read_response().unwrap().status, 200);
}

#[test]
fn slow_body_times_out_with_408() {
    let gw = GatewayProcess::start(&format!(
        "[limits]\nbody_read_timeout = \"500ms\"\n\n{}",
        digits_route()
    ));
    let mut conn = Conn::open(gw.addr).unwrap();
    conn.send(
        format!("POST {INFER} HTTP/1.1\r\nHost: t\r\nContent-Length: 100\r\n\r\n{{").as_bytes(),
    )
    .unwrap();
    let r = conn.read_response().unwrap();
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (408, "request_timeout")
    );
}

#[test]
fn concurrent_requests_all_succeed_with_their_own_answers() {
    let gw = start();
    let (rows, labels) = holdout();
    let addr = gw.addr;
    let handles: Vec<_> = (0..8)
        .map(|t| {
            let rows = rows.clone();
            let labels = labels.clone();
            std::thread::spawn(move || {
                let mut conn = Conn::open(addr).unwrap();
                let mut agree = 0;
                for i in (t..200).step_by(8) {
                    let mut body = json!({"id": i.to_string(), "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": rows[i]}]});
                    body["id"] = json!(i.to_string());
                    let r = conn.request(&post_bytes(INFER, body.to_string().as_bytes(), "")).unwrap();
                    assert_eq!(r.status, 200);
                    let v = r.json();
                    assert_eq!(v["id"], i.to_string());
                    if output(&v, "label")["data"][0].as_i64() == Some(labels[i]) {
                        agree += 1;
                    }
                }
                agree
            })
        })
        .collect();
    let agree: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    assert!(agree >= 190, "{agree} of 200 correct");
}
