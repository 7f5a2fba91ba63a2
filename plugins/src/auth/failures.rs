//! Slows brute force: counts failed authentication attempts per peer address in fixed
//! one-minute windows. Memory is bounded: at most `max_peers` addresses are tracked; when
//! full, expired windows are dropped first, then the oldest window. Sharded (every
//! authenticated request asks it), so worker threads do not queue on one lock.

use std::net::IpAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use dashmap::DashMap;

const WINDOW_SECS: u64 = 60;

/// Per-peer failure counter. Only failures create entries, and only up to the bound.
pub struct FailureLimiter {
    per_window: u32,
    max_peers: usize,
    peers: DashMap<IpAddr, (u64, u32)>,
    /// The latest window with a failure: in any other window nobody is blocked, so the
    /// per-request check skips the lookup (the usual case: no failures this minute).
    last_failure_window: AtomicU64,
}

impl FailureLimiter {
    /// Allows `per_minute` failures per address per minute, tracking at most `max_peers`.
    pub fn new(per_minute: u32, max_peers: usize) -> Self {
        FailureLimiter {
            per_window: per_minute.max(1),
            max_peers: max_peers.max(1),
            peers: DashMap::new(),
            last_failure_window: AtomicU64::new(0),
        }
    }

    /// `Some(retry_after)` when `peer` has used up its failures for the current window
    /// (`now` in unix seconds).
    pub fn blocked(&self, peer: IpAddr, now: u64) -> Option<Duration> {
        let window = now / WINDOW_SECS;
        if self.last_failure_window.load(Ordering::Relaxed) != window {
            return None;
        }
        let (w, count) = *self.peers.get(&peer)?;
        match (w, count) {
            (w, count) if w == window && count >= self.per_window => {
                Some(Duration::from_secs((window + 1) * WINDOW_SECS - now))
            }
            _ => None,
        }
    }

    /// Counts one failure for `peer`.
    pub fn record_failure(&self, peer: IpAddr, now: u64) {
        let window = now / WINDOW_SECS;
        // Monotonic: a thread with a slightly older clock must not move it back.
        self.last_failure_window
            .fetch_max(window, Ordering::Relaxed);
        let peers = &self.peers;
        if !peers.contains_key(&peer) && peers.len() >= self.max_peers {
            peers.retain(|_, (w, _)| *w == window);
            if peers.len() >= self.max_peers
                && let Some(oldest) = peers.iter().min_by_key(|e| e.value().0).map(|e| *e.key())
            {
                peers.remove(&oldest);
            }
        }
        let mut entry = peers.entry(peer).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        entry.1 = entry.1.saturating_add(1);
    }

    /// Addresses currently tracked.
    pub fn tracked(&self) -> usize {
        self.peers.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(n: u32) -> IpAddr {
        IpAddr::from(n.to_be_bytes())
    }

    #[test]
    fn blocks_after_the_limit_until_the_window_ends() {
        let l = FailureLimiter::new(3, 10);
        for _ in 0..3 {
            assert_eq!(l.blocked(ip(1), 120), None);
            l.record_failure(ip(1), 120);
        }
        assert_eq!(l.blocked(ip(1), 125), Some(Duration::from_secs(55)));
        assert_eq!(l.blocked(ip(2), 125), None, "other peers unaffected");
        assert_eq!(l.blocked(ip(1), 180), None, "next window");
    }

    #[test]
    fn a_late_failure_from_an_older_window_does_not_unblock_the_current_one() {
        let l = FailureLimiter::new(3, 10);
        for _ in 0..3 {
            l.record_failure(ip(1), 185);
        }
        l.record_failure(ip(2), 119); // recorded late, by a thread whose clock was behind
        assert_eq!(l.blocked(ip(1), 186), Some(Duration::from_secs(54)));
    }

    #[test]
    fn memory_is_bounded() {
        let l = FailureLimiter::new(3, 100);
        for n in 0..10_000 {
            l.record_failure(ip(n), 60 + n as u64 / 1000);
        }
        assert!(l.tracked() <= 100);
    }
}
