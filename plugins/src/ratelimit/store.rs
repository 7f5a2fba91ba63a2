//! Where rate-limit state lives: GCRA cells and quota counters behind [`LimitStore`], with the
//! in-process [`InProcessStore`].
//!
//! # Memory (in-process)
//!
//! Keys are not stored as strings: a key is two 64-bit hashes (consumer, scope) under a
//! per-process random seed, so an entry has a fixed size and nothing is allocated per
//! request. A GCRA cell is 24 bytes (16 key + 8 TAT) and a quota counter 32 bytes (16 key +
//! 16 counter), plus one control byte each, in open-addressing tables that are 44 %–88 %
//! full; [`StoreStats::approx_bytes`] reports the resulting table size. A consumer with one
//! route cell and one quota counter takes about 65–135 bytes. Measured by the criterion
//! bench (`benches/ratelimit.rs`): 1 million consumers grow the resident set by 116 MiB
//! (121 B per consumer; table estimate 106 B); once idle, `evict_idle` empties and shrinks
//! the tables.
//!
//! Two different identities share a cell only if both 64-bit hashes collide: about
//! n² / 2⁶⁵ for n keys (3 × 10⁻⁸ for a million), and not steerable by a client because the
//! seed is secret and random. The effect would be a shared budget, never a disclosure.

use std::collections::HashSet;
use std::hash::{BuildHasher, BuildHasherDefault, Hash, Hasher, RandomState};
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};

use dashmap::DashMap;

use super::gcra::{self, GcraOutcome, GcraParams, GcraState, UnixNanos};
use super::quota::{QuotaOutcome, QuotaState, QuotaWindow};
use super::spec::QuotaSpec;

/// What a limit counts within, besides the consumer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope<'a> {
    /// One route (by name).
    Route(&'a str),
    /// One model (by name).
    Model(&'a str),
    /// Everything the consumer does (plan-wide quota and concurrency).
    Plan,
}

/// The identity of one piece of limit state: an authenticated consumer (or everyone, for a
/// model's global limit) × a scope. Borrowed, so building one costs nothing; each store
/// derives its own representation (hashes in-process, a string key in a shared store).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct LimitKey<'a> {
    /// The authenticated consumer; `None` for a limit shared by every consumer.
    pub consumer: Option<&'a str>,
    /// What the limit counts within.
    pub scope: Scope<'a>,
}

impl<'a> LimitKey<'a> {
    /// `consumer` on `route`.
    pub fn route(consumer: &'a str, route: &'a str) -> Self {
        LimitKey {
            consumer: Some(consumer),
            scope: Scope::Route(route),
        }
    }

    /// Everything `consumer` does.
    pub fn plan(consumer: &'a str) -> Self {
        LimitKey {
            consumer: Some(consumer),
            scope: Scope::Plan,
        }
    }

    /// Every consumer together on `model`: the global per-model limit.
    pub fn model(model: &'a str) -> Self {
        LimitKey {
            consumer: None,
            scope: Scope::Model(model),
        }
    }
}

/// What [`LimitStore::evict_idle`] removed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Evicted {
    /// GCRA cells that had fully refilled.
    pub cells: usize,
    /// Quota counters of past windows (or at zero).
    pub quota_counters: usize,
}

/// The size of a store, for metrics and memory ceilings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct StoreStats {
    /// GCRA cells held.
    pub cells: usize,
    /// Quota counters held.
    pub quota_counters: usize,
    /// Approximate bytes held by the tables (0 when the store cannot tell).
    pub approx_bytes: usize,
}

