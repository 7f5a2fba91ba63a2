//! Body validation cost, JSON parse included: a 64-feature KServe v2 request against the
//! bundled digits contract (the hot path), ~1 MiB requests (JSON and binary extension), a
//! TF-Serving `:predict` row request, and a JSON Schema check.

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use modelgate_plugins::schema::{
    JsonSchema, ModelContract, ValidationLimits, validate_predict, validate_v2, validate_v2_binary,
};
use serde_json::json;

/// Deterministic feature values in [0, 16] with a few decimals, like scaled pixel data.
fn features(n: usize) -> Vec<f32> {
    let mut x = 0x2545_f491_u32;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            (x % 1601) as f32 / 100.0
        })
        .collect()
}

/// A v2 request in the key order clients send (`name`, `shape`, `datatype`, `data`).
fn v2_body(rows: usize, cols: usize) -> Vec<u8> {
    let data = serde_json::to_string(&features(rows * cols)).unwrap();
    format!(
        r#"{{"id":"bench","inputs":[{{"name":"input","shape":[{rows},{cols}],"datatype":"FP32","data":{data}}}],"outputs":[{{"name":"probabilities"}}]}}"#
    )
    .into_bytes()
}

fn bench_validate(c: &mut Criterion) {
    let limits = ValidationLimits::default();
    let digits: serde_json::Value =
        serde_json::from_str(include_str!("../../models/digits.json")).unwrap();
    let digits = ModelContract::from_metadata_json(&digits).unwrap();
    let wide = ModelContract::from_metadata_json(&json!({
        "name": "wide", "max_batch_size": 64,
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 4096]}],
        "outputs": [{"name": "probabilities"}]
    }))
    .unwrap();

    let small = v2_body(1, 64);
    validate_v2(&small, &digits, &limits).unwrap();
    c.bench_function("v2_json_64_features", |b| {
        b.iter(|| validate_v2(black_box(&small), &digits, &limits).unwrap())
    });

    // The same request with the integer pixels of the bundled held-out digits (what
    // `scripts/bench-ab.sh` and `scripts/profile.sh` send).
    let holdout: serde_json::Value =
        serde_json::from_str(include_str!("../../models/digits_holdout.json")).unwrap();
    let pixels = serde_json::to_string(&holdout["rows"][0]).unwrap();
    let integers = format!(
        r#"{{"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":{pixels}}}]}}"#
    )
    .into_bytes();
    validate_v2(&integers, &digits, &limits).unwrap();
    c.bench_function("v2_json_64_integer_features", |b| {
        b.iter(|| validate_v2(black_box(&integers), &digits, &limits).unwrap())
    });

    let batch = v2_body(64, 64);
    validate_v2(&batch, &digits, &limits).unwrap();
    let mut g = c.benchmark_group("v2_json_batch64x64");
    g.throughput(Throughput::Bytes(batch.len() as u64));
    g.bench_function("validate", |b| {
        b.iter(|| validate_v2(black_box(&batch), &digits, &limits).unwrap())
    });
    g.finish();

    // 64 x 3072 floats: ~1 MiB of JSON.
    let wide_contract = ModelContract {
        inputs: vec![modelgate_plugins::schema::TensorSpec {
            shape: vec![-1, 3072],
            ..wide.inputs[0].clone()
        }],
        ..wide.clone()
    };
    let big = v2_body(64, 3072);
    validate_v2(&big, &wide_contract, &limits).unwrap();
    let mut g = c.benchmark_group("v2_json_1mib");
    g.throughput(Throughput::Bytes(big.len() as u64));
    g.sample_size(20);
    g.bench_function(format!("{}_bytes", big.len()), |b| {
        b.iter(|| validate_v2(black_box(&big), &wide_contract, &limits).unwrap())
    });
    g.finish();

    // Binary extension: 64 x 4096 FP32 = 1 MiB of tensor bytes after a small JSON header.
    let raw: Vec<u8> = features(64 * 4096)
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect();
    let mut bin = serde_json::to_vec(&json!({"inputs": [{"name": "input", "shape": [64, 4096],
        "datatype": "FP32", "parameters": {"binary_data_size": raw.len()}}]}))
    .unwrap();
    let header = bin.len().to_string();
    bin.extend_from_slice(&raw);
    validate_v2_binary(&bin, &header, &wide, &limits).unwrap();
    let mut g = c.benchmark_group("v2_binary_1mib");
    g.throughput(Throughput::Bytes(bin.len() as u64));
    g.sample_size(20);
    g.bench_function("validate", |b| {
        b.iter(|| validate_v2_binary(black_box(&bin), &header, &wide, &limits).unwrap())
    });
    g.finish();

    let rows: Vec<Vec<f32>> = features(8 * 64).chunks(64).map(<[f32]>::to_vec).collect();
    let tf = serde_json::to_vec(&json!({ "instances": rows })).unwrap();
    validate_predict(&tf, &digits, &limits).unwrap();
    c.bench_function("tf_predict_8x64_rows", |b| {
        b.iter(|| validate_predict(black_box(&tf), &digits, &limits).unwrap())
    });

    let schema = JsonSchema::compile(
        &json!({
            "type": "object",
            "required": ["model", "messages"],
            "additionalProperties": false,
            "properties": {
                "model": {"type": "string", "maxLength": 64},
                "temperature": {"type": "number", "minimum": 0, "maximum": 2},
                "max_tokens": {"type": "integer", "minimum": 1, "maximum": 4096},
                "messages": {
                    "type": "array", "minItems": 1, "maxItems": 64,
                    "items": {
                        "type": "object",
                        "required": ["role", "content"],
                        "properties": {
                            "role": {"enum": ["system", "user", "assistant"]},
                            "content": {"type": "string", "maxLength": 8192}
                        }
                    }
                }
            }
        }),
        None,
    )
    .unwrap();
    let doc = serde_json::to_vec(&json!({
        "model": "small", "temperature": 0.7, "max_tokens": 256,
        "messages": [
            {"role": "system", "content": "You are a helpful assistant."},
            {"role": "user", "content": "Summarise the design of a model-serving gateway in three sentences."},
            {"role": "assistant", "content": "It routes, authenticates, limits, validates and forwards."},
            {"role": "user", "content": "And what does validation refuse?"}
        ]
    }))
    .unwrap();
    schema.check_body(&doc, &limits).unwrap();
    c.bench_function("json_schema_chat_request", |b| {
        b.iter(|| schema.check_body(black_box(&doc), &limits).unwrap())
    });
}

criterion_group!(benches, bench_validate);
criterion_main!(benches);
