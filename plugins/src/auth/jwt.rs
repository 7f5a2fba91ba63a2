//! JWT bearer tokens → a [`Caller`].
//!
//! The header and payload are decoded here, before any signature check, only to enforce
//! the header rules and to pick the issuer's settings from the unverified `iss`; no claim
//! is trusted until the signature verifies. Time is passed in (`now_unix`), so the outcome
//! never depends on the wall clock. Failure reasons are fixed strings ([`reasons`]) and
//! never contain any part of the token.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{AlgorithmFamily, DecodingKey};
use serde_json::{Map, Value};

use super::caller::{Caller, CredentialKind, Scopes};
use super::failure::AuthFailure;
use super::jwks::{JwkKey, KeySet};

pub use jsonwebtoken::Algorithm;

/// Largest token accepted, in bytes.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// The [`AuthFailure::Jwt`] reasons, one per refused check.
pub mod reasons {
    /// Not three base64url parts, bad JSON, header or payload not an object, bad `kid`/`alg` type.
    pub const MALFORMED: &str = "jwt_malformed";
    /// Longer than [`MAX_TOKEN_BYTES`](super::MAX_TOKEN_BYTES).
    pub const TOO_LARGE: &str = "jwt_too_large";
    /// `alg` is `none` (any case).
    pub const ALG_NONE: &str = "jwt_alg_none";
    /// `alg` is unknown or not allowed for the issuer.
    pub const ALG_NOT_ALLOWED: &str = "jwt_alg_not_allowed";
    /// `alg` does not fit the key: HMAC with no issuer secret, or a JWK of another family/alg.
    pub const KEY_CONFUSION: &str = "jwt_key_confusion";
    /// No key with the token's `kid` for this issuer.
    pub const UNKNOWN_KID: &str = "jwt_unknown_kid";
    /// An asymmetric token without a `kid`.
    pub const MISSING_KID: &str = "jwt_missing_kid";
    /// `exp` + leeway is not after now.
    pub const EXPIRED: &str = "jwt_expired";
    /// `nbf` - leeway is after now.
    pub const NOT_YET_VALID: &str = "jwt_not_yet_valid";
    /// `iss` missing, empty or not a string.
    pub const WRONG_ISSUER: &str = "jwt_wrong_issuer";
    /// `iss` names no configured issuer.
    pub const UNKNOWN_ISSUER: &str = "jwt_unknown_issuer";
    /// `aud` missing or naming none of the issuer's audiences.
    pub const WRONG_AUDIENCE: &str = "jwt_wrong_audience";
    /// No `exp` claim.
    pub const MISSING_EXP: &str = "jwt_missing_exp";
    /// A claim of the wrong JSON type (e.g. `exp` as a string or a fraction).
    pub const CLAIM_TYPE: &str = "jwt_claim_type";
    /// The signature does not verify.
    pub const BAD_SIGNATURE: &str = "jwt_bad_signature";
    /// The header carries `jku`, `x5u`, `x5c`, `jwk` or `crit` (never fetched or trusted).
    pub const FORBIDDEN_HEADER: &str = "jwt_forbidden_header";
    /// The consumer claim is missing or empty.
    pub const MISSING_CONSUMER: &str = "jwt_missing_consumer";
}

/// Header parameters that are refused outright: keys or key URLs chosen by the token
/// itself, and critical extensions this verifier does not implement.
const FORBIDDEN_HEADERS: &[&str] = &["jku", "x5u", "x5c", "jwk", "crit"];

/// Where an issuer's asymmetric keys come from: the gateway keeps one refreshed
/// [`KeySet`] per issuer; tests use a `HashMap<issuer, KeySet>`.
pub trait KeyLookup {
    /// The key with this `kid` for this issuer, if known.
    fn key(&self, issuer: &str, kid: &str) -> Option<Arc<JwkKey>>;
}

impl KeyLookup for HashMap<String, KeySet> {
    fn key(&self, issuer: &str, kid: &str) -> Option<Arc<JwkKey>> {
        self.get(issuer).and_then(|set| set.get(kid))
    }
}

/// How tokens from one issuer are verified and mapped to a [`Caller`].
#[derive(Clone)]
pub struct IssuerSettings {
    /// Exact `iss` value.
    pub issuer: String,
    /// Accepted `aud` values; a token must name at least one. Must not be empty.
    pub audiences: Vec<String>,
    /// Accepted algorithms. HS256/384/512 need [`hmac_secret`](Self::hmac_secret).
    pub algorithms: Vec<Algorithm>,
    /// Shared secret for HS* tokens (at least as long as the hash: 32/48/64 bytes).
    pub hmac_secret: Option<Vec<u8>>,
    /// Clock skew tolerated on `exp` and `nbf` (whole seconds).
    pub leeway: Duration,
    /// Claim holding the consumer name (default `sub`).
    pub consumer_claim: String,
    /// Claim holding the plan (default `plan`).
    pub plan_claim: String,
    /// Claim holding the scopes: `"a b"` or `["a", "b"]` (default `scope`).
    pub scopes_claim: String,
    /// Claim holding the group (org, tenant), if any.
    pub group_claim: Option<String>,
    /// Plan used when the token has no plan claim.
    pub default_plan: String,
}

