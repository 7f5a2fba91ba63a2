//! Input validation through a real gateway: a corpus of malformed bodies (never a 5xx, 422s
//! with JSON pointers), valid requests forwarded byte for byte, contracts from a metadata
//! file or fetched from the backend, JSON Schema on a path-prefix route, the binary tensor
//! extension, gzip with its caps, and media types.

#![allow(clippy::unwrap_used)]

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::time::Duration;

use modelgate_e2e::client::{self, Response, post_json};
use modelgate_e2e::gateway::{GatewayProcess, digits_route};
use modelgate_e2e::upstream::{Behaviour, Upstream};
use modelgate_e2e::{holdout, repo_root};
use serde_json::{Value, json};

const INFER: &str = "/v2/models/digits/infer";
const REMOTE_INFER: &str = "/v2/models/remote/infer";

fn fixture(name: &str) -> PathBuf {
    repo_root().join("tests/fixtures").join(name)
}

fn tensor(shape: Value, datatype: &str, data: Value) -> Value {
    json!({"inputs": [{"name": "input", "shape": shape, "datatype": datatype, "data": data}]})
}

fn row_body(row: &[f32]) -> Vec<u8> {
    tensor(json!([1, 64]), "FP32", json!(row))
        .to_string()
        .into_bytes()
}

/// A POST with exactly these headers (each line ending in `\r\n`) and body.
fn raw_post(path: &str, headers: &str, body: &[u8]) -> Vec<u8> {
    let mut raw = format!(
        "POST {path} HTTP/1.1\r\nHost: t\r\nContent-Length: {}\r\n{headers}\r\n",
        body.len()
    )
    .into_bytes();
    raw.extend_from_slice(body);
    raw
}

/// A client error with a JSON error body; never a 5xx.
fn assert_client_error(r: &Response, what: &str) {
    assert!(
        (400..500).contains(&r.status),
        "{what}: status {} ({})",
        r.status,
        String::from_utf8_lossy(&r.body)
    );
    assert_eq!(r.header("content-type"), Some("application/json"), "{what}");
    assert!(!r.error_code().is_empty(), "{what}: no error code");
}

fn assert_error(r: &Response, status: u16, code: &str, what: &str) {
    assert_client_error(r, what);
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (status, code),
        "{what}: {}",
        String::from_utf8_lossy(&r.body)
    );
}

/// The JSON pointers of a 422's `error.details`, each checked to be a pointer.
fn pointers(r: &Response) -> Vec<String> {
    let v = r.json();
    let details = v["error"]["details"]
        .as_array()
        .unwrap_or_else(|| panic!("no details: {v}"));
    assert!(!details.is_empty(), "empty details: {v}");
    details
        .iter()
        .map(|d| {
            let path = d["path"].as_str().unwrap().to_string();
            assert!(
                path.is_empty() || path.starts_with('/'),
                "not a pointer: {path}"
            );
            assert!(d["message"].as_str().is_some_and(|m| !m.is_empty()));
            path
        })
        .collect()
}

