//! Verified JWTs, remembered until they expire (or for at most `max_age`), so a client
//! that sends the same token on every request pays for one signature check. Keyed by the
//! SHA-256 of the whole token; only tokens that passed every check are inserted, so
//! unauthenticated input creates no entry. Bounded: at most `capacity` entries.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::Caller;

/// A verified token's caller and the unix second it stops being valid, by token digest.
type Entries = HashMap<[u8; 32], (Arc<Caller>, u64)>;

/// A bounded cache of verified tokens.
pub struct VerifiedTokenCache {
    entries: Mutex<Entries>,
    capacity: usize,
    max_age: u64,
}

impl VerifiedTokenCache {
    /// Holds at most `capacity` tokens, each for at most `max_age` seconds.
    pub fn new(capacity: usize, max_age: u64) -> Self {
        VerifiedTokenCache {
            entries: Mutex::new(HashMap::new()),
            capacity: capacity.max(1),
            max_age,
        }
    }

    /// The caller of a token verified earlier, if it is still valid at `now` (unix seconds).
    pub fn get(&self, token: &str, now: u64) -> Option<Arc<Caller>> {
        let key = digest(token);
        let entries = self.entries.lock().ok()?;
        entries
            .get(&key)
            .filter(|(_, until)| now < *until)
            .map(|(caller, _)| Arc::clone(caller))
    }

    /// Remembers a token that passed verification, until `min(exp, now + max_age)`.
    pub fn insert(&self, token: &str, caller: Arc<Caller>, exp: u64, now: u64) {
        let until = exp.min(now.saturating_add(self.max_age));
        if until <= now {
            return;
        }
        let Ok(mut entries) = self.entries.lock() else {
            return;
        };
        if entries.len() >= self.capacity {
            entries.retain(|_, (_, u)| now < *u);
            if entries.len() >= self.capacity {
                entries.clear();
            }
        }
        entries.insert(digest(token), (caller, until));
    }

    /// Tokens currently remembered.
    pub fn len(&self) -> usize {
        self.entries.lock().map_or(0, |e| e.len())
    }

    /// Whether nothing is remembered.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::{CredentialKind, Scopes};

    fn caller() -> Arc<Caller> {
        Arc::new(Caller::new(
            "alice".into(),
            "pro".into(),
            Scopes::All,
            None,
            CredentialKind::Jwt { issuer: "i".into() },
        ))
    }

    #[test]
    fn remembers_until_exp_or_max_age() {
        let cache = VerifiedTokenCache::new(10, 60);
        cache.insert("t1", caller(), 1_030, 1_000);
        assert_eq!(cache.get("t1", 1_029), Some(caller()));
        assert_eq!(cache.get("t1", 1_030), None, "past exp");
        cache.insert("t2", caller(), 9_999, 1_000);
        assert!(cache.get("t2", 1_059).is_some());
        assert_eq!(cache.get("t2", 1_060), None, "past max_age");
        assert_eq!(cache.get("other", 1_001), None);
        cache.insert("expired", caller(), 999, 1_000);
        assert_eq!(cache.get("expired", 1_000), None);
    }

    #[test]
    fn stays_within_capacity() {
        let cache = VerifiedTokenCache::new(100, 60);
        for i in 0..1_000 {
            cache.insert(&format!("token-{i}"), caller(), 2_000, 1_000);
            assert!(cache.len() <= 100);
        }
    }
}
