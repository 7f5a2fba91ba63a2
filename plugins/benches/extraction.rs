//! Cost the extraction detector adds per query: `observe` of one 64-feature row (the bundled
//! digits model's profile) for a consumer, and a group, with warm state (400 earlier rows).
//! Also prints the p99 of single `observe` calls measured one by one.

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use modelgate_plugins::auth::caller::{Caller, CredentialKind, Scopes};
use modelgate_plugins::extraction::{Detector, DetectorOptions, Identity, Profile};

const NOW: u64 = 1_700_000_000;

fn models() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../models")
}

fn caller(name: &str, group: Option<&str>) -> Caller {
    Caller::new(
        name.to_string(),
        "default".to_string(),
        Scopes::All,
        group.map(str::to_string),
        CredentialKind::ApiKey {
            key_id: name.to_string(),
        },
    )
}

/// Held-out rows and plausible outputs (softmax over negative centroid distances).
fn traffic(profile: &Profile) -> (Vec<Vec<f32>>, Vec<Vec<f32>>) {
    let text = std::fs::read_to_string(models().join("digits_holdout.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    let rows: Vec<Vec<f32>> = serde_json::from_value(v["rows"].clone()).unwrap();
    let outputs = rows
        .iter()
        .map(|r| {
            let logits: Vec<f32> = profile
                .centroids
                .iter()
                .map(|c| -c.iter().zip(r).map(|(a, b)| (a - b) * (a - b)).sum::<f32>() / 40.0)
                .collect();
            let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = logits.iter().map(|l| (l - max).exp()).collect();
            let s: f32 = e.iter().sum();
            e.iter().map(|x| x / s).collect()
        })
        .collect();
    (rows, outputs)
}

fn bench_observe(c: &mut Criterion) {
    let text = std::fs::read_to_string(models().join("digits.profile.json")).unwrap();
    let profile = Profile::from_json(&text).unwrap();
    let (rows, outputs) = traffic(&profile);
    let det = Detector::with_salt(profile, DetectorOptions::default(), 7).unwrap();
    let solo = caller("warm", None);
    let member = caller("member", Some("org"));
    for who in [Identity::of(&solo), Identity::of(&member)] {
        for i in 0..400 {
            let r = i % rows.len();
            det.observe(&who, &rows[r], &outputs[r], NOW).unwrap();
        }
    }
    // Distinct rows (never exact retries): a tiny per-iteration offset on one feature.
    let mut i = 0usize;
    let mut next = |row: &mut Vec<f32>| {
        i += 1;
        let r = i % rows.len();
        row.copy_from_slice(&rows[r]);
        row[(i / rows.len()) % 64] += ((i / rows.len()) % 97) as f32 * 0.01 + 0.001;
        r
    };
    let mut row = vec![0f32; 64];

    let mut group = c.benchmark_group("extraction");
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("observe_1x64_warm_consumer", |b| {
        let who = Identity::of(&solo);
        b.iter(|| {
            let r = next(&mut row);
            black_box(det.observe(&who, &row, &outputs[r], NOW).unwrap());
        })
    });
    group.bench_function("observe_1x64_warm_consumer_in_group", |b| {
        let who = Identity::of(&member);
        b.iter(|| {
            let r = next(&mut row);
            black_box(det.observe(&who, &row, &outputs[r], NOW).unwrap());
        })
    });
    group.bench_function("action_for_precheck", |b| {
        let who = Identity::of(&member);
        b.iter(|| black_box(det.action_for(&who, NOW)))
    });
    group.finish();

    // p99 of single calls (Instant overhead included).
    let who = Identity::of(&member);
    let mut samples: Vec<Duration> = (0..20_000)
        .map(|_| {
            let r = next(&mut row);
            let t = Instant::now();
            black_box(det.observe(&who, &row, &outputs[r], NOW).unwrap());
            t.elapsed()
        })
        .collect();
    samples.sort();
    let q = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "extraction observe (1 row, consumer + group, warm): p50 {:?} p99 {:?} max {:?}",
        q(0.5),
        q(0.99),
        samples[samples.len() - 1]
    );
}

criterion_group!(benches, bench_observe);
criterion_main!(benches);
