//! What the extraction guard adds to an HTTP-backed v2 route besides the detector itself
//! (benchmarked in `modelgate-plugins`' `extraction` bench): reading the buffered upstream
//! answer as a v2 response and writing the hardened one back, for the bundled digits model's
//! answer shape (`probabilities` FP32 [batch, 10] and `label` INT64 [batch]).

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use serde_json::json;

use modelgate_plugins::extraction::OutputPolicy;
use modelgate_plugins::schema::V2Response;

/// A v2 answer of `batch` rows as a KServe server spells it (full `f32` precision).
fn answer(batch: usize) -> Vec<u8> {
    let probabilities: Vec<f32> = (0..batch * 10)
        .map(|i| ((i * 7919) % 1000) as f32 / 9973.0)
        .collect();
    let labels: Vec<i64> = (0..batch as i64).map(|i| i % 10).collect();
    json!({
        "model_name": "digits",
        "id": "bench",
        "outputs": [
            {"name": "probabilities", "datatype": "FP32", "shape": [batch, 10], "data": probabilities},
            {"name": "label", "datatype": "INT64", "shape": [batch], "data": labels},
        ]
    })
    .to_string()
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    for batch in [1, 32] {
        let body = answer(batch);
        let rounded = |scores: &mut [f32]| {
            for s in scores {
                *s = (*s * 100.0).round() / 100.0;
            }
        };
        c.bench_function(&format!("v2_response_parse/batch{batch}"), |b| {
            b.iter(|| V2Response::parse(black_box(&body), "probabilities", batch * 10).unwrap())
        });
        c.bench_function(
            &format!("v2_response_parse_harden_write/batch{batch}"),
            |b| {
                b.iter(|| {
                    let mut r =
                        V2Response::parse(black_box(&body), "probabilities", batch * 10).unwrap();
                    rounded(&mut r.scores);
                    r.into_json(OutputPolicy::Round { decimals: 2 })
                })
            },
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
