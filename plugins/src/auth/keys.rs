//! Issued API keys: `mg_<key-id>_<secret>`. The store holds, per key, who it belongs to and a
//! hash of its secret — never the secret. Verification looks the key up by id and compares
//! hashes in constant time.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use super::{AuthFailure, Caller, CredentialKind, Scopes};

/// Every key starts with this.
pub const KEY_PREFIX: &str = "mg_";
/// Key ids are 16 lowercase hex characters (64 random bits; public).
pub const KEY_ID_LEN: usize = 16;
/// Secrets are 32 random bytes (256 bits) as unpadded base64url: 43 characters.
pub const SECRET_LEN: usize = 43;

/// Whether a key can be used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyStatus {
    Active,
    Revoked,
}

/// A secret replaced by rotation that still works until `valid_until` (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PreviousSecret {
    pub hash: String,
    pub valid_until: u64,
}

/// One key as stored: identity, limits and the hash of its secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyRecord {
    pub id: String,
    pub consumer: String,
    pub plan: String,
    /// Model names this key may call; `"*"` for all.
    pub models: Vec<String>,
    /// Optional consumer group (an org) for coalition detection.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Unix seconds.
    pub created: u64,
    /// Unix seconds; `None` never expires.
    pub expires: Option<u64>,
    pub status: KeyStatus,
    /// `sha256:<hex>` or `hmac-sha256:<hex>` of the secret.
    pub hash: String,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub previous: Vec<PreviousSecret>,
}

/// A freshly generated key: show `full` to its owner once, store only the hash.
pub struct IssuedKey {
    pub id: String,
    pub full: String,
    secret: String,
}

impl fmt::Debug for IssuedKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("IssuedKey")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}

impl IssuedKey {
    /// A new random id and secret from the OS RNG; fails only if the OS RNG does.
    pub fn generate() -> Result<IssuedKey, String> {
        let mut id = [0u8; KEY_ID_LEN / 2];
        let mut secret = [0u8; 32];
        getrandom::fill(&mut id).map_err(|e| format!("OS random number generator: {e}"))?;
        getrandom::fill(&mut secret).map_err(|e| format!("OS random number generator: {e}"))?;
        let id: String = id.iter().map(|b| format!("{b:02x}")).collect();
        Ok(Self::new_secret(id, URL_SAFE_NO_PAD.encode(secret)))
    }

    /// A new secret for an existing id (rotation).
    pub fn rotate(id: &str) -> Result<IssuedKey, String> {
        let mut secret = [0u8; 32];
        getrandom::fill(&mut secret).map_err(|e| format!("OS random number generator: {e}"))?;
        Ok(Self::new_secret(
            id.to_string(),
            URL_SAFE_NO_PAD.encode(secret),
        ))
    }

    fn new_secret(id: String, secret: String) -> IssuedKey {
        IssuedKey {
            full: format!("{KEY_PREFIX}{id}_{secret}"),
            id,
            secret,
        }
    }

    /// The stored form of the secret under `hasher`.
    pub fn hash(&self, hasher: &SecretHasher) -> String {
        hasher.encode(&self.secret)
    }
}

/// Hashes secrets: HMAC-SHA-256 with a server-side pepper when one is configured,
/// plain SHA-256 otherwise. The stored string names the scheme.
#[derive(Clone, Default)]
pub struct SecretHasher {
    pepper: Option<Vec<u8>>,
}

impl fmt::Debug for SecretHasher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SecretHasher")
            .field("peppered", &self.pepper.is_some())
            .finish()
    }
}

impl SecretHasher {
    /// `pepper` = `None` hashes with SHA-256 alone.
    pub fn new(pepper: Option<Vec<u8>>) -> Self {
        SecretHasher {
            pepper: pepper.filter(|p| !p.is_empty()),
        }
    }

    fn encode(&self, secret: &str) -> String {
        match &self.pepper {
            Some(_) => format!("hmac-sha256:{}", hex(&self.digest(secret, true))),
            None => format!("sha256:{}", hex(&self.digest(secret, false))),
        }
    }

