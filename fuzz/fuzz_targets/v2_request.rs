//! A KServe v2 JSON infer request, any bytes: refused with a client error or accepted as
//! the contract promises; never a panic. The first byte picks the contract and the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_plugins::schema::validate_v2;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((pick, body)) = common::split(data) else {
        return;
    };
    let contract = &common::contracts()[usize::from(pick & 1)];
    let limits = common::limits(pick & 2 != 0);
    match validate_v2(body, contract, &limits) {
        Ok(request) => common::check_accepted(&request, contract),
        Err(denial) => common::check_denial(&denial, &limits),
    }
});
