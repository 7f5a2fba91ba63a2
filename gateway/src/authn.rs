//! The authentication stage: finds the credential (API key or JWT bearer token), verifies
//! it, and yields the [`Caller`]. Failures get a generic 401; the audit log gets the reason.
//! Failed attempts per peer address are limited; nothing unauthenticated creates other state.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use arc_swap::ArcSwap;
use http::HeaderName;
use http::request::Parts;

use modelgate_config::{Auth, ConfigError, JwksSource, JwtIssuer, Route, UpstreamUrl};
use modelgate_plugins::auth::failures::FailureLimiter;
use modelgate_plugins::auth::jwks::{JwkKey, KeySet};
use modelgate_plugins::auth::jwt::{Algorithm, IssuerSettings, JwtVerifier, KeyLookup, reasons};
use modelgate_plugins::auth::keys::{KeyVerifier, SecretHasher, key_id_of};
use modelgate_plugins::auth::token_cache::VerifiedTokenCache;
use modelgate_plugins::auth::{AuthFailure, Caller, keystore};
use modelgate_plugins::{Code, Denial};

use crate::http_get;
use crate::secrets::read_secret;

const JWKS_MAX_BYTES: usize = 256 * 1024;
const JWKS_TIMEOUT: Duration = Duration::from_secs(5);

/// The built stage for one config snapshot.
pub struct Authenticator {
    keys: Option<KeyVerifier>,
    jwt: Option<JwtVerifier>,
    jwks: Arc<Jwks>,
    api_key_headers: Vec<HeaderName>,
    /// `api_key_headers` plus `Authorization`: what is stripped before forwarding.
    credential_headers: Vec<HeaderName>,
    failures: Arc<FailureLimiter>,
    /// Tokens verified in this generation (a reload forgets them, e.g. after a JWKS change).
    verified: VerifiedTokenCache,
}

/// Verified tokens remembered per generation, and for how long at most.
const TOKEN_CACHE_CAPACITY: usize = 10_000;
const TOKEN_CACHE_MAX_AGE_SECS: u64 = 60;

