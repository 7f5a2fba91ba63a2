//! Sample loading, Open Inference Protocol (KServe v2) request bodies and label checking.

use std::io::Write as _;
use std::path::Path;

use serde::Deserialize;

/// Upper bound on the number of distinct pre-built bodies.
pub const MAX_POOL: usize = 4096;

/// Feature rows and (optional) labels, as stored in e.g. `models/digits_holdout.json`.
#[derive(Debug, Clone, PartialEq)]
pub struct Samples {
    /// Feature rows, all of the same width.
    pub rows: Vec<Vec<f64>>,
    /// One label per row, if present.
    pub labels: Option<Vec<i64>>,
}

#[derive(Deserialize)]
struct RawSamples {
    rows: Vec<Vec<f64>>,
    #[serde(default)]
    labels: Option<Vec<f64>>,
}

impl Samples {
    /// Reads and validates a samples file (`{"rows": [[...], ...], "labels": [...]}`).
    pub fn load(path: &Path) -> Result<Self, String> {
        let bytes = std::fs::read(path)
            .map_err(|e| format!("cannot read samples file {}: {e}", path.display()))?;
        Self::from_slice(&bytes)
            .map_err(|e| format!("invalid samples file {}: {e}", path.display()))
    }

    /// Parses and validates samples from JSON bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, String> {
        let raw: RawSamples = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        let width = raw.rows.first().map(Vec::len).ok_or("\"rows\" is empty")?;
        if width == 0 {
            return Err("rows must not be empty".into());
        }
        if let Some(i) = raw.rows.iter().position(|r| r.len() != width) {
            return Err(format!(
                "row {i} has {} values, expected {width}",
                raw.rows[i].len()
            ));
        }
        let labels = match raw.labels {
            None => None,
            Some(l) if l.len() != raw.rows.len() => {
                return Err(format!("{} labels for {} rows", l.len(), raw.rows.len()));
            }
            Some(l) => Some(
                l.iter()
                    .map(|&v| {
                        if v.fract() == 0.0 && v.abs() < 9.0e15 {
                            Ok(v as i64)
                        } else {
                            Err(format!("label {v} is not an integer"))
                        }
                    })
                    .collect::<Result<_, _>>()?,
            ),
        };
        Ok(Self {
            rows: raw.rows,
            labels,
        })
    }

    /// Number of values per row.
    pub fn width(&self) -> usize {
        self.rows.first().map_or(0, Vec::len)
    }
}

/// Pre-built request bodies plus the expected labels of each.
#[derive(Debug, Clone, Default)]
pub struct InferBodies {
    /// Encoded JSON bodies.
    pub bodies: Vec<Vec<u8>>,
    /// Expected labels per body (`batch` each), if the samples had labels.
    pub labels: Option<Vec<Vec<i64>>>,
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Default pool size: enough bodies to cover every row exactly once per cycle, capped.
pub fn default_pool_size(rows: usize, batch: usize) -> usize {
    let rows = rows.max(1);
    (rows / gcd(rows, batch.max(1))).clamp(1, MAX_POOL)
}

fn write_number(out: &mut Vec<u8>, v: f64) {
    if v.fract() == 0.0 && v.abs() < 1.0e15 {
        // Integral values are written without a fraction: shorter bodies, same value.
        let _ = write!(out, "{}", v as i64);
    } else if v.is_finite() {
        // serde_json uses the shortest representation that round-trips.
        let _ = serde_json::to_writer(&mut *out, &v);
    } else {
        out.extend_from_slice(b"0");
    }
}

/// Builds `pool` KServe v2 infer bodies, each carrying `batch` consecutive rows
/// (cycling through the samples):
/// `{"id":"<n>","inputs":[{"name":<input>,"shape":[B,W],"datatype":"FP32","data":[...]}]}`.
pub fn build_infer_bodies(
    samples: &Samples,
    batch: usize,
    input_name: &str,
    pool: usize,
) -> InferBodies {
    let batch = batch.max(1);
    let rows = samples.rows.len();
    let width = samples.width();
    let name = serde_json::to_string(input_name).unwrap_or_else(|_| "\"input\"".into());
    let mut bodies = Vec::with_capacity(pool);
    let mut labels = samples.labels.as_ref().map(|_| Vec::with_capacity(pool));
    for n in 0..pool {
        let mut body = Vec::with_capacity(96 + batch * width * 4);
        let _ = write!(
            body,
            r#"{{"id":"{n}","inputs":[{{"name":{name},"shape":[{batch},{width}],"datatype":"FP32","data":["#
        );
        let mut expected = Vec::with_capacity(batch);
        for b in 0..batch {
            let row = (n * batch + b) % rows;
            for (i, &v) in samples.rows[row].iter().enumerate() {
                if b > 0 || i > 0 {
                    body.push(b',');
                }
                write_number(&mut body, v);
            }
            if let Some(l) = &samples.labels {
                expected.push(l[row]);
            }
        }
        body.extend_from_slice(b"]}]}");
        bodies.push(body);
        if let Some(labels) = labels.as_mut() {
            labels.push(expected);
        }
    }
    InferBodies { bodies, labels }
}

#[derive(Deserialize)]
struct InferResponse {
    outputs: Vec<InferOutput>,
}

#[derive(Deserialize)]
struct InferOutput {
    name: String,
    #[serde(default)]
    data: serde_json::Value,
}

fn flatten<'a>(v: &'a serde_json::Value, out: &mut Vec<&'a serde_json::Value>) {
    match v {
        serde_json::Value::Array(items) => items.iter().for_each(|i| flatten(i, out)),
        other => out.push(other),
    }
}