impl std::fmt::Debug for IssuerSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerSettings")
            .field("issuer", &self.issuer)
            .field("audiences", &self.audiences)
            .field("algorithms", &self.algorithms)
            .field(
                "hmac_secret",
                &self.hmac_secret.as_ref().map(|_| "[redacted]"),
            )
            .field("leeway", &self.leeway)
            .field("consumer_claim", &self.consumer_claim)
            .field("plan_claim", &self.plan_claim)
            .field("scopes_claim", &self.scopes_claim)
            .field("group_claim", &self.group_claim)
            .field("default_plan", &self.default_plan)
            .finish()
    }
}

impl IssuerSettings {
    /// Settings with the defaults: RS256 only, no secret, 60 s leeway, claims `sub`/`plan`/
    /// `scope`, no group claim, plan `default`.
    pub fn new(issuer: impl Into<String>, audiences: Vec<String>) -> IssuerSettings {
        IssuerSettings {
            issuer: issuer.into(),
            audiences,
            algorithms: vec![Algorithm::RS256],
            hmac_secret: None,
            leeway: Duration::from_secs(60),
            consumer_claim: "sub".to_string(),
            plan_claim: "plan".to_string(),
            scopes_claim: "scope".to_string(),
            group_claim: None,
            default_plan: "default".to_string(),
        }
    }

    fn check(&self) -> Result<(), String> {
        let name = &self.issuer;
        if name.is_empty() {
            return Err("JWT issuer name is empty".to_string());
        }
        if self.audiences.is_empty() || self.audiences.iter().any(String::is_empty) {
            return Err(format!(
                "JWT issuer {name:?}: audiences must be non-empty strings"
            ));
        }
        if self.algorithms.is_empty() {
            return Err(format!("JWT issuer {name:?}: no algorithms allowed"));
        }
        for alg in &self.algorithms {
            let min = match alg {
                Algorithm::HS256 => 32,
                Algorithm::HS384 => 48,
                Algorithm::HS512 => 64,
                _ => continue,
            };
            match &self.hmac_secret {
                None => {
                    return Err(format!("JWT issuer {name:?}: {alg:?} needs an hmac_secret"));
                }
                Some(secret) if secret.len() < min => {
                    return Err(format!(
                        "JWT issuer {name:?}: hmac_secret must be at least {min} bytes for {alg:?}"
                    ));
                }
                Some(_) => {}
            }
        }
        for (what, claim) in [
            ("consumer_claim", &self.consumer_claim),
            ("plan_claim", &self.plan_claim),
            ("scopes_claim", &self.scopes_claim),
        ] {
            if claim.is_empty() {
                return Err(format!("JWT issuer {name:?}: {what} is empty"));
            }
        }
        if self.group_claim.as_deref() == Some("") {
            return Err(format!("JWT issuer {name:?}: group_claim is empty"));
        }
        Ok(())
    }
}

struct Issuer {
    settings: IssuerSettings,
    /// Built once from `hmac_secret`.
    hmac_key: Option<DecodingKey>,
}

/// Verifies JWTs from the configured issuers. Immutable and cheap to share.
pub struct JwtVerifier {
    issuers: HashMap<String, Issuer>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("issuers", &self.issuers.keys())
            .finish()
    }
}

impl JwtVerifier {
    /// Builds a verifier. Fails (naming the issuer, never the secret) on an empty or
    /// duplicate issuer, no audiences, no algorithms, an HS* algorithm without a long
    /// enough `hmac_secret`, or an empty claim name.
    pub fn new(issuers: Vec<IssuerSettings>) -> Result<JwtVerifier, String> {
        let mut map = HashMap::with_capacity(issuers.len());
        for settings in issuers {
            settings.check()?;
            let hmac_key = settings
                .hmac_secret
                .as_deref()
                .map(DecodingKey::from_secret);
            let name = settings.issuer.clone();
            if map
                .insert(name.clone(), Issuer { settings, hmac_key })
                .is_some()
            {
                return Err(format!("JWT issuer {name:?} is configured twice"));
            }
        }
        Ok(JwtVerifier { issuers: map })
    }

