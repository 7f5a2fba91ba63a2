//! GCRA on one cell, run by `governor`.
//!
//! A cell is one `AtomicU64`: the theoretical arrival time (TAT) in absolute unix nanoseconds.
//! `governor` keeps TATs relative to the instant each `RateLimiter` was built and fixes its
//! quota at construction, so a long-lived `governor` limiter can neither change its numbers on
//! reload nor share cells with a successor. Here a `RateLimiter` is built per decision (a few
//! integer operations, no allocation) over a one-cell [`StateStore`] view and a clock pinned at
//! the decision instant: `governor`'s relative time 0 *is* `now`, and the view converts to and
//! from absolute TATs. The stored cells therefore outlive every limiter, any quota applies to
//! them, and a cell whose TAT is in the past is identical to an absent one (which is what
//! makes eviction safe).
//!
//! A change of numbers keeps each cell's debt *in time* (TAT − now), capped at one full
//! bucket under the new numbers (`burst × emission`; under unchanged numbers the debt never
//! exceeds that, so the cap only acts after a change). After a rate increase an emptied
//! bucket is still empty and refills at the new rate; after a decrease the same time debt
//! is worth fewer units, so some of the used burst comes back early.

use std::cell::Cell;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use governor::clock::Clock;
use governor::middleware::StateInformationMiddleware;
use governor::nanos::Nanos;
use governor::state::{NotKeyed, StateStore};
use governor::{Quota, RateLimiter};

/// Absolute time: nanoseconds since the unix epoch (UTC). Good until the year 2554.
pub type UnixNanos = u64;

/// GCRA parameters: one cost unit refills every `emission`; at most `burst` units at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct GcraParams {
    /// Time for one cost unit to refill (at least 1 ns is used).
    pub emission: Duration,
    /// The bucket size.
    pub burst: NonZeroU32,
}

impl GcraParams {
    /// The `governor` quota with these parameters.
    pub fn quota(&self) -> Quota {
        let emission = self.emission.max(Duration::from_nanos(1));
        // `with_period` refuses only a zero period, excluded on the line above.
        Quota::with_period(emission)
            .unwrap_or(Quota::per_second(NonZeroU32::MAX))
            .allow_burst(self.burst)
    }

    /// The emission interval in nanoseconds, exactly as `governor` uses it.
    pub fn emission_nanos(&self) -> u64 {
        u64::try_from(self.quota().replenish_interval().as_nanos()).unwrap_or(u64::MAX)
    }

    /// The time a full bucket takes to refill from empty (`burst × emission`), in nanoseconds.
    pub fn capacity_nanos(&self) -> u64 {
        self.emission_nanos()
            .saturating_mul(u64::from(self.burst.get()))
    }
}

/// A cell's state after a decision (or a peek).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GcraState {
    /// Cost units that would still pass right now.
    pub remaining: u32,
    /// Time until the bucket is full again (0 if it is).
    pub full_in: Duration,
}

/// The result of asking one cell for `cost` units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GcraOutcome {
    /// Admitted; the units are consumed.
    Allowed(GcraState),
    /// Refused, nothing consumed; `retry_after` is when `cost` units will be there.
    Limited {
        /// Earliest time a request of the same cost passes.
        retry_after: Duration,
        /// The cell as it is (remaining is 0 or less than the cost).
        state: GcraState,
    },
    /// The cost exceeds the burst: it can never pass. Nothing consumed.
    CostExceedsBurst,
}

/// `governor`'s clock for one decision: always 0, which the view maps to `now`.
struct DecisionInstant;

impl Clock for DecisionInstant {
    type Instant = Nanos;

    fn now(&self) -> Nanos {
        Nanos::from(0)
    }
}

/// One cell seen by `governor`: relative TATs (from `now`) in, absolute TATs stored.
struct CellView<'a> {
    cell: &'a AtomicU64,
    now: UnixNanos,
    /// The largest debt (TAT − now) the current numbers allow: one full bucket.
    capacity: u64,
    /// The absolute TAT after the decision (written on success, observed on refusal).
    tat: Cell<UnixNanos>,
}

impl StateStore for CellView<'_> {
    type Key = NotKeyed;

    fn measure_and_replace<T, F, E>(&self, _key: &NotKeyed, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let mut current = self.cell.load(Ordering::Acquire);
        loop {
            let debt = current.saturating_sub(self.now);
            if debt > self.capacity {
                // Only after a change of numbers: cap the debt at one bucket for good, so the
                // cell refills at the new rate from now on (this consumes nothing).
                let capped = self.now.saturating_add(self.capacity);
                match self.cell.compare_exchange_weak(
                    current,
                    capped,
                    Ordering::AcqRel,
                    Ordering::Acquire,
                ) {
                    Ok(_) => current = capped,
                    Err(actual) => current = actual,
                }
                continue;
            }
            // A TAT at or before `now` is a full bucket: relative 0, same as an absent cell.
            self.tat.set(self.now.saturating_add(debt));
            let (outcome, next) = f(Some(Nanos::from(debt)))?;
            let next = self.now.saturating_add(next.as_u64());
            match self.cell.compare_exchange_weak(
                current,
                next,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => {
                    self.tat.set(next);
                    return Ok(outcome);
                }
                Err(actual) => current = actual,
            }
        }
    }
}

