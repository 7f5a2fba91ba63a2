//! What a model accepts: its inputs (name, datatype, shape), outputs, batch limit and optional
//! feature range, read from the KServe v2 model metadata document.

use std::fmt;

use serde_json::Value;

/// A tensor element type of the Open Inference Protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Datatype {
    Bool,
    Uint8,
    Uint16,
    Uint32,
    Uint64,
    Int8,
    Int16,
    Int32,
    Int64,
    Fp16,
    Fp32,
    Fp64,
    Bytes,
}

impl Datatype {
    /// Every datatype, in protocol order.
    pub const ALL: [Datatype; 13] = [
        Datatype::Bool,
        Datatype::Uint8,
        Datatype::Uint16,
        Datatype::Uint32,
        Datatype::Uint64,
        Datatype::Int8,
        Datatype::Int16,
        Datatype::Int32,
        Datatype::Int64,
        Datatype::Fp16,
        Datatype::Fp32,
        Datatype::Fp64,
        Datatype::Bytes,
    ];

    /// Parses the protocol name (`"FP32"`); case-sensitive, `None` for anything else.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|d| d.as_str() == name)
    }

    /// The protocol name (`"FP32"`).
    pub fn as_str(self) -> &'static str {
        match self {
            Datatype::Bool => "BOOL",
            Datatype::Uint8 => "UINT8",
            Datatype::Uint16 => "UINT16",
            Datatype::Uint32 => "UINT32",
            Datatype::Uint64 => "UINT64",
            Datatype::Int8 => "INT8",
            Datatype::Int16 => "INT16",
            Datatype::Int32 => "INT32",
            Datatype::Int64 => "INT64",
            Datatype::Fp16 => "FP16",
            Datatype::Fp32 => "FP32",
            Datatype::Fp64 => "FP64",
            Datatype::Bytes => "BYTES",
        }
    }

    /// Bytes per element in the binary tensor extension; `None` for `BYTES` (length-prefixed).
    pub fn byte_size(self) -> Option<usize> {
        match self {
            Datatype::Bool | Datatype::Uint8 | Datatype::Int8 => Some(1),
            Datatype::Uint16 | Datatype::Int16 | Datatype::Fp16 => Some(2),
            Datatype::Uint32 | Datatype::Int32 | Datatype::Fp32 => Some(4),
            Datatype::Uint64 | Datatype::Int64 | Datatype::Fp64 => Some(8),
            Datatype::Bytes => None,
        }
    }

    /// The inclusive integer range of an integer datatype; `None` for the others.
    pub(crate) fn int_range(self) -> Option<(i128, i128)> {
        Some(match self {
            Datatype::Uint8 => (0, u8::MAX.into()),
            Datatype::Uint16 => (0, u16::MAX.into()),
            Datatype::Uint32 => (0, u32::MAX.into()),
            Datatype::Uint64 => (0, u64::MAX.into()),
            Datatype::Int8 => (i8::MIN.into(), i8::MAX.into()),
            Datatype::Int16 => (i16::MIN.into(), i16::MAX.into()),
            Datatype::Int32 => (i32::MIN.into(), i32::MAX.into()),
            Datatype::Int64 => (i64::MIN.into(), i64::MAX.into()),
            _ => return None,
        })
    }
}

impl fmt::Display for Datatype {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One input the model takes. `shape` uses `-1` for a dynamic dimension; when the model
/// batches (`max_batch_size > 0`) the first dimension is the batch dimension.
#[derive(Debug, Clone, PartialEq)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: Datatype,
    pub shape: Vec<i64>,
}

/// The contract requests are checked against: built once per config generation from the
/// model's metadata, then shared read-only by every request.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelContract {
    pub name: String,
    /// Largest batch (first dimension) a request may carry; `0` means the model does not batch.
    pub max_batch_size: usize,
    /// Every input is required; no other input is accepted.
    pub inputs: Vec<TensorSpec>,
    /// Names a request may ask for in `outputs`.
    pub outputs: Vec<String>,
    /// Inclusive range every numeric input value must fall in, when set.
    pub feature_range: Option<(f64, f64)>,
}