/// A presented credential, before verification.
enum Credential<'a> {
    ApiKey(&'a str),
    Jwt(&'a str),
}

impl Authenticator {
    /// Builds from config: reads the key store, the pepper, HMAC secrets and JWKS sources.
    /// `previous` carries the failure counters over a reload. Errors carry config paths.
    pub fn build(
        auth: &Auth,
        previous: Option<&Authenticator>,
    ) -> Result<Authenticator, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut error = |path: &str, message: String| {
            errors.push(ConfigError {
                path: path.to_string(),
                message,
            })
        };
        let keys = match &auth.key_store {
            None => None,
            Some(path) => {
                let hasher = secret_hasher(auth).unwrap_or_else(|e| {
                    error("auth.pepper", e);
                    SecretHasher::default()
                });
                match keystore::load(path).and_then(|store| KeyVerifier::new(&store.keys, hasher)) {
                    Ok(v) => Some(v),
                    Err(e) => {
                        error("auth.key_store", e);
                        None
                    }
                }
            }
        };
        let mut settings = Vec::new();
        for (i, issuer) in auth.jwt.iter().enumerate() {
            match issuer_settings(issuer) {
                Ok(s) => settings.push(s),
                Err(e) => error(&format!("auth.jwt[{i}]"), e),
            }
        }
        let jwt = if settings.is_empty() {
            None
        } else {
            match JwtVerifier::new(settings) {
                Ok(v) => Some(v),
                Err(e) => {
                    error("auth.jwt", e);
                    None
                }
            }
        };
        let jwks = match Jwks::build(&auth.jwt) {
            Ok(j) => j,
            Err(e) => {
                errors.extend(e);
                Arc::new(Jwks::default())
            }
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let failures = previous.map_or_else(
            || {
                Arc::new(FailureLimiter::new(
                    auth.max_failures_per_minute,
                    auth.max_tracked_peers,
                ))
            },
            |p| Arc::clone(&p.failures),
        );
        let api_key_headers: Vec<HeaderName> = auth
            .api_key_headers
            .iter()
            .filter_map(|h| HeaderName::try_from(h.as_str()).ok())
            .collect();
        let mut credential_headers: Vec<HeaderName> = api_key_headers.clone();
        if !credential_headers.contains(&http::header::AUTHORIZATION) {
            credential_headers.push(http::header::AUTHORIZATION);
        }
        Ok(Authenticator {
            keys,
            jwt,
            jwks,
            api_key_headers,
            credential_headers,
            failures,
            verified: VerifiedTokenCache::new(TOKEN_CACHE_CAPACITY, TOKEN_CACHE_MAX_AGE_SECS),
        })
    }

    /// Consumers with a usable API key (JWT consumers are not enumerable).
    pub fn key_consumers(&self) -> std::collections::HashSet<&str> {
        self.keys
            .as_ref()
            .map(KeyVerifier::consumers)
            .unwrap_or_default()
    }

    /// Starts background JWKS refreshes for URL sources; they stop when this snapshot goes.
    pub fn start_background(&self) {
        Jwks::start_refresh(&self.jwks);
    }

    /// Headers that carry credentials, stripped before forwarding unless the route keeps them.
    pub fn credential_headers(&self) -> &[HeaderName] {
        &self.credential_headers
    }

    /// Authenticates a request for `route`. The denial is generic; the audit log has the reason.
    pub async fn authenticate(
        &self,
        head: &Parts,
        peer: Option<IpAddr>,
        route: &Route,
    ) -> Result<Arc<Caller>, Denial> {
        let now = unix_now();
        if let Some(retry_after) = peer.and_then(|ip| self.failures.blocked(ip, now)) {
            let mut denial = Denial::new(
                Code::TooManyAuthFailures,
                "too many failed authentication attempts",
            );
            denial.retry_after = Some(retry_after);
            return Err(denial);
        }
        let credential = self.credential(head, route);
        let result = match credential {
            None => Err(AuthFailure::Missing),
            Some(Credential::ApiKey(key)) => match &self.keys {
                Some(keys) => keys.verify(key, now),
                None => Err(AuthFailure::Malformed("api_keys_disabled")),
            },
            Some(Credential::Jwt(token)) => self.verify_jwt(token, now).await,
        };
        result.map_err(|failure| {
            if failure != AuthFailure::Missing
                && let Some(ip) = peer
            {
                self.failures.record_failure(ip, now);
            }
            audit_failure(&failure, credential.as_ref(), head, peer, &route.name);
            failure.denial()
        })
    }

    async fn verify_jwt(&self, token: &str, now: u64) -> Result<Arc<Caller>, AuthFailure> {
        let Some(jwt) = &self.jwt else {
            return Err(AuthFailure::Malformed("jwt_disabled"));
        };
        if let Some(caller) = self.verified.get(token, now) {
            return Ok(caller);
        }
        let result = match jwt.verify(token, self.jwks.as_ref(), now) {
            Err(AuthFailure::Jwt(reason)) if reason == reasons::UNKNOWN_KID => {
                // The issuer may have rotated its keys: refetch, at most once per interval.
                let issuer = jwt_hints(token).0.unwrap_or_default();
                if Jwks::refetch_if_due(&self.jwks, &issuer).await {
                    jwt.verify(token, self.jwks.as_ref(), now)
                } else {
                    Err(AuthFailure::Jwt(reason))
                }
            }
            other => other,
        };
        let caller = Arc::new(result?);
        if let Some(exp) = jwt_exp(token) {
            self.verified.insert(token, Arc::clone(&caller), exp, now);
        }
        Ok(caller)
    }

    fn credential<'a>(&self, head: &'a Parts, route: &Route) -> Option<Credential<'a>> {
        for name in &self.api_key_headers {
            let Some(value) = head.headers.get(name).and_then(|v| v.to_str().ok()) else {
                continue;
            };
            if *name == http::header::AUTHORIZATION {
                if let Some(token) = bearer(value) {
                    return Some(classify(token));
                }
            } else if !value.is_empty() {
                return Some(Credential::ApiKey(value.trim()));
            }
        }
        if let Some(token) = head
            .headers
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(bearer)
        {
            return Some(classify(token));
        }
        if route.api_key_in_query {
            let query = head.uri.query().unwrap_or("");
            return query
                .split('&')
                .find_map(|pair| pair.strip_prefix("api_key="))
                .filter(|k| !k.is_empty())
                .map(Credential::ApiKey);
        }
        None
    }
}

fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn classify(token: &str) -> Credential<'_> {
    if token.starts_with(modelgate_plugins::auth::keys::KEY_PREFIX) {
        Credential::ApiKey(token)
    } else {
        Credential::Jwt(token)
    }
}

/// One audit record per failure: reason, key id or JWT `iss`/`kid`, peer — never the secret.
fn audit_failure(
    failure: &AuthFailure,
    credential: Option<&Credential<'_>>,
    head: &Parts,
    peer: Option<IpAddr>,
    route: &str,
) {
    crate::metrics::METRICS.auth_failure(failure.reason());
    let (key_id, iss, kid) = match credential {
        Some(Credential::ApiKey(key)) => (key_id_of(key).map(str::to_string), None, None),
        Some(Credential::Jwt(token)) => {
            let (iss, kid) = jwt_hints(token);
            (None, iss, kid)
        }
        None => (None, None, None),
    };
    log::warn!(
        target: "audit",
        "{}",
        serde_json::json!({
            "event": "auth_failure",
            "time": unix_now(),
            "reason": failure.reason(),
            "key_id": key_id,
            "jwt_iss": iss,
            "jwt_kid": kid,
            "peer": peer.map(|p| p.to_string()),
            "route": route,
            "method": head.method.as_str(),
            "path": head.uri.path(),
        })
    );
}

/// The unverified `iss` and `kid` of a token, for audit records and key refetches; capped.
fn jwt_hints(token: &str) -> (Option<String>, Option<String>) {
    let field = |v: Option<serde_json::Value>, name: &str| {
        v.as_ref()
            .and_then(|v| v.get(name))
            .and_then(|s| s.as_str())
            .map(|s| s.chars().take(128).collect::<String>())
    };
    (
        field(jwt_part(token, 1), "iss"),
        field(jwt_part(token, 0), "kid"),
    )
}

/// The `exp` claim of a token that already passed verification.
fn jwt_exp(token: &str) -> Option<u64> {
    jwt_part(token, 1)?.get("exp")?.as_u64()
}

