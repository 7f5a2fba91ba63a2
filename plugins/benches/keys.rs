//! API key verification: lookup by id + HMAC-SHA-256 + constant-time compare, in a store of
//! 10 000 keys. Target: ≤ 2 µs per check.

use criterion::{Criterion, criterion_group, criterion_main};
use modelgate_plugins::auth::keys::{IssuedKey, KeyRecord, KeyStatus, KeyVerifier, SecretHasher};

fn bench(c: &mut Criterion) {
    let hasher = SecretHasher::new(Some(b"bench-pepper".to_vec()));
    let keys: Vec<IssuedKey> = (0..10_000)
        .map(|_| IssuedKey::generate().expect("rng"))
        .collect();
    let records: Vec<KeyRecord> = keys
        .iter()
        .map(|k| KeyRecord {
            id: k.id.clone(),
            consumer: "bench".into(),
            plan: "standard".into(),
            models: vec!["digits".into()],
            group: None,
            created: 0,
            expires: None,
            status: KeyStatus::Active,
            hash: k.hash(&hasher),
            previous: vec![],
        })
        .collect();
    let verifier = KeyVerifier::new(&records, hasher).expect("verifier");
    let presented = keys[5_000].full.clone();
    c.bench_function("api_key_verify_10k_store", |b| {
        b.iter(|| {
            verifier
                .verify(std::hint::black_box(&presented), 1)
                .expect("valid")
        })
    });
    let wrong = format!("{}{}", &presented[..20], "A".repeat(43));
    c.bench_function("api_key_verify_wrong_secret", |b| {
        b.iter(|| verifier.verify(std::hint::black_box(&wrong), 1).is_err())
    });
}

criterion_group!(benches, bench);
criterion_main!(benches);
