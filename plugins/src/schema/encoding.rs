//! Which bodies are read at all: the media type, and gzip with a size and a ratio cap.

use std::borrow::Cow;
use std::io::Read;

use flate2::read::MultiGzDecoder;

use crate::{Code, Denial};

/// Checks the `Content-Type` value: `application/json` (a `charset` parameter, if any, must
/// be UTF-8), or `application/octet-stream` when `binary` (the binary tensor extension).
/// Case-insensitive; other parameters are ignored. `None` (no header) passes: whether the
/// header is required is the caller's policy. Anything else is 415.
pub fn check_content_type(content_type: Option<&str>, binary: bool) -> Result<(), Denial> {
    let Some(value) = content_type else {
        return Ok(());
    };
    let mut parts = value.split(';');
    let media = parts.next().unwrap_or_default().trim();
    let want = if binary {
        "application/octet-stream"
    } else {
        "application/json"
    };
    if !media.eq_ignore_ascii_case(want) {
        return Err(Denial::new(
            Code::UnsupportedMediaType,
            format!("Content-Type must be {want}"),
        ));
    }
    for param in parts {
        let (name, v) = param.split_once('=').unwrap_or((param, ""));
        let v = v.trim().trim_matches('"');
        if name.trim().eq_ignore_ascii_case("charset")
            && !(v.eq_ignore_ascii_case("utf-8") || v.eq_ignore_ascii_case("utf8"))
        {
            return Err(Denial::new(
                Code::UnsupportedMediaType,
                "the only accepted charset is utf-8",
            ));
        }
    }
    Ok(())
}

/// Undoes `Content-Encoding`: none or `identity` borrows the body as is; `gzip` (or
/// `x-gzip`, one or more members) is decompressed, refusing (413) more than `max_bytes` out
/// or more than `max_ratio` bytes out per byte in (a decompression bomb stops at the cap,
/// never inflating further); anything else (`br`, `deflate`, `zstd`, stacked encodings) is
/// 415. Corrupt or truncated gzip is 400. Whether gzip is allowed at all is the caller's
/// policy ([`ValidationLimits::allow_gzip`](super::ValidationLimits::allow_gzip)).
pub fn decode_body<'a>(
    encoding: Option<&str>,
    body: &'a [u8],
    max_bytes: usize,
    max_ratio: usize,
) -> Result<Cow<'a, [u8]>, Denial> {
    let encoding = encoding.map(str::trim).unwrap_or("identity");
    if encoding.eq_ignore_ascii_case("identity") {
        return Ok(Cow::Borrowed(body));
    }
    if !(encoding.eq_ignore_ascii_case("gzip") || encoding.eq_ignore_ascii_case("x-gzip")) {
        return Err(Denial::new(
            Code::UnsupportedMediaType,
            "the only accepted Content-Encoding is gzip",
        ));
    }
    let by_ratio = body.len().saturating_mul(max_ratio);
    let cap = max_bytes.min(by_ratio);
    let mut out = Vec::with_capacity(cap.min(body.len().saturating_mul(4)));
    let limit = u64::try_from(cap).unwrap_or(u64::MAX).saturating_add(1);
    MultiGzDecoder::new(body)
        .take(limit)
        .read_to_end(&mut out)
        .map_err(|_| Denial::new(Code::BadRequest, "body is not valid gzip"))?;
    if out.len() > max_bytes {
        return Err(Denial::new(
            Code::PayloadTooLarge,
            format!("decompressed body exceeds {max_bytes} bytes"),
        ));
    }
    if out.len() > by_ratio {
        return Err(Denial::new(
            Code::PayloadTooLarge,
            format!("body decompresses more than {max_ratio} times its size"),
        ));
    }
    Ok(Cow::Owned(out))
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gzip(data: &[u8]) -> Vec<u8> {
        let mut e = GzEncoder::new(Vec::new(), Compression::best());
        e.write_all(data).unwrap();
        e.finish().unwrap()
    }

    #[test]
    fn content_types() {
        for (ct, binary, ok) in [
            (None, false, true),
            (Some("application/json"), false, true),
            (Some("Application/JSON; charset=UTF-8"), false, true),
            (Some("application/json; charset=\"utf-8\""), false, true),
            (Some("application/json; charset=latin1"), false, false),
            (Some("text/plain"), false, false),
            (Some("application/x-www-form-urlencoded"), false, false),
            (Some("application/jsonx"), false, false),
            (Some("application/octet-stream"), false, false),
            (Some("application/octet-stream"), true, true),
            (Some("application/json"), true, false),
        ] {
            let r = check_content_type(ct, binary);
            assert_eq!(r.is_ok(), ok, "{ct:?} {binary}");
            if let Err(e) = r {
                assert_eq!(e.code, Code::UnsupportedMediaType);
            }
        }
    }

    #[test]
    fn gzip_round_trip_and_identity_borrow() {
        let body = br#"{"inputs":[]}"#;
        assert!(matches!(
            decode_body(None, body, 100, 10).unwrap(),
            Cow::Borrowed(_)
        ));
        assert!(matches!(
            decode_body(Some("identity"), body, 100, 10).unwrap(),
            Cow::Borrowed(_)
        ));
        let z = gzip(&body.repeat(3));
        assert_eq!(
            decode_body(Some("GZIP"), &z, 1000, 100).unwrap().as_ref(),
            &body.repeat(3)[..]
        );
        // Two members decode as one body.
        let mut two = gzip(b"ab");
        two.extend(gzip(b"cd"));
        assert_eq!(
            decode_body(Some("gzip"), &two, 100, 100).unwrap().as_ref(),
            b"abcd"
        );
    }

    #[test]
    fn bombs_and_bad_encodings_are_refused() {
        let bomb = gzip(&vec![0u8; 10 * 1024 * 1024]);
        assert!(bomb.len() < 20_000);
        let e = decode_body(Some("gzip"), &bomb, 1024 * 1024, 10_000).unwrap_err();
        assert_eq!(e.code, Code::PayloadTooLarge);
        assert!(e.message.contains("exceeds"));
        let e = decode_body(Some("gzip"), &bomb, usize::MAX, 100).unwrap_err();
        assert_eq!(e.code, Code::PayloadTooLarge);
        assert!(e.message.contains("times"));
        for enc in ["br", "deflate", "gzip, gzip", "zstd"] {
            assert_eq!(
                decode_body(Some(enc), b"x", 100, 100).unwrap_err().code,
                Code::UnsupportedMediaType,
                "{enc}"
            );
        }
        let z = gzip(b"hello world");
        assert_eq!(
            decode_body(Some("gzip"), &z[..z.len() - 3], 100, 100)
                .unwrap_err()
                .code,
            Code::BadRequest
        );
        assert_eq!(
            decode_body(Some("gzip"), b"not gzip at all", 100, 100)
                .unwrap_err()
                .code,
            Code::BadRequest
        );
    }
}
