//! Limiter behaviour on a fake clock: no sleeps, exact boundaries.

use std::sync::Arc;
use std::time::Duration;

use governor::clock::FakeRelativeClock;

use super::quota::days_from_civil;
use super::*;

type TestLimiter = Limiter<InProcessStore, FakeRelativeClock>;

const MS: Duration = Duration::from_millis(1);

/// A limiter whose clock reads the given UTC time.
fn limiter_at(
    year: i64,
    month: u32,
    day: u32,
    hh: u64,
    mm: u64,
    ss: u64,
) -> (TestLimiter, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    let secs = days_from_civil(year, month, day) as u64 * 86_400 + hh * 3600 + mm * 60 + ss;
    clock.advance(Duration::from_secs(secs));
    (
        Limiter::new(Arc::new(InProcessStore::new()), clock.clone()),
        clock,
    )
}

fn limiter() -> (TestLimiter, FakeRelativeClock) {
    limiter_at(2028, 1, 15, 12, 0, 0)
}

fn spec(rate: &str, burst: u32) -> LimitSpec {
    LimitSpec::new(parse_rate(rate).unwrap(), burst).unwrap()
}

fn quota(text: &str) -> QuotaSpec {
    parse_quota(text).unwrap()
}

fn ok(l: &TestLimiter, consumer: &str, spec: &LimitSpec, cost: u32) -> Admission {
    l.check(consumer, "predict", spec, None, cost)
        .unwrap_or_else(|r| panic!("{consumer} refused: {r:?}"))
}

fn refused(l: &TestLimiter, consumer: &str, spec: &LimitSpec, cost: u32) -> Refusal {
    l.check(consumer, "predict", spec, None, cost)
        .map(|a| panic!("{consumer} admitted: {a:?}"))
        .unwrap_or_else(|r| r)
}

fn own_remaining(l: &TestLimiter, consumer: &str, spec: &LimitSpec) -> u32 {
    let now = l.clock.unix_nanos();
    l.store()
        .gcra_peek(&LimitKey::route(consumer, "predict"), spec.gcra(), now)
        .remaining
}

#[test]
fn exact_admissions_at_the_boundary() {
    let (l, clock) = limiter();
    let s = spec("10/s", 5);
    for expected in (0..5).rev() {
        let a = ok(&l, "alice", &s, 1);
        assert_eq!((a.limit, a.remaining), (5, expected));
    }
    let r = refused(&l, "alice", &s, 1);
    assert_eq!(r.reason, RefusalReason::RateLimited);
    assert_eq!(r.by, LimitedBy::Consumer);
    assert_eq!(r.retry_after, Some(100 * MS));
    assert_eq!(
        r.headers().fields()[1],
        (RATELIMIT_REMAINING, HeaderValue::from_static("0"))
    );
    for _ in 0..20 {
        clock.advance(100 * MS - Duration::from_nanos(1));
        refused(&l, "alice", &s, 1);
        clock.advance(Duration::from_nanos(1));
        ok(&l, "alice", &s, 1);
        refused(&l, "alice", &s, 1);
    }
}

#[test]
fn refills_to_the_burst_and_no_further() {
    let (l, clock) = limiter();
    let s = spec("10/s", 5);
    for _ in 0..5 {
        ok(&l, "alice", &s, 1);
    }
    clock.advance(300 * MS);
    assert_eq!(own_remaining(&l, "alice", &s), 3);
    clock.advance(Duration::from_secs(60));
    for _ in 0..5 {
        ok(&l, "alice", &s, 1);
    }
    refused(&l, "alice", &s, 1);
}

#[test]
fn headers_report_reset_until_full() {
    let (l, _clock) = limiter();
    let a = ok(&l, "alice", &spec("10/s", 5), 2);
    let h = a.headers();
    assert_eq!((h.limit, h.remaining, h.reset), (5, 3, 200 * MS));
    assert_eq!(
        h.fields(),
        [
            (RATELIMIT_LIMIT, HeaderValue::from_static("5")),
            (RATELIMIT_REMAINING, HeaderValue::from_static("3")),
            (RATELIMIT_RESET, HeaderValue::from_static("1")),
        ]
    );
    assert_eq!(ceil_secs(Duration::from_secs(2)), 2);
    assert_eq!(ceil_secs(Duration::from_millis(2001)), 3);
}

