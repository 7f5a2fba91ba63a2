//! In-flight caps: a [`Permit`] per admitted request, released when it is dropped.
//!
//! The gateway keeps the permit in the request's context, so it is released however the
//! request ends: response sent, client gone, upstream error, panic unwinding. Counts are per
//! process (a permit cannot outlive the process that holds it); with several replicas each
//! enforces its cap on its own share of the traffic.

use std::fmt;
use std::sync::Arc;

use super::store::{CellKey, CellMap, KeyHasher, LimitKey};

#[derive(Debug, Default)]
struct Inflight {
    keys: KeyHasher,
    /// In-flight count per key; an entry exists only while its count is above zero.
    counts: CellMap<u32>,
}

/// Counts requests in flight per key and refuses past a cap. Cloning shares the counts.
/// Memory is proportional to the keys with a request in flight (32 bytes of table each):
/// an entry is removed when its last permit is dropped.
#[derive(Debug, Clone, Default)]
pub struct ConcurrencyLimiter {
    inner: Arc<Inflight>,
}

impl ConcurrencyLimiter {
    /// A limiter with no request in flight.
    pub fn new() -> Self {
        Self::default()
    }

    /// A permit for one more request on `key` if fewer than `cap` are in flight (`cap` 0
    /// refuses always); `None` otherwise, with nothing counted.
    pub fn try_acquire(&self, key: &LimitKey<'_>, cap: u32) -> Option<Permit> {
        if cap == 0 {
            return None;
        }
        let key = self.inner.keys.cell(key);
        let mut count = self.inner.counts.entry(key).or_insert(0);
        if *count >= cap {
            // Not zero here (cap > 0), so no empty entry stays behind.
            return None;
        }
        *count += 1;
        drop(count);
        Some(Permit {
            inner: Arc::clone(&self.inner),
            key,
        })
    }

    /// Requests in flight on `key`.
    pub fn in_flight(&self, key: &LimitKey<'_>) -> u32 {
        self.inner
            .counts
            .get(&self.inner.keys.cell(key))
            .map_or(0, |count| *count)
    }

    /// Keys with at least one request in flight.
    pub fn active_keys(&self) -> usize {
        self.inner.counts.len()
    }
}

/// One request in flight. Dropping it releases the slot (and the key's entry with the last
/// one); it cannot be released twice.
pub struct Permit {
    inner: Arc<Inflight>,
    key: CellKey,
}

impl fmt::Debug for Permit {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Permit").finish_non_exhaustive()
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        self.inner.counts.remove_if_mut(&self.key, |_, count| {
            *count = count.saturating_sub(1);
            *count == 0
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_and_release() {
        let limiter = ConcurrencyLimiter::new();
        let alice = LimitKey::plan("alice");
        let a = limiter.try_acquire(&alice, 2).unwrap();
        let b = limiter.try_acquire(&alice, 2).unwrap();
        assert!(limiter.try_acquire(&alice, 2).is_none());
        assert!(limiter.try_acquire(&LimitKey::plan("bob"), 2).is_some());
        assert_eq!(limiter.in_flight(&alice), 2);
        drop(a);
        let c = limiter.try_acquire(&alice, 2).unwrap();
        drop((b, c));
        assert_eq!(limiter.in_flight(&alice), 0);
        assert_eq!(limiter.active_keys(), 0);
        assert!(limiter.try_acquire(&alice, 0).is_none());
        assert_eq!(limiter.active_keys(), 0);
    }

    #[test]
    fn released_on_early_return_and_unwind() {
        let limiter = ConcurrencyLimiter::new();
        let key = LimitKey::plan("alice");
        let early = |fail: bool| -> Result<(), ()> {
            let _permit = limiter.try_acquire(&key, 1).ok_or(())?;
            if fail {
                return Err(());
            }
            Ok(())
        };
        assert_eq!(early(true), Err(()));
        assert_eq!(early(false), Ok(()));
        let unwound = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let _permit = limiter.try_acquire(&key, 1).unwrap();
            panic!("upstream exploded");
        }));
        assert!(unwound.is_err());
        assert_eq!(limiter.in_flight(&key), 0);
        assert_eq!(limiter.active_keys(), 0);
    }

    #[test]
    fn threads_never_exceed_the_cap() {
        let limiter = ConcurrencyLimiter::new();
        let peak = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..2000 {
                        if let Some(_p) = limiter.try_acquire(&LimitKey::plan("alice"), 3) {
                            let now = limiter.in_flight(&LimitKey::plan("alice"));
                            peak.fetch_max(now, std::sync::atomic::Ordering::Relaxed);
                        }
                    }
                });
            }
        });
        assert!(peak.into_inner() <= 3);
        assert_eq!(limiter.active_keys(), 0);
    }
}
