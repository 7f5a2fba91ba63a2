//! Cross-format tests: a hostile corpus, property tests (random and mangled requests never
//! panic and are either well-formed or refused with a 4xx), end-to-end `validate_infer`.

use http::{HeaderMap, HeaderValue};
use proptest::prelude::*;
use serde_json::{Value, json};

use super::*;

fn digits() -> ModelContract {
    let text = include_str!("../../../models/digits.json");
    ModelContract::from_metadata_json(&serde_json::from_str(text).unwrap()).unwrap()
}

fn multi() -> ModelContract {
    ModelContract::from_metadata_json(&json!({"name": "multi", "max_batch_size": 8,
        "inputs": [
            {"name": "a", "datatype": "INT16", "shape": [-1, 2, -1]},
            {"name": "b", "datatype": "BYTES", "shape": [-1]},
            {"name": "c", "datatype": "FP16", "shape": [-1, 3]},
            {"name": "d", "datatype": "BOOL", "shape": [-1, 1]}],
        "outputs": [{"name": "y"}],
        "feature_range": {"min": -100, "max": 100}}))
    .unwrap()
}

/// Everything a validated request promises, whatever produced it.
fn assert_well_formed(r: &ValidatedRequest, c: &ModelContract) {
    if c.max_batch_size > 0 {
        assert!(
            r.batch >= 1 && r.batch <= c.max_batch_size,
            "batch {}",
            r.batch
        );
    } else {
        assert_eq!(r.batch, 1);
    }
    assert_eq!(r.inputs.len(), c.inputs.len());
    for (t, spec) in r.inputs.iter().zip(&c.inputs) {
        assert_eq!(t.name, spec.name);
        assert_eq!(t.datatype, spec.datatype);
        assert_eq!(t.shape.len(), spec.shape.len());
        for (&got, &want) in t.shape.iter().zip(&spec.shape) {
            assert!(want < 0 || got as i64 == want);
        }
        if c.max_batch_size > 0 {
            assert_eq!(t.shape[0], r.batch);
        }
        assert_eq!(t.data.len(), t.shape.iter().product::<usize>());
        if let TensorData::F32(v) = &t.data {
            assert!(v.iter().all(|x| x.is_finite()));
        }
    }
}

fn check_all(body: &[u8]) {
    let limits = ValidationLimits::default();
    for c in [digits(), multi()] {
        match validate_v2(body, &c, &limits) {
            Ok(r) => assert_well_formed(&r, &c),
            Err(d) => assert!(d.status().is_client_error(), "{d:?}"),
        }
        match validate_predict(body, &c, &limits) {
            Ok(r) => assert_well_formed(&r, &c),
            Err(d) => assert!(d.status().is_client_error(), "{d:?}"),
        }
        for n in [1, body.len() / 2, body.len()] {
            match validate_v2_binary(body, &n.to_string(), &c, &limits) {
                Ok(r) => assert_well_formed(&r, &c),
                Err(d) => assert!(d.status().is_client_error(), "{d:?}"),
            }
        }
    }
    if let Err(d) = parse_json(body, &limits) {
        assert!(d.status().is_client_error(), "{d:?}");
    }
}