/// Storage for GCRA cells and quota counters: the long-lived state that outlives config
/// snapshots. Every method is atomic per key and infallible (a store that can fail, like a
/// network one, decides inside whether to fail open or closed and reports a decision).
///
/// Times are absolute unix nanoseconds ([`UnixNanos`]) so that several gateway replicas can
/// share one store. A Redis implementation fits without changing callers: `gcra_take` is one
/// atomic Lua script (`EVALSHA`) doing the GCRA arithmetic of [`gcra`](super::gcra) on a key
/// such as `mg:rl:{consumer}:{route}` holding the TAT, with `PEXPIREAT` at the TAT so idle
/// cells expire by themselves; `quota_take` is a script over `INCRBY` on a key carrying the
/// window index with `EXPIREAT` at the window end; refunds are `DECRBY`-style scripts;
/// `evict_idle` is then a no-op and `forget_consumer` a `SCAN`/`UNLINK` on the consumer's
/// prefix. Replica clock skew shifts decisions by the skew (NTP keeps it to milliseconds).
pub trait LimitStore: Send + Sync {
    /// Asks the GCRA cell `key` for `cost` units at `now` and consumes them if admitted.
    fn gcra_take(
        &self,
        key: &LimitKey<'_>,
        params: GcraParams,
        cost: NonZeroU32,
        now: UnixNanos,
    ) -> GcraOutcome;

    /// The state of the GCRA cell `key` at `now`, unchanged (an absent cell is full).
    fn gcra_peek(&self, key: &LimitKey<'_>, params: GcraParams, now: UnixNanos) -> GcraState;

    /// Gives back `cost` units taken by an earlier `gcra_take` with the same parameters.
    fn gcra_refund(&self, key: &LimitKey<'_>, params: GcraParams, cost: NonZeroU32);

    /// Counts `cost` units against `quota` in the window containing `now`, if they fit.
    fn quota_take(
        &self,
        key: &LimitKey<'_>,
        quota: &QuotaSpec,
        cost: u64,
        now: UnixNanos,
    ) -> QuotaOutcome;

    /// Gives back `cost` units counted by an earlier `quota_take` at `now` (no-op once that
    /// window is over).
    fn quota_refund(&self, key: &LimitKey<'_>, quota: &QuotaSpec, cost: u64, now: UnixNanos);

    /// Drops state that is identical to absent at `now`: GCRA cells whose TAT has passed
    /// (fully refilled) and quota counters of past windows. Call it periodically.
    fn evict_idle(&self, now: UnixNanos) -> Evicted;

    /// Drops all state of the given consumers (removed from the config); returns how many
    /// entries went. Takes time linear in the store's size.
    fn forget_consumers(&self, consumers: &[&str]) -> usize;

    /// The current size of the store.
    fn stats(&self) -> StoreStats;
}

/// The in-process key: hashes of the consumer and of the scope.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct CellKey {
    consumer: u64,
    scope: u64,
}

/// Derives [`CellKey`]s under a random per-process seed.
#[derive(Debug, Clone, Default)]
pub(crate) struct KeyHasher(RandomState);

impl KeyHasher {
    pub(crate) fn cell(&self, key: &LimitKey<'_>) -> CellKey {
        CellKey {
            consumer: self.0.hash_one(key.consumer),
            scope: self.0.hash_one(key.scope),
        }
    }

    fn quota_cell(&self, key: &LimitKey<'_>, window: QuotaWindow) -> CellKey {
        CellKey {
            consumer: self.0.hash_one(key.consumer),
            scope: self.0.hash_one((key.scope, window)),
        }
    }

    fn consumer(&self, consumer: &str) -> u64 {
        self.0.hash_one(Some(consumer))
    }
}

/// Table hasher for [`CellKey`]s, which are already keyed random hashes: a multiply-mix is
/// enough and keeps lookups cheap (no second SipHash).
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct MixHasher(u64);

impl Hasher for MixHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b));
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = (self.0.rotate_left(23) ^ n).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

pub(crate) type CellMap<V> = DashMap<CellKey, V, BuildHasherDefault<MixHasher>>;

/// A quota counter: `used` units in window `window` (an index of `kind`).
#[derive(Debug, Clone, Copy)]
struct QuotaCell {
    kind: QuotaWindow,
    window: u32,
    used: u64,
}

/// The in-process [`LimitStore`]: lock-free GCRA cells and shard-locked quota counters in
/// concurrent hash maps. Share it with `Arc`; it is meant to live as long as the process.
#[derive(Debug, Default)]
pub struct InProcessStore {
    keys: KeyHasher,
    cells: CellMap<AtomicU64>,
    quotas: CellMap<QuotaCell>,
}

impl InProcessStore {
    /// An empty store with a fresh random key seed.
    pub fn new() -> Self {
        Self::default()
    }
}

