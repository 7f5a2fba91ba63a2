//! Rate limiter cost with many consumers in the store, and memory for a million consumers.
//! Target: one `check` ≤ 1 µs with 100 000 active consumers.
//!
//! Under `cargo bench` the binary first prints a memory report: resident-set growth (from
//! `/proc/self/statm`, 4 KiB pages) and the store's own table estimate after one million
//! consumers made one request each (one GCRA cell and one quota counter per consumer).

#![allow(clippy::unwrap_used, missing_docs)]

use std::fmt::Write as _;
use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use criterion::{Criterion, criterion_group};
use governor::clock::FakeRelativeClock;
use modelgate_plugins::ratelimit::{
    ConcurrencyLimiter, InProcessStore, LimitKey, LimitSpec, LimitStore, Limiter, parse_quota,
    parse_rate,
};

const ACTIVE: usize = 100_000;

fn consumer_names(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("consumer-{i:07}")).collect()
}

fn plan() -> LimitSpec {
    LimitSpec::new(parse_rate("100/s").unwrap(), 200)
        .unwrap()
        .with_quota(parse_quota("100000/day").unwrap())
}

fn bench_check(c: &mut Criterion) {
    let names = consumer_names(ACTIVE);
    let spec = plan();
    let capped = plan().with_concurrency(8);
    // Wide enough never to refuse in the bench: it measures the cost of the extra cell.
    let model = LimitSpec::new(parse_rate("1000000000/s").unwrap(), 1_000_000)
        .unwrap()
        .with_concurrency(1_000_000);

    let limiter = Limiter::in_process();
    for name in &names {
        limiter.check(name, "predict", &spec, None, 1).unwrap();
    }
    let stats = limiter.store().stats();
    assert_eq!((stats.cells, stats.quota_counters), (ACTIVE, ACTIVE));

    let mut group = c.benchmark_group("ratelimit_check_100k_consumers");
    // Round-robin over the consumers: each sees one request per ~100k, far below its rate.
    let mut i = 0;
    group.bench_function("rate_and_quota", |b| {
        b.iter(|| {
            i = (i + 1) % ACTIVE;
            limiter
                .check(black_box(&names[i]), "predict", &spec, None, 1)
                .unwrap()
        })
    });
    group.bench_function("rate_quota_concurrency_model", |b| {
        b.iter(|| {
            i = (i + 1) % ACTIVE;
            limiter
                .check(
                    black_box(&names[i]),
                    "predict",
                    &capped,
                    Some(("resnet", &model)),
                    1,
                )
                .unwrap()
        })
    });
    // One consumer hammering: after its burst, every check is a refusal.
    let tight = LimitSpec::new(parse_rate("1/h").unwrap(), 1).unwrap();
    group.bench_function("refused", |b| {
        b.iter(|| {
            limiter
                .check(black_box("hammer"), "predict", &tight, None, 1)
                .err()
        })
    });
    group.finish();

    let inflight = ConcurrencyLimiter::new();
    let key = LimitKey::plan("alice");
    c.bench_function("ratelimit_permit_acquire_release", |b| {
        b.iter(|| drop(black_box(inflight.try_acquire(&key, 8))))
    });
}

fn resident_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn memory_report() {
    const CONSUMERS: u64 = 1_000_000;
    let clock = FakeRelativeClock::default();
    clock.advance(Duration::from_secs(1_800_000_000));
    let store = Arc::new(InProcessStore::new());
    let limiter = Limiter::new(Arc::clone(&store), clock.clone());
    let spec = plan();
    let mut name = String::new();
    let before = resident_bytes();
    for i in 0..CONSUMERS {
        name.clear();
        write!(name, "consumer-{i:07}").unwrap();
        limiter.check(&name, "predict", &spec, None, 1).unwrap();
    }
    let after = resident_bytes();
    let stats = store.stats();
    println!(
        "ratelimit memory: {} consumers -> {} GCRA cells + {} quota counters; \
         resident growth {:.1} MiB ({} B/consumer); table estimate {:.1} MiB ({} B/consumer)",
        CONSUMERS,
        stats.cells,
        stats.quota_counters,
        (after - before) as f64 / 1048576.0,
        (after - before) / CONSUMERS,
        stats.approx_bytes as f64 / 1048576.0,
        stats.approx_bytes as u64 / CONSUMERS,
    );
    clock.advance(Duration::from_secs(86_400));
    let evicted = limiter.evict_idle();
    println!(
        "ratelimit memory: a day later evict_idle removed {} cells + {} counters; \
         table estimate now {} B",
        evicted.cells,
        evicted.quota_counters,
        store.stats().approx_bytes
    );
}

criterion_group!(benches, bench_check);

fn main() {
    if std::env::args().any(|a| a == "--bench") {
        memory_report();
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