#[test]
fn hostile_corpus_is_refused_with_4xx() {
    let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let deep_data = format!(
        r#"{{"inputs":[{{"name":"input","datatype":"FP32","shape":[1,64],"data":{}1{}}}]}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    let corpus: Vec<(&str, Vec<u8>, Code)> = vec![
        ("empty", b"".to_vec(), Code::InvalidJson),
        (
            "truncated",
            br#"{"inputs":[{"name":"input","shape":[1,"#.to_vec(),
            Code::InvalidJson,
        ),
        (
            "invalid utf-8 in string",
            b"{\"id\":\"\xff\xfe\",\"inputs\":[]}".to_vec(),
            Code::InvalidJson,
        ),
        (
            "invalid utf-8 outside",
            b"\xef\xbb\xbf{\"inputs\":[]}".to_vec(),
            Code::InvalidJson,
        ),
        (
            "lone surrogate",
            br#"{"id":"\ud800","inputs":[]}"#.to_vec(),
            Code::InvalidJson,
        ),
        (
            "lone surrogate in parameters",
            br#"{"parameters":{"k":"\udc00"},"inputs":[]}"#.to_vec(),
            Code::InvalidJson,
        ),
        (
            "lone surrogate in data",
            br#"{"inputs":[{"name":"b","datatype":"BYTES","shape":[1],"data":["\ud800"]}]}"#
                .to_vec(),
            Code::InvalidJson,
        ),
        ("100k nested arrays", deep.into_bytes(), Code::InvalidJson),
        (
            "100k nested data",
            deep_data.into_bytes(),
            Code::InvalidJson,
        ),
        (
            "huge number",
            br#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[1e400]}]}"#
                .to_vec(),
            Code::InvalidJson,
        ),
        (
            "huge negative number",
            br#"{"id":"x","parameters":{"n":-1e400},"inputs":[]}"#.to_vec(),
            Code::InvalidJson,
        ),
        (
            "duplicate top key",
            br#"{"inputs":[],"inputs":[]}"#.to_vec(),
            Code::InvalidJson,
        ),
        (
            "duplicate tensor key",
            br#"{"inputs":[{"name":"input","datatype":"FP32","datatype":"FP32"}]}"#.to_vec(),
            Code::InvalidJson,
        ),
        (
            "NaN literal",
            br#"{"inputs":[{"name":"input","datatype":"FP32","shape":[1,1],"data":[NaN]}]}"#
                .to_vec(),
            Code::InvalidJson,
        ),
        (
            "Infinity literal",
            br#"{"inputs":[{"data":[Infinity]}]}"#.to_vec(),
            Code::InvalidJson,
        ),
        (
            "trailing comma",
            br#"{"inputs":[],}"#.to_vec(),
            Code::InvalidJson,
        ),
        (
            "comment",
            br#"{"inputs":[] /* hi */}"#.to_vec(),
            Code::InvalidJson,
        ),
        (
            "two documents",
            br#"{"inputs":[]}{"inputs":[]}"#.to_vec(),
            Code::InvalidJson,
        ),
        (
            "raw control char",
            b"{\"id\":\"a\x01b\",\"inputs\":[]}".to_vec(),
            Code::InvalidJson,
        ),
        (
            "single quotes",
            br#"{'inputs':[]}"#.to_vec(),
            Code::InvalidJson,
        ),
        ("null body", b"null".to_vec(), Code::InvalidInput),
        ("string body", br#""inputs""#.to_vec(), Code::InvalidInput),
    ];
    let limits = ValidationLimits::default();
    for (name, body, code) in &corpus {
        let e = validate_v2(body, &digits(), &limits).unwrap_err();
        assert_eq!(e.code, *code, "{name}: {e:?}");
        check_all(body);
    }
}

#[test]
fn duplicate_keys_are_refused_in_every_format() {
    let limits = ValidationLimits::default();
    let c = digits();
    let body = br#"{"instances":[{"input":[1],"input":[2]}]}"#;
    assert_eq!(
        validate_predict(body, &c, &limits).unwrap_err().code,
        Code::InvalidJson
    );
    let body = br#"{"instances":[[1]],"instances":[[1]]}"#;
    assert_eq!(
        validate_predict(body, &c, &limits).unwrap_err().code,
        Code::InvalidJson
    );
    assert_eq!(
        parse_json(br#"{"a":1,"a":1}"#, &limits).unwrap_err().code,
        Code::InvalidJson
    );
}

fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
    let mut h = HeaderMap::new();
    for (k, v) in pairs {
        h.append(*k, HeaderValue::from_str(v).unwrap());
    }
    h
}

fn digits_body(rows: usize) -> Vec<u8> {
    serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [rows, 64],
        "datatype": "FP32", "data": vec![1.0; rows * 64]}]}))
    .unwrap()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