    fn digest(&self, secret: &str, peppered: bool) -> [u8; 32] {
        match (&self.pepper, peppered) {
            (Some(pepper), true) => {
                let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(pepper)
                    .expect("HMAC accepts keys of any length");
                mac.update(secret.as_bytes());
                mac.finalize().into_bytes().into()
            }
            _ => Sha256::digest(secret.as_bytes()).into(),
        }
    }
}

/// A stored hash, decoded once when the verifier is built.
#[derive(Clone, Copy)]
struct StoredHash {
    peppered: bool,
    bytes: [u8; 32],
}

impl StoredHash {
    fn parse(text: &str) -> Option<StoredHash> {
        let (peppered, hex_text) = if let Some(h) = text.strip_prefix("hmac-sha256:") {
            (true, h)
        } else {
            (false, text.strip_prefix("sha256:")?)
        };
        let mut bytes = [0u8; 32];
        if hex_text.len() != 64 {
            return None;
        }
        for (i, pair) in hex_text.as_bytes().chunks(2).enumerate() {
            let pair = std::str::from_utf8(pair).ok()?;
            bytes[i] = u8::from_str_radix(pair, 16).ok()?;
        }
        Some(StoredHash { peppered, bytes })
    }
}

struct VerifiableKey {
    caller: Arc<Caller>,
    expires: Option<u64>,
    revoked: bool,
    current: StoredHash,
    previous: Vec<(StoredHash, u64)>,
}

/// Verifies presented API keys against the store. Built once per config generation.
pub struct KeyVerifier {
    hasher: SecretHasher,
    by_id: HashMap<String, VerifiableKey>,
}

impl KeyVerifier {
    /// Indexes the records by id. Fails, naming the key id, if a stored hash is unreadable or
    /// needs a pepper that is not configured (such a key could never verify).
    pub fn new(records: &[KeyRecord], hasher: SecretHasher) -> Result<KeyVerifier, String> {
        let mut by_id = HashMap::with_capacity(records.len());
        for r in records {
            let parse = |text: &str| {
                StoredHash::parse(text)
                    .filter(|h| !h.peppered || hasher.pepper.is_some())
                    .ok_or_else(|| {
                        format!("key {}: hash is not sha256:<hex> or hmac-sha256:<hex> with a configured pepper", r.id)
                    })
            };
            let previous = r
                .previous
                .iter()
                .map(|p| Ok((parse(&p.hash)?, p.valid_until)))
                .collect::<Result<Vec<_>, String>>()?;
            let key = VerifiableKey {
                caller: Arc::new(Caller::new(
                    r.consumer.clone(),
                    r.plan.clone(),
                    Scopes::from_names(r.models.iter().cloned()),
                    r.group.clone(),
                    CredentialKind::ApiKey {
                        key_id: r.id.clone(),
                    },
                )),
                expires: r.expires,
                revoked: r.status == KeyStatus::Revoked,
                current: parse(&r.hash)?,
                previous,
            };
            if by_id.insert(r.id.clone(), key).is_some() {
                return Err(format!("key {}: duplicate id", r.id));
            }
        }
        Ok(KeyVerifier { hasher, by_id })
    }

    /// Checks a presented key at time `now` (unix seconds). Unknown ids cost the same hashing
    /// as known ones; secrets are compared in constant time.
    pub fn verify(&self, presented: &str, now: u64) -> Result<Arc<Caller>, AuthFailure> {
        let (id, secret) = split_key(presented)?;
        let key = self.by_id.get(id);
        let peppered = key.map_or(self.hasher.pepper.is_some(), |k| k.current.peppered);
        let digest = self.hasher.digest(secret, peppered);
        let Some(key) = key else {
            return Err(AuthFailure::UnknownKey);
        };
        let current = bool::from(digest.ct_eq(&key.current.bytes));
        let previous = key.previous.iter().any(|(hash, until)| {
            let digest = if hash.peppered == peppered {
                digest
            } else {
                self.hasher.digest(secret, hash.peppered)
            };
            bool::from(digest.ct_eq(&hash.bytes)) && now < *until
        });
        if !current && !previous {
            return Err(AuthFailure::WrongSecret);
        }
        if key.revoked {
            return Err(AuthFailure::Revoked);
        }
        if key.expires.is_some_and(|e| now >= e) {
            return Err(AuthFailure::Expired);
        }
        Ok(Arc::clone(&key.caller))
    }

