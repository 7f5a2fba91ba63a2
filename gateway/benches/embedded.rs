//! The embedded backend's inference: the bundled digits model run by tract on the calling
//! thread, with the worker's kept run state (as the inference pool runs it) and with a
//! fresh state per run (what every run cost before states were kept).

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::path::Path;

use criterion::{Criterion, criterion_group, criterion_main};

use modelgate::embedded::{ModelMetadata, OnnxModel, RunStates};

fn bench(c: &mut Criterion) {
    let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
    let metadata = ModelMetadata::load(&models.join("digits.json")).unwrap();
    let model = OnnxModel::load(&models.join("digits.onnx"), metadata).unwrap();
    for batch in [1, 32] {
        let rows: Vec<f32> = (0..batch * 64).map(|i| (i * 7 % 17) as f32).collect();
        let mut kept = RunStates::default();
        c.bench_function(&format!("infer/batch{batch}/kept_state"), |b| {
            b.iter(|| model.infer(&mut kept, batch, black_box(&rows)).unwrap())
        });
        c.bench_function(&format!("infer/batch{batch}/fresh_state"), |b| {
            b.iter(|| {
                let mut fresh = RunStates::default();
                model.infer(&mut fresh, batch, black_box(&rows)).unwrap()
            })
        });
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
