//! Authentication through a real gateway: issued API keys (CLI issue/revoke/rotate +
//! reload), JWTs (RS256, EdDSA) with a JWKS served over loopback, every refusal, scopes,
//! identity headers, the brute-force limiter, and no secret in any log.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use modelgate_e2e::client::{self, get, post_json};
use modelgate_e2e::gateway::{GatewayProcess, Setup};
use modelgate_e2e::repo_root;
use modelgate_e2e::upstream::{Behaviour, Upstream};
use rand_core::OsRng;
use serde_json::{Value, json};

const INFER: &str = "/v2/models/digits/infer";

fn digits_routes(upstream: &str) -> String {
    let models = repo_root().join("models");
    format!(
        "[[routes]]\nname = \"digits\"\nmodel = \"digits\"\n[routes.embedded]\nonnx = {:?}\nmetadata = {:?}\n\n\
         [[routes]]\nname = \"echo\"\nmodel = \"echo\"\nvalidate = {{ protocol = \"none\" }}\n[routes.http]\nupstreams = [{upstream:?}]\n\n\
         [[routes]]\nname = \"open\"\npath_prefix = \"/open\"\npublic = true\n[routes.http]\nupstreams = [{upstream:?}]\n\n\
         [[routes]]\nname = \"query\"\nmodel = \"query\"\napi_key_in_query = true\nvalidate = {{ protocol = \"none\" }}\n[routes.http]\nupstreams = [{upstream:?}]\n",
        models.join("digits.onnx"),
        models.join("digits.json"),
    )
}

fn infer_body() -> Vec<u8> {
    let holdout: Value = serde_json::from_str(
        &std::fs::read_to_string(repo_root().join("models/digits_holdout.json")).unwrap(),
    )
    .unwrap();
    json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": holdout["rows"][0]}]})
        .to_string()
        .into_bytes()
}

fn issue(setup: &Setup, consumer: &str, models: &str) -> String {
    setup.issue_key(consumer, "standard", models)
}

fn key_id(key: &str) -> &str {
    &key[3..19]
}

