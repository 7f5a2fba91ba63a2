//! A JSON body for a route with a schema, any bytes, through the gateway's own limited
//! parser: what it accepts serde_json reads as the same document; what it refuses is a
//! client error; never a panic. The first byte picks the limits.
#![no_main]

use libfuzzer_sys::fuzz_target;
use modelgate_plugins::schema::parse_json;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let Some((pick, body)) = common::split(data) else {
        return;
    };
    let limits = common::limits(pick & 1 != 0);
    match parse_json(body, &limits) {
        Ok(value) => {
            let reference: serde_json::Value =
                serde_json::from_slice(body).expect("accepted what serde_json refuses");
            assert_eq!(value, reference, "read another document than serde_json");
        }
        Err(denial) => common::check_denial(&denial, &limits),
    }
});
