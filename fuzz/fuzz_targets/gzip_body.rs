//! A `Content-Encoding: gzip` body, any bytes (and the gzip of those bytes): decoded within
//! the size and ratio limits or refused with a client error; never a panic. What is
//! decoded is exactly what was compressed.
#![no_main]

use std::io::Write;

use flate2::{Compression, write::GzEncoder};
use libfuzzer_sys::fuzz_target;
use modelgate_plugins::schema::decode_body;

#[path = "common.rs"]
mod common;

fuzz_target!(|data: &[u8]| {
    let limits = common::limits(true);
    let (max, ratio) = (limits.max_decoded_bytes, limits.max_ratio);
    match decode_body(Some("gzip"), data, max, ratio) {
        Ok(decoded) => assert!(decoded.len() <= max),
        Err(denial) => common::check_denial(&denial, &limits),
    }
    let mut encoder = GzEncoder::new(Vec::new(), Compression::fast());
    encoder.write_all(data).unwrap();
    let gz = encoder.finish().unwrap();
    match decode_body(Some("gzip"), &gz, max, ratio) {
        Ok(decoded) => assert_eq!(&decoded[..], data),
        Err(denial) => {
            common::check_denial(&denial, &limits);
            assert!(
                data.len() > max || data.len() > ratio * gz.len(),
                "refused a {}-byte body in {} bytes of gzip: {denial:?}",
                data.len(),
                gz.len()
            );
        }
    }
});
