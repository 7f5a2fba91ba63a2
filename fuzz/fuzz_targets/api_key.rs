//! A presented API key, any text: only the issued key itself (or its rotated predecessor
//! within its grace period) is accepted; anything else is refused as malformed, unknown or
//! wrong, never a panic. Half the inputs are the issued key with a few bytes changed.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use modelgate_plugins::auth::AuthFailure;
use modelgate_plugins::auth::keys::{
    IssuedKey, KeyRecord, KeyStatus, KeyVerifier, PreviousSecret, SecretHasher,
};

const NOW: u64 = 1_700_000_000;

struct Fixture {
    verifier: KeyVerifier,
    current: String,
    previous: String,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let hasher = SecretHasher::new(Some(b"pepper-pepper-pepper".to_vec()));
        let old = IssuedKey::generate().unwrap();
        let new = IssuedKey::rotate(&old.id).unwrap();
        let record = KeyRecord {
            id: new.id.clone(),
            consumer: "acme".into(),
            plan: "standard".into(),
            models: vec!["*".into()],
            group: None,
            created: NOW - 10,
            expires: None,
            status: KeyStatus::Active,
            hash: new.hash(&hasher),
            previous: vec![PreviousSecret {
                hash: old.hash(&hasher),
                valid_until: NOW + 10,
            }],
        };
        Fixture {
            verifier: KeyVerifier::new(&[record], hasher).unwrap(),
            current: new.full,
            previous: old.full,
        }
    })
}

fuzz_target!(|data: &[u8]| {
    let f = fixture();
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let presented = if mode & 1 == 0 {
        String::from_utf8_lossy(rest).into_owned()
    } else {
        // The issued key with bytes overwritten at fuzzed positions.
        let mut key = if mode & 2 == 0 {
            &f.current
        } else {
            &f.previous
        }
        .clone()
        .into_bytes();
        for pair in rest.chunks_exact(2) {
            let at = usize::from(pair[0]) % (key.len() + 1);
            if at == key.len() {
                key.push(pair[1]);
            } else {
                key[at] = pair[1];
            }
        }
        String::from_utf8_lossy(&key).into_owned()
    };
    match f.verifier.verify(&presented, NOW) {
        Ok(caller) => {
            assert!(
                presented == f.current || presented == f.previous,
                "accepted {presented:?}"
            );
            assert_eq!(caller.consumer, "acme");
        }
        Err(failure) => {
            assert!(presented != f.current && presented != f.previous);
            assert!(matches!(
                failure,
                AuthFailure::Malformed(_) | AuthFailure::UnknownKey | AuthFailure::WrongSecret
            ));
            assert_eq!(failure.denial().status().as_u16(), 401);
        }
    }
});
