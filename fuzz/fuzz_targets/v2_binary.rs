//! A v2 request in the binary tensor extension: the `Inference-Header-Content-Length`
//! value and the body, any bytes. Refused with a client error or accepted as the contract
//! promises; never a panic. The first byte picks the contract, the limits and the header
//! (a JSON prefix length near the body's, or free text up to the first newline).
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_plugins::schema::validate_v2_binary;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((pick, rest)) = common::split(data) else {
        return;
    };
    let contract = &common::contracts()[usize::from(pick & 1)];
    let limits = common::limits(pick & 2 != 0);
    let (header, body) = if pick & 4 != 0 {
        let cut = rest.iter().position(|&b| b == b'\n').unwrap_or(rest.len());
        let header = String::from_utf8_lossy(&rest[..cut]).into_owned();
        (header, rest.get(cut + 1..).unwrap_or_default())
    } else {
        let Some((&len, body)) = rest.split_first() else {
            return;
        };
        // A prefix length the body may or may not have: up to 255 bytes into it.
        (usize::from(len).to_string(), body)
    };
    let verdict = validate_v2_binary(body, &header, contract, &limits);
    common::check_verdict(verdict, contract, &limits);
});