#[test]
fn cost_is_accounted_in_units() {
    let (l, clock) = limiter();
    let s = spec("10/s", 5);
    assert_eq!(ok(&l, "alice", &s, 3).remaining, 2);
    let r = refused(&l, "alice", &s, 3);
    // One more unit is needed: it refills in 100 ms.
    assert_eq!(
        (r.reason, r.retry_after, r.remaining),
        (RefusalReason::RateLimited, Some(100 * MS), 2)
    );
    assert_eq!(own_remaining(&l, "alice", &s), 2);
    assert_eq!(ok(&l, "alice", &s, 2).remaining, 0);
    clock.advance(300 * MS);
    assert_eq!(ok(&l, "alice", &s, 3).remaining, 0);
    // Cost 0 counts as 1.
    clock.advance(100 * MS);
    ok(&l, "alice", &s, 0);
    refused(&l, "alice", &s, 0);
}

#[test]
fn cost_above_burst_is_refused_without_consuming() {
    let (l, _clock) = limiter();
    let s = spec("10/s", 5)
        .with_concurrency(1)
        .with_quota(quota("100/day"));
    let r = refused(&l, "alice", &s, 6);
    assert_eq!(r.reason, RefusalReason::CostExceedsBurst);
    assert_eq!(r.retry_after, None);
    assert_eq!((r.limit, r.remaining), (5, 5));
    assert_eq!(own_remaining(&l, "alice", &s), 5);
    assert_eq!(l.inflight().in_flight(&LimitKey::plan("alice")), 0);
    let stats = l.store().stats();
    assert_eq!((stats.cells, stats.quota_counters), (0, 0));
    // A cost above a whole quota window can never fit either.
    let tiny = spec("10/s", 50).with_quota(quota("10/day"));
    assert_eq!(
        refused(&l, "alice", &tiny, 11).reason,
        RefusalReason::CostExceedsBurst
    );
    let a = ok(&l, "alice", &s, 5);
    assert_eq!(a.quota_remaining, Some(95));
}

#[test]
fn consumers_are_independent() {
    let (l, _clock) = limiter();
    let s = spec("1/s", 2);
    ok(&l, "alice", &s, 2);
    refused(&l, "alice", &s, 1);
    ok(&l, "bob", &s, 2);
    refused(&l, "bob", &s, 1);
    // Routes are independent too.
    l.check("alice", "embed", &s, None, 2).unwrap();
}

#[test]
fn model_limit_is_shared_and_refunds_the_consumer() {
    let (l, clock) = limiter();
    let own = spec("100/s", 10);
    let model = spec("10/s", 3);
    let check = |who| l.check(who, "predict", &own, Some(("resnet", &model)), 1);
    check("alice").unwrap();
    check("alice").unwrap();
    check("bob").unwrap();
    let r = check("carol").unwrap_err();
    assert_eq!(
        (r.reason, r.by, r.retry_after),
        (RefusalReason::RateLimited, LimitedBy::Model, Some(100 * MS))
    );
    // carol's own cell got its unit back: the refusal cost her nothing.
    assert_eq!(own_remaining(&l, "carol", &own), 10);
    // Another route on the same model draws from the same global cell.
    assert!(
        l.check("dave", "other-route", &own, Some(("resnet", &model)), 1)
            .is_err()
    );
    // A different model is unaffected.
    l.check("carol", "predict", &own, Some(("bert", &model)), 1)
        .unwrap();
    clock.advance(100 * MS);
    check("carol").unwrap();
}