fn window_index(kind: QuotaWindow, now: UnixNanos) -> u32 {
    u32::try_from(kind.index(now / 1_000_000_000)).unwrap_or(u32::MAX)
}

impl LimitStore for InProcessStore {
    fn gcra_take(
        &self,
        key: &LimitKey<'_>,
        params: GcraParams,
        cost: NonZeroU32,
        now: UnixNanos,
    ) -> GcraOutcome {
        let key = self.keys.cell(key);
        if let Some(cell) = self.cells.get(&key) {
            return gcra::take(&cell, params, cost, now);
        }
        let cell = self
            .cells
            .entry(key)
            .or_insert_with(|| AtomicU64::new(0))
            .downgrade();
        gcra::take(&cell, params, cost, now)
    }

    fn gcra_peek(&self, key: &LimitKey<'_>, params: GcraParams, now: UnixNanos) -> GcraState {
        let tat = self
            .cells
            .get(&self.keys.cell(key))
            .map_or(0, |cell| cell.load(Ordering::Acquire));
        gcra::peek(tat, params, now)
    }

    fn gcra_refund(&self, key: &LimitKey<'_>, params: GcraParams, cost: NonZeroU32) {
        if let Some(cell) = self.cells.get(&self.keys.cell(key)) {
            gcra::refund(&cell, params, cost);
        }
    }

    fn quota_take(
        &self,
        key: &LimitKey<'_>,
        quota: &QuotaSpec,
        cost: u64,
        now: UnixNanos,
    ) -> QuotaOutcome {
        let window = window_index(quota.window, now);
        let reset_in = quota.window.reset_in(now);
        let key = self.keys.quota_cell(key, quota.window);
        let mut cell = match self.quotas.get_mut(&key) {
            Some(cell) => cell,
            None => self.quotas.entry(key).or_insert(QuotaCell {
                kind: quota.window,
                window,
                used: 0,
            }),
        };
        if window > cell.window {
            cell.window = window;
            cell.used = 0;
        }
        let remaining = quota.count.saturating_sub(cell.used);
        if cost > remaining {
            return QuotaOutcome::Exhausted(QuotaState {
                remaining,
                reset_in,
            });
        }
        cell.used += cost;
        QuotaOutcome::Allowed(QuotaState {
            remaining: remaining - cost,
            reset_in,
        })
    }

    fn quota_refund(&self, key: &LimitKey<'_>, quota: &QuotaSpec, cost: u64, now: UnixNanos) {
        let window = window_index(quota.window, now);
        if let Some(mut cell) = self
            .quotas
            .get_mut(&self.keys.quota_cell(key, quota.window))
            && cell.window == window
        {
            cell.used = cell.used.saturating_sub(cost);
        }
    }

    fn evict_idle(&self, now: UnixNanos) -> Evicted {
        let (cells_before, quotas_before) = (self.cells.len(), self.quotas.len());
        self.cells.retain(|_, tat| *tat.get_mut() > now);
        let current =
            [QuotaWindow::Hour, QuotaWindow::Day, QuotaWindow::Month].map(|w| window_index(w, now));
        self.quotas.retain(|_, q| {
            let current = current[q.kind as usize];
            q.used > 0 && q.window >= current
        });
        // Give memory back after a large eviction, not after every small one.
        if self.cells.len().saturating_mul(4) < self.cells.capacity() {
            self.cells.shrink_to_fit();
        }
        if self.quotas.len().saturating_mul(4) < self.quotas.capacity() {
            self.quotas.shrink_to_fit();
        }
        Evicted {
            cells: cells_before.saturating_sub(self.cells.len()),
            quota_counters: quotas_before.saturating_sub(self.quotas.len()),
        }
    }

    fn forget_consumers(&self, consumers: &[&str]) -> usize {
        let gone: HashSet<u64> = consumers.iter().map(|c| self.keys.consumer(c)).collect();
        let before = self.cells.len() + self.quotas.len();
        self.cells.retain(|k, _| !gone.contains(&k.consumer));
        self.quotas.retain(|k, _| !gone.contains(&k.consumer));
        before.saturating_sub(self.cells.len() + self.quotas.len())
    }