#[test]
fn validate_infer_applies_media_type_encoding_and_format() {
    let c = digits();
    let limits = ValidationLimits::default();
    let json_h = headers(&[("content-type", "application/json")]);
    let body = digits_body(2);
    let r = validate_infer(InferFormat::V2, &json_h, &body, &c, &limits).unwrap();
    assert_eq!(r.batch, 2);
    let e = validate_infer(
        InferFormat::V2,
        &headers(&[("content-type", "text/plain")]),
        &body,
        &c,
        &limits,
    )
    .unwrap_err();
    assert_eq!(e.code, Code::UnsupportedMediaType);
    // No Content-Type: accepted unless required.
    assert!(validate_infer(InferFormat::V2, &HeaderMap::new(), &body, &c, &limits).is_ok());
    let strict = ValidationLimits {
        require_content_type: true,
        ..limits
    };
    assert_eq!(
        validate_infer(InferFormat::V2, &HeaderMap::new(), &body, &c, &strict)
            .unwrap_err()
            .code,
        Code::UnsupportedMediaType
    );
    // gzip: refused unless allowed, then decoded and checked.
    let z = gzip(&body);
    let gz_h = headers(&[
        ("content-type", "application/json"),
        ("content-encoding", "gzip"),
    ]);
    assert_eq!(
        validate_infer(InferFormat::V2, &gz_h, &z, &c, &limits)
            .unwrap_err()
            .code,
        Code::UnsupportedMediaType
    );
    let gzip_ok = ValidationLimits {
        allow_gzip: true,
        ..limits
    };
    assert_eq!(
        validate_infer(InferFormat::V2, &gz_h, &z, &c, &gzip_ok).unwrap(),
        r
    );
    let tiny = ValidationLimits {
        max_decoded_bytes: 100,
        ..gzip_ok
    };
    assert_eq!(
        validate_infer(InferFormat::V2, &gz_h, &z, &c, &tiny)
            .unwrap_err()
            .code,
        Code::PayloadTooLarge
    );
    // Binary extension: octet-stream (or no Content-Type, as tritonclient sends it).
    let raw: Vec<u8> = [1.0f32; 64].iter().flat_map(|v| v.to_le_bytes()).collect();
    let mut bin = serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [1, 64],
        "datatype": "FP32", "parameters": {"binary_data_size": raw.len()}}]}))
    .unwrap();
    let n = bin.len().to_string();
    bin.extend_from_slice(&raw);
    for h in [
        headers(&[
            ("content-type", "application/octet-stream"),
            ("inference-header-content-length", &n),
        ]),
        headers(&[("inference-header-content-length", &n)]),
    ] {
        let r = validate_infer(InferFormat::V2, &h, &bin, &c, &limits).unwrap();
        assert_eq!(r.inputs[0].as_f32().unwrap(), &[1.0; 64][..]);
    }
    let wrong = headers(&[
        ("content-type", "application/json"),
        ("inference-header-content-length", &n),
    ]);
    assert_eq!(
        validate_infer(InferFormat::V2, &wrong, &bin, &c, &limits)
            .unwrap_err()
            .code,
        Code::UnsupportedMediaType
    );
    let twice = headers(&[
        ("inference-header-content-length", &n),
        ("content-type", "application/octet-stream"),
        ("content-type", "application/octet-stream"),
    ]);
    assert!(validate_infer(InferFormat::V2, &twice, &bin, &c, &limits).is_err());
    // TF :predict.
    let tf = serde_json::to_vec(&json!({"instances": [vec![2.0; 64]]})).unwrap();
    assert_eq!(
        validate_infer(InferFormat::TfPredict, &json_h, &tf, &c, &limits)
            .unwrap()
            .batch,
        1
    );
    let tf_bin = headers(&[("inference-header-content-length", "3")]);
    assert_eq!(
        validate_infer(InferFormat::TfPredict, &tf_bin, &tf, &c, &limits)
            .unwrap_err()
            .code,
        Code::BadRequest
    );
}

#[test]
fn validate_json_checks_schema_after_parsing_once() {
    let schema = JsonSchema::compile(
        &json!({"type": "object", "required": ["q"], "properties": {"q": {"type": "string"}}}),
        None,
    )
    .unwrap();
    let limits = ValidationLimits::default();
    let h = headers(&[("content-type", "application/json; charset=utf-8")]);
    assert_eq!(
        validate_json(&h, br#"{"q":"x"}"#, &schema, &limits).unwrap()["q"],
        "x"
    );
    let e = validate_json(&h, br#"{"q":1}"#, &schema, &limits).unwrap_err();
    assert_eq!(
        (e.code, e.details[0].path.as_str()),
        (Code::InvalidInput, "/q")
    );
    let e = validate_json(&h, br#"{"q":"#, &schema, &limits).unwrap_err();
    assert_eq!(e.code, Code::InvalidJson);
}

// ---------------------------------------------------------------------------------------
// Property tests.

fn datatype_name() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(Datatype::ALL.to_vec()).prop_map(|d| d.as_str().to_owned()),
        1 => "[A-Za-z0-9]{0,6}",
    ]
}

fn scalar() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => (0.0f64..16.0).prop_map(Value::from),
        2 => any::<i64>().prop_map(Value::from),
        1 => any::<u64>().prop_map(Value::from),
        1 => any::<f64>().prop_filter("JSON numbers are finite", |f| f.is_finite()).prop_map(Value::from),
        1 => any::<bool>().prop_map(Value::from),
        1 => "[a-z\u{e9}]{0,5}".prop_map(Value::from),
        1 => Just(Value::Null),
    ]
}