#[test]
fn reload_keeps_the_counts_and_applies_new_numbers() {
    let (l, clock) = limiter();
    let before = spec("10/s", 5);
    for _ in 0..5 {
        ok(&l, "alice", &before, 1);
    }
    // A new limiter over the same store with the rate doubled (as a reload would build).
    let reloaded = Limiter::new(Arc::clone(l.store()), clock.clone());
    let after = spec("20/s", 5);
    let r = refused(&reloaded, "alice", &after, 1);
    assert_eq!(
        r.retry_after,
        Some(50 * MS),
        "still empty, refilling at the new rate"
    );
    for _ in 0..5 {
        clock.advance(50 * MS - Duration::from_nanos(1));
        refused(&reloaded, "alice", &after, 1);
        clock.advance(Duration::from_nanos(1));
        ok(&reloaded, "alice", &after, 1);
    }
    // Someone who never came is not limited by the change.
    for _ in 0..5 {
        ok(&reloaded, "bob", &after, 1);
    }
    // Quota counts survive a change of the quota's number.
    let q10 = spec("1000/s", 1000).with_quota(quota("10/day"));
    assert_eq!(ok(&l, "carol", &q10, 4).quota_remaining, Some(6));
    let q5 = spec("1000/s", 1000).with_quota(quota("5/day"));
    assert_eq!(ok(&reloaded, "carol", &q5, 1).quota_remaining, Some(0));
    assert_eq!(
        refused(&reloaded, "carol", &q5, 1).reason,
        RefusalReason::QuotaExhausted
    );
}

#[test]
fn quota_rolls_over_at_the_month_boundary_dec_to_jan() {
    let (l, clock) = limiter_at(2027, 12, 31, 23, 59, 58);
    let s = spec("1000/s", 100).with_quota(quota("3/month"));
    assert_eq!(ok(&l, "alice", &s, 2).quota_remaining, Some(1));
    ok(&l, "alice", &s, 1);
    let r = refused(&l, "alice", &s, 1);
    assert_eq!(r.reason, RefusalReason::QuotaExhausted);
    assert_eq!((r.limit, r.remaining), (3, 0));
    assert_eq!(r.retry_after, Some(Duration::from_secs(2)));
    clock.advance(Duration::from_secs(2) - Duration::from_nanos(1));
    refused(&l, "alice", &s, 1);
    clock.advance(Duration::from_nanos(1));
    let a = ok(&l, "alice", &s, 1);
    assert_eq!(a.quota_remaining, Some(2));
    // January has 31 days: the next reset is 2028-02-01.
    assert_eq!(a.headers().limit, 3, "the quota is the binding limit");
    assert_eq!(a.reset, Duration::from_secs(31 * 86_400));
}

#[test]
fn quota_rolls_over_after_feb_29_2028() {
    let (l, clock) = limiter_at(2028, 2, 28, 12, 0, 0);
    let s = spec("1000/s", 100).with_quota(quota("2/month"));
    ok(&l, "alice", &s, 2);
    clock.advance(Duration::from_secs(86_400)); // Feb 29th: still February.
    let r = refused(&l, "alice", &s, 1);
    assert_eq!(r.retry_after, Some(Duration::from_secs(12 * 3600)));
    clock.advance(Duration::from_secs(12 * 3600)); // March 1st, 00:00:00.
    ok(&l, "alice", &s, 2);
}

#[test]
fn quota_rolls_over_at_hour_and_day_boundaries() {
    let (l, clock) = limiter_at(2028, 2, 29, 22, 59, 59);
    let hourly = spec("1000/s", 100).with_quota(quota("1/hour"));
    let daily = spec("1000/s", 100).with_quota(quota("1/day"));
    ok(&l, "h", &hourly, 1);
    ok(&l, "d", &daily, 1);
    clock.advance(Duration::from_secs(1)); // 23:00:00
    ok(&l, "h", &hourly, 1);
    assert_eq!(
        refused(&l, "d", &daily, 1).retry_after,
        Some(Duration::from_secs(3600))
    );
    clock.advance(Duration::from_secs(3600)); // 2028-03-01 00:00:00
    ok(&l, "d", &daily, 1);
}

#[test]
fn refused_requests_consume_no_quota_and_quota_refusals_no_rate() {
    let (l, _clock) = limiter();
    let s = spec("1/s", 2).with_quota(quota("10/day"));
    ok(&l, "alice", &s, 1);
    ok(&l, "alice", &s, 1);
    for _ in 0..5 {
        assert_eq!(
            refused(&l, "alice", &s, 1).reason,
            RefusalReason::RateLimited
        );
    }
    // Same plan-wide counter, another route (so another rate cell).
    let a = l.check("alice", "embed", &s, None, 1).unwrap();
    assert_eq!(a.quota_remaining, Some(7));
    let tight = spec("10/s", 5).with_quota(quota("2/day"));
    ok(&l, "bob", &tight, 2);
    assert_eq!(
        refused(&l, "bob", &tight, 1).reason,
        RefusalReason::QuotaExhausted
    );
    assert_eq!(
        own_remaining(&l, "bob", &tight),
        3,
        "the quota refusal gave the rate unit back"
    );
}

