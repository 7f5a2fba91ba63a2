//! Rate limiting (pipeline stage 3): GCRA rate with burst per consumer × route, an optional
//! global limit per model that protects backend capacity whoever calls, in-flight caps, and
//! windowed quotas (hour, day, calendar month), all measured in request *cost* units (a
//! request of N rows costs N).
//!
//! [`Limiter::check`] is the one entry point. It runs, in order, stopping at the first
//! refusal:
//!
//! 1. **cost that can never fit** (above a burst or a whole quota window) → refused at once,
//!    nothing consumed, no `Retry-After` (retrying cannot help);
//! 2. **concurrency** (consumer, then model) → an RAII [`Permit`] each;
//! 3. **GCRA** consumer × route, then model;
//! 4. **quota** consumer (or consumer × route for a route override), then model.
//!
//! A refusal by a later step gives back what earlier steps took: permits drop, GCRA units
//! and quota units are refunded. This is *approximate* in the way of any multi-limit check
//! without a global lock (compare river's `rate_limiting/multi.rs`): between the take and
//! the refund, a concurrent request of the same consumer sees the budget without the
//! refunded units and may be refused where a serial order would have admitted it; and a GCRA
//! refund can give back slightly more than was taken when the units had already refilled
//! (see `gcra::refund`). Each single limit is exact: the GCRA cell is one CAS, a quota
//! counter one locked update, a concurrency count one locked update.
//!
//! State (GCRA cells, quota counters, in-flight counts) lives in the [`Limiter`]'s store, not
//! in the config snapshot: the numbers come with every call, so a reload that changes a
//! plan's numbers takes effect on the next request *without resetting the counts*. Only
//! authenticated identities reach `check` (the stage runs after auth), so no client-chosen
//! value creates state. Memory is bounded by [`Limiter::evict_idle`] (run it periodically)
//! and [`Limiter::forget_consumers`] (on reload, for consumers that were removed); see
//! [`store`] for the per-entry size.

pub mod concurrency;
pub mod gcra;
pub mod quota;
pub mod spec;
pub mod store;

use std::num::NonZeroU32;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use governor::clock::{Clock, FakeRelativeClock, SystemClock};
use http::{HeaderName, HeaderValue};

pub use concurrency::{ConcurrencyLimiter, Permit};
pub use gcra::{GcraOutcome, GcraParams, GcraState, UnixNanos};
pub use quota::{QuotaOutcome, QuotaState, QuotaWindow};
pub use spec::{LimitSpec, QuotaScope, QuotaSpec, RateSpec, SpecError, parse_quota, parse_rate};
pub use store::{Evicted, InProcessStore, LimitKey, LimitStore, Scope, StoreStats};

/// The wall clock the limiter reads once per decision, as unix nanoseconds. GCRA and quota
/// windows share it, and a store shared by replicas needs absolute time.
pub trait WallClock: Send + Sync {
    /// Now, in nanoseconds since the unix epoch (0 if the system clock is before 1970).
    fn unix_nanos(&self) -> UnixNanos;
}

/// The system clock (the production choice). A backwards step makes limits stricter for the
/// length of the step; it never lets more through.
impl WallClock for SystemClock {
    fn unix_nanos(&self) -> UnixNanos {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX))
    }
}

/// `governor`'s fake clock, for tests: its reading is taken as unix time, so advance it to
/// the date a test needs first.
impl WallClock for FakeRelativeClock {
    fn unix_nanos(&self) -> UnixNanos {
        self.now().as_u64()
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RefusalReason {
    /// The GCRA rate (with its burst) is used up for now.
    RateLimited,
    /// The quota of the current window is used up.
    QuotaExhausted,
    /// The in-flight cap is reached.
    TooManyConcurrent,
    /// The cost is larger than the burst (or a whole quota window): it can never pass.
    CostExceedsBurst,
}

impl RefusalReason {
    /// A stable snake_case name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            RefusalReason::RateLimited => "rate_limited",
            RefusalReason::QuotaExhausted => "quota_exhausted",
            RefusalReason::TooManyConcurrent => "too_many_concurrent",
            RefusalReason::CostExceedsBurst => "cost_exceeds_burst",
        }
    }
}

/// Which limit refused: the consumer's own, or the model's global one.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum LimitedBy {
    /// The consumer's limit on this route (or plan-wide quota / concurrency).
    Consumer,
    /// The model's global limit, shared by every consumer.
    Model,
}

impl LimitedBy {
    /// `consumer` or `model`, for logs and metric labels.
    pub fn as_str(self) -> &'static str {
        match self {
            LimitedBy::Consumer => "consumer",
            LimitedBy::Model => "model",
        }
    }
}