/// Counts how many predictions in a v2 infer response's `label` output match `expected`.
///
/// Missing predictions count as wrong; a response without a `label` output is an error.
pub fn count_correct(body: &[u8], expected: &[i64]) -> Result<usize, String> {
    let resp: InferResponse =
        serde_json::from_slice(body).map_err(|e| format!("invalid infer response: {e}"))?;
    let output = resp
        .outputs
        .iter()
        .find(|o| o.name == "label")
        .ok_or("no output named \"label\"")?;
    let mut values = Vec::with_capacity(expected.len());
    flatten(&output.data, &mut values);
    Ok(values
        .iter()
        .zip(expected)
        .filter(|&(v, &e)| v.as_i64() == Some(e) || v.as_f64() == Some(e as f64))
        .count())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn samples() -> Samples {
        Samples::from_slice(br#"{"rows": [[0, 1.5], [2, 3], [4, 0.1]], "labels": [7, 8, 9]}"#)
            .unwrap()
    }

    #[test]
    fn loads_and_validates() {
        let s = samples();
        assert_eq!((s.rows.len(), s.width()), (3, 2));
        assert_eq!(s.labels.as_deref(), Some(&[7, 8, 9][..]));
        assert!(Samples::from_slice(br#"{"rows": []}"#).is_err());
        assert!(Samples::from_slice(br#"{"rows": [[1], [1, 2]]}"#).is_err());
        assert!(Samples::from_slice(br#"{"rows": [[1]], "labels": [1, 2]}"#).is_err());
        assert!(Samples::from_slice(br#"{"rows": [[1]], "labels": [1.5]}"#).is_err());
        assert!(Samples::from_slice(b"not json").is_err());
        assert_eq!(
            Samples::from_slice(br#"{"rows": [[1]]}"#).unwrap().labels,
            None
        );
        let err = Samples::load(Path::new("/nonexistent/samples.json")).unwrap_err();
        assert!(err.contains("cannot read samples file"), "{err}");
    }

    #[test]
    fn builds_v2_bodies() {
        let s = samples();
        assert_eq!(default_pool_size(3, 2), 3);
        assert_eq!(default_pool_size(4, 2), 2);
        assert_eq!(default_pool_size(100_000, 1), MAX_POOL);
        let built = build_infer_bodies(&s, 2, "input", 3);
        assert_eq!(built.bodies.len(), 3);
        assert_eq!(
            std::str::from_utf8(&built.bodies[0]).unwrap(),
            r#"{"id":"0","inputs":[{"name":"input","shape":[2,2],"datatype":"FP32","data":[0,1.5,2,3]}]}"#
        );
        // Second body continues with row 2 and wraps to row 0.
        let v: serde_json::Value = serde_json::from_slice(&built.bodies[1]).unwrap();
        assert_eq!(v["id"], "1");
        assert_eq!(v["inputs"][0]["data"], serde_json::json!([4, 0.1, 0, 1.5]));
        assert_eq!(
            built.labels.unwrap(),
            vec![vec![7, 8], vec![9, 7], vec![8, 9]]
        );
        let built = build_infer_bodies(&s, 1, "x\"y", 1);
        let v: serde_json::Value = serde_json::from_slice(&built.bodies[0]).unwrap();
        assert_eq!(v["inputs"][0]["name"], "x\"y");
        assert_eq!(v["inputs"][0]["shape"], serde_json::json!([1, 2]));
    }

    #[test]
    fn label_checking() {
        let body = br#"{"model_name":"digits","outputs":[{"name":"probabilities","data":[0.1]},
            {"name":"label","datatype":"INT64","shape":[3],"data":[7,1,9]}]}"#;
        assert_eq!(count_correct(body, &[7, 8, 9]).unwrap(), 2);
        assert_eq!(
            count_correct(
                br#"{"outputs":[{"name":"label","data":[[7],[8.0]]}]}"#,
                &[7, 8]
            )
            .unwrap(),
            2
        );
        assert_eq!(
            count_correct(br#"{"outputs":[{"name":"label","data":[7]}]}"#, &[7, 8]).unwrap(),
            1
        );
        assert!(count_correct(br#"{"outputs":[]}"#, &[1]).is_err());
        assert!(count_correct(b"oops", &[1]).is_err());
    }
}
