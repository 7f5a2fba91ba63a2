//! A backend's v2 infer response, any bytes, read for hardening: refused with a message or
//! read, and the rewritten response under every output policy is JSON that serde_json
//! reads, with the scored output's values as hardened; never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_plugins::extraction::OutputPolicy;
use modelgate_plugins::schema::V2Response;

fuzz_target!(|data: &[u8]| {
    let Some((&expected, body)) = data.split_first() else {
        return;
    };
    let expected = usize::from(expected % 16);
    let policies = [
        OutputPolicy::Full,
        OutputPolicy::Round { decimals: 2 },
        OutputPolicy::Dither { decimals: 3 },
        OutputPolicy::TopLabel,
    ];
    for policy in policies {
        let Ok(response) = V2Response::parse(body, "probabilities", expected) else {
            return;
        };
        assert_eq!(response.scores.len(), expected);
        let out = response.into_json(policy);
        let value: serde_json::Value = serde_json::from_slice(&out).unwrap_or_else(|e| {
            panic!(
                "rewrote into invalid JSON ({e}): {}",
                String::from_utf8_lossy(&out)
            )
        });
        let outputs = value["outputs"].as_array().expect("outputs kept");
        let scored: Vec<_> = outputs
            .iter()
            .filter(|o| o["name"] == "probabilities")
            .collect();
        assert_eq!(scored.len(), 1, "one scored output: {value}");
        let values = scored[0]["data"].as_array().expect("flat data");
        assert_eq!(values.len(), expected);
    }
});