#[test]
fn route_scoped_quota_has_its_own_counter() {
    let (l, _clock) = limiter();
    let plan = spec("1000/s", 100).with_quota(quota("10/day"));
    let mut route_quota = quota("2/day");
    route_quota.scope = QuotaScope::Route;
    let overridden = spec("1000/s", 100).with_quota(route_quota);
    ok(&l, "alice", &plan, 5);
    let a = l.check("alice", "embed", &overridden, None, 2).unwrap();
    assert_eq!(a.quota_remaining, Some(0));
    assert_eq!(ok(&l, "alice", &plan, 1).quota_remaining, Some(4));
}

#[test]
fn permits_are_released_however_the_request_ends() {
    let (l, _clock) = limiter();
    let s = spec("1000/s", 100).with_concurrency(2);
    let first = ok(&l, "alice", &s, 1);
    let second = ok(&l, "alice", &s, 1);
    let r = refused(&l, "alice", &s, 1);
    assert_eq!(
        (r.reason, r.retry_after),
        (
            RefusalReason::TooManyConcurrent,
            Some(Duration::from_secs(1))
        )
    );
    ok(&l, "bob", &s, 1); // bob has his own slots
    drop(first);
    let third = ok(&l, "alice", &s, 1);
    drop((second, third));

    // Early return after admission (e.g. the upstream failed).
    let handle = |fail: bool| -> Result<(), &'static str> {
        let _admission = l
            .check("alice", "predict", &s, None, 1)
            .map_err(|_| "refused")?;
        if fail {
            return Err("upstream error");
        }
        Ok(())
    };
    assert_eq!(handle(true), Err("upstream error"));
    assert_eq!(handle(false), Ok(()));
    // A panic while the request is in flight (e.g. the client went away mid-stream).
    let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let _a = ok(&l, "alice", &s, 1);
        let _b = ok(&l, "alice", &s, 1);
        panic!("connection reset");
    }));
    assert!(unwound.is_err());
    assert_eq!(l.inflight().in_flight(&LimitKey::plan("alice")), 0);
    assert_eq!(l.inflight().active_keys(), 0);
}

#[test]
fn later_refusals_release_permits_and_concurrency_refusals_consume_nothing() {
    let (l, _clock) = limiter();
    let s = spec("10/s", 1).with_concurrency(5);
    let _held = ok(&l, "alice", &s, 1);
    assert_eq!(
        refused(&l, "alice", &s, 1).reason,
        RefusalReason::RateLimited
    );
    assert_eq!(l.inflight().in_flight(&LimitKey::plan("alice")), 1);

    let busy = spec("10/s", 5).with_concurrency(0);
    assert_eq!(
        refused(&l, "bob", &busy, 1).reason,
        RefusalReason::TooManyConcurrent
    );
    assert_eq!(own_remaining(&l, "bob", &busy), 5);

    // The model's in-flight cap protects the backend whoever calls.
    let own = spec("1000/s", 100);
    let model = spec("1000/s", 100).with_concurrency(1);
    let a = l
        .check("carol", "predict", &own, Some(("resnet", &model)), 1)
        .unwrap();
    let r = l
        .check("dave", "predict", &own, Some(("resnet", &model)), 1)
        .unwrap_err();
    assert_eq!(
        (r.reason, r.by),
        (RefusalReason::TooManyConcurrent, LimitedBy::Model)
    );
    drop(a);
    l.check("dave", "predict", &own, Some(("resnet", &model)), 1)
        .unwrap();
}