/// A metadata document that cannot serve as a contract; `path` is a JSON pointer into it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("model metadata {path}: {message}")]
pub struct ContractError {
    pub path: String,
    pub message: String,
}

fn err(path: impl Into<String>, message: impl Into<String>) -> ContractError {
    ContractError {
        path: path.into(),
        message: message.into(),
    }
}

/// Most dimensions a contract (and a request) may have.
pub const MAX_RANK: usize = 32;

impl ModelContract {
    /// Reads the KServe `GET /v2/models/{m}` metadata shape
    /// (`{"name","versions","platform","inputs":[{"name","datatype","shape"}],"outputs":[...]}`)
    /// plus the optional `max_batch_size` (default 0) and `feature_range: {"min","max"}`.
    /// Other fields are ignored. Fails on a missing or mistyped field, an unknown datatype,
    /// a dimension below -1, duplicate input or output names, or an empty or inverted range.
    pub fn from_metadata_json(meta: &Value) -> Result<Self, ContractError> {
        let obj = meta
            .as_object()
            .ok_or_else(|| err("", "must be a JSON object"))?;
        let name = obj
            .get("name")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| err("/name", "must be a non-empty string"))?
            .to_owned();
        let max_batch_size = match obj.get("max_batch_size") {
            None | Some(Value::Null) => 0,
            Some(v) => v
                .as_u64()
                .and_then(|n| usize::try_from(n).ok())
                .ok_or_else(|| err("/max_batch_size", "must be a non-negative integer"))?,
        };
        let inputs = obj
            .get("inputs")
            .and_then(Value::as_array)
            .ok_or_else(|| err("/inputs", "must be an array"))?
            .iter()
            .enumerate()
            .map(|(i, v)| tensor_spec(i, v, max_batch_size))
            .collect::<Result<Vec<_>, _>>()?;
        for (i, spec) in inputs.iter().enumerate() {
            if inputs[..i].iter().any(|s| s.name == spec.name) {
                return Err(err(format!("/inputs/{i}/name"), "duplicate input name"));
            }
        }
        let outputs = match obj.get("outputs") {
            None | Some(Value::Null) => Vec::new(),
            Some(v) => v
                .as_array()
                .ok_or_else(|| err("/outputs", "must be an array"))?
                .iter()
                .enumerate()
                .map(|(i, o)| {
                    o.get("name")
                        .and_then(Value::as_str)
                        .filter(|s| !s.is_empty())
                        .map(str::to_owned)
                        .ok_or_else(|| err(format!("/outputs/{i}/name"), "must be a string"))
                })
                .collect::<Result<Vec<_>, _>>()?,
        };
        for (i, o) in outputs.iter().enumerate() {
            if outputs[..i].contains(o) {
                return Err(err(format!("/outputs/{i}/name"), "duplicate output name"));
            }
        }
        let feature_range = match obj.get("feature_range") {
            None | Some(Value::Null) => None,
            Some(r) => {
                let bound = |k: &str| {
                    r.get(k)
                        .and_then(Value::as_f64)
                        .filter(|v| v.is_finite())
                        .ok_or_else(|| err(format!("/feature_range/{k}"), "must be a number"))
                };
                let (min, max) = (bound("min")?, bound("max")?);
                if min > max {
                    return Err(err("/feature_range", "min is greater than max"));
                }
                Some((min, max))
            }
        };
        Ok(ModelContract {
            name,
            max_batch_size,
            inputs,
            outputs,
            feature_range,
        })
    }

    /// The input called `name`, with its position in [`ModelContract::inputs`].
    pub fn input(&self, name: &str) -> Option<(usize, &TensorSpec)> {
        self.inputs.iter().enumerate().find(|(_, s)| s.name == name)
    }
}