    /// The consumers that hold at least one usable (not revoked) key.
    pub fn consumers(&self) -> std::collections::HashSet<&str> {
        self.by_id
            .values()
            .filter(|k| !k.revoked)
            .map(|k| k.caller.consumer.as_str())
            .collect()
    }

    /// Number of keys indexed.
    pub fn len(&self) -> usize {
        self.by_id.len()
    }

    /// Whether the store has no keys.
    pub fn is_empty(&self) -> bool {
        self.by_id.is_empty()
    }
}

/// [`KEY_BYTES`] flag: a key id byte (lower-case hex).
const ID_BYTE: u8 = 1;
/// [`KEY_BYTES`] flag: a secret byte (unpadded base64url).
const SECRET_BYTE: u8 = 2;
/// What each byte may be in a key, one table look-up per byte on every request.
static KEY_BYTES: [u8; 256] = {
    let mut table = [0u8; 256];
    let mut b = 0;
    while b < 256 {
        let c = b as u8;
        if c.is_ascii_digit() || matches!(c, b'a'..=b'f') {
            table[b] |= ID_BYTE;
        }
        if c.is_ascii_alphanumeric() || c == b'-' || c == b'_' {
            table[b] |= SECRET_BYTE;
        }
        b += 1;
    }
    table
};

/// Splits `mg_<id>_<secret>` after checking its shape; never echoes the input.
pub fn split_key(presented: &str) -> Result<(&str, &str), AuthFailure> {
    let malformed = AuthFailure::Malformed("key_malformed");
    let rest = presented
        .strip_prefix(KEY_PREFIX)
        .ok_or(malformed.clone())?;
    if rest.len() != KEY_ID_LEN + 1 + SECRET_LEN || rest.as_bytes()[KEY_ID_LEN] != b'_' {
        return Err(malformed);
    }
    let (id, secret) = (&rest[..KEY_ID_LEN], &rest[KEY_ID_LEN + 1..]);
    let id_ok = id.bytes().all(|b| KEY_BYTES[usize::from(b)] & ID_BYTE != 0);
    let secret_ok = secret
        .bytes()
        .all(|b| KEY_BYTES[usize::from(b)] & SECRET_BYTE != 0);
    if id_ok && secret_ok {
        Ok((id, secret))
    } else {
        Err(malformed)
    }
}