    /// The configured issuer names.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.issuers.keys().map(String::as_str)
    }

    /// Verifies `token` (the bare JWT, without `Bearer `) at time `now_unix` (seconds since
    /// the epoch) and maps its claims to a [`Caller`].
    ///
    /// Asymmetric tokens are verified with `keys.key(iss, kid)`, HS* tokens with the
    /// issuer's secret. Refusals are [`AuthFailure::Jwt`] with one of [`reasons`].
    pub fn verify(
        &self,
        token: &str,
        keys: &dyn KeyLookup,
        now_unix: u64,
    ) -> Result<Caller, AuthFailure> {
        self.verify_inner(token, keys, now_unix)
            .map_err(|why| AuthFailure::Jwt(why.to_string()))
    }

    fn verify_inner(
        &self,
        token: &str,
        keys: &dyn KeyLookup,
        now_unix: u64,
    ) -> Result<Caller, &'static str> {
        use reasons::*;

        if token.len() > MAX_TOKEN_BYTES {
            return Err(TOO_LARGE);
        }
        let mut parts = token.split('.');
        let (Some(header_b64), Some(payload_b64), Some(signature_b64), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(MALFORMED);
        };
        if URL_SAFE_NO_PAD.decode(signature_b64).is_err() {
            return Err(MALFORMED);
        }
        let header = decode_object(header_b64).ok_or(MALFORMED)?;

        // Header rules, before anything else is looked at.
        if FORBIDDEN_HEADERS
            .iter()
            .any(|name| header.contains_key(*name))
        {
            return Err(FORBIDDEN_HEADER);
        }
        let alg_name = header.get("alg").and_then(Value::as_str).ok_or(MALFORMED)?;
        if alg_name.eq_ignore_ascii_case("none") {
            return Err(ALG_NONE);
        }
        let kid = match header.get("kid") {
            None => None,
            Some(Value::String(kid)) => Some(kid.as_str()),
            Some(_) => return Err(MALFORMED),
        };

        // The unverified payload only picks the issuer's settings.
        let payload = decode_object(payload_b64).ok_or(MALFORMED)?;
        let iss = match payload.get("iss") {
            Some(Value::String(iss)) if !iss.is_empty() => iss.as_str(),
            _ => return Err(WRONG_ISSUER),
        };
        let issuer = self.issuers.get(iss).ok_or(UNKNOWN_ISSUER)?;
        let settings = &issuer.settings;

        let alg: Algorithm = alg_name.parse().map_err(|_| ALG_NOT_ALLOWED)?;
        let jwk;
        let key: &DecodingKey = if alg.family() == AlgorithmFamily::Hmac {
            let hmac_key = issuer.hmac_key.as_ref().ok_or(KEY_CONFUSION)?;
            if !settings.algorithms.contains(&alg) {
                return Err(ALG_NOT_ALLOWED);
            }
            hmac_key
        } else {
            if !settings.algorithms.contains(&alg) {
                return Err(ALG_NOT_ALLOWED);
            }
            let kid = kid.ok_or(MISSING_KID)?;
            jwk = keys.key(&settings.issuer, kid).ok_or(UNKNOWN_KID)?;
            if !jwk.allows(alg) {
                return Err(KEY_CONFUSION);
            }
            jwk.decoding_key()
        };

        let signing_input_len = header_b64.len() + 1 + payload_b64.len();
        let signing_input = &token.as_bytes()[..signing_input_len];
        match jsonwebtoken::crypto::verify(signature_b64, signing_input, key, alg) {
            Ok(true) => {}
            Ok(false) | Err(_) => return Err(BAD_SIGNATURE),
        }

        // From here on the claims are trusted.
        let leeway = settings.leeway.as_secs();
        let exp = numeric_claim(&payload, "exp")?.ok_or(MISSING_EXP)?;
        let nbf = numeric_claim(&payload, "nbf")?;
        numeric_claim(&payload, "iat")?;
        if exp.saturating_add(leeway) <= now_unix {
            return Err(EXPIRED);
        }
        if nbf.is_some_and(|nbf| nbf > now_unix.saturating_add(leeway)) {
            return Err(NOT_YET_VALID);
        }
        let audience_ok = match payload.get("aud") {
            None => false,
            Some(Value::String(aud)) => settings.audiences.contains(aud),
            Some(Value::Array(auds)) => {
                let mut any = false;
                for aud in auds {
                    let aud = aud.as_str().ok_or(CLAIM_TYPE)?;
                    any |= settings.audiences.iter().any(|a| a == aud);
                }
                any
            }
            Some(_) => return Err(CLAIM_TYPE),
        };
        if !audience_ok {
            return Err(WRONG_AUDIENCE);
        }

        let consumer = match payload.get(&settings.consumer_claim) {
            None => return Err(MISSING_CONSUMER),
            Some(Value::String(c)) if c.is_empty() => return Err(MISSING_CONSUMER),
            Some(Value::String(c)) => c.clone(),
            Some(_) => return Err(CLAIM_TYPE),
        };
        let plan = match payload.get(&settings.plan_claim) {
            None => settings.default_plan.clone(),
            Some(Value::String(p)) if p.is_empty() => settings.default_plan.clone(),
            Some(Value::String(p)) => p.clone(),
            Some(_) => return Err(CLAIM_TYPE),
        };
        let scopes = match payload.get(&settings.scopes_claim) {
            None => Scopes::Models(Vec::new()),
            Some(Value::String(s)) => Scopes::from_names(s.split_ascii_whitespace()),
            Some(Value::Array(items)) => {
                let names: Option<Vec<&str>> = items.iter().map(Value::as_str).collect();
                Scopes::from_names(names.ok_or(CLAIM_TYPE)?)
            }
            Some(_) => return Err(CLAIM_TYPE),
        };
        let group = match settings.group_claim.as_ref().and_then(|g| payload.get(g)) {
            None => None,
            Some(Value::String(g)) if g.is_empty() => None,
            Some(Value::String(g)) => Some(g.clone()),
            Some(_) => return Err(CLAIM_TYPE),
        };
        Ok(Caller::new(
            consumer,
            plan,
            scopes,
            group,
            CredentialKind::Jwt {
                issuer: settings.issuer.clone(),
            },
        ))
    }
}

/// Base64url (no padding) → a JSON object, or `None`.
fn decode_object(part: &str) -> Option<Map<String, Value>> {
    let bytes = URL_SAFE_NO_PAD.decode(part).ok()?;
    match serde_json::from_slice(&bytes).ok()? {
        Value::Object(map) => Some(map),
        _ => None,
    }
}