    fn stats(&self) -> StoreStats {
        let slot = |size: usize| size + 1; // one control byte per bucket
        StoreStats {
            cells: self.cells.len(),
            quota_counters: self.quotas.len(),
            approx_bytes: self.cells.capacity() * slot(size_of::<(CellKey, AtomicU64)>())
                + self.quotas.capacity() * slot(size_of::<(CellKey, QuotaCell)>()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ratelimit::spec::QuotaScope;
    use std::time::Duration;

    const SEC: u64 = 1_000_000_000;
    // 2028-02-29T23:00:00Z
    const T0: UnixNanos = 1_835_478_000 * SEC;

    fn params() -> GcraParams {
        GcraParams {
            emission: Duration::from_millis(100),
            burst: NonZeroU32::new(5).unwrap(),
        }
    }

    #[test]
    fn keys_do_not_mix() {
        let store = InProcessStore::new();
        let one = NonZeroU32::MIN;
        let five = NonZeroU32::new(5).unwrap();
        let keys = [
            LimitKey::route("alice", "predict"),
            LimitKey::route("bob", "predict"),
            LimitKey::route("alice", "embed"),
            LimitKey::plan("alice"),
            LimitKey::model("predict"),
        ];
        for key in &keys {
            assert!(matches!(
                store.gcra_take(key, params(), five, T0),
                GcraOutcome::Allowed(_)
            ));
        }
        for key in &keys {
            assert!(matches!(
                store.gcra_take(key, params(), one, T0),
                GcraOutcome::Limited { .. }
            ));
        }
        assert_eq!(store.stats().cells, keys.len());
    }

    #[test]
    fn quota_counts_refunds_and_rolls_over() {
        let store = InProcessStore::new();
        let key = LimitKey::plan("alice");
        let quota = QuotaSpec {
            count: 10,
            window: QuotaWindow::Hour,
            scope: QuotaScope::Consumer,
        };
        let take = |cost, now| store.quota_take(&key, &quota, cost, now);
        assert_eq!(
            take(7, T0),
            QuotaOutcome::Allowed(QuotaState {
                remaining: 3,
                reset_in: Duration::from_secs(3600)
            })
        );
        assert!(matches!(
            take(4, T0),
            QuotaOutcome::Exhausted(QuotaState { remaining: 3, .. })
        ));
        store.quota_refund(&key, &quota, 2, T0);
        assert!(matches!(
            take(5, T0 + 3599 * SEC),
            QuotaOutcome::Allowed(QuotaState { remaining: 0, .. })
        ));
        assert!(matches!(
            take(1, T0 + 3600 * SEC - 1),
            QuotaOutcome::Exhausted(_)
        ));
        // The next hour starts empty, and the old window's refund is void.
        assert!(matches!(
            take(1, T0 + 3600 * SEC),
            QuotaOutcome::Allowed(QuotaState { remaining: 9, .. })
        ));
        store.quota_refund(&key, &quota, 5, T0);
        assert!(matches!(
            take(9, T0 + 3600 * SEC),
            QuotaOutcome::Allowed(QuotaState { remaining: 0, .. })
        ));
    }

    #[test]
    fn eviction_and_forgetting() {
        let store = InProcessStore::new();
        let quota = QuotaSpec {
            count: 10,
            window: QuotaWindow::Day,
            scope: QuotaScope::Consumer,
        };
        for name in ["alice", "bob"] {
            store.gcra_take(&LimitKey::route(name, "r"), params(), NonZeroU32::MIN, T0);
            store.quota_take(&LimitKey::plan(name), &quota, 1, T0);
        }
        assert_eq!(store.forget_consumers(&["alice"]), 2);
        // bob's cell refills after 100 ms; his day counter lives until midnight (1 h).
        assert_eq!(store.evict_idle(T0 + 99_000_000), Evicted::default());
        assert_eq!(
            store.evict_idle(T0 + 100_000_000),
            Evicted {
                cells: 1,
                quota_counters: 0
            }
        );
        assert_eq!(
            store.evict_idle(T0 + 3600 * SEC),
            Evicted {
                cells: 0,
                quota_counters: 1
            }
        );
        assert_eq!(store.stats().cells + store.stats().quota_counters, 0);
    }
}