/// Part `index` of a JWT (0 header, 1 payload) decoded as JSON, without any check; parts
/// over 8 KiB are ignored.
fn jwt_part(token: &str, index: usize) -> Option<serde_json::Value> {
    use base64::Engine;
    let part = token
        .split('.')
        .nth(index)
        .filter(|p| p.len() <= 8 * 1024)?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

/// The key hasher the config asks for: HMAC-SHA-256 with the pepper when one is named,
/// SHA-256 otherwise. Fails when the pepper cannot be read.
pub fn secret_hasher(auth: &Auth) -> Result<SecretHasher, String> {
    Ok(SecretHasher::new(
        auth.pepper.as_ref().map(read_secret).transpose()?,
    ))
}

/// Seconds since the Unix epoch.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

fn issuer_settings(issuer: &JwtIssuer) -> Result<IssuerSettings, String> {
    let algorithms = issuer
        .algorithms
        .iter()
        .map(|a| {
            a.parse::<Algorithm>()
                .map_err(|_| format!("unknown algorithm {a:?}"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let hmac_secret = issuer.hmac_secret.as_ref().map(read_secret).transpose()?;
    let mut settings = IssuerSettings::new(issuer.issuer.clone(), issuer.audiences.clone());
    settings.algorithms = algorithms;
    settings.hmac_secret = hmac_secret;
    settings.leeway = issuer.leeway;
    settings.consumer_claim = issuer.consumer_claim.clone();
    settings.plan_claim = issuer.plan_claim.clone();
    settings.scopes_claim = issuer.scopes_claim.clone();
    settings.group_claim = issuer.group_claim.clone();
    settings.default_plan = issuer.default_plan.clone();
    Ok(settings)
}

/// Signing keys per issuer, swapped whole when refetched.
#[derive(Default)]
pub struct Jwks {
    issuers: HashMap<String, IssuerKeys>,
}

struct IssuerKeys {
    keys: ArcSwap<KeySet>,
    url: Option<(UpstreamUrl, Duration)>,
    last_fetch: Mutex<Instant>,
}

impl KeyLookup for Jwks {
    fn key(&self, issuer: &str, kid: &str) -> Option<Arc<JwkKey>> {
        self.issuers.get(issuer)?.keys.load().get(kid)
    }
}

impl Jwks {
    fn build(issuers: &[JwtIssuer]) -> Result<Arc<Jwks>, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let mut map = HashMap::new();
        for (i, issuer) in issuers.iter().enumerate() {
            let (keys, url) = match &issuer.jwks {
                JwksSource::None => (KeySet::default(), None),
                JwksSource::File(path) => {
                    let parsed = std::fs::read(path)
                        .map_err(|e| format!("cannot read {}: {e}", path.display()))
                        .and_then(|bytes| KeySet::from_jwks_json(&bytes));
                    match parsed {
                        Ok(keys) => (keys, None),
                        Err(e) => {
                            errors.push(ConfigError {
                                path: format!("auth.jwt[{i}].jwks_file"),
                                message: e,
                            });
                            continue;
                        }
                    }
                }
                JwksSource::Url { url, refresh } => {
                    // An unreachable issuer must not stop the gateway: start empty (tokens are
                    // refused) and let the refresher and unknown-kid refetches retry.
                    match fetch(url) {
                        Ok(keys) => (keys, Some((url.clone(), *refresh))),
                        Err(e) => {
                            log::warn!("JWKS for issuer {:?} not loaded yet: {e}", issuer.issuer);
                            (KeySet::default(), Some((url.clone(), *refresh)))
                        }
                    }
                }
            };
            // With no keys yet, the first unknown kid may refetch at once.
            let last_fetch = if keys.is_empty() {
                url.as_ref()
                    .and_then(|(_, refresh)| Instant::now().checked_sub(*refresh))
                    .unwrap_or_else(Instant::now)
            } else {
                Instant::now()
            };
            map.insert(
                issuer.issuer.clone(),
                IssuerKeys {
                    keys: ArcSwap::from_pointee(keys),
                    url,
                    last_fetch: Mutex::new(last_fetch),
                },
            );
        }
        if errors.is_empty() {
            Ok(Arc::new(Jwks { issuers: map }))
        } else {
            Err(errors)
        }
    }

    fn start_refresh(this: &Arc<Jwks>) {
        for (name, issuer) in &this.issuers {
            let Some((_, refresh)) = issuer.url else {
                continue;
            };
            let weak: Weak<Jwks> = Arc::downgrade(this);
            let issuer_name = name.clone();
            let spawned = std::thread::Builder::new()
                .name("modelgate-jwks".into())
                .spawn(move || {
                    loop {
                        std::thread::sleep(refresh);
                        let Some(jwks) = weak.upgrade() else { return };
                        jwks.refetch(&issuer_name);
                    }
                });
            if let Err(e) = spawned {
                log::error!("cannot start JWKS refresh for issuer {name:?}: {e}");
            }
        }
    }

    /// Refetches `issuer`'s keys if its last fetch is at least one refresh interval old.
    async fn refetch_if_due(this: &Arc<Jwks>, issuer: &str) -> bool {
        let Some(keys) = this.issuers.get(issuer) else {
            return false;
        };
        let Some((_, refresh)) = keys.url else {
            return false;
        };
        {
            let Ok(mut last) = keys.last_fetch.lock() else {
                return false;
            };
            if last.elapsed() < refresh {
                return false;
            }
            *last = Instant::now();
        }
        let jwks = Arc::clone(this);
        let issuer = issuer.to_string();
        tokio::task::spawn_blocking(move || jwks.refetch(&issuer))
            .await
            .unwrap_or(false)
    }

    fn refetch(&self, issuer: &str) -> bool {
        let Some(keys) = self.issuers.get(issuer) else {
            return false;
        };
        let Some((url, _)) = &keys.url else {
            return false;
        };
        if let Ok(mut last) = keys.last_fetch.lock() {
            *last = Instant::now();
        }
        match fetch(url) {
            Ok(set) => {
                keys.keys.store(Arc::new(set));
                true
            }
            Err(e) => {
                log::warn!("JWKS refresh for issuer {issuer:?} failed: {e}");
                false
            }
        }
    }
}

fn fetch(url: &UpstreamUrl) -> Result<KeySet, String> {
    KeySet::from_jwks_json(&http_get::get(url, JWKS_TIMEOUT, JWKS_MAX_BYTES)?)
}
