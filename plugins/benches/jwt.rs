//! JWT verification cost with the issuer's keys already parsed (the steady state: the
//! gateway refreshes the JWKS in the background, requests only look keys up).

#![allow(clippy::unwrap_used, missing_docs)]

use std::collections::HashMap;
use std::hint::black_box;
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use criterion::{Criterion, criterion_group, criterion_main};
use ed25519_dalek::pkcs8::EncodePrivateKey as _;
use jsonwebtoken::{EncodingKey, Header};
use modelgate_plugins::auth::jwks::KeySet;
use modelgate_plugins::auth::jwt::{Algorithm, IssuerSettings, JwtVerifier};
use rand_core::OsRng;
use rsa::pkcs1::EncodeRsaPrivateKey as _;
use rsa::traits::PublicKeyParts as _;
use serde_json::json;

const ISS: &str = "https://idp.example";
const NOW: u64 = 1_700_000_000;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn bench_verify(c: &mut Criterion) {
    let rsa = rsa::RsaPrivateKey::new(&mut OsRng, 2048).unwrap();
    let rsa_enc = EncodingKey::from_rsa_der(rsa.to_pkcs1_der().unwrap().as_bytes());
    let ed = ed25519_dalek::SigningKey::generate(&mut OsRng);
    let ed_enc = EncodingKey::from_ed_der(ed.to_pkcs8_der().unwrap().as_bytes());
    let jwks = json!({"keys": [
        {"kty": "RSA", "kid": "rsa", "n": b64(&rsa.n().to_bytes_be()), "e": b64(&rsa.e().to_bytes_be())},
        {"kty": "OKP", "kid": "ed", "crv": "Ed25519", "x": b64(ed.verifying_key().as_bytes())},
    ]});
    let keys = HashMap::from([(
        ISS.to_string(),
        KeySet::from_jwks_json(jwks.to_string().as_bytes()).unwrap(),
    )]);
    let settings = IssuerSettings {
        algorithms: vec![Algorithm::RS256, Algorithm::EdDSA],
        leeway: Duration::from_secs(30),
        ..IssuerSettings::new(ISS, vec!["modelgate".to_string()])
    };
    let verifier = JwtVerifier::new(vec![settings]).unwrap();
    let claims = json!({"iss": ISS, "aud": "modelgate", "sub": "alice", "exp": NOW + 300,
        "iat": NOW, "plan": "pro", "scope": "small large"});
    let sign = |alg, kid: &str, key| {
        let header = Header {
            kid: Some(kid.to_string()),
            ..Header::new(alg)
        };
        jsonwebtoken::encode(&header, &claims, key).unwrap()
    };
    let rs256 = sign(Algorithm::RS256, "rsa", &rsa_enc);
    let eddsa = sign(Algorithm::EdDSA, "ed", &ed_enc);
    assert!(verifier.verify(&rs256, &keys, NOW).is_ok());
    assert!(verifier.verify(&eddsa, &keys, NOW).is_ok());

    let mut group = c.benchmark_group("jwt_verify");
    group.bench_function("rs256_2048", |b| {
        b.iter(|| verifier.verify(black_box(&rs256), &keys, NOW).unwrap())
    });
    group.bench_function("eddsa", |b| {
        b.iter(|| verifier.verify(black_box(&eddsa), &keys, NOW).unwrap())
    });
    group.finish();
}

criterion_group!(benches, bench_verify);
criterion_main!(benches);