fn label_of(r: &Response) -> i64 {
    let v = r.json();
    v["outputs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|o| o["name"] == "label")
        .unwrap_or_else(|| panic!("no label output: {v}"))["data"][0]
        .as_i64()
        .unwrap()
}

#[test]
fn malformed_bodies_are_4xx_json_errors_never_5xx() {
    let gw = GatewayProcess::start(&digits_route());
    let a = gw.addr;
    let (rows, _) = holdout();
    let ok_row = json!(rows[0]);
    let row_text = ok_row.to_string();
    let send = |body: &[u8]| post_json(a, INFER, body, "");

    // Not JSON (or JSON a parser may read two ways): 400 invalid_json.
    let valid_inputs = format!(
        r#""inputs": [{{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": {row_text}}}]"#
    );
    let mut invalid_utf8 = b"{\"id\": \"\xff\xfe\", ".to_vec();
    invalid_utf8.extend_from_slice(valid_inputs.as_bytes());
    invalid_utf8.push(b'}');
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_data = format!(
        r#"{{"inputs": [{{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": {}0{}}}]}}"#,
        "[".repeat(100),
        "]".repeat(100)
    );
    let with_value = |v: &str| {
        format!(
            r#"{{"inputs": [{{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [{v}{}]}}]}}"#,
            ", 0".repeat(63)
        )
    };
    let invalid_json: Vec<(&str, Vec<u8>)> = vec![
        (
            "truncated",
            br#"{"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": [0, 1"#
                .to_vec(),
        ),
        ("empty object cut", b"{".to_vec()),
        ("invalid UTF-8", invalid_utf8),
        (
            "lone surrogate",
            format!(r#"{{"id": "\ud800", {valid_inputs}}}"#).into_bytes(),
        ),
        (
            "lone low surrogate",
            format!(r#"{{"id": "a\udc00b", {valid_inputs}}}"#).into_bytes(),
        ),
        ("100 000 nested arrays", deep.into_bytes()),
        ("nesting inside data", deep_data.into_bytes()),
        ("1e400", with_value("1e400").into_bytes()),
        ("-1e400", with_value("-1e400").into_bytes()),
        ("NaN", with_value("NaN").into_bytes()),
        ("Infinity", with_value("Infinity").into_bytes()),
        (
            "duplicate top-level key",
            format!(r#"{{{valid_inputs}, {valid_inputs}}}"#).into_bytes(),
        ),
        (
            "duplicate tensor key",
            format!(
                r#"{{"inputs": [{{"name": "input", "name": "input", "shape": [1, 64], "datatype": "FP32", "data": {row_text}}}]}}"#
            )
            .into_bytes(),
        ),
        (
            "trailing garbage",
            format!(r#"{{{valid_inputs}}} x"#).into_bytes(),
        ),
    ];
    for (what, body) in &invalid_json {
        assert_error(&send(body), 400, "invalid_json", what);
    }

    // Out of contract: 422 invalid_input with pointers to each problem.
    let mut out_of_range = rows[0].clone();
    out_of_range[5] = 17.0;
    let mut negative = rows[0].clone();
    negative[0] = -0.5;
    let nested: Vec<Vec<f32>> = vec![rows[0].clone(), {
        let mut r = rows[1].clone();
        r[3] = 99.0;
        r
    }];
    let contract: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "wrong datatype",
            tensor(json!([1, 64]), "INT64", ok_row.clone()),
            vec!["/inputs/0/datatype"],
        ),
        (
            "unknown datatype",
            tensor(json!([1, 64]), "FP8", ok_row.clone()),
            vec!["/inputs/0/datatype"],
        ),
        (
            "wrong shape",
            tensor(json!([1, 63]), "FP32", json!(rows[0][..63])),
            vec!["/inputs/0/shape/1"],
        ),
        (
            "rank",
            tensor(json!([64]), "FP32", ok_row.clone()),
            vec!["/inputs/0/shape"],
        ),
        (
            "product(shape) != len(data)",
            tensor(json!([2, 64]), "FP32", ok_row.clone()),
            vec!["/inputs/0/data"],
        ),
        (
            "feature above 16",
            tensor(json!([1, 64]), "FP32", json!(out_of_range)),
            vec!["/inputs/0/data/5"],
        ),
        (
            "feature below 0",
            tensor(json!([1, 64]), "FP32", json!(negative)),
            vec!["/inputs/0/data/0"],
        ),
        (
            "nested feature out of range",
            tensor(json!([2, 64]), "FP32", json!(nested)),
            vec!["/inputs/0/data/1/3"],
        ),
        (
            "batch above max_batch_size",
            tensor(json!([65, 64]), "FP32", json!(vec![0; 65 * 64])),
            vec!["/inputs/0/shape/0"],
        ),
        (
            "empty batch",
            tensor(json!([0, 64]), "FP32", json!([])),
            vec!["/inputs/0/shape/0"],
        ),
        (
            "unknown output",
            json!({"inputs": tensor(json!([1, 64]), "FP32", ok_row.clone())["inputs"],
                   "outputs": [{"name": "logits"}]}),
            vec!["/outputs/0/name"],
        ),
        (
            "unknown input",
            json!({"inputs": [{"name": "pixels", "shape": [1, 64], "datatype": "FP32", "data": ok_row}]}),
            vec!["/inputs/0/name", "/inputs"],
        ),
        (
            "strings as data",
            tensor(json!([1, 2]), "FP32", json!(["NaN", "1"])),
            vec![],
        ),
        ("not an object", json!([]), vec![""]),
        ("no inputs", json!({}), vec![""]),
        ("inputs not an array", json!({"inputs": 5}), vec!["/inputs"]),
        (
            "wrong field types",
            json!({"id": 7, "parameters": [], "extra": 1,
                   "inputs": tensor(json!([1, 64]), "FP32", json!(rows[0]))["inputs"]}),
            vec!["/extra", "/id", "/parameters"],
        ),
    ];
    for (what, body, want) in contract {
        let r = send(body.to_string().as_bytes());
        assert_error(&r, 422, "invalid_input", what);
        let mut got = pointers(&r);
        if !want.is_empty() {
            got.sort();
            let mut want: Vec<String> = want.iter().map(ToString::to_string).collect();
            want.sort();
            assert_eq!(got, want, "{what}");
        }
    }

    // More hostile shapes and values: whatever the code, a 4xx JSON error, never a 5xx.
    let input_with = |fields: &str| {
        format!(r#"{{"inputs": [{{"name": "input", "datatype": "FP32", {fields}}}]}}"#).into_bytes()
    };
    let hostile: Vec<(&str, Vec<u8>)> = vec![
        (
            "lone surrogate in a key",
            format!(r#"{{"parameters": {{"\ud800": 1}}, {valid_inputs}}}"#).into_bytes(),
        ),
        ("overlong UTF-8", {
            let mut b = b"{\"id\": \"\xc0\xaf\", ".to_vec();
            b.extend_from_slice(valid_inputs.as_bytes());
            b.push(b'}');
            b
        }),
        (
            "1e400 in parameters",
            format!(r#"{{"parameters": {{"x": 1e400}}, {valid_inputs}}}"#).into_bytes(),
        ),
        (
            "65 levels in parameters",
            format!(
                r#"{{"parameters": {{"x": {}{}}}, {valid_inputs}}}"#,
                "[".repeat(65),
                "]".repeat(65)
            )
            .into_bytes(),
        ),
        (
            "100 KB id",
            format!(r#"{{"id": "{}", {valid_inputs}}}"#, "a".repeat(100_000)).into_bytes(),
        ),
        (
            "shape beyond u64",
            input_with(&format!(
                r#""shape": [18446744073709551616, 64], "data": {row_text}"#
            )),
        ),
        (
            "shape product overflows",
            input_with(&format!(
                r#""shape": [4294967296, 4294967296], "data": {row_text}"#
            )),
        ),
        (
            "shape of 10^8 elements",
            input_with(&format!(r#""shape": [1, 100000000], "data": {row_text}"#)),
        ),
        (
            "fractional shape",
            input_with(&format!(r#""shape": [1.5, 64], "data": {row_text}"#)),
        ),
        ("null data", input_with(r#""shape": [1, 64], "data": null"#)),
        (
            "shape after a short data array",
            input_with(r#""data": [1, 2, 3], "shape": [1, 64]"#),
        ),
        ("null body", b"null".to_vec()),
        ("a bare string", b"\"inputs\"".to_vec()),
        ("byte order mark", {
            let mut b = b"\xef\xbb\xbf".to_vec();
            b.extend_from_slice(&row_body(&rows[0]));
            b
        }),
        ("NUL bytes", vec![0u8; 64]),
    ];
    for (what, body) in &hostile {
        assert_client_error(&send(body), what);
    }

    // Framing and media types.
    assert_client_error(&send(b""), "empty body");
    assert_error(
        &client::send(
            a,
            &raw_post(INFER, "Content-Type: text/plain\r\n", &row_body(&rows[0])),
        ),
        415,
        "unsupported_media_type",
        "text/plain",
    );
    assert_error(
        &client::send(
            a,
            &raw_post(
                INFER,
                "Content-Type: application/json; charset=latin1\r\n",
                &row_body(&rows[0]),
            ),
        ),
        415,
        "unsupported_media_type",
        "latin1",
    );
    assert_error(
        &client::send(
            a,
            &raw_post(
                INFER,
                "Content-Type: application/json\r\nContent-Encoding: gzip\r\n",
                &gzip(&row_body(&rows[0])),
            ),
        ),
        415,
        "unsupported_media_type",
        "gzip on a route without gzip",
    );
    // A charset parameter naming UTF-8 is fine.
    let r = client::send(
        a,
        &raw_post(
            INFER,
            "Content-Type: application/json; charset=UTF-8\r\n",
            &row_body(&rows[0]),
        ),
    );
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));

    // None of that hurt the gateway; a valid request (with an escaped surrogate pair) passes.
    let good = format!(r#"{{"id": "ok \ud83d\ude00", {valid_inputs}}}"#);
    let r = send(good.as_bytes());
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(r.json()["id"], "ok \u{1f600}");
}

fn remote_route(upstream: &str, validate: &str) -> String {
    format!(
        "[[routes]]\nname = \"remote\"\nmodel = \"remote\"\npublic = true\n{validate}[routes.http]\nupstreams = [{upstream:?}]\n"
    )
}

#[test]
fn valid_requests_reach_the_backend_byte_for_byte_and_invalid_ones_not_at_all() {
    let up = Upstream::start(Behaviour::Echo);
    let gw = GatewayProcess::start(&remote_route(
        &up.url(),
        &format!(
            "[routes.validate]\nmetadata = {:?}\n",
            fixture("remote_metadata.json")
        ),
    ));
    let features = |shape: Value, data: Value| json!({"name": "features", "shape": shape, "datatype": "FP32", "data": data});
    let ids = |batch: usize| json!({"name": "ids", "shape": [batch, 2], "datatype": "INT64", "data": vec![7; batch * 2]});
    let refused: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "product(shape) != len(data)",
            json!({"inputs": [features(json!([2, 4]), json!([1, 2, 3, 4, 5, 6, 7])), ids(2)]}),
            vec!["/inputs/0/data"],
        ),
        (
            "batch above max_batch_size",
            json!({"inputs": [features(json!([9, 4]), json!(vec![0; 36])), ids(9)]}),
            vec!["/inputs/0/shape/0", "/inputs/1/shape/0"],
        ),
        (
            "missing input",
            json!({"inputs": [features(json!([1, 4]), json!([1, 2, 3, 4]))]}),
            vec!["/inputs"],
        ),
        (
            "INT64 given a fraction",
            json!({"inputs": [features(json!([1, 4]), json!([1, 2, 3, 4])),
                {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2.5]}]}),
            vec!["/inputs/1/data/1"],
        ),
        (
            "batch sizes disagree",
            json!({"inputs": [features(json!([2, 4]), json!(vec![0; 8])), ids(1)]}),
            vec!["/inputs/1/shape/0"],
        ),
        (
            "unknown output",
            json!({"inputs": [features(json!([1, 4]), json!([1, 2, 3, 4])), ids(1)],
                   "outputs": [{"name": "label"}]}),
            vec!["/outputs/0/name"],
        ),
    ];
    for (what, body, want) in refused {
        let r = post_json(gw.addr, REMOTE_INFER, body.to_string().as_bytes(), "");
        assert_error(&r, 422, "invalid_input", what);
        assert_eq!(pointers(&r), want, "{what}");
    }
    assert_error(
        &post_json(gw.addr, REMOTE_INFER, b"{\"inputs\": [", ""),
        400,
        "invalid_json",
        "truncated",
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        up.connection_count(),
        0,
        "a refused request reached the backend"
    );

    // Formatting, escapes, nested data, big integers and parameters all survive untouched.
    let body = concat!(
        "{ \"id\" : \"req-\\u00e9\\ud83d\\ude00\",\n",
        "  \"parameters\" : {\"priority\": 2, \"nested\": {\"a\": [1, 2.50, -0.0, 1E+2], \"b\": null}},\n",
        "\t\"inputs\" : [\n",
        "    {\"name\":\"features\",\"shape\":[2,4],\"datatype\":\"FP32\",",
        "\"data\":[[1.0,2.5e0,-3,4],[0,0.000,1e-3,7]],\"parameters\":{\"content_type\":\"np\"}},\n",
        "    {\"name\":\"ids\",\"shape\":[2,2],\"datatype\":\"INT64\",\"data\":[9007199254740993,-1,0,42]}\n",
        "  ],\n",
        "  \"outputs\":[{\"name\":\"score\",\"parameters\":{\"binary_data\":false}}]\n",
        "}\n"
    )
    .as_bytes();
    let r = post_json(gw.addr, REMOTE_INFER, body, "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let echoed = r.json();
    assert_eq!(echoed["body"].as_str().unwrap().as_bytes(), body);
    let seen = up.seen();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].target, REMOTE_INFER);
    assert_eq!(seen[0].body, body, "the body was rewritten on its way");
    assert_eq!(
        seen[0].header("content-length"),
        Some(body.len().to_string().as_str())
    );
    assert_eq!(seen[0].header("content-type"), Some("application/json"));

    // The binary tensor extension is checked, then forwarded as sent.
    let header = json!({"inputs": [
        {"name": "features", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
        {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]});
    let header_len = header.to_string().len().to_string();
    let mut body = header.to_string().into_bytes();
    body.extend(le_bytes(&[1.0, 2.0, 3.0, 4.0]));
    let binary_headers = format!(
        "Content-Type: application/octet-stream\r\nInference-Header-Content-Length: {header_len}\r\n"
    );
    let r = client::send(
        gw.addr,
        &raw_post(REMOTE_INFER, &binary_headers, &body[..body.len() - 4]),
    );
    assert_error(&r, 400, "bad_request", "binary data cut short");
    assert_eq!(up.seen().len(), 1);
    let r = client::send(gw.addr, &raw_post(REMOTE_INFER, &binary_headers, &body));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.body, body);
    assert_eq!(
        seen.header("inference-header-content-length"),
        Some(header_len.as_str())
    );
}

#[test]
fn every_spelling_of_infer_is_validated_or_refused() {
    let up = Upstream::start(Behaviour::Echo);
    let gw = GatewayProcess::start(&remote_route(
        &up.url(),
        &format!(
            "[routes.validate]\nmetadata = {:?}\n",
            fixture("remote_metadata.json")
        ),
    ));
    // Out of contract for `remote`. Backends and proxies in front of them read these paths as
    // `/infer`: %69 is an unreserved character (RFC 3986 §6.2.2.2: same URI once decoded);
    // Express matches a trailing slash by default; nginx merges slashes by default.
    let bad = br#"{"inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3]}]}"#;
    let mut leaked = Vec::new();
    for path in [
        "/v2/models/remote/%69nfer",
        "/v2/models/remote/inf%65r",
        "/v2/models/remote/infer/",
        "/v2/models/remote//infer",
        "/v2/models/remote/versions/1/infer/",
    ] {
        let before = up.seen().len();
        let r = post_json(gw.addr, path, bad, "");
        if r.status < 400 || up.seen().len() > before {
            leaked.push(format!("{path} -> {}", r.status));
        }
    }
    assert!(
        leaked.is_empty(),
        "an invalid body reached the backend: {leaked:?}"
    );
}

#[test]
fn without_a_metadata_file_the_contract_is_fetched_from_the_backend() {
    let meta = std::fs::read_to_string(fixture("remote_metadata.json")).unwrap();
    let response: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{meta}",
            meta.len()
        )
        .into_boxed_str(),
    );
    let up = Upstream::start(Behaviour::Raw(response));
    let gw = GatewayProcess::start(&remote_route(&up.url(), ""));
    let fetched = up.seen();
    assert_eq!(fetched.len(), 1, "{fetched:?}");
    assert_eq!(
        (fetched[0].method.as_str(), fetched[0].target.as_str()),
        ("GET", "/v2/models/remote")
    );

    // The fetched contract applies: a tensor it does not know is refused here.
    let wrong = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": vec![0; 64]}]});
    let r = post_json(gw.addr, REMOTE_INFER, wrong.to_string().as_bytes(), "");
    assert_error(
        &r,
        422,
        "invalid_input",
        "digits tensor on the remote model",
    );
    assert!(pointers(&r).contains(&"/inputs/0/name".to_string()));
    let wrong_shape = json!({"inputs": [
        {"name": "features", "shape": [1, 5], "datatype": "FP32", "data": [1, 2, 3, 4, 5]},
        {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]});
    let r = post_json(
        gw.addr,
        REMOTE_INFER,
        wrong_shape.to_string().as_bytes(),
        "",
    );
    assert_error(&r, 422, "invalid_input", "wrong shape");
    assert_eq!(pointers(&r), ["/inputs/0/shape/1"]);
    assert_eq!(up.seen().len(), 1, "a refused request reached the backend");

    let good = json!({"inputs": [
        {"name": "features", "shape": [1, 4], "datatype": "FP32", "data": [1, 2, 3, 4]},
        {"name": "ids", "shape": [1, 2], "datatype": "INT64", "data": [1, 2]}]});
    let r = post_json(gw.addr, REMOTE_INFER, good.to_string().as_bytes(), "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let seen = up.seen();
    assert_eq!(seen.len(), 2);
    assert_eq!(
        (seen[1].method.as_str(), seen[1].target.as_str()),
        ("POST", REMOTE_INFER)
    );
    assert_eq!(seen[1].body, good.to_string().as_bytes());
}

#[test]
fn json_schema_on_a_path_prefix_route() {
    let up = Upstream::start(Behaviour::Echo);
    let gw = GatewayProcess::start(&format!(
        "[[routes]]\nname = \"chat\"\npath_prefix = \"/chat\"\npublic = true\n\
         [routes.validate]\njson_schema = {:?}\n[routes.http]\nupstreams = [{:?}]\n",
        fixture("prompt_schema.json"),
        up.url()
    ));
    let path = "/chat/v1/complete";
    let cases: Vec<(&str, &[u8], &str)> = vec![
        (
            "prompt too long",
            br#"{"prompt": "hello world!"}"#,
            "/prompt",
        ),
        ("prompt not a string", br#"{"prompt": 5}"#, "/prompt"),
        ("prompt missing", br#"{"n": 2}"#, ""),
        ("n above maximum", br#"{"prompt": "hi", "n": 9}"#, "/n"),
        ("n not an integer", br#"{"prompt": "hi", "n": 1.5}"#, "/n"),
    ];
    for (what, body, pointer) in cases {
        let r = post_json(gw.addr, path, body, "");
        assert_error(&r, 422, "invalid_input", what);
        assert_eq!(pointers(&r)[0], pointer, "{what}");
    }
    let r = post_json(gw.addr, path, br#"{"prompt": "hi", "extra": true}"#, "");
    assert_error(&r, 422, "invalid_input", "additional property");
    assert_error(
        &post_json(gw.addr, path, br#"{"prompt": "hi""#, ""),
        400,
        "invalid_json",
        "truncated",
    );
    assert_error(
        &post_json(gw.addr, path, br#"{"prompt": "hi", "prompt": "hello"}"#, ""),
        400,
        "invalid_json",
        "duplicate key",
    );
    assert_error(
        &client::send(
            gw.addr,
            &raw_post(path, "Content-Type: text/plain\r\n", br#"{"prompt": "hi"}"#),
        ),
        415,
        "unsupported_media_type",
        "text/plain",
    );
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        up.connection_count(),
        0,
        "a refused body reached the backend"
    );

    let good = br#"{"prompt": "hi", "n": 2}"#;
    let r = post_json(gw.addr, path, good, "");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(up.seen()[0].body, good);
    // A body-less request has nothing to check.
    assert_eq!(client::get(gw.addr, "/chat/v1/models").status, 200);
}

/// A request as tritonclient builds it with the binary tensor extension: the JSON header,
/// then the raw tensor bytes; `Inference-Header-Content-Length` gives the header's length.
fn binary_request(header: &Value, data: &[u8], header_length: &str, content_type: &str) -> Vec<u8> {
    let mut body = header.to_string().into_bytes();
    body.extend_from_slice(data);
    raw_post(
        INFER,
        &format!("{content_type}Inference-Header-Content-Length: {header_length}\r\n"),
        &body,
    )
}

fn binary_header(size: usize) -> Value {
    json!({
        "inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
                    "parameters": {"binary_data_size": size}}],
        "outputs": [{"name": "label", "parameters": {"binary_data": false}},
                    {"name": "probabilities", "parameters": {"binary_data": false}}]
    })
}

fn le_bytes(row: &[f32]) -> Vec<u8> {
    row.iter().flat_map(|x| x.to_le_bytes()).collect()
}

#[test]
fn binary_tensor_extension_as_tritonclient_sends_it() {
    const OCTET: &str = "Content-Type: application/octet-stream\r\n";
    let gw = GatewayProcess::start(&digits_route());
    let a = gw.addr;
    let (rows, labels) = holdout();
    let send = |header: &Value, data: &[u8], len: Option<usize>, ct: &str| {
        let n = len.unwrap_or(header.to_string().len());
        client::send(a, &binary_request(header, data, &n.to_string(), ct))
    };

    for (i, row) in rows.iter().enumerate().take(5) {
        let r = send(&binary_header(256), &le_bytes(row), None, OCTET);
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let json_answer = post_json(a, INFER, &row_body(row), "");
        assert_eq!(label_of(&r), label_of(&json_answer), "row {i}");
        if i == 0 {
            assert_eq!(label_of(&r), labels[0], "held-out row 0");
        }
    }
    // tritonclient sends no Content-Type at all: accepted too.
    let r = send(&binary_header(256), &le_bytes(&rows[0]), None, "");
    assert_eq!((r.status, label_of(&r)), (200, labels[0]));

    // Tampered framing: 400, never a 5xx.
    let data = le_bytes(&rows[0]);
    let header = binary_header(256);
    let header_len = header.to_string().len();
    let len_of = |v: &Value| v.to_string().len().to_string();
    let mut trailing = data.clone();
    trailing.extend_from_slice(&[0, 0, 0, 0]);
    let with_data = json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32",
        "data": rows[0], "parameters": {"binary_data_size": 256}}]});
    let framing: Vec<(&str, Vec<u8>)> = vec![
        (
            "binary_data_size 252 of 256 bytes",
            binary_request(
                &binary_header(252),
                &data,
                &len_of(&binary_header(252)),
                OCTET,
            ),
        ),
        (
            "binary_data_size 252 with 252 bytes",
            binary_request(
                &binary_header(252),
                &data[..252],
                &len_of(&binary_header(252)),
                OCTET,
            ),
        ),
        (
            "binary_data_size 260 of 256 bytes",
            binary_request(
                &binary_header(260),
                &data,
                &len_of(&binary_header(260)),
                OCTET,
            ),
        ),
        (
            "header length beyond the body",
            binary_request(&header, &data, &(header_len + 257).to_string(), OCTET),
        ),
        (
            "extra trailing bytes",
            binary_request(&header, &trailing, &header_len.to_string(), OCTET),
        ),
        (
            "header length not a number",
            binary_request(&header, &data, "12a", OCTET),
        ),
        (
            "header length negative",
            binary_request(&header, &data, "-5", OCTET),
        ),
        (
            "header length 0",
            binary_request(&header, &data, "0", OCTET),
        ),
        (
            "data and binary_data_size",
            binary_request(&with_data, &data, &len_of(&with_data), OCTET),
        ),
    ];
    for (what, raw) in &framing {
        let r = client::send(a, raw);
        assert_error(&r, 400, "bad_request", what);
    }
    // A header length that cuts the JSON header: not JSON.
    let r = send(&header, &data, Some(header_len - 1), OCTET);
    assert_error(&r, 400, "invalid_json", "header cut short");
    // The JSON media type with binary framing is refused.
    let r = send(&header, &data, None, "Content-Type: application/json\r\n");
    assert_error(&r, 415, "unsupported_media_type", "binary body as JSON");
    // Values in the binary data are checked like JSON ones, pointing at the flat index.
    let mut bad = rows[0].clone();
    bad[7] = 17.0;
    let r = send(&header, &le_bytes(&bad), None, OCTET);
    assert_error(&r, 422, "invalid_input", "binary value out of range");
    assert_eq!(pointers(&r), ["/inputs/0/data/7"]);
    bad[7] = f32::NAN;
    let r = send(&header, &le_bytes(&bad), None, OCTET);
    assert_error(&r, 422, "invalid_input", "binary NaN");
    assert_eq!(pointers(&r), ["/inputs/0/data/7"]);
}

/// `gzip -c` of `data` (no compression crate in this package's dependencies).
fn gzip(data: &[u8]) -> Vec<u8> {
    let mut child = Command::new("gzip")
        .arg("-c")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("run gzip");
    let mut stdin = child.stdin.take().unwrap();
    let data = data.to_vec();
    let writer = std::thread::spawn(move || stdin.write_all(&data).unwrap());
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(out.status.success());
    out.stdout
}

fn gzip_post(addr: SocketAddr, body: &[u8], encoding: &str) -> Response {
    client::send(
        addr,
        &raw_post(
            INFER,
            &format!("Content-Type: application/json\r\nContent-Encoding: {encoding}\r\n"),
            body,
        ),
    )
}

#[test]
fn gzip_bodies_with_caps_and_max_errors_on_a_configured_route() {
    let models = repo_root().join("models");
    let gw = GatewayProcess::start(&format!(
        "[[routes]]\nname = \"digits\"\nmodel = \"digits\"\npublic = true\n\
         validate = {{ gzip = true, max_errors = 2 }}\n[routes.embedded]\nonnx = {:?}\nmetadata = {:?}\n",
        models.join("digits.onnx"),
        models.join("digits.json"),
    ));
    let (rows, labels) = holdout();

    let plain = post_json(gw.addr, INFER, &row_body(&rows[0]), "");
    let r = gzip_post(gw.addr, &gzip(&row_body(&rows[0])), "gzip");
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(label_of(&r), label_of(&plain));
    assert_eq!(label_of(&r), labels[0]);

    // A decompression bomb: 10 MB of zeros in a few KB.
    let bomb = gzip(&vec![0u8; 10 * 1024 * 1024]);
    assert!(bomb.len() < 100_000, "{}", bomb.len());
    assert_error(
        &gzip_post(gw.addr, &bomb, "gzip"),
        413,
        "payload_too_large",
        "gzip bomb",
    );
    // The decompressed body is validated like any other, pointers and all.
    let mut bad = rows[0].clone();
    bad[9] = 20.0;
    let r = gzip_post(gw.addr, &gzip(&row_body(&bad)), "gzip");
    assert_error(&r, 422, "invalid_input", "gzip out of range");
    assert_eq!(pointers(&r), ["/inputs/0/data/9"]);
    let z = gzip(&row_body(&rows[0]));
    assert_error(
        &gzip_post(gw.addr, &z[..z.len() - 8], "gzip"),
        400,
        "bad_request",
        "truncated gzip",
    );
    assert_error(
        &gzip_post(gw.addr, b"not gzip at all", "gzip"),
        400,
        "bad_request",
        "not gzip",
    );
    for encoding in ["br", "deflate", "gzip, gzip"] {
        assert_error(
            &gzip_post(gw.addr, &z, encoding),
            415,
            "unsupported_media_type",
            encoding,
        );
    }

    // max_errors = 2: five problems, two listed.
    let mut five = rows[0].clone();
    for i in [1, 2, 3, 4, 6] {
        five[i] = 30.0;
    }
    let r = post_json(gw.addr, INFER, &row_body(&five), "");
    assert_error(&r, 422, "invalid_input", "five problems");
    assert_eq!(pointers(&r), ["/inputs/0/data/1", "/inputs/0/data/2"]);
}

#[test]
fn tf_serving_predict_bodies_are_checked_and_forwarded_untouched() {
    let up = Upstream::start(Behaviour::Echo);
    let gw = GatewayProcess::start(&format!(
        "[[routes]]\nname = \"tf\"\npath_prefix = \"/v1/models/remote\"\npublic = true\n\
         [routes.validate]\nprotocol = \"tf_serving\"\nmetadata = {:?}\n\
         [routes.http]\nupstreams = [{:?}]\n",
        fixture("remote_metadata.json"),
        up.url()
    ));
    const PREDICT: &str = "/v1/models/remote:predict";
    let row = |features: Value, ids: Value| json!({"features": features, "ids": ids});
    let refused: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "a row with 3 features",
            json!({"instances": [row(json!([1, 2, 3, 4]), json!([1, 2])), row(json!([1, 2, 3]), json!([1, 2]))]}),
            vec!["/instances"],
        ),
        (
            "an input missing from a row",
            json!({"instances": [{"features": [1, 2, 3, 4]}]}),
            vec!["/instances/0"],
        ),
        (
            "an unknown input",
            json!({"instances": [{"features": [1, 2, 3, 4], "ids": [1, 2], "extra": 1}]}),
            vec!["/instances/0/extra"],
        ),
        (
            "INT64 given a fraction",
            json!({"instances": [row(json!([1, 2, 3, 4]), json!([1, 2.5]))]}),
            vec!["/instances/0/ids/1"],
        ),
        (
            "batch above max_batch_size",
            json!({"instances": vec![row(json!([1, 2, 3, 4]), json!([1, 2])); 9]}),
            vec!["/instances"],
        ),
        (
            "columnar inputs of different batch sizes",
            json!({"inputs": {"features": [[1, 2, 3, 4], [5, 6, 7, 8]], "ids": [[1, 2]]}}),
            vec!["/inputs/ids"],
        ),
        (
            "neither instances nor inputs",
            json!({"signature_name": "serving_default"}),
            vec![""],
        ),
    ];
    for (what, body, want) in refused {
        let r = post_json(gw.addr, PREDICT, body.to_string().as_bytes(), "");
        assert_error(&r, 422, "invalid_input", what);
        assert_eq!(
            pointers(&r),
            want,
            "{what}: {}",
            String::from_utf8_lossy(&r.body)
        );
    }
    let r = post_json(gw.addr, PREDICT, json!({"instances": [row(json!([1, 2, 3, 4]), json!([1, 2])), row(json!([1, 2, 3]), json!([1, 2]))]}).to_string().as_bytes(), "");
    let detail = r.json()["error"]["details"][0]["message"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(detail.contains("\"features\": uneven"), "{detail}");
    // Other verbs have no contract to check: refused before the body is read.
    let r = post_json(gw.addr, "/v1/models/remote:classify", b"{}", "");
    assert_error(&r, 404, "route_not_found", ":classify");
    let r = post_json(gw.addr, "/v1/models/remote%3Apredict", b"{}", "");
    assert_client_error(&r, "encoded verb");
    std::thread::sleep(Duration::from_millis(200));
    assert_eq!(
        up.connection_count(),
        0,
        "a refused request reached the backend"
    );

    // Row and columnar formats pass byte for byte; GETs (model status) pass unchecked.
    for body in [
        "{\"signature_name\": \"serving_default\",\n \"instances\": [{\"features\": [1, 2.5, -3, 4e0], \"ids\": [9007199254740993, -1]}]}",
        "{\"inputs\": {\"features\": [[1, 2, 3, 4], [5, 6, 7, 8]], \"ids\": [[1, 2], [3, 4]]}}",
    ] {
        let r = post_json(gw.addr, PREDICT, body.as_bytes(), "");
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
        let seen = up.seen().pop().unwrap();
        assert_eq!(seen.target, PREDICT);
        assert_eq!(
            seen.body,
            body.as_bytes(),
            "the body was rewritten on its way"
        );
    }
    assert_eq!(client::get(gw.addr, "/v1/models/remote").status, 200);
    assert_eq!(up.seen().len(), 3);
}

#[test]
fn header_count_and_size_are_capped_with_431() {
    let up = Upstream::start(Behaviour::Echo);
    let gw = GatewayProcess::start(&format!(
        "[limits]\nmax_header_count = 20\nmax_header_bytes = 2048\n\n{}",
        remote_route(&up.url(), "[routes.validate]\nprotocol = \"none\"\n")
    ));
    let get_with = |extra: &str| {
        client::send(
            gw.addr,
            format!("GET /v2/models/remote HTTP/1.1\r\nHost: t\r\n{extra}\r\n").as_bytes(),
        )
    };
    let many = |n: usize| (0..n).map(|i| format!("x-h{i}: v\r\n")).collect::<String>();
    // Host + 19 = 20 fields pass; 21 do not.
    assert_eq!(get_with(&many(19)).status, 200);
    let r = get_with(&many(20));
    assert_error(&r, 431, "headers_too_large", "21 header fields");
    let message = r.json()["error"]["message"].as_str().unwrap().to_string();
    assert!(message.contains("at most 20"), "{message}");
    // One long value: within the count, over the byte budget.
    assert_eq!(
        get_with(&format!("x-big: {}\r\n", "a".repeat(1900))).status,
        200
    );
    let r = get_with(&format!("x-big: {}\r\n", "a".repeat(2100)));
    assert_error(&r, 431, "headers_too_large", "2 KiB header");
    // Beyond Pingora's own bound (256 fields) Pingora answers a bare 400 itself.
    assert_eq!(get_with(&many(300)).status, 400);
    assert_eq!(
        up.seen().len(),
        2,
        "only the two requests within the caps went upstream"
    );
}