#[test]
fn api_keys_scopes_identity_headers_revoke_and_rotate() {
    let up = Upstream::start(Behaviour::Echo);
    let setup = GatewayProcess::setup(&format!(
        "[auth]\nkey_store = \"keys.json\"\npepper_env = \"MG_TEST_PEPPER\"\n\n{}",
        digits_routes(&up.url())
    ))
    .env("MG_TEST_PEPPER", "pepper-for-tests");
    let acme = issue(&setup, "acme", "digits,echo,query");
    let narrow = issue(&setup, "narrow", "echo");
    let store = std::fs::read_to_string(setup.dir.path().join("keys.json")).unwrap();
    assert!(!store.contains(&acme[20..]), "the key store holds a secret");
    assert!(store.contains("hmac-sha256:"));
    let gw = setup.start();
    let body = infer_body();

    // Accepted from both headers.
    assert_eq!(
        post_json(
            gw.addr,
            INFER,
            &body,
            &format!("Authorization: Bearer {acme}\r\n")
        )
        .status,
        200
    );
    assert_eq!(
        post_json(gw.addr, INFER, &body, &format!("x-api-key: {acme}\r\n")).status,
        200
    );
    // Missing and invalid credentials: 401 with a generic code and WWW-Authenticate.
    let r = post_json(gw.addr, INFER, &body, "");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "missing_credentials")
    );
    assert_eq!(r.header("www-authenticate"), Some("Bearer"));
    let wrong_secret = format!("{}{}", &acme[..20], "A".repeat(43));
    let unknown = format!("mg_{}_{}", "0".repeat(16), &acme[20..]);
    for bad in [
        wrong_secret.as_str(),
        unknown.as_str(),
        "mg_short",
        "not-a-key",
    ] {
        let r = post_json(gw.addr, INFER, &body, &format!("x-api-key: {bad}\r\n"));
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "invalid_credentials"),
            "{bad}"
        );
    }
    // Scopes: a key for `echo` only may not call `digits`, nor read its metadata.
    let r = post_json(gw.addr, INFER, &body, &format!("x-api-key: {narrow}\r\n"));
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (403, "model_not_allowed")
    );
    let r = client::send(
        gw.addr,
        format!("GET /v2/models/digits HTTP/1.1\r\nHost: t\r\nx-api-key: {narrow}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 403);
    // The query string is refused unless the route opts in.
    assert_eq!(
        get(gw.addr, &format!("/v2/models/echo/x?api_key={acme}")).status,
        401
    );
    assert_eq!(
        get(gw.addr, &format!("/v2/models/query/x?api_key={narrow}")).status,
        403
    );
    let up_before = up.seen().len();
    assert_eq!(up_before, 0, "refused requests reached the upstream");

    // Identity headers: the gateway's own are set, the client's stripped, credentials kept back.
    let r = client::send(
        gw.addr,
        format!(
            "POST /v2/models/echo/infer HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {acme}\r\nx-api-key: {acme}\r\n\
             x-modelgate-consumer: mallory\r\nx-modelgate-admin: yes\r\nContent-Length: 2\r\n\r\n{{}}"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header("x-modelgate-consumer"), Some("acme"));
    assert_eq!(seen.header("x-modelgate-plan"), Some("standard"));
    assert_eq!(
        seen.header("x-modelgate-credential"),
        Some(format!("api_key:{}", key_id(&acme)).as_str())
    );
    assert_eq!(seen.header("x-modelgate-admin"), None);
    assert_eq!(seen.header("authorization"), None);
    assert_eq!(seen.header("x-api-key"), None);
    // With the query opt-in, the key is taken from the query and not forwarded.
    assert_eq!(
        get(gw.addr, &format!("/v2/models/query/x?a=1&api_key={acme}")).status,
        200
    );
    assert_eq!(up.seen().pop().unwrap().target, "/v2/models/query/x?a=1");
    // Public routes need nothing.
    assert_eq!(get(gw.addr, "/open/x").status, 200);

    // Revoke: refused from the next reload on (SIGHUP here).
    let out = gw.setup.cli(&["keys", "revoke", key_id(&narrow)]);
    assert!(out.status.success());
    let echo = |key: &str| {
        client::send(
            gw.addr,
            format!("GET /v2/models/echo HTTP/1.1\r\nHost: t\r\nx-api-key: {key}\r\n\r\n")
                .as_bytes(),
        )
        .status
    };
    assert_eq!(echo(&narrow), 200, "revocation applied before a reload");
    gw.sighup();
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while echo(&narrow) == 200 && std::time::Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(echo(&narrow), 401);

    // Rotate with a grace period: old and new both work; without one, the old stops.
    let out = gw
        .setup
        .cli(&["keys", "rotate", key_id(&acme), "--grace", "1h"]);
    assert!(out.status.success());
    let rotated = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(gw.reload().status, 200);
    assert_eq!((echo(&acme), echo(&rotated)), (200, 200));
    let out = gw
        .setup
        .cli(&["keys", "rotate", key_id(&acme), "--grace", "0s"]);
    let third = String::from_utf8(out.stdout).unwrap().trim().to_string();
    assert_eq!(gw.reload().status, 200);
    assert_eq!((echo(&rotated), echo(&third)), (401, 200));
    // The first secret's grace still runs (1 h), the second's ended at once.
    assert_eq!(echo(&acme), 200);

    // Listing shows ids, never secrets.
    let out = gw.setup.cli(&["keys", "list"]);
    let listing = String::from_utf8(out.stdout).unwrap();
    assert!(listing.contains(key_id(&acme)) && listing.contains("revoked"));
    for secret in [&acme, &narrow, &rotated, &third] {
        assert!(!listing.contains(&secret[20..]));
    }

    // No secret in any log line, and audit records name the reason and key id.
    let logs = gw.logs();
    for secret in [&acme, &narrow, &rotated, &third, &wrong_secret] {
        assert!(!logs.contains(&secret[20..]), "a secret was logged");
    }
    assert!(
        logs.contains("\"event\":\"auth_failure\"") && logs.contains("\"reason\":\"wrong_secret\"")
    );
    assert!(logs.contains(&format!("\"key_id\":\"{}\"", key_id(&acme))));
}

#[test]
fn reload_with_a_bad_config_keeps_serving_and_admin_needs_its_token() {
    let gw = GatewayProcess::start(&modelgate_e2e::gateway::digits_route());
    std::fs::write(gw.setup.config_path(), "[[routes]]\nname = 1\n").unwrap();
    let r = gw.reload();
    assert_eq!(r.status, 422);
    assert!(!r.json()["errors"].as_array().unwrap().is_empty());
    assert_eq!(
        get(gw.addr, "/v2/models/digits").status,
        200,
        "old config stopped serving"
    );
    let r = client::send(gw.admin, b"POST /admin/reload HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer nope\r\nContent-Length: 0\r\n\r\n");
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (401, "invalid_credentials")
    );
}

#[test]
fn failed_attempts_are_limited_per_peer() {
    let setup = GatewayProcess::setup(&format!(
        "[auth]\nkey_store = \"keys.json\"\nmax_failures_per_minute = 5\n\n{}",
        digits_routes("http://127.0.0.1:9")
    ));
    let key = issue(&setup, "acme", "*");
    let gw = setup.start();
    // Missing credentials are not attempts; wrong ones are.
    assert_eq!(get(gw.addr, "/v2/models/digits").status, 401);
    for _ in 0..5 {
        let r = client::send(
            gw.addr,
            b"GET /v2/models/digits HTTP/1.1\r\nHost: t\r\nx-api-key: mg_bad\r\n\r\n",
        );
        assert_eq!(r.status, 401);
    }
    // The peer is now slowed down, even with a valid key.
    let r = client::send(
        gw.addr,
        format!("GET /v2/models/digits HTTP/1.1\r\nHost: t\r\nx-api-key: {key}\r\n\r\n").as_bytes(),
    );
    assert_eq!(
        (r.status, r.error_code().as_str()),
        (429, "too_many_auth_failures")
    );
    assert!(r.header("retry-after").is_some());
}

// ---- JWT ----

struct Signer {
    rsa: EncodingKey,
    ed: EncodingKey,
    jwks: String,
}

fn signer() -> Signer {
    use ed25519_dalek::pkcs8::EncodePrivateKey as _;
    use rsa::pkcs1::EncodeRsaPrivateKey as _;
    use rsa::traits::PublicKeyParts as _;
    let rsa = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let ed = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa-1", "use": "sig", "n": b64(&rsa.n().to_bytes_be()), "e": b64(&rsa.e().to_bytes_be())},
        {"kty": "OKP", "kid": "ed-1", "crv": "Ed25519", "x": b64(ed.verifying_key().as_bytes())},
    ]})
    .to_string();
    Signer {
        rsa: EncodingKey::from_rsa_der(rsa.to_pkcs1_der().unwrap().as_bytes()),
        ed: EncodingKey::from_ed_der(ed.to_pkcs8_der().unwrap().as_bytes()),
        jwks,
    }
}

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn token(alg: Algorithm, kid: &str, key: &EncodingKey, claims: &Value) -> String {
    let header = Header {
        kid: Some(kid.to_string()),
        ..Header::new(alg)
    };
    jsonwebtoken::encode(&header, claims, key).unwrap()
}