fn tensor_spec(i: usize, v: &Value, max_batch_size: usize) -> Result<TensorSpec, ContractError> {
    let at = |field: &str| format!("/inputs/{i}/{field}");
    let name = v
        .get("name")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or_else(|| err(at("name"), "must be a non-empty string"))?
        .to_owned();
    let datatype = v
        .get("datatype")
        .and_then(Value::as_str)
        .and_then(Datatype::parse)
        .ok_or_else(|| err(at("datatype"), "must be a KServe v2 datatype (e.g. FP32)"))?;
    let dims = v
        .get("shape")
        .and_then(Value::as_array)
        .ok_or_else(|| err(at("shape"), "must be an array of integers"))?;
    if dims.len() > MAX_RANK {
        return Err(err(at("shape"), format!("more than {MAX_RANK} dimensions")));
    }
    let shape = dims
        .iter()
        .enumerate()
        .map(|(d, x)| {
            x.as_i64()
                .filter(|n| *n >= -1)
                .ok_or_else(|| err(format!("/inputs/{i}/shape/{d}"), "must be an integer >= -1"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    if max_batch_size > 0 && shape.is_empty() {
        return Err(err(
            at("shape"),
            "a batching model's inputs need a batch dimension",
        ));
    }
    Ok(TensorSpec {
        name,
        datatype,
        shape,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn bundled_digits_metadata_parses() {
        let text = include_str!("../../../models/digits.json");
        let meta: Value = serde_json::from_str(text).unwrap();
        let c = ModelContract::from_metadata_json(&meta).unwrap();
        assert_eq!(c.name, "digits");
        assert_eq!(c.max_batch_size, 64);
        assert_eq!(
            c.inputs,
            vec![TensorSpec {
                name: "input".into(),
                datatype: Datatype::Fp32,
                shape: vec![-1, 64]
            }]
        );
        assert_eq!(c.outputs, vec!["probabilities", "label"]);
        assert_eq!(c.feature_range, Some((0.0, 16.0)));
    }

    #[test]
    fn plain_kserve_metadata_parses_without_extensions() {
        let c = ModelContract::from_metadata_json(&json!({
            "name": "m", "versions": ["1"], "platform": "onnx",
            "inputs": [{"name": "a", "datatype": "BYTES", "shape": [3]}],
            "outputs": [{"name": "o", "datatype": "FP32", "shape": [1]}]
        }))
        .unwrap();
        assert_eq!(c.max_batch_size, 0);
        assert_eq!(c.feature_range, None);
        assert_eq!(c.input("a").unwrap().0, 0);
    }

    #[test]
    fn bad_metadata_is_refused_with_its_path() {
        let cases = [
            (json!([]), ""),
            (json!({"inputs": []}), "/name"),
            (json!({"name": "m"}), "/inputs"),
            (
                json!({"name": "m", "inputs": [{"name": "a", "datatype": "FP8", "shape": []}]}),
                "/inputs/0/datatype",
            ),
            (
                json!({"name": "m", "inputs": [{"name": "a", "datatype": "FP32", "shape": [1, -2]}]}),
                "/inputs/0/shape/1",
            ),
            (
                json!({"name": "m", "inputs": [
                    {"name": "a", "datatype": "FP32", "shape": [1]},
                    {"name": "a", "datatype": "FP32", "shape": [1]}]}),
                "/inputs/1/name",
            ),
            (
                json!({"name": "m", "max_batch_size": 4,
                       "inputs": [{"name": "a", "datatype": "FP32", "shape": []}]}),
                "/inputs/0/shape",
            ),
            (
                json!({"name": "m", "inputs": [], "feature_range": {"min": 2, "max": 1}}),
                "/feature_range",
            ),
            (
                json!({"name": "m", "inputs": [], "max_batch_size": -1}),
                "/max_batch_size",
            ),
        ];
        for (meta, path) in cases {
            let e = ModelContract::from_metadata_json(&meta).unwrap_err();
            assert_eq!(e.path, path, "{meta}: {e}");
        }
    }

    #[test]
    fn datatype_names_round_trip() {
        for d in Datatype::ALL {
            assert_eq!(Datatype::parse(d.as_str()), Some(d));
        }
        assert_eq!(Datatype::parse("fp32"), None);
        assert_eq!(Datatype::Bytes.byte_size(), None);
        assert_eq!(Datatype::Fp16.byte_size(), Some(2));
    }
}