/// A NumericDate claim: absent → `None`; a non-negative integer → its value; anything
/// else (string, fraction, negative) → [`reasons::CLAIM_TYPE`].
fn numeric_claim(payload: &Map<String, Value>, name: &str) -> Result<Option<u64>, &'static str> {
    match payload.get(name) {
        None => Ok(None),
        Some(value) => value.as_u64().map(Some).ok_or(reasons::CLAIM_TYPE),
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use std::sync::OnceLock;

    use jsonwebtoken::{EncodingKey, Header};
    use rand_core::OsRng;
    use serde_json::json;

    use super::*;

    const ISS: &str = "https://idp.example";
    const HS_ISS: &str = "https://hs.example";
    const AUD: &str = "modelgate";
    const NOW: u64 = 1_700_000_000;
    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    struct Keys {
        rsa: rsa::RsaPrivateKey,
        rsa_enc: EncodingKey,
        ec_enc: EncodingKey,
        ed_enc: EncodingKey,
        other_ed_enc: EncodingKey,
        jwks: String,
    }

    fn b64(bytes: &[u8]) -> String {
        URL_SAFE_NO_PAD.encode(bytes)
    }

    /// One RSA key per test binary (keygen is slow in debug builds).
    fn keys() -> &'static Keys {
        static KEYS: OnceLock<Keys> = OnceLock::new();
        KEYS.get_or_init(|| {
            use ed25519_dalek::pkcs8::EncodePrivateKey as _;
            use rsa::pkcs1::EncodeRsaPrivateKey as _;
            use rsa::traits::PublicKeyParts as _;

            let rsa = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
            let rsa_enc = EncodingKey::from_rsa_der(rsa.to_pkcs1_der().unwrap().as_bytes());
            let ec = p256::ecdsa::SigningKey::random(&mut OsRng);
            let ec_enc = EncodingKey::from_ec_der(ec.to_pkcs8_der().unwrap().as_bytes());
            let point = ec.verifying_key().to_encoded_point(false);
            let ed = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let ed_enc = EncodingKey::from_ed_der(ed.to_pkcs8_der().unwrap().as_bytes());
            let other_ed = ed25519_dalek::SigningKey::generate(&mut OsRng);
            let other_ed_enc =
                EncodingKey::from_ed_der(other_ed.to_pkcs8_der().unwrap().as_bytes());
            let (n, e) = (b64(&rsa.n().to_bytes_be()), b64(&rsa.e().to_bytes_be()));
            let jwks = json!({"keys": [
                {"kty": "RSA", "kid": "rsa", "use": "sig", "n": n, "e": e},
                {"kty": "RSA", "kid": "rsa-ps", "alg": "PS256", "n": n, "e": e},
                {"kty": "EC", "kid": "ec", "crv": "P-256",
                 "x": b64(point.x().unwrap()), "y": b64(point.y().unwrap())},
                {"kty": "OKP", "kid": "ed", "crv": "Ed25519",
                 "x": b64(ed.verifying_key().as_bytes())},
            ]})
            .to_string();
            Keys {
                rsa,
                rsa_enc,
                ec_enc,
                ed_enc,
                other_ed_enc,
                jwks,
            }
        })
    }

    fn key_lookup() -> HashMap<String, KeySet> {
        let set = KeySet::from_jwks_json(keys().jwks.as_bytes()).unwrap();
        assert_eq!(set.len(), 4);
        // The HS issuer also publishes the RSA key, under another kid.
        let doc = keys().jwks.replace("\"kid\":\"rsa\"", "\"kid\":\"hs-rsa\"");
        let hs_set = KeySet::from_jwks_json(doc.as_bytes()).unwrap();
        assert!(hs_set.get("hs-rsa").is_some() && hs_set.get("rsa").is_none());
        HashMap::from([(ISS.to_string(), set), (HS_ISS.to_string(), hs_set)])
    }

    fn verifier() -> JwtVerifier {
        let main = IssuerSettings {
            algorithms: vec![
                Algorithm::RS256,
                Algorithm::PS256,
                Algorithm::ES256,
                Algorithm::EdDSA,
            ],
            leeway: Duration::from_secs(30),
            group_claim: Some("org".to_string()),
            default_plan: "free".to_string(),
            ..IssuerSettings::new(ISS, vec![AUD.to_string(), "other-aud".to_string()])
        };
        let hs = IssuerSettings {
            algorithms: vec![Algorithm::HS256, Algorithm::RS256],
            hmac_secret: Some(SECRET.to_vec()),
            ..IssuerSettings::new(HS_ISS, vec![AUD.to_string()])
        };
        JwtVerifier::new(vec![main, hs]).unwrap()
    }

    fn claims() -> Value {
        json!({
            "iss": ISS, "aud": AUD, "sub": "alice", "exp": NOW + 300, "iat": NOW,
            "plan": "pro", "scope": "small large", "org": "acme",
        })
    }

    fn with(mut claims: Value, name: &str, value: Value) -> Value {
        claims[name] = value;
        claims
    }

    fn without(mut claims: Value, name: &str) -> Value {
        claims.as_object_mut().unwrap().remove(name);
        claims
    }

    fn sign_with(alg: Algorithm, kid: Option<&str>, claims: &Value, key: &EncodingKey) -> String {
        let header = Header {
            kid: kid.map(str::to_string),
            ..Header::new(alg)
        };
        jsonwebtoken::encode(&header, claims, key).unwrap()
    }

    fn sign(alg: Algorithm, kid: Option<&str>, claims: &Value) -> String {
        let k = keys();
        let hmac = EncodingKey::from_secret(SECRET);
        let key = match alg.family() {
            AlgorithmFamily::Rsa => &k.rsa_enc,
            AlgorithmFamily::Ec => &k.ec_enc,
            AlgorithmFamily::Ed => &k.ed_enc,
            AlgorithmFamily::Hmac => &hmac,
        };
        sign_with(alg, kid, claims, key)
    }

    /// A token from raw header and payload JSON and a raw signature part.
    fn craft(header: &Value, payload: &Value, signature: &str) -> String {
        format!(
            "{}.{}.{signature}",
            b64(header.to_string().as_bytes()),
            b64(payload.to_string().as_bytes())
        )
    }

    fn verify_at(token: &str, now: u64) -> Result<Caller, AuthFailure> {
        verifier().verify(token, &key_lookup(), now)
    }

    fn verify(token: &str) -> Result<Caller, AuthFailure> {
        verify_at(token, NOW)
    }

    fn refused(token: &str) -> String {
        let failure = verify(token).unwrap_err();
        let reason = failure.reason().to_string();
        assert!(reason.starts_with("jwt_"), "{reason}");
        assert!(!reason.contains(token) || token.is_empty());
        for part in token.split('.').filter(|p| p.len() >= 4) {
            assert!(!reason.contains(part), "reason {reason} leaks a token part");
        }
        assert_eq!(failure.denial(), AuthFailure::Jwt(String::new()).denial());
        reason
    }

    #[track_caller]
    fn assert_refused(token: &str, expected: &str) {
        assert_eq!(refused(token), expected);
    }

    // ---- success ----

    #[test]
    fn rs256_maps_claims_to_caller() {
        let caller = verify(&sign(Algorithm::RS256, Some("rsa"), &claims())).unwrap();
        assert_eq!(
            caller,
            Caller::new(
                "alice".to_string(),
                "pro".to_string(),
                Scopes::Models(vec!["small".to_string(), "large".to_string()]),
                Some("acme".to_string()),
                CredentialKind::Jwt {
                    issuer: ISS.to_string()
                }
            )
        );
    }

    #[test]
    fn ps256_verifies() {
        let caller = verify(&sign(Algorithm::PS256, Some("rsa"), &claims())).unwrap();
        assert_eq!(caller.consumer, "alice");
        // A key whose JWK says `alg: PS256` verifies PS256.
        assert!(verify(&sign(Algorithm::PS256, Some("rsa-ps"), &claims())).is_ok());
    }

    #[test]
    fn es256_verifies() {
        let caller = verify(&sign(Algorithm::ES256, Some("ec"), &claims())).unwrap();
        assert_eq!(caller.consumer, "alice");
    }

    #[test]
    fn eddsa_verifies() {
        let caller = verify(&sign(Algorithm::EdDSA, Some("ed"), &claims())).unwrap();
        assert_eq!(caller.consumer, "alice");
    }

    #[test]
    fn hs256_verifies_with_the_issuer_secret() {
        let c = with(claims(), "iss", json!(HS_ISS));
        let caller = verify(&sign(Algorithm::HS256, None, &c)).unwrap();
        assert_eq!(
            caller.credential,
            CredentialKind::Jwt {
                issuer: HS_ISS.to_string()
            }
        );
        assert_eq!(
            caller.group, None,
            "no group claim configured for this issuer"
        );
        // A kid on an HS token is ignored: the secret is the only HMAC key.
        assert!(verify(&sign(Algorithm::HS256, Some("anything"), &c)).is_ok());
        // The same issuer also takes RS256, with its own JWKS.
        assert!(verify(&sign(Algorithm::RS256, Some("hs-rsa"), &c)).is_ok());
    }

    #[test]
    fn claim_shapes_and_defaults() {
        let c = with(
            without(without(claims(), "plan"), "org"),
            "scope",
            json!(["a", "b"]),
        );
        let caller = verify(&sign(Algorithm::EdDSA, Some("ed"), &c)).unwrap();
        assert_eq!(caller.plan, "free");
        assert_eq!(caller.group, None);
        assert_eq!(
            caller.scopes,
            Scopes::Models(vec!["a".to_string(), "b".to_string()])
        );

        let c = with(claims(), "scope", json!("a *"));
        assert_eq!(
            verify(&sign(Algorithm::EdDSA, Some("ed"), &c))
                .unwrap()
                .scopes,
            Scopes::All
        );

        let c = without(claims(), "scope");
        let caller = verify(&sign(Algorithm::EdDSA, Some("ed"), &c)).unwrap();
        assert_eq!(caller.scopes, Scopes::Models(vec![]));
        assert!(!caller.scopes.allows("small"));

        let c = with(claims(), "aud", json!(["nope", "other-aud"]));
        assert!(verify(&sign(Algorithm::EdDSA, Some("ed"), &c)).is_ok());

        let settings = IssuerSettings {
            algorithms: vec![Algorithm::EdDSA],
            consumer_claim: "client_id".to_string(),
            plan_claim: "tier".to_string(),
            scopes_claim: "models".to_string(),
            group_claim: Some("tenant".to_string()),
            ..IssuerSettings::new(ISS, vec![AUD.to_string()])
        };
        let custom = JwtVerifier::new(vec![settings]).unwrap();
        let c = json!({"iss": ISS, "aud": AUD, "exp": NOW + 10, "client_id": "svc", "tier": "gold",
            "models": ["m"], "tenant": "t1", "sub": "bob"});
        let caller = custom.verify(&sign(Algorithm::EdDSA, Some("ed"), &c), &key_lookup(), NOW);
        let caller = caller.unwrap();
        assert_eq!(
            (
                caller.consumer.as_str(),
                caller.plan.as_str(),
                caller.group.as_deref()
            ),
            ("svc", "gold", Some("t1"))
        );
        assert_eq!(caller.scopes, Scopes::Models(vec!["m".to_string()]));
    }

    #[test]
    fn time_is_the_callers_and_leeway_applies() {
        let token = sign(Algorithm::EdDSA, Some("ed"), &claims());
        assert!(verify_at(&token, NOW).is_ok());
        // exp = NOW + 300, leeway 30: valid strictly before exp + leeway.
        assert!(verify_at(&token, NOW + 329).is_ok());
        assert_eq!(
            verify_at(&token, NOW + 330).unwrap_err().reason(),
            reasons::EXPIRED
        );
        let nbf = with(claims(), "nbf", json!(NOW + 30));
        let token = sign(Algorithm::EdDSA, Some("ed"), &nbf);
        assert!(verify_at(&token, NOW).is_ok());
        assert_eq!(
            verify_at(&token, NOW - 1).unwrap_err().reason(),
            reasons::NOT_YET_VALID
        );
    }

    // ---- refusals ----

    #[test]
    fn malformed() {
        let good = sign(Algorithm::EdDSA, Some("ed"), &claims());
        let parts: Vec<&str> = good.split('.').collect();
        let hdr = json!({"alg": "EdDSA", "kid": "ed"});
        for bad in [
            String::new(),
            "abc".to_string(),
            format!("{}.{}", parts[0], parts[1]),
            format!("{good}.{}", parts[2]),
            format!("!!!.{}.{}", parts[1], parts[2]),
            format!("{}.{}.!!!", parts[0], parts[1]),
            format!("{}=.{}.{}", parts[0], parts[1], parts[2]),
            format!("{}.{}.{}", b64(b"not json"), parts[1], parts[2]),
            format!("{}.{}.{}", parts[0], b64(b"{\"iss\":"), parts[2]),
            craft(&json!([1, 2]), &claims(), parts[2]),
            craft(&json!("EdDSA"), &claims(), parts[2]),
            craft(&hdr, &json!([claims()]), parts[2]),
            craft(&json!({"kid": "ed"}), &claims(), parts[2]),
            craft(&json!({"alg": 7, "kid": "ed"}), &claims(), parts[2]),
            craft(&json!({"alg": "EdDSA", "kid": 7}), &claims(), parts[2]),
        ] {
            assert_refused(&bad, reasons::MALFORMED);
        }
    }

    #[test]
    fn too_large() {
        let c = with(claims(), "pad", json!("x".repeat(MAX_TOKEN_BYTES)));
        assert_refused(&sign(Algorithm::EdDSA, Some("ed"), &c), reasons::TOO_LARGE);
        assert_refused(&"a".repeat(MAX_TOKEN_BYTES + 1), reasons::TOO_LARGE);
    }

    #[test]
    fn alg_none_in_any_case() {
        for alg in ["none", "None", "NONE", "nOnE"] {
            assert_refused(
                &craft(&json!({"alg": alg}), &claims(), ""),
                reasons::ALG_NONE,
            );
            let signed = craft(&json!({"alg": alg, "kid": "rsa"}), &claims(), "c2ln");
            assert_refused(&signed, reasons::ALG_NONE);
        }
    }

    #[test]
    fn alg_not_allowed() {
        // Known but not configured for the issuer, although the key would fit.
        assert_refused(
            &sign(Algorithm::RS384, Some("rsa"), &claims()),
            reasons::ALG_NOT_ALLOWED,
        );
        // HS384 at an issuer with a secret that allows only HS256.
        let c = with(claims(), "iss", json!(HS_ISS));
        let key = EncodingKey::from_secret(&[7; 48]);
        assert_refused(
            &sign_with(Algorithm::HS384, None, &c, &key),
            reasons::ALG_NOT_ALLOWED,
        );
        // Unknown or wrongly cased names.
        let sig = sign(Algorithm::RS256, Some("rsa"), &claims());
        let sig = sig.rsplit('.').next().unwrap();
        for alg in ["rs256", "RS1", "HS999", "ES512", ""] {
            let token = craft(&json!({"alg": alg, "kid": "rsa"}), &claims(), sig);
            assert_refused(&token, reasons::ALG_NOT_ALLOWED);
        }
    }

    #[test]
    fn key_confusion() {
        use rsa::pkcs1::EncodeRsaPublicKey as _;
        // The classic attack: HS256 "signed" with the issuer's RSA public key as the secret,
        // at an issuer with no HMAC secret.
        let public_der = keys().rsa.to_public_key().to_pkcs1_der().unwrap();
        let attack_key = EncodingKey::from_secret(public_der.as_bytes());
        let token = sign_with(Algorithm::HS256, Some("rsa"), &claims(), &attack_key);
        assert_refused(&token, reasons::KEY_CONFUSION);
        // Same attack at an issuer that does have a secret: verified with that secret only.
        let c = with(claims(), "iss", json!(HS_ISS));
        let token = sign_with(Algorithm::HS256, Some("hs-rsa"), &c, &attack_key);
        assert_refused(&token, reasons::BAD_SIGNATURE);
        // An asymmetric alg naming a key of another family or a narrower alg.
        assert_refused(
            &sign(Algorithm::ES256, Some("rsa"), &claims()),
            reasons::KEY_CONFUSION,
        );
        assert_refused(
            &sign(Algorithm::RS256, Some("ec"), &claims()),
            reasons::KEY_CONFUSION,
        );
        assert_refused(
            &sign(Algorithm::EdDSA, Some("rsa"), &claims()),
            reasons::KEY_CONFUSION,
        );
        assert_refused(
            &sign(Algorithm::RS256, Some("rsa-ps"), &claims()),
            reasons::KEY_CONFUSION,
        );
    }

    #[test]
    fn unknown_kid() {
        assert_refused(
            &sign(Algorithm::RS256, Some("nope"), &claims()),
            reasons::UNKNOWN_KID,
        );
        // Keys are per issuer: another issuer's kid is unknown here.
        let c = with(claims(), "iss", json!(HS_ISS));
        assert_refused(
            &sign(Algorithm::RS256, Some("rsa"), &c),
            reasons::UNKNOWN_KID,
        );
        // No key set at all for the issuer.
        let token = sign(Algorithm::RS256, Some("rsa"), &claims());
        let empty: HashMap<String, KeySet> = HashMap::new();
        let failure = verifier().verify(&token, &empty, NOW).unwrap_err();
        assert_eq!(failure.reason(), reasons::UNKNOWN_KID);
    }

    #[test]
    fn missing_kid() {
        assert_refused(
            &sign(Algorithm::RS256, None, &claims()),
            reasons::MISSING_KID,
        );
        assert_refused(
            &sign(Algorithm::EdDSA, None, &claims()),
            reasons::MISSING_KID,
        );
    }

    #[test]
    fn expired() {
        let c = with(claims(), "exp", json!(NOW - 31));
        assert_refused(&sign(Algorithm::EdDSA, Some("ed"), &c), reasons::EXPIRED);
    }

    #[test]
    fn not_yet_valid() {
        let c = with(claims(), "nbf", json!(NOW + 31));
        assert_refused(
            &sign(Algorithm::EdDSA, Some("ed"), &c),
            reasons::NOT_YET_VALID,
        );
    }

    #[test]
    fn wrong_issuer() {
        for c in [
            without(claims(), "iss"),
            with(claims(), "iss", json!("")),
            with(claims(), "iss", json!(7)),
            with(claims(), "iss", json!([ISS])),
        ] {
            assert_refused(
                &sign(Algorithm::EdDSA, Some("ed"), &c),
                reasons::WRONG_ISSUER,
            );
        }
    }

    #[test]
    fn unknown_issuer() {
        for iss in [
            "https://evil.example",
            "https://idp.example/",
            "HTTPS://IDP.EXAMPLE",
        ] {
            let c = with(claims(), "iss", json!(iss));
            assert_refused(
                &sign(Algorithm::EdDSA, Some("ed"), &c),
                reasons::UNKNOWN_ISSUER,
            );
        }
    }

    #[test]
    fn wrong_audience() {
        for c in [
            with(claims(), "aud", json!("someone-else")),
            with(claims(), "aud", json!(["someone-else", "x"])),
            with(claims(), "aud", json!([])),
            without(claims(), "aud"),
        ] {
            assert_refused(
                &sign(Algorithm::EdDSA, Some("ed"), &c),
                reasons::WRONG_AUDIENCE,
            );
        }
    }

    #[test]
    fn missing_exp() {
        let c = without(claims(), "exp");
        assert_refused(
            &sign(Algorithm::EdDSA, Some("ed"), &c),
            reasons::MISSING_EXP,
        );
    }

    #[test]
    fn claim_type() {
        for c in [
            with(claims(), "exp", json!((NOW + 300).to_string())),
            with(claims(), "exp", json!(NOW as f64 + 300.5)),
            with(claims(), "exp", json!(-1)),
            with(claims(), "exp", Value::Null),
            with(claims(), "nbf", json!(NOW.to_string())),
            with(claims(), "iat", json!(NOW.to_string())),
            with(claims(), "aud", json!(7)),
            with(claims(), "aud", json!([AUD, 7])),
            with(claims(), "sub", json!(42)),
            with(claims(), "plan", json!(["pro"])),
            with(claims(), "scope", json!(7)),
            with(claims(), "scope", json!(["a", 7])),
            with(claims(), "org", json!({"id": 1})),
        ] {
            assert_refused(&sign(Algorithm::EdDSA, Some("ed"), &c), reasons::CLAIM_TYPE);
        }
    }

    #[test]
    fn bad_signature() {
        let token = sign(Algorithm::RS256, Some("rsa"), &claims());
        let parts: Vec<&str> = token.split('.').collect();
        // Payload swapped after signing (a different consumer).
        let forged = with(claims(), "sub", json!("mallory"));
        let tampered = format!(
            "{}.{}.{}",
            parts[0],
            b64(forged.to_string().as_bytes()),
            parts[2]
        );
        assert_refused(&tampered, reasons::BAD_SIGNATURE);
        // Signature stripped or truncated.
        assert_refused(
            &format!("{}.{}.", parts[0], parts[1]),
            reasons::BAD_SIGNATURE,
        );
        let short = b64(&URL_SAFE_NO_PAD.decode(parts[2]).unwrap()[..200]);
        assert_refused(
            &format!("{}.{}.{short}", parts[0], parts[1]),
            reasons::BAD_SIGNATURE,
        );
        // Signed by another key under a known kid.
        let other = sign_with(
            Algorithm::EdDSA,
            Some("ed"),
            &claims(),
            &keys().other_ed_enc,
        );
        assert_refused(&other, reasons::BAD_SIGNATURE);
        // A signature made for another alg of the same key (RS256 bytes presented as PS256).
        let header = json!({"alg": "PS256", "kid": "rsa"});
        assert_refused(&craft(&header, &claims(), parts[2]), reasons::BAD_SIGNATURE);
        // ES256 with a signature from ... RSA.
        let es = craft(&json!({"alg": "ES256", "kid": "ec"}), &claims(), parts[2]);
        assert_refused(&es, reasons::BAD_SIGNATURE);
        // HS256 with the wrong secret.
        let c = with(claims(), "iss", json!(HS_ISS));
        let wrong = EncodingKey::from_secret(b"fedcba9876543210fedcba9876543210");
        assert_refused(
            &sign_with(Algorithm::HS256, None, &c, &wrong),
            reasons::BAD_SIGNATURE,
        );
    }

    #[test]
    fn forbidden_headers() {
        let sig = sign(Algorithm::RS256, Some("rsa"), &claims());
        let sig = sig.rsplit('.').next().unwrap();
        for (name, value) in [
            ("jku", json!("https://evil.example/jwks.json")),
            ("x5u", json!("https://evil.example/cert.pem")),
            ("x5c", json!(["MIIB"])),
            (
                "jwk",
                json!({"kty": "OKP", "crv": "Ed25519", "x": b64(&[1; 32])}),
            ),
            ("crit", json!(["exp"])),
        ] {
            let header = json!({"alg": "RS256", "kid": "rsa", name: value});
            assert_refused(&craft(&header, &claims(), sig), reasons::FORBIDDEN_HEADER);
        }
        // Also when validly signed (the header is checked before anything else).
        let header = Header {
            jku: Some("https://evil.example/jwks.json".to_string()),
            ..Header::new(Algorithm::EdDSA)
        };
        let token = jsonwebtoken::encode(&header, &claims(), &keys().ed_enc).unwrap();
        assert_refused(&token, reasons::FORBIDDEN_HEADER);
    }

    #[test]
    fn missing_consumer() {
        for c in [without(claims(), "sub"), with(claims(), "sub", json!(""))] {
            assert_refused(
                &sign(Algorithm::EdDSA, Some("ed"), &c),
                reasons::MISSING_CONSUMER,
            );
        }
    }

    #[test]
    fn reasons_are_distinct() {
        use reasons::*;
        let all = [
            MALFORMED,
            TOO_LARGE,
            ALG_NONE,
            ALG_NOT_ALLOWED,
            KEY_CONFUSION,
            UNKNOWN_KID,
            MISSING_KID,
            EXPIRED,
            NOT_YET_VALID,
            WRONG_ISSUER,
            UNKNOWN_ISSUER,
            WRONG_AUDIENCE,
            MISSING_EXP,
            CLAIM_TYPE,
            BAD_SIGNATURE,
            FORBIDDEN_HEADER,
            MISSING_CONSUMER,
        ];
        let set: std::collections::HashSet<_> = all.iter().collect();
        assert_eq!(set.len(), all.len());
    }

    #[test]
    fn no_token_text_in_any_reason() {
        // Every refusal above goes through `refused`, which checks this; here a token whose
        // parts look like reasons, for good measure.
        let c = with(claims(), "sub", json!("jwt_bad_signature"));
        let token = sign(Algorithm::EdDSA, Some("jwt_unknown_kid"), &c);
        let reason = refused(&token);
        assert_eq!(reason, reasons::UNKNOWN_KID);
        assert!(!token.contains(&reason));
    }

    // ---- construction ----

    #[test]
    fn constructor_checks_settings() {
        let base = || IssuerSettings::new(ISS, vec![AUD.to_string()]);
        let hs_without_secret = IssuerSettings {
            algorithms: vec![Algorithm::HS256],
            ..base()
        };
        let err = JwtVerifier::new(vec![hs_without_secret]).unwrap_err();
        assert!(err.contains("hmac_secret"), "{err}");
        let short_secret = IssuerSettings {
            algorithms: vec![Algorithm::HS512],
            hmac_secret: Some(SECRET.to_vec()),
            ..base()
        };
        assert!(JwtVerifier::new(vec![short_secret]).is_err());
        assert!(
            JwtVerifier::new(vec![IssuerSettings {
                audiences: vec![],
                ..base()
            }])
            .is_err()
        );
        assert!(
            JwtVerifier::new(vec![IssuerSettings {
                algorithms: vec![],
                ..base()
            }])
            .is_err()
        );
        assert!(JwtVerifier::new(vec![IssuerSettings::new("", vec![AUD.to_string()])]).is_err());
        let empty_claim = IssuerSettings {
            consumer_claim: String::new(),
            ..base()
        };
        assert!(JwtVerifier::new(vec![empty_claim]).is_err());
        assert!(JwtVerifier::new(vec![base(), base()]).is_err());
        let mixed = IssuerSettings {
            algorithms: vec![Algorithm::HS256, Algorithm::ES256],
            hmac_secret: Some(SECRET.to_vec()),
            ..base()
        };
        let verifier = JwtVerifier::new(vec![mixed.clone()]).unwrap();
        assert_eq!(verifier.issuers().collect::<Vec<_>>(), vec![ISS]);
        // The secret never shows in Debug output.
        assert!(!format!("{mixed:?}").contains("0123456789abcdef"));
        assert!(JwtVerifier::new(vec![]).is_ok());
    }
}
