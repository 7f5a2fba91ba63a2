//! JWKS documents: an issuer's public signing keys, looked up by `kid`.
//!
//! Only public signature keys are taken: RSA (`n`/`e`), EC P-256/P-384 (`x`/`y`) and OKP
//! Ed25519 (`x`). Each key records the algorithms it may verify, so a token can never pick
//! an algorithm its key was not meant for. Symmetric (`oct`) keys are never taken from a JWKS.

use std::collections::HashMap;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

/// Most keys a JWKS document may list (more is refused, not truncated).
pub const MAX_KEYS: usize = 100;
/// Largest JWKS document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 256 * 1024;
/// Smallest RSA modulus accepted, in bits; smaller keys are skipped.
pub const MIN_RSA_BITS: usize = 2048;
/// Largest RSA modulus accepted, in bits (the verifier's limit); larger keys are skipped.
pub const MAX_RSA_BITS: usize = 4096;

const RSA_ALGS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// One public verification key from a JWKS, with the algorithms it may verify.
#[derive(Clone)]
pub struct JwkKey {
    kid: String,
    algorithms: Vec<Algorithm>,
    key: DecodingKey,
}

impl std::fmt::Debug for JwkKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwkKey")
            .field("kid", &self.kid)
            .field("algorithms", &self.algorithms)
            .finish_non_exhaustive()
    }
}

impl JwkKey {
    /// The key's id (`kid`).
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithms this key may verify (never empty, never an HMAC algorithm).
    pub fn algorithms(&self) -> &[Algorithm] {
        &self.algorithms
    }

    /// Whether a token signed with `alg` may be verified with this key.
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }

    /// The parsed key, ready for verification.
    pub(crate) fn decoding_key(&self) -> &DecodingKey {
        &self.key
    }
}

/// An issuer's verification keys by `kid`. Cheap to share behind an `Arc`/`ArcSwap`.
#[derive(Debug, Clone, Default)]
pub struct KeySet {
    keys: HashMap<String, Arc<JwkKey>>,
    skipped: usize,
}

impl KeySet {
    /// Parses a JWKS document (`{"keys": [...]}`).
    ///
    /// Keys that cannot be used are skipped, not fatal: unsupported `kty`/`crv`, `use` other
    /// than `sig`, `key_ops` without `verify`, an `alg` that does not fit the key, no `kid`,
    /// bad base64url or sizes, RSA moduli outside 2048..=4096 bits, or a `kid` already seen
    /// (the first wins). Fails (with a message naming no key material) when the document is
    /// over [`MAX_DOCUMENT_BYTES`], is not a JSON object, has no `keys` array, or lists more
    /// than [`MAX_KEYS`] keys.
    pub fn from_jwks_json(document: &[u8]) -> Result<KeySet, String> {
        if document.len() > MAX_DOCUMENT_BYTES {
            return Err(format!(
                "JWKS document is larger than {MAX_DOCUMENT_BYTES} bytes"
            ));
        }
        let doc: Value = serde_json::from_slice(document)
            .map_err(|e| format!("JWKS document is not valid JSON: {e}"))?;
        let entries = doc
            .as_object()
            .ok_or_else(|| "JWKS document is not a JSON object".to_string())?
            .get("keys")
            .and_then(Value::as_array)
            .ok_or_else(|| "JWKS document has no \"keys\" array".to_string())?;
        if entries.len() > MAX_KEYS {
            return Err(format!("JWKS document lists more than {MAX_KEYS} keys"));
        }
        let mut set = KeySet::default();
        for entry in entries {
            match entry.as_object().and_then(parse_jwk) {
                Some(key) if !set.keys.contains_key(&key.kid) => {
                    set.keys.insert(key.kid.clone(), Arc::new(key));
                }
                _ => set.skipped += 1,
            }
        }
        Ok(set)
    }

    /// The key with this `kid`, if the set has one.
    pub fn get(&self, kid: &str) -> Option<Arc<JwkKey>> {
        self.keys.get(kid).cloned()
    }

    /// Number of usable keys.
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    /// Whether the set has no usable key.
    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Number of document entries skipped as unusable (worth a log line when non-zero).
    pub fn skipped(&self) -> usize {
        self.skipped
    }

    /// The `kid`s of the usable keys, in no particular order.
    pub fn kids(&self) -> impl Iterator<Item = &str> {
        self.keys.keys().map(String::as_str)
    }
}

/// One JWK → a usable key, or `None` to skip it.
fn parse_jwk(jwk: &Map<String, Value>) -> Option<JwkKey> {
    let text = |name: &str| -> Option<&str> { jwk.get(name).and_then(Value::as_str) };
    if jwk.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
        return None;
    }
    if let Some(ops) = jwk.get("key_ops") {
        let ops = ops.as_array()?;
        if !ops.iter().any(|op| op.as_str() == Some("verify")) {
            return None;
        }
    }
    let kid = text("kid").filter(|k| !k.is_empty())?;
    let (family, key): (&[Algorithm], DecodingKey) = match text("kty")? {
        "RSA" => {
            let n = b64(text("n")?)?;
            let e = b64(text("e")?)?;
            let n = strip_leading_zeros(&n);
            let e = strip_leading_zeros(&e);
            let bits = n.len() * 8 - n.first().map_or(8, |b| b.leading_zeros() as usize);
            if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&bits) || e.is_empty() || e.len() > 8 {
                return None;
            }
            (RSA_ALGS, DecodingKey::from_rsa_raw_components(n, e))
        }
        "EC" => {
            let (alg, size) = match text("crv")? {
                "P-256" => (&[Algorithm::ES256][..], 32),
                "P-384" => (&[Algorithm::ES384][..], 48),
                _ => return None,
            };
            let x = b64(text("x")?)?;
            let y = b64(text("y")?)?;
            if x.len() != size || y.len() != size {
                return None;
            }
            let mut point = Vec::with_capacity(1 + 2 * size);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            (alg, DecodingKey::from_ec_der(&point))
        }
        "OKP" => {
            if text("crv")? != "Ed25519" {
                return None;
            }
            let x = b64(text("x")?)?;
            if x.len() != 32 {
                return None;
            }
            (&[Algorithm::EdDSA][..], DecodingKey::from_ed_der(&x))
        }
        _ => return None,
    };
    let algorithms = match jwk.get("alg") {
        None => family.to_vec(),
        Some(alg) => {
            let alg: Algorithm = alg.as_str()?.parse().ok()?;
            if !family.contains(&alg) {
                return None;
            }
            vec![alg]
        }
    };
    Some(JwkKey {
        kid: kid.to_string(),
        algorithms,
        key,
    })
}