const RATELIMIT_LIMIT: HeaderName = HeaderName::from_static("ratelimit-limit");
const RATELIMIT_REMAINING: HeaderName = HeaderName::from_static("ratelimit-remaining");
const RATELIMIT_RESET: HeaderName = HeaderName::from_static("ratelimit-reset");

/// The values of the IETF draft `RateLimit-Limit`, `RateLimit-Remaining` and
/// `RateLimit-Reset` headers for one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimitHeaders {
    /// Cost units the limit allows at once (the burst, the quota count, or the cap).
    pub limit: u64,
    /// Cost units left now.
    pub remaining: u64,
    /// Time until `remaining` is back to `limit`.
    pub reset: Duration,
}

impl RateLimitHeaders {
    /// The three header fields; the reset is in whole seconds, rounded up.
    pub fn fields(&self) -> [(HeaderName, HeaderValue); 3] {
        [
            (RATELIMIT_LIMIT, HeaderValue::from(self.limit)),
            (RATELIMIT_REMAINING, HeaderValue::from(self.remaining)),
            (RATELIMIT_RESET, HeaderValue::from(ceil_secs(self.reset))),
        ]
    }
}

/// `d` in whole seconds, rounded up (what `Retry-After` and `RateLimit-Reset` carry).
pub fn ceil_secs(d: Duration) -> u64 {
    d.as_secs() + u64::from(d.subsec_nanos() > 0)
}

/// An admitted request. Keep it (its permits) until the response has ended: dropping it
/// releases the in-flight slots.
#[derive(Debug)]
pub struct Admission {
    /// `RateLimit-Limit` of the most constraining of the consumer's own limits.
    pub limit: u64,
    /// `RateLimit-Remaining` of that limit.
    pub remaining: u64,
    /// `RateLimit-Reset` of that limit.
    pub reset: Duration,
    /// The consumer's in-flight slot, if the spec caps concurrency.
    pub permit: Option<Permit>,
    /// The model's in-flight slot, if the model's spec caps concurrency.
    pub model_permit: Option<Permit>,
    /// Cost units left in the consumer's quota window, if there is a quota.
    pub quota_remaining: Option<u64>,
}

impl Admission {
    /// The `RateLimit-*` header values to send with the response.
    pub fn headers(&self) -> RateLimitHeaders {
        RateLimitHeaders {
            limit: self.limit,
            remaining: self.remaining,
            reset: self.reset,
        }
    }
}

/// A refused request; nothing stays consumed. The `RateLimit-*` values describe the limit
/// that refused: for a concurrency refusal the cap, with a one-second reset; for
/// [`RefusalReason::CostExceedsBurst`] the burst and the bucket's current state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// Why.
    pub reason: RefusalReason,
    /// Whose limit.
    pub by: LimitedBy,
    /// When a request of the same cost may pass (`Retry-After`); `None` if it never will.
    pub retry_after: Option<Duration>,
    /// `RateLimit-Limit`.
    pub limit: u64,
    /// `RateLimit-Remaining`.
    pub remaining: u64,
    /// `RateLimit-Reset`.
    pub reset: Duration,
}

impl Refusal {
    /// The `RateLimit-*` header values to send with the refusal.
    pub fn headers(&self) -> RateLimitHeaders {
        RateLimitHeaders {
            limit: self.limit,
            remaining: self.remaining,
            reset: self.reset,
        }
    }
}

/// When the in-flight cap is reached, suggest retrying after this long.
const BUSY_RETRY: Duration = Duration::from_secs(1);

/// The rate limiter: long-lived state (a [`LimitStore`] and the in-flight counts) and a clock.
/// It holds no numbers: each call brings its [`LimitSpec`]s from the current config snapshot.
/// Cloning shares the state.
pub struct Limiter<S = InProcessStore, C = SystemClock> {
    store: Arc<S>,
    inflight: ConcurrencyLimiter,
    clock: C,
}

impl<S, C: Clone> Clone for Limiter<S, C> {
    fn clone(&self) -> Self {
        Limiter {
            store: Arc::clone(&self.store),
            inflight: self.inflight.clone(),
            clock: self.clock.clone(),
        }
    }
}

impl<S, C> std::fmt::Debug for Limiter<S, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Limiter").finish_non_exhaustive()
    }
}

impl Limiter {
    /// A limiter with a fresh in-process store on the system clock.
    pub fn in_process() -> Self {
        Limiter::new(Arc::new(InProcessStore::new()), SystemClock)
    }
}

impl<S: LimitStore, C: WallClock> Limiter<S, C> {
    /// A limiter over `store` (which may be shared with other limiters) with its own
    /// in-flight counts.
    pub fn new(store: Arc<S>, clock: C) -> Self {
        Limiter {
            store,
            inflight: ConcurrencyLimiter::new(),
            clock,
        }
    }