fn claims(extra: Value) -> Value {
    let mut c = json!({"iss": "https://issuer.test", "aud": "modelgate", "sub": "alice", "exp": now() + 300,
                       "plan": "pro", "scope": "digits echo"});
    for (k, v) in extra.as_object().unwrap() {
        c[k] = v.clone();
    }
    c
}

#[test]
fn jwts_from_a_jwks_url_rs256_and_eddsa_and_every_refusal() {
    let s = signer();
    let jwks_body: &'static str = Box::leak(
        format!(
            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{}",
            s.jwks.len(),
            s.jwks
        )
        .into_boxed_str(),
    );
    let jwks = Upstream::start(Behaviour::Raw(jwks_body));
    let up = Upstream::start(Behaviour::Echo);
    let gw = GatewayProcess::start(&format!(
        "[[auth.jwt]]\nissuer = \"https://issuer.test\"\naudiences = [\"modelgate\"]\nalgorithms = [\"RS256\", \"EdDSA\"]\n\
         jwks_url = \"{}/jwks.json\"\nleeway = \"5s\"\n\n{}",
        jwks.url(),
        digits_routes(&up.url())
    ));
    let body = infer_body();
    let call = |tok: &str| {
        post_json(
            gw.addr,
            INFER,
            &body,
            &format!("Authorization: Bearer {tok}\r\n"),
        )
    };

    let rs = token(Algorithm::RS256, "rsa-1", &s.rsa, &claims(json!({})));
    let ed = token(Algorithm::EdDSA, "ed-1", &s.ed, &claims(json!({})));
    assert_eq!(call(&rs).status, 200, "{}", gw.logs());
    assert_eq!(call(&ed).status, 200);
    assert!(jwks.connection_count() >= 1);

    // Identity from the claims reaches the upstream.
    let r = client::send(
        gw.addr,
        format!("GET /v2/models/echo HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ed}\r\n\r\n")
            .as_bytes(),
    );
    assert_eq!(r.status, 200);
    let seen = up.seen().pop().unwrap();
    assert_eq!(seen.header("x-modelgate-consumer"), Some("alice"));
    assert_eq!(seen.header("x-modelgate-plan"), Some("pro"));
    assert_eq!(
        seen.header("x-modelgate-credential"),
        Some("jwt:https://issuer.test")
    );
    assert_eq!(seen.header("authorization"), None);

    let header_b64 = |h: Value| URL_SAFE_NO_PAD.encode(h.to_string());
    let payload_b64 = URL_SAFE_NO_PAD.encode(claims(json!({})).to_string());
    let sig = rs.rsplit('.').next().unwrap();
    let refused = [
        (
            "alg none",
            format!(
                "{}.{payload_b64}.",
                header_b64(json!({"alg": "none", "typ": "JWT"}))
            ),
        ),
        (
            "HS256 with the RSA key as secret",
            token(
                Algorithm::HS256,
                "rsa-1",
                &EncodingKey::from_secret(s.jwks.as_bytes()),
                &claims(json!({})),
            ),
        ),
        (
            "algorithm not allowed",
            token(Algorithm::RS384, "rsa-1", &s.rsa, &claims(json!({}))),
        ),
        (
            "unknown kid",
            token(Algorithm::RS256, "nope", &s.rsa, &claims(json!({}))),
        ),
        (
            "expired",
            token(
                Algorithm::RS256,
                "rsa-1",
                &s.rsa,
                &claims(json!({"exp": now() - 60})),
            ),
        ),
        (
            "not yet valid",
            token(
                Algorithm::RS256,
                "rsa-1",
                &s.rsa,
                &claims(json!({"nbf": now() + 600})),
            ),
        ),
        (
            "wrong issuer",
            token(
                Algorithm::RS256,
                "rsa-1",
                &s.rsa,
                &claims(json!({"iss": "https://evil.test"})),
            ),
        ),
        (
            "wrong audience",
            token(
                Algorithm::RS256,
                "rsa-1",
                &s.rsa,
                &claims(json!({"aud": "other"})),
            ),
        ),
        ("missing exp", {
            let mut c = claims(json!({}));
            c.as_object_mut().unwrap().remove("exp");
            token(Algorithm::RS256, "rsa-1", &s.rsa, &c)
        }),
        (
            "exp as a string",
            token(
                Algorithm::RS256,
                "rsa-1",
                &s.rsa,
                &claims(json!({"exp": (now() + 300).to_string()})),
            ),
        ),
        ("bad signature", {
            let tampered = URL_SAFE_NO_PAD.encode(claims(json!({"sub": "mallory"})).to_string());
            format!("{}.{tampered}.{sig}", rs.split('.').next().unwrap())
        }),
        (
            "jku header",
            format!(
                "{}.{payload_b64}.{sig}",
                header_b64(json!({"alg": "RS256", "kid": "rsa-1", "jku": "http://127.0.0.1:1/k"}))
            ),
        ),
        (
            "embedded jwk",
            format!(
                "{}.{payload_b64}.{sig}",
                header_b64(json!({"alg": "RS256", "kid": "rsa-1", "jwk": {"kty": "oct"}}))
            ),
        ),
        ("malformed", "abc.def".to_string()),
        (
            "oversize",
            format!("{}.{}.{}", "a".repeat(5000), "b".repeat(5000), "c"),
        ),
    ];
    for (what, tok) in &refused {
        let r = call(tok);
        assert_eq!(
            (r.status, r.error_code().as_str()),
            (401, "invalid_credentials"),
            "{what}"
        );
    }
    // Scope from the token: a token without `digits` is refused with 403.
    let narrow = token(
        Algorithm::EdDSA,
        "ed-1",
        &s.ed,
        &claims(json!({"scope": "echo"})),
    );
    assert_eq!(call(&narrow).status, 403);

    let logs = gw.logs();
    for (_, tok) in refused
        .iter()
        .chain([("rs", rs.clone()), ("ed", ed.clone())].iter())
    {
        if tok.len() > 20 {
            assert!(!logs.contains(tok.as_str()), "a token was logged");
        }
    }
    assert!(
        logs.contains("\"jwt_kid\":\"nope\"") && logs.contains("\"reason\":\"jwt_unknown_kid\"")
    );
}
