//! Cheap structural limits on JSON bodies, checked before any parser builds values.

use crate::{Code, Denial};

/// Refuses JSON nested deeper than `max_depth` arrays/objects (400 `invalid_json`). Scans
/// bytes once, skipping string contents; it does not validate the rest of the syntax.
pub fn check_depth(body: &[u8], max_depth: usize) -> Result<(), Denial> {
    // Nesting cannot exceed the number of opening brackets: a plain count (in chunks whose
    // `u8` sums cannot overflow) settles most bodies without the scan below, which has to
    // track strings.
    let opening: usize = body
        .chunks(255)
        .map(|c| {
            usize::from(
                c.iter()
                    .map(|&b| u8::from(b == b'[' || b == b'{'))
                    .sum::<u8>(),
            )
        })
        .sum();
    if opening <= max_depth {
        return Ok(());
    }
    let mut depth = 0usize;
    let mut in_string = false;
    let mut escaped = false;
    for &b in body {
        if in_string {
            match (escaped, b) {
                (true, _) => escaped = false,
                (false, b'\\') => escaped = true,
                (false, b'"') => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                if depth > max_depth {
                    return Err(Denial::new(
                        Code::InvalidJson,
                        format!("JSON nesting deeper than {max_depth} levels"),
                    ));
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_nesting_outside_strings() {
        assert!(check_depth(br#"{"a":[[1,2],[3]]}"#, 3).is_ok());
        assert_eq!(
            check_depth(br#"{"a":[[1,2],[3]]}"#, 2).unwrap_err().code,
            Code::InvalidJson
        );
        assert!(check_depth(br#"{"s":"[[[[[[\"[[[["}"#, 1).is_ok());
        let deep = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
        assert!(check_depth(deep.as_bytes(), 64).is_err());
        // Around the bracket count that settles a body without the scan (chunks of 255).
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        assert!(check_depth(deep.as_bytes(), 300).is_ok());
        assert!(check_depth(deep.as_bytes(), 299).is_err());
    }
}