/// Asks `cell` for `cost` units at `now`; consumes them only when admitted. Lock-free (one
/// CAS loop). Never fails: a cost above the burst is [`GcraOutcome::CostExceedsBurst`].
pub(crate) fn take(
    cell: &AtomicU64,
    params: GcraParams,
    cost: NonZeroU32,
    now: UnixNanos,
) -> GcraOutcome {
    let view = CellView {
        cell,
        now,
        capacity: params.capacity_nanos(),
        tat: Cell::new(now),
    };
    let limiter: RateLimiter<NotKeyed, CellView<'_>, DecisionInstant, StateInformationMiddleware> =
        RateLimiter::new(params.quota(), view, DecisionInstant);
    let decision = limiter.check_n(cost);
    let full_in = |tat: UnixNanos| Duration::from_nanos(tat.saturating_sub(now));
    let tat = limiter.into_state_store().tat.get();
    match decision {
        Err(_insufficient) => GcraOutcome::CostExceedsBurst,
        Ok(Ok(snapshot)) => GcraOutcome::Allowed(GcraState {
            remaining: snapshot.remaining_burst_capacity(),
            full_in: full_in(tat),
        }),
        Ok(Err(not_until)) => GcraOutcome::Limited {
            retry_after: not_until.wait_time_from(Nanos::from(0)),
            state: peek(tat, params, now),
        },
    }
}

/// The state of a cell whose stored TAT is `tat` (0 if absent), without changing it.
pub(crate) fn peek(tat: UnixNanos, params: GcraParams, now: UnixNanos) -> GcraState {
    let t = params.emission_nanos();
    let capacity = params.capacity_nanos();
    let debt = tat.saturating_sub(now).min(capacity);
    GcraState {
        remaining: u32::try_from(capacity.saturating_sub(debt) / t).unwrap_or(u32::MAX),
        full_in: Duration::from_nanos(debt),
    }
}

/// Gives `cost` units back to `cell` (undoing an admission that a later check refused).
/// Exact unless, between the admission and the refund, the admitted units had already
/// refilled when another request consumed (possible only when `cost × emission` is shorter
/// than that gap): then slightly more is given back, never beyond a full bucket.
pub(crate) fn refund(cell: &AtomicU64, params: GcraParams, cost: NonZeroU32) {
    let amount = params
        .emission_nanos()
        .saturating_mul(u64::from(cost.get()));
    // `fetch_update` with a closure that always returns `Some` cannot fail.
    let _ = cell.fetch_update(Ordering::AcqRel, Ordering::Acquire, |tat| {
        Some(tat.saturating_sub(amount))
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: u64 = 1_000_000;
    const T0: UnixNanos = 1_800_000_000 * 1_000_000_000;

    fn params(per_second: u32, burst: u32) -> GcraParams {
        GcraParams {
            emission: Duration::from_secs(1) / per_second,
            burst: NonZeroU32::new(burst).unwrap(),
        }
    }

    fn one() -> NonZeroU32 {
        NonZeroU32::MIN
    }

    #[test]
    fn burst_then_one_per_emission() {
        let cell = AtomicU64::new(0);
        let p = params(10, 5);
        for i in 0..5 {
            match take(&cell, p, one(), T0) {
                GcraOutcome::Allowed(s) => assert_eq!(s.remaining, 4 - i),
                other => panic!("request {i}: {other:?}"),
            }
        }
        let GcraOutcome::Limited { retry_after, state } = take(&cell, p, one(), T0) else {
            panic!("sixth request passed")
        };
        assert_eq!(retry_after, Duration::from_millis(100));
        assert_eq!(state.remaining, 0);
        assert_eq!(state.full_in, Duration::from_millis(500));
        // 1 ns early: still refused; at the boundary: exactly one more.
        assert!(matches!(
            take(&cell, p, one(), T0 + 100 * MS - 1),
            GcraOutcome::Limited { .. }
        ));
        assert!(matches!(
            take(&cell, p, one(), T0 + 100 * MS),
            GcraOutcome::Allowed(_)
        ));
        assert!(matches!(
            take(&cell, p, one(), T0 + 100 * MS),
            GcraOutcome::Limited { .. }
        ));
    }

    #[test]
    fn refund_restores_and_peek_reads() {
        let cell = AtomicU64::new(0);
        let p = params(10, 5);
        let three = NonZeroU32::new(3).unwrap();
        assert!(matches!(
            take(&cell, p, three, T0),
            GcraOutcome::Allowed(GcraState { remaining: 2, .. })
        ));
        assert_eq!(peek(cell.load(Ordering::Relaxed), p, T0).remaining, 2);
        refund(&cell, p, three);
        assert_eq!(peek(cell.load(Ordering::Relaxed), p, T0).remaining, 5);
        assert_eq!(
            peek(0, p, T0),
            GcraState {
                remaining: 5,
                full_in: Duration::ZERO
            }
        );
    }

    #[test]
    fn new_numbers_keep_the_time_debt_capped_at_one_bucket() {
        let cell = AtomicU64::new(0);
        assert!(matches!(
            take(&cell, params(10, 5), NonZeroU32::new(5).unwrap(), T0),
            GcraOutcome::Allowed(_)
        ));
        // 500 ms of debt: under 5/s (200 ms a unit, 1 s a bucket) that leaves 2 units.
        assert_eq!(
            peek(cell.load(Ordering::Relaxed), params(5, 5), T0).remaining,
            2
        );
        // Under 20/s (250 ms a bucket) the bucket is just empty, and the cap is written.
        let r = take(&cell, params(20, 5), one(), T0);
        assert!(
            matches!(r, GcraOutcome::Limited { retry_after, .. } if retry_after == Duration::from_millis(50))
        );
        assert_eq!(cell.load(Ordering::Relaxed), T0 + 250 * MS);
    }

    #[test]
    fn cost_above_burst_never_fits() {
        let cell = AtomicU64::new(0);
        let p = params(10, 5);
        assert_eq!(
            take(&cell, p, NonZeroU32::new(6).unwrap(), T0),
            GcraOutcome::CostExceedsBurst
        );
        assert_eq!(cell.load(Ordering::Relaxed), 0);
    }
}