#[test]
fn eviction_bounds_memory() {
    let (l, clock) = limiter();
    let s = spec("10/s", 5).with_quota(quota("1000/hour"));
    let names: Vec<String> = (0..100_000).map(|i| format!("consumer-{i}")).collect();
    for name in &names {
        ok(&l, name, &s, 1);
    }
    let stats = l.store().stats();
    assert_eq!((stats.cells, stats.quota_counters), (100_000, 100_000));
    let per_consumer = stats.approx_bytes / names.len();
    assert!(per_consumer <= 160, "{per_consumer} bytes per consumer");

    // Refilled cells go after 100 ms; the hour's counters when the hour is over.
    clock.advance(100 * MS);
    assert_eq!(
        l.evict_idle(),
        Evicted {
            cells: 100_000,
            quota_counters: 0
        }
    );
    clock.advance(Duration::from_secs(3600));
    assert_eq!(l.evict_idle().quota_counters, 100_000);
    let stats = l.store().stats();
    assert_eq!((stats.cells, stats.quota_counters), (0, 0));
    assert!(stats.approx_bytes < 100_000, "tables shrank: {stats:?}");
    // An evicted consumer starts with a full bucket, as if new.
    assert_eq!(ok(&l, "consumer-7", &s, 5).remaining, 0);
}

#[test]
fn forgetting_a_consumer_frees_its_state() {
    let (l, _clock) = limiter();
    let s = spec("10/s", 5).with_quota(quota("100/day"));
    ok(&l, "alice", &s, 5);
    ok(&l, "bob", &s, 1);
    l.check("alice", "embed", &s, None, 1).unwrap();
    assert_eq!(l.forget_consumers(&["alice"]), 3);
    let stats = l.store().stats();
    assert_eq!((stats.cells, stats.quota_counters), (1, 1));
    // If alice comes back (re-added), she starts fresh.
    assert_eq!(ok(&l, "alice", &s, 1).quota_remaining, Some(99));
}

#[test]
fn model_quota_refusal_refunds_everything_the_consumer_took() {
    let (l, _clock) = limiter();
    let own = spec("10/s", 5).with_quota(quota("10/day"));
    let model = spec("1000/s", 100).with_quota(quota("1/day"));
    l.check("alice", "predict", &own, Some(("resnet", &model)), 1)
        .unwrap();
    let r = l
        .check("bob", "predict", &own, Some(("resnet", &model)), 1)
        .unwrap_err();
    assert_eq!(
        (r.reason, r.by),
        (RefusalReason::QuotaExhausted, LimitedBy::Model)
    );
    assert_eq!(own_remaining(&l, "bob", &own), 5);
    assert_eq!(ok(&l, "bob", &own, 1).quota_remaining, Some(9));
}

#[test]
fn threads_racing_on_one_cell_get_exactly_the_burst() {
    let (l, _clock) = limiter(); // the clock stands still: no refill during the race
    let s = spec("1/h", 1000).with_quota(quota("700/day"));
    let admitted = std::sync::atomic::AtomicU32::new(0);
    std::thread::scope(|scope| {
        for _ in 0..4 {
            scope.spawn(|| {
                for _ in 0..500 {
                    if l.check("alice", "predict", &s, None, 1).is_ok() {
                        admitted.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            });
        }
    });
    // The quota (700) binds before the burst (1000); refused ones were refunded exactly.
    assert_eq!(admitted.into_inner(), 700);
    assert_eq!(own_remaining(&l, "alice", &s), 300);
}

#[test]
fn unlimited_consumers_only_meet_the_model_limit_and_leave_no_state() {
    let (l, _clock) = limiter();
    assert!(l.check_unlimited(None, 5).is_none(), "nothing to check");
    let model = spec("1/m", 3);
    let a = l
        .check_unlimited(Some(("m", &model)), 2)
        .and_then(Result::ok)
        .unwrap_or_else(|| panic!("refused"));
    assert_eq!((a.limit, a.remaining), (3, 1));
    assert!(a.permit.is_none());
    let r = l
        .check_unlimited(Some(("m", &model)), 2)
        .and_then(Result::err)
        .unwrap_or_else(|| panic!("admitted"));
    assert_eq!(
        (r.reason, r.by),
        (RefusalReason::RateLimited, LimitedBy::Model)
    );
    let r = l
        .check_unlimited(Some(("m", &model)), 4)
        .and_then(Result::err)
        .unwrap_or_else(|| panic!("admitted"));
    assert_eq!(r.reason, RefusalReason::CostExceedsBurst);
    assert_eq!(
        l.store().stats().cells,
        1,
        "only the model's cell is stored"
    );
}