/// Nests `flat` row-major by `dims` (the last dimensions first); extra values stay flat.
fn nest(flat: Vec<Value>, dims: &[usize]) -> Value {
    let mut level = flat;
    for &d in dims.iter().rev().take(dims.len().saturating_sub(1)) {
        if d == 0 {
            break;
        }
        level = level.chunks(d).map(|c| Value::Array(c.to_vec())).collect();
    }
    Value::Array(level)
}

fn tensor(names: &'static [&'static str]) -> impl Strategy<Value = Value> {
    (
        proptest::sample::select(names),
        datatype_name(),
        proptest::collection::vec(-2i64..70, 0..4),
        proptest::collection::vec(scalar(), 0..200),
        any::<bool>(),
        any::<bool>(),
    )
        .prop_map(|(name, dt, shape, data, nested, with_params)| {
            let dims: Vec<usize> = shape.iter().map(|&d| d.max(0) as usize).collect();
            let data = if nested {
                nest(data, &dims)
            } else {
                Value::Array(data)
            };
            let mut t = json!({"name": name, "datatype": dt, "shape": shape, "data": data});
            if with_params {
                t["parameters"] = json!({"p": 1});
            }
            t
        })
}

fn request(names: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    (
        proptest::collection::vec(tensor(names), 0..4),
        proptest::option::of("[a-z0-9]{0,8}"),
        proptest::collection::vec(proptest::sample::select(vec!["y", "label", "nope"]), 0..3),
    )
        .prop_map(|(inputs, id, outputs)| {
            let mut r = json!({"inputs": inputs});
            if let Some(id) = id {
                r["id"] = json!(id);
            }
            if !outputs.is_empty() {
                r["outputs"] = outputs.iter().map(|n| json!({"name": n})).collect();
            }
            serde_json::to_vec(&r).unwrap()
        })
}

/// A valid digits request: batch rows of in-range features, flat or nested.
fn valid_digits() -> impl Strategy<Value = (usize, Vec<f32>, bool)> {
    (1usize..=64).prop_flat_map(|rows| {
        (
            Just(rows),
            proptest::collection::vec(0.0f32..=16.0, rows * 64),
            any::<bool>(),
        )
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn random_v2_requests_are_well_formed_or_4xx(body in request(&["input", "a", "b", "c", "d", "zz"])) {
        check_all(&body);
    }

    #[test]
    fn mangled_requests_never_panic(
        body in request(&["input", "a", "b"]),
        cut in any::<prop::sample::Index>(),
        flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 0..4),
    ) {
        let mut body = body;
        for (i, b) in flips {
            if !body.is_empty() {
                let at = i.index(body.len());
                body[at] = b;
            }
        }
        let end = cut.index(body.len() + 1);
        check_all(&body[..end]);
        check_all(&body);
    }

    #[test]
    fn arbitrary_bytes_never_panic(body in proptest::collection::vec(any::<u8>(), 0..256)) {
        check_all(&body);
    }

    #[test]
    fn valid_digits_requests_pass_in_every_format((rows, values, nested) in valid_digits()) {
        let c = digits();
        let limits = ValidationLimits::default();
        let data: Value = if nested {
            values.chunks(64).map(|r| json!(r)).collect()
        } else {
            json!(values)
        };
        let body = serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [rows, 64],
            "datatype": "FP32", "data": data}]})).unwrap();
        let r = validate_v2(&body, &c, &limits).unwrap();
        assert_well_formed(&r, &c);
        prop_assert_eq!(r.batch, rows);
        prop_assert_eq!(r.inputs[0].as_f32().unwrap(), &values[..]);

        let raw: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        let mut bin = serde_json::to_vec(&json!({"inputs": [{"name": "input",
            "shape": [rows, 64], "datatype": "FP32",
            "parameters": {"binary_data_size": raw.len()}}]})).unwrap();
        let n = bin.len();
        bin.extend_from_slice(&raw);
        let b = validate_v2_binary(&bin, &n.to_string(), &c, &limits).unwrap();
        prop_assert_eq!(&b.inputs, &r.inputs);
        // Any other header length or a byte more or less is refused with 400.
        let short = validate_v2_binary(&bin[..bin.len() - 1], &n.to_string(), &c, &limits);
        prop_assert_eq!(short.unwrap_err().status(), http::StatusCode::BAD_REQUEST);

        let rows_json: Vec<Value> = values.chunks(64).map(|r| json!(r)).collect();
        let tf = validate_predict(
            &serde_json::to_vec(&json!({"instances": rows_json})).unwrap(), &c, &limits).unwrap();
        prop_assert_eq!(&tf.inputs, &r.inputs);
    }
}
