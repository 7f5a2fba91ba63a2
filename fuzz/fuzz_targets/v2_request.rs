//! A KServe v2 JSON infer request, any bytes: refused with a client error or accepted as
//! the contract promises; never a panic. The first byte picks the contract and the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_plugins::schema::validate_v2;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| common::validate_body(data, validate_v2));
