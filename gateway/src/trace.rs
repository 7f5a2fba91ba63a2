//! W3C trace context: pass a valid `traceparent` on, start a new trace otherwise.

use http::HeaderValue;

/// The `traceparent` to send upstream: the client's if well-formed, else a fresh one.
pub fn propagate(incoming: Option<&HeaderValue>) -> String {
    match incoming.and_then(|v| v.to_str().ok()) {
        Some(v) if is_valid(v) => v.to_string(),
        _ => new_traceparent(),
    }
}

/// `00-<32 hex trace id>-<16 hex span id>-01` from the OS RNG.
pub fn new_traceparent() -> String {
    let mut bytes = [0u8; 24];
    if getrandom::fill(&mut bytes).is_err() {
        // Trace ids are not secrets; a clock-derived id still correlates logs.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos());
        bytes[..16].copy_from_slice(&nanos.to_le_bytes());
        bytes[16..].copy_from_slice(&(nanos as u64 | 1).to_le_bytes());
    }
    format!("00-{}-{}-01", hex(&bytes[..16]), hex(&bytes[16..]))
}

/// Lower-case hex without `format!` per byte (this runs on every forwarded request).
fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    out
}

fn is_valid(v: &str) -> bool {
    let parts: Vec<&str> = v.split('-').collect();
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    matches!(parts.as_slice(), [ver, trace, span, flags]
        if lower_hex(ver, 2) && *ver != "ff"
            && lower_hex(trace, 32) && trace.bytes().any(|b| b != b'0')
            && lower_hex(span, 16) && span.bytes().any(|b| b != b'0')
            && lower_hex(flags, 2))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lower_case_two_digits_per_byte() {
        assert_eq!(hex(&[0x00, 0x0f, 0xa0, 0xff]), "000fa0ff");
    }

    #[test]
    fn keeps_valid_and_replaces_invalid() {
        let valid = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(propagate(Some(&HeaderValue::from_static(valid))), valid);
        for bad in [
            "",
            "00-0000-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
        ] {
            let out = propagate(Some(&HeaderValue::from_static(bad)));
            assert!(is_valid(&out) && out != bad, "{bad} -> {out}");
        }
        let fresh = propagate(None);
        assert!(is_valid(&fresh));
        assert_ne!(fresh, propagate(None));
    }
}
