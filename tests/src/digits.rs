//! Requests to the bundled `digits` model over KServe v2, as the extraction tests send them.

use serde_json::json;

use crate::client::{Conn, Response, post_bytes};

/// The model's v2 infer path.
pub const INFER: &str = "/v2/models/digits/infer";

/// A v2 infer body for one 64-pixel `row`, asking for `outputs` (all if `None`).
pub fn infer_body(row: &[f32], outputs: Option<&[&str]>) -> Vec<u8> {
    let mut body =
        json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]});
    if let Some(names) = outputs {
        body["outputs"] = names.iter().map(|n| json!({"name": n})).collect();
    }
    body.to_string().into_bytes()
}

/// Infers one 64-pixel `row` as the holder of API `key`, asking for `outputs` (all if `None`).
pub fn infer_with(conn: &mut Conn, key: &str, row: &[f32], outputs: Option<&[&str]>) -> Response {
    conn.request(&post_bytes(
        INFER,
        &infer_body(row, outputs),
        &format!("x-api-key: {key}\r\n"),
    ))
    .expect("infer request")
}

/// [`infer_with`] for all outputs.
pub fn infer(conn: &mut Conn, key: &str, row: &[f32]) -> Response {
    infer_with(conn, key, row, None)
}

/// The data of output `name` in a v2 answer.
pub fn output(r: &Response, name: &str) -> Option<Vec<f64>> {
    let v = r.json();
    let out = v["outputs"]
        .as_array()?
        .iter()
        .find(|o| o["name"] == name)?;
    out["data"].as_array()?.iter().map(|x| x.as_f64()).collect()
}

/// What a random prober saw (query numbers count from 1).
pub struct Probing {
    /// The first answer that was a top-1 label only (one 1.0, nine 0.0).
    pub hardened_at: Option<usize>,
    /// The query refused with 403 `extraction_suspected`.
    pub blocked_at: Option<usize>,
    /// Queries answered 200.
    pub answered: usize,
}

/// Sends `n` random rows (seeded) as `key` until one is refused; every other answer must
/// be a 200 with probabilities.
pub fn probe_until_blocked(conn: &mut Conn, key: &str, n: usize, seed: u64) -> Probing {
    let mut seen = Probing {
        hardened_at: None,
        blocked_at: None,
        answered: 0,
    };
    for (i, row) in crate::random_rows(n, seed).iter().enumerate() {
        let r = infer(conn, key, row);
        if r.status == 403 {
            assert_eq!(r.error_code(), "extraction_suspected");
            seen.blocked_at = Some(i + 1);
            break;
        }
        assert_eq!(r.status, 200);
        seen.answered += 1;
        let p = output(&r, "probabilities").expect("probabilities");
        if seen.hardened_at.is_none()
            && p.iter().filter(|x| **x == 1.0).count() == 1
            && p.iter().filter(|x| **x == 0.0).count() == 9
        {
            seen.hardened_at = Some(i + 1);
        }
    }
    seen
}
