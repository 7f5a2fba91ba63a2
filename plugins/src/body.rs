//! The body stage's decisions: what framing is acceptable and when a body is too large.
//! The gateway does the reading (async, with a deadline); these rules decide.

use http::{HeaderMap, Method, header};

use crate::{Code, Denial};

/// How the request declares its body.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body (no `Content-Length`, no `Transfer-Encoding`).
    Empty,
    /// `Content-Length: n`.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the size is known only while reading.
    Chunked,
}

/// Checks the declared framing against the cap before a byte of body is read.
/// A declared length over the cap is refused at once (413); a chunked body is checked while
/// it streams ([`check_running_total`]). POST/PUT/PATCH without any framing get 411.
pub fn check_framing(method: &Method, headers: &HeaderMap, cap: u64) -> Result<Framing, Denial> {
    let chunked = headers.get_all(header::TRANSFER_ENCODING).iter().any(|v| {
        v.to_str()
            .map(|s| s.to_ascii_lowercase().contains("chunked"))
            .unwrap_or(false)
    });
    let mut lengths = headers.get_all(header::CONTENT_LENGTH).iter();
    let length = match (lengths.next(), lengths.next()) {
        (None, _) => None,
        (Some(v), None) => Some(
            v.to_str()
                .ok()
                .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|s| s.parse::<u64>().ok())
                .ok_or_else(|| Denial::new(Code::BadRequest, "Content-Length is not a number"))?,
        ),
        (Some(_), Some(_)) => {
            return Err(Denial::new(
                Code::BadRequest,
                "more than one Content-Length header",
            ));
        }
    };
    match (chunked, length) {
        (true, Some(_)) => Err(Denial::new(
            Code::BadRequest,
            "both Transfer-Encoding and Content-Length are set",
        )),
        (true, None) => Ok(Framing::Chunked),
        (false, Some(n)) if n > cap => Err(too_large(cap)),
        (false, Some(0)) => Ok(Framing::Empty),
        (false, Some(n)) => Ok(Framing::Length(n)),
        (false, None) if needs_body(method) => Err(Denial::new(
            Code::LengthRequired,
            "a request body needs Content-Length or Transfer-Encoding: chunked",
        )),
        (false, None) => Ok(Framing::Empty),
    }
}

/// Refuses a body as soon as the bytes read so far exceed the cap.
pub fn check_running_total(read: u64, cap: u64) -> Result<(), Denial> {
    if read > cap {
        Err(too_large(cap))
    } else {
        Ok(())
    }
}

fn too_large(cap: u64) -> Denial {
    Denial::new(
        Code::PayloadTooLarge,
        format!("request body exceeds the limit of {cap} bytes"),
    )
}

fn needs_body(method: &Method) -> bool {
    matches!(*method, Method::POST | Method::PUT | Method::PATCH)
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn declared_length_is_checked_before_reading() {
        let h = headers(&[("content-length", "11")]);
        assert_eq!(
            check_framing(&Method::POST, &h, 11),
            Ok(Framing::Length(11))
        );
        let e = check_framing(&Method::POST, &h, 10).unwrap_err();
        assert_eq!(e.code, Code::PayloadTooLarge);
    }

    #[test]
    fn framing_rules() {
        let post = &Method::POST;
        assert_eq!(
            check_framing(post, &headers(&[]), 10).unwrap_err().code,
            Code::LengthRequired
        );
        assert_eq!(
            check_framing(&Method::GET, &headers(&[]), 10),
            Ok(Framing::Empty)
        );
        let chunked = headers(&[("transfer-encoding", "chunked")]);
        assert_eq!(check_framing(post, &chunked, 10), Ok(Framing::Chunked));
        let both = headers(&[("transfer-encoding", "chunked"), ("content-length", "3")]);
        assert_eq!(
            check_framing(post, &both, 10).unwrap_err().code,
            Code::BadRequest
        );
        let two = headers(&[("content-length", "3"), ("content-length", "3")]);
        assert_eq!(
            check_framing(post, &two, 10).unwrap_err().code,
            Code::BadRequest
        );
        let signed = headers(&[("content-length", "+3")]);
        assert_eq!(
            check_framing(post, &signed, 10).unwrap_err().code,
            Code::BadRequest
        );
        let zero = headers(&[("content-length", "0")]);
        assert_eq!(check_framing(post, &zero, 10), Ok(Framing::Empty));
    }

    #[test]
    fn running_total_refuses_past_the_cap() {
        assert!(check_running_total(10, 10).is_ok());
        assert_eq!(
            check_running_total(11, 10).unwrap_err().code,
            Code::PayloadTooLarge
        );
    }
}