    /// The same limiter sharing `inflight` counts (e.g. with a limiter it replaces).
    pub fn with_inflight(self, inflight: ConcurrencyLimiter) -> Self {
        Limiter { inflight, ..self }
    }

    /// The state store.
    pub fn store(&self) -> &Arc<S> {
        &self.store
    }

    /// The in-flight counts.
    pub fn inflight(&self) -> &ConcurrencyLimiter {
        &self.inflight
    }

    /// Decides whether `consumer` (an authenticated identity) may send a request of `cost`
    /// units (0 counts as 1) to `route` under `spec`, and, when the route serves a model
    /// with a global limit, under `model` = (model name, its spec). Admitted: the units are
    /// consumed and the permits must be kept until the response ends. Refused: nothing
    /// stays consumed. See the module doc for the order and where it is approximate.
    pub fn check(
        &self,
        consumer: &str,
        route: &str,
        spec: &LimitSpec,
        model: Option<(&str, &LimitSpec)>,
        cost: u32,
    ) -> Result<Admission, Refusal> {
        self.check_optional(consumer, route, Some(spec), model, cost)
    }

    /// Like [`Limiter::check`] for a consumer without limits of its own (an unlimited plan):
    /// only `model`'s limit applies, and no per-consumer state is created. Returns `None`
    /// when there is nothing to check.
    pub fn check_unlimited(
        &self,
        model: Option<(&str, &LimitSpec)>,
        cost: u32,
    ) -> Option<Result<Admission, Refusal>> {
        model.map(|model| self.check_optional("", "", None, Some(model), cost))
    }

    fn check_optional(
        &self,
        consumer: &str,
        route: &str,
        spec: Option<&LimitSpec>,
        model: Option<(&str, &LimitSpec)>,
        cost: u32,
    ) -> Result<Admission, Refusal> {
        let now = self.clock.unix_nanos();
        let units = NonZeroU32::new(cost).unwrap_or(NonZeroU32::MIN);
        let own = LimitKey::route(consumer, route);
        let model = model.map(|(name, spec)| (LimitKey::model(name), spec));

        // 1. A cost that can never fit: refused before anything is touched.
        if let Some(spec) = spec
            && spec.never_fits(units.get())
        {
            return Err(self.unfit(&own, spec, LimitedBy::Consumer, now));
        }
        if let Some((key, mspec)) = &model
            && mspec.never_fits(units.get())
        {
            return Err(self.unfit(key, mspec, LimitedBy::Model, now));
        }

        // 2. In-flight caps; a permit taken here is released if a later step refuses.
        let permit = match spec.and_then(|s| s.concurrency) {
            None => None,
            Some(cap) => Some(
                self.inflight
                    .try_acquire(&LimitKey::plan(consumer), cap)
                    .ok_or_else(|| busy(cap, LimitedBy::Consumer))?,
            ),
        };
        let model_cap = model
            .as_ref()
            .and_then(|(key, mspec)| Some((key, mspec.concurrency?)));
        let model_permit = match model_cap {
            None => None,
            Some((key, cap)) => Some(
                self.inflight
                    .try_acquire(key, cap)
                    .ok_or_else(|| busy(cap, LimitedBy::Model))?,
            ),
        };

        // 3. and 4.: every unit taken is recorded, and refunded unless the request passes.
        let mut taken = Rollback::new(&*self.store, units, now);
        let own_rate = match spec {
            Some(spec) => Some(taken.gcra(&own, spec, LimitedBy::Consumer)?),
            None => None,
        };
        let model_rate = match &model {
            Some((key, mspec)) => Some(taken.gcra(key, mspec, LimitedBy::Model)?),
            None => None,
        };
        let own_quota = match spec.and_then(|s| s.quota.as_ref()) {
            None => None,
            Some(quota) => {
                let key = match quota.scope {
                    QuotaScope::Consumer => LimitKey::plan(consumer),
                    QuotaScope::Route => own,
                };
                Some((quota.count, taken.quota(&key, quota, LimitedBy::Consumer)?))
            }
        };
        if let Some((key, mspec)) = &model
            && let Some(quota) = &mspec.quota
        {
            taken.quota(key, quota, LimitedBy::Model)?;
        }
        taken.commit();

        // Report the most constraining of the consumer's own limits (the model's when the
        // consumer has none).
        let reported = spec
            .zip(own_rate)
            .or_else(|| model.as_ref().map(|(_, m)| *m).zip(model_rate));
        let mut binding = reported.map_or(
            RateLimitHeaders {
                limit: 0,
                remaining: 0,
                reset: Duration::ZERO,
            },
            |(spec, rate)| RateLimitHeaders {
                limit: u64::from(spec.burst.get()),
                remaining: u64::from(rate.remaining),
                reset: rate.full_in,
            },
        );
        if let Some((count, q)) = own_quota
            && q.remaining < binding.remaining
        {
            binding = RateLimitHeaders {
                limit: count,
                remaining: q.remaining,
                reset: q.reset_in,
            };
        }
        Ok(Admission {
            limit: binding.limit,
            remaining: binding.remaining,
            reset: binding.reset,
            permit,
            model_permit,
            quota_remaining: own_quota.map(|(_, q)| q.remaining),
        })
    }