/// Base64url without padding (trailing `=` tolerated).
fn b64(text: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(text.trim_end_matches('=')).ok()
}

fn strip_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|b| *b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use serde_json::json;

    fn enc(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    fn rsa_jwk(kid: &str, bits: usize) -> Value {
        let mut n = vec![0xC5u8; bits / 8];
        n[bits / 8 - 1] |= 1;
        json!({"kty": "RSA", "kid": kid, "n": enc(&n), "e": "AQAB"})
    }

    fn ec_jwk(kid: &str, crv: &str, size: usize) -> Value {
        json!({"kty": "EC", "kid": kid, "crv": crv, "x": enc(&vec![1; size]), "y": enc(&vec![2; size])})
    }

    fn okp_jwk(kid: &str) -> Value {
        json!({"kty": "OKP", "kid": kid, "crv": "Ed25519", "x": enc(&[3; 32])})
    }

    fn parse(doc: Value) -> KeySet {
        KeySet::from_jwks_json(doc.to_string().as_bytes()).unwrap()
    }

    #[test]
    fn key_families_get_their_algorithms() {
        let set = parse(json!({"keys": [
            rsa_jwk("r", 2048),
            ec_jwk("e256", "P-256", 32),
            ec_jwk("e384", "P-384", 48),
            okp_jwk("ed"),
        ]}));
        assert_eq!(set.len(), 4);
        assert_eq!(set.skipped(), 0);
        let rsa = set.get("r").unwrap();
        assert!(rsa.allows(Algorithm::RS256) && rsa.allows(Algorithm::PS512));
        assert!(!rsa.allows(Algorithm::HS256) && !rsa.allows(Algorithm::ES256));
        assert_eq!(set.get("e256").unwrap().algorithms(), &[Algorithm::ES256]);
        assert_eq!(set.get("e384").unwrap().algorithms(), &[Algorithm::ES384]);
        assert_eq!(set.get("ed").unwrap().algorithms(), &[Algorithm::EdDSA]);
        assert!(set.get("nope").is_none());
        assert_eq!(set.kids().count(), 4);
    }

    #[test]
    fn jwk_alg_narrows_the_key() {
        let mut k = rsa_jwk("r", 2048);
        k["alg"] = json!("PS256");
        let set = parse(json!({"keys": [k]}));
        assert_eq!(set.get("r").unwrap().algorithms(), &[Algorithm::PS256]);
    }

    #[test]
    fn unusable_keys_are_skipped() {
        let mut enc_use = rsa_jwk("enc", 2048);
        enc_use["use"] = json!("enc");
        let mut wrong_alg = ec_jwk("wrong_alg", "P-256", 32);
        wrong_alg["alg"] = json!("ES384");
        let mut hs_alg = rsa_jwk("hs_alg", 2048);
        hs_alg["alg"] = json!("HS256");
        let mut no_verify = okp_jwk("no_verify");
        no_verify["key_ops"] = json!(["sign"]);
        let mut no_kid = okp_jwk("x");
        no_kid.as_object_mut().unwrap().remove("kid");
        let set = parse(json!({"keys": [
            enc_use,
            wrong_alg,
            hs_alg,
            no_verify,
            no_kid,
            {"kty": "oct", "kid": "sym", "k": "c2VjcmV0"},
            {"kty": "OKP", "kid": "x448", "crv": "Ed448", "x": enc(&[1; 57])},
            ec_jwk("p521", "P-521", 66),
            ec_jwk("short", "P-256", 31),
            rsa_jwk("small", 1024),
            rsa_jwk("huge", 8192),
            {"kty": "RSA", "kid": "bad_b64", "n": "!!!", "e": "AQAB"},
            "not an object",
            okp_jwk("dup"),
            okp_jwk("dup"),
        ]}));
        assert_eq!(set.kids().collect::<Vec<_>>(), vec!["dup"]);
        assert_eq!(set.skipped(), 14);
    }

    #[test]
    fn bad_documents_fail() {
        for doc in [
            &b"not json"[..],
            b"[]",
            b"{}",
            b"{\"keys\": {}}",
            b"{\"keys\": null}",
        ] {
            assert!(KeySet::from_jwks_json(doc).is_err());
        }
        assert!(
            KeySet::from_jwks_json(b"{\"keys\": []}")
                .unwrap()
                .is_empty()
        );
        let many: Vec<Value> = (0..=MAX_KEYS).map(|i| okp_jwk(&i.to_string())).collect();
        let err = KeySet::from_jwks_json(json!({ "keys": many }).to_string().as_bytes());
        assert!(err.is_err());
        let mut big = b"{\"keys\": [], \"pad\": \"".to_vec();
        big.resize(MAX_DOCUMENT_BYTES, b'a');
        big.extend_from_slice(b"\"}");
        assert!(KeySet::from_jwks_json(&big).is_err());
    }
}