/// The key id of a presented key, if it has the right shape (for audit records).
pub fn key_id_of(presented: &str) -> Option<&str> {
    split_key(presented).ok().map(|(id, _)| id)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(issued: &IssuedKey, hasher: &SecretHasher) -> KeyRecord {
        KeyRecord {
            id: issued.id.clone(),
            consumer: "acme".into(),
            plan: "standard".into(),
            models: vec!["digits".into()],
            group: Some("org-1".into()),
            created: 1_000,
            expires: Some(2_000),
            status: KeyStatus::Active,
            hash: issued.hash(hasher),
            previous: vec![],
        }
    }

    #[test]
    fn issued_key_has_the_documented_shape_and_verifies() {
        for hasher in [
            SecretHasher::new(None),
            SecretHasher::new(Some(b"pepper".to_vec())),
        ] {
            let key = IssuedKey::generate().unwrap();
            assert!(key.full.starts_with("mg_"));
            assert_eq!(key.full.len(), 3 + KEY_ID_LEN + 1 + SECRET_LEN);
            let rec = record(&key, &hasher);
            assert!(
                !rec.hash.contains(&key.secret),
                "secret stored in the clear"
            );
            let v = KeyVerifier::new(&[rec], hasher).unwrap();
            let caller = v.verify(&key.full, 1_500).unwrap();
            assert_eq!(caller.consumer, "acme");
            assert_eq!(caller.group.as_deref(), Some("org-1"));
            assert!(caller.scopes.allows("digits") && !caller.scopes.allows("other"));
            assert_eq!(
                caller.credential,
                CredentialKind::ApiKey {
                    key_id: key.id.clone()
                }
            );
        }
    }

    #[test]
    fn refusals() {
        let hasher = SecretHasher::new(Some(b"pepper".to_vec()));
        let key = IssuedKey::generate().unwrap();
        let mut rec = record(&key, &hasher);
        let v = KeyVerifier::new(std::slice::from_ref(&rec), hasher.clone()).unwrap();
        assert_eq!(v.verify(&key.full, 2_000), Err(AuthFailure::Expired));
        let other = IssuedKey::generate().unwrap();
        assert_eq!(v.verify(&other.full, 1_500), Err(AuthFailure::UnknownKey));
        let wrong = format!("mg_{}_{}", key.id, &other.full[3 + KEY_ID_LEN + 1..]);
        assert_eq!(v.verify(&wrong, 1_500), Err(AuthFailure::WrongSecret));
        for bad in [
            "",
            "mg_",
            "bearer",
            &key.full[..key.full.len() - 1],
            &format!("{}x", key.full),
            &key.full.replace("mg_", "xx_"),
        ] {
            assert_eq!(
                v.verify(bad, 1_500),
                Err(AuthFailure::Malformed("key_malformed")),
                "{bad}"
            );
        }
        rec.status = KeyStatus::Revoked;
        let v = KeyVerifier::new(&[rec], hasher).unwrap();
        assert_eq!(v.verify(&key.full, 1_500), Err(AuthFailure::Revoked));
    }

    /// The byte table accepts exactly lower-case hex in the id and base64url in the secret.
    #[test]
    fn key_bytes_are_checked_one_by_one() {
        let key = IssuedKey::generate().unwrap();
        let (id_at, secret_at) = (KEY_PREFIX.len() + 3, KEY_PREFIX.len() + KEY_ID_LEN + 5);
        for c in (0u8..128).map(char::from) {
            for (at, allowed) in [
                (id_at, c.is_ascii_digit() || ('a'..='f').contains(&c)),
                (secret_at, c.is_ascii_alphanumeric() || c == '-' || c == '_'),
            ] {
                let mut presented = key.full.clone();
                presented.replace_range(at..at + 1, c.encode_utf8(&mut [0; 4]));
                assert_eq!(split_key(&presented).is_ok(), allowed, "{c:?} at {at}");
            }
        }
        let mut presented = key.full.clone();
        presented.replace_range(id_at..id_at + 2, "é");
        assert!(split_key(&presented).is_err());
    }

    #[test]
    fn pepper_matters() {
        let key = IssuedKey::generate().unwrap();
        let rec = record(&key, &SecretHasher::new(Some(b"one".to_vec())));
        let v = KeyVerifier::new(
            std::slice::from_ref(&rec),
            SecretHasher::new(Some(b"two".to_vec())),
        )
        .unwrap();
        assert_eq!(v.verify(&key.full, 1_500), Err(AuthFailure::WrongSecret));
        assert!(
            KeyVerifier::new(&[rec], SecretHasher::new(None)).is_err(),
            "peppered hash without pepper accepted"
        );
    }

    #[test]
    fn rotation_keeps_the_old_secret_until_the_grace_ends() {
        let hasher = SecretHasher::new(None);
        let old = IssuedKey::generate().unwrap();
        let mut rec = record(&old, &hasher);
        let new = IssuedKey::rotate(&old.id).unwrap();
        rec.previous.push(PreviousSecret {
            hash: rec.hash.clone(),
            valid_until: 1_600,
        });
        rec.hash = new.hash(&hasher);
        let v = KeyVerifier::new(&[rec], hasher).unwrap();
        assert!(v.verify(&new.full, 1_500).is_ok());
        assert!(v.verify(&old.full, 1_599).is_ok());
        assert_eq!(v.verify(&old.full, 1_600), Err(AuthFailure::WrongSecret));
    }

    #[test]
    fn debug_output_never_shows_a_secret() {
        let key = IssuedKey::generate().unwrap();
        let shown = format!("{key:?} {:?}", SecretHasher::new(Some(b"pepper".to_vec())));
        assert!(!shown.contains(&key.secret) && !shown.contains("pepper\""));
    }
}
