//! A bearer token, any bytes, in two forms: as sent (the forged and malformed tokens a
//! client can send), and a token whose header and claims are the fuzz input, signed with
//! the issuer's real HS256 secret (what the claim checks behind the signature see). A
//! token is refused with a reason or, signed and accepted, its claims are what the issuer
//! settings demand: known issuer, an accepted audience, not expired, a consumer. Never a
//! panic.
#![no_main]

use std::collections::HashMap;
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, EncodingKey};
use libfuzzer_sys::fuzz_target;
use modelgate_plugins::auth::AuthFailure;
use modelgate_plugins::auth::jwks::KeySet;
use modelgate_plugins::auth::jwt::{IssuerSettings, JwtVerifier};
use serde_json::Value;

const ISS: &str = "https://hs.example";
const AUD: &str = "modelgate";
const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";
const NOW: u64 = 1_700_000_000;
const LEEWAY: u64 = 60;

fn verifier() -> JwtVerifier {
    let mut settings = IssuerSettings::new(ISS, vec![AUD.to_owned(), "other".to_owned()]);
    settings.algorithms = vec![Algorithm::HS256, Algorithm::RS256];
    settings.hmac_secret = Some(SECRET.to_vec());
    settings.leeway = Duration::from_secs(LEEWAY);
    settings.group_claim = Some("tenant".to_owned());
    JwtVerifier::new(vec![settings]).unwrap()
}

fn signed(header: &[u8], claims: &[u8]) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let key = EncodingKey::from_secret(SECRET);
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), &key, Algorithm::HS256).unwrap();
    format!("{input}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    let verifier = verifier();
    let keys: HashMap<String, KeySet> = HashMap::new();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let (token, claims) = if mode & 1 == 0 {
        (String::from_utf8_lossy(rest).into_owned(), None)
    } else {
        // The claims are the input; the header a fixed HS256 one or, past a newline, the
        // input's own.
        let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
            Some(cut) if mode & 2 != 0 => (&rest[..cut], &rest[cut + 1..]),
            _ => (&br#"{"alg":"HS256","typ":"JWT"}"#[..], rest),
        };
        (signed(header, claims), Some(claims))
    };
    match verifier.verify(&token, &keys, NOW) {
        Err(AuthFailure::Jwt(reason)) => assert!(!reason.is_empty()),
        Err(other) => panic!("a JWT refused as {other:?}"),
        Ok(caller) => {
            let claims = claims.expect("a token not signed with the secret was accepted");
            let claims: serde_json::Map<String, Value> =
                serde_json::from_slice(claims).expect("accepted claims that are not an object");
            assert_eq!(claims["iss"], ISS);
            let exp = claims["exp"].as_u64().expect("exp");
            assert!(exp + LEEWAY > NOW, "expired token accepted");
            let audience = |a: &Value| a == AUD || a == "other";
            assert!(match &claims["aud"] {
                Value::Array(auds) => auds.iter().any(audience),
                aud => audience(aud),
            });
            assert!(!caller.consumer.is_empty());
            assert_eq!(claims["sub"], caller.consumer.as_str());
            let _ = caller.header_values();
        }
    }
});