    /// Drops state that is identical to absent now (refilled GCRA cells, counters of past
    /// quota windows). Run it periodically; it takes time linear in the store's size.
    pub fn evict_idle(&self) -> Evicted {
        self.store.evict_idle(self.clock.unix_nanos())
    }

    /// Drops all stored state of `consumers` (removed by a reload). Their in-flight permits
    /// stay valid until dropped. Returns how many entries went.
    pub fn forget_consumers(&self, consumers: &[&str]) -> usize {
        self.store.forget_consumers(consumers)
    }

    fn unfit(
        &self,
        key: &LimitKey<'_>,
        spec: &LimitSpec,
        by: LimitedBy,
        now: UnixNanos,
    ) -> Refusal {
        let state = self.store.gcra_peek(key, spec.gcra(), now);
        Refusal {
            reason: RefusalReason::CostExceedsBurst,
            by,
            retry_after: None,
            limit: u64::from(spec.burst.get()),
            remaining: u64::from(state.remaining),
            reset: state.full_in,
        }
    }
}

fn busy(cap: u32, by: LimitedBy) -> Refusal {
    Refusal {
        reason: RefusalReason::TooManyConcurrent,
        by,
        retry_after: Some(BUSY_RETRY),
        limit: u64::from(cap),
        remaining: 0,
        reset: BUSY_RETRY,
    }
}

/// What one `check` has taken so far (one slot per [`LimitedBy`]); refunded on drop unless
/// committed, so also on an early return or a panic.
struct Rollback<'a, S: LimitStore> {
    store: &'a S,
    units: NonZeroU32,
    now: UnixNanos,
    gcra: [Option<(LimitKey<'a>, GcraParams)>; 2],
    quotas: [Option<(LimitKey<'a>, QuotaSpec)>; 2],
}

impl<'a, S: LimitStore> Rollback<'a, S> {
    fn new(store: &'a S, units: NonZeroU32, now: UnixNanos) -> Self {
        Rollback {
            store,
            units,
            now,
            gcra: [None; 2],
            quotas: [None; 2],
        }
    }

    fn gcra(
        &mut self,
        key: &LimitKey<'a>,
        spec: &LimitSpec,
        by: LimitedBy,
    ) -> Result<GcraState, Refusal> {
        let params = spec.gcra();
        let limit = u64::from(spec.burst.get());
        match self.store.gcra_take(key, params, self.units, self.now) {
            GcraOutcome::Allowed(state) => {
                self.gcra[by as usize] = Some((*key, params));
                Ok(state)
            }
            GcraOutcome::Limited { retry_after, state } => Err(Refusal {
                reason: RefusalReason::RateLimited,
                by,
                retry_after: Some(retry_after),
                limit,
                remaining: u64::from(state.remaining),
                reset: state.full_in,
            }),
            GcraOutcome::CostExceedsBurst => Err(Refusal {
                reason: RefusalReason::CostExceedsBurst,
                by,
                retry_after: None,
                limit,
                remaining: 0,
                reset: Duration::ZERO,
            }),
        }
    }

    fn quota(
        &mut self,
        key: &LimitKey<'a>,
        quota: &QuotaSpec,
        by: LimitedBy,
    ) -> Result<QuotaState, Refusal> {
        let cost = u64::from(self.units.get());
        match self.store.quota_take(key, quota, cost, self.now) {
            QuotaOutcome::Allowed(state) => {
                self.quotas[by as usize] = Some((*key, *quota));
                Ok(state)
            }
            QuotaOutcome::Exhausted(state) => Err(Refusal {
                reason: RefusalReason::QuotaExhausted,
                by,
                retry_after: Some(state.reset_in),
                limit: quota.count,
                remaining: state.remaining,
                reset: state.reset_in,
            }),
        }
    }

    fn commit(mut self) {
        self.gcra = [None; 2];
        self.quotas = [None; 2];
    }
}

impl<S: LimitStore> Drop for Rollback<'_, S> {
    fn drop(&mut self) {
        for (key, params) in self.gcra.iter().flatten() {
            self.store.gcra_refund(key, *params, self.units);
        }
        for (key, quota) in self.quotas.iter().flatten() {
            self.store
                .quota_refund(key, quota, u64::from(self.units.get()), self.now);
        }
    }
}

#[cfg(test)]
mod tests;
