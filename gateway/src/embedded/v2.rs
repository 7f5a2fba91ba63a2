//! The Open Inference Protocol (KServe v2) REST messages the embedded backend speaks:
//! parsing an infer request into a batch of rows and writing the response.

use serde::de::{self, Deserializer, SeqAccess, Visitor};
use serde::{Deserialize, Serialize};
use std::fmt;

use super::metadata::ModelMetadata;
use super::model::{OutputData, Outputs};

/// An infer request: `{"id", "parameters", "inputs": [...], "outputs": [...]}`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferRequest {
    pub id: Option<String>,
    pub parameters: Option<de::IgnoredAny>,
    pub inputs: Vec<InputTensor>,
    #[serde(default)]
    pub outputs: Vec<RequestedOutput>,
}

/// One input tensor; `data` may be flat or nested row-major.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputTensor {
    pub name: String,
    pub shape: Vec<i64>,
    pub datatype: String,
    pub parameters: Option<de::IgnoredAny>,
    pub data: Numbers,
}

/// An output the client asks for by name.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RequestedOutput {
    pub name: String,
    pub parameters: Option<de::IgnoredAny>,
}

/// A tensor's numbers, nested arrays flattened row-major while parsing.
#[derive(Debug, Default, PartialEq)]
pub struct Numbers(pub Vec<f64>);

impl<'de> Deserialize<'de> for Numbers {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let mut out = Vec::new();
        deserializer.deserialize_seq(Flatten(&mut out))?;
        Ok(Numbers(out))
    }
}

struct Flatten<'a>(&'a mut Vec<f64>);

impl<'de> Visitor<'de> for Flatten<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an array of numbers (flat or nested)")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        if let Some(hint) = seq.size_hint() {
            self.0.reserve(hint.min(1 << 20));
        }
        while seq.next_element_seed(Element(self.0))?.is_some() {}
        Ok(())
    }
}

struct Element<'a>(&'a mut Vec<f64>);

impl<'de> de::DeserializeSeed<'de> for Element<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Element<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a number or an array of numbers")
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<(), E> {
        self.0.push(v);
        Ok(())
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<(), E> {
        self.0.push(v as f64);
        Ok(())
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<(), E> {
        self.0.push(v as f64);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<(), A::Error> {
        Flatten(self.0).visit_seq(seq)
    }
}

/// A request checked against the model: ready to run.
#[derive(Debug, PartialEq)]
pub struct Batch {
    pub id: Option<String>,
    pub rows: usize,
    pub data: Vec<f32>,
    /// Indexes into the metadata outputs, in the order to return them.
    pub outputs: Vec<usize>,
}

/// Checks a parsed request against the model's single FP32 input; the error is for the client.
pub fn to_batch(request: InferRequest, meta: &ModelMetadata) -> Result<Batch, String> {
    let spec = &meta.inputs[0];
    let [input] = <[InputTensor; 1]>::try_from(request.inputs).map_err(|inputs| {
        format!(
            "expected exactly one input ({:?}), got {}",
            spec.name,
            inputs.len()
        )
    })?;
    if input.name != spec.name {
        return Err(format!(
            "unknown input {:?}; the model's input is {:?}",
            input.name, spec.name
        ));
    }
    if input.datatype != spec.datatype {
        return Err(format!(
            "input {:?} must have datatype {}",
            spec.name, spec.datatype
        ));
    }
    let features = meta.features();
    let rows = match input.shape.as_slice() {
        [rows, cols] if *rows > 0 && usize::try_from(*cols) == Ok(features) => *rows as usize,
        _ => {
            return Err(format!(
                "input {:?} must have shape [batch, {features}]",
                spec.name
            ));
        }
    };
    if rows > meta.max_batch_size {
        return Err(format!(
            "batch size {rows} exceeds the model's maximum of {}",
            meta.max_batch_size
        ));
    }
    if input.data.0.len() != rows * features {
        return Err(format!(
            "input {:?} has {} values but shape {:?} needs {}",
            spec.name,
            input.data.0.len(),
            input.shape,
            rows * features
        ));
    }
    let mut data = Vec::with_capacity(input.data.0.len());
    for (i, v) in input.data.0.iter().enumerate() {
        let v32 = *v as f32;
        if !v32.is_finite() {
            return Err(format!(
                "input {:?} value at index {i} is not a finite FP32",
                spec.name
            ));
        }
        data.push(v32);
    }
    let outputs = if request.outputs.is_empty() {
        (0..meta.outputs.len()).collect()
    } else {
        request
            .outputs
            .iter()
            .map(|o| {
                meta.outputs
                    .iter()
                    .position(|s| s.name == o.name)
                    .ok_or_else(|| format!("unknown output {:?}", o.name))
            })
            .collect::<Result<_, _>>()?
    };
    Ok(Batch {
        id: request.id,
        rows,
        data,
        outputs,
    })
}

#[derive(Serialize)]
struct InferResponse<'a> {
    model_name: &'a str,
    model_version: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    id: Option<&'a str>,
    outputs: Vec<OutputTensor<'a>>,
}

#[derive(Serialize)]
struct OutputTensor<'a> {
    name: &'a str,
    datatype: &'a str,
    shape: &'a [usize],
    data: DataRef<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum DataRef<'a> {
    F32(&'a [f32]),
    I64(&'a [i64]),
}

/// Writes the response JSON for the outputs the batch asked for.
pub fn response_json(meta: &ModelMetadata, batch: &Batch, outputs: &Outputs) -> Vec<u8> {
    let tensors = batch
        .outputs
        .iter()
        .filter_map(|&i| {
            let (shape, data) = outputs.tensors.get(i)?;
            Some(OutputTensor {
                name: &meta.outputs[i].name,
                datatype: &meta.outputs[i].datatype,
                shape,
                data: match data {
                    OutputData::F32(v) => DataRef::F32(v),
                    OutputData::I64(v) => DataRef::I64(v),
                },
            })
        })
        .collect();
    let response = InferResponse {
        model_name: &meta.name,
        model_version: &meta.version,
        id: batch.id.as_deref(),
        outputs: tensors,
    };
    serde_json::to_vec(&response).unwrap_or_default()
}

/// `GET /v2/models/{m}`: the model's metadata in the protocol's shape.
pub fn metadata_json(meta: &ModelMetadata) -> Vec<u8> {
    serde_json::to_vec(&serde_json::json!({
        "name": meta.name,
        "versions": [meta.version],
        "platform": meta.platform,
        "inputs": meta.inputs,
        "outputs": meta.outputs,
    }))
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedded::metadata::TensorSpec;

    fn meta() -> ModelMetadata {
        ModelMetadata {
            name: "m".into(),
            version: "1".into(),
            platform: "onnx".into(),
            max_batch_size: 4,
            inputs: vec![TensorSpec {
                name: "input".into(),
                datatype: "FP32".into(),
                shape: vec![-1, 2],
            }],
            outputs: vec![
                TensorSpec {
                    name: "probabilities".into(),
                    datatype: "FP32".into(),
                    shape: vec![-1, 2],
                },
                TensorSpec {
                    name: "label".into(),
                    datatype: "INT64".into(),
                    shape: vec![-1],
                },
            ],
            class_labels: vec![],
            feature_range: None,
        }
    }

    fn parse(json: &str) -> Result<Batch, String> {
        let request: InferRequest = serde_json::from_str(json).map_err(|e| e.to_string())?;
        to_batch(request, &meta())
    }

    #[test]
    fn flat_and_nested_data_give_the_same_batch() {
        let flat = parse(
            r#"{"id":"a","inputs":[{"name":"input","shape":[2,2],"datatype":"FP32","data":[1,2,3,4.5]}]}"#,
        );
        let nested = parse(
            r#"{"id":"a","inputs":[{"name":"input","shape":[2,2],"datatype":"FP32","data":[[1,2],[3,4.5]]}]}"#,
        );
        let flat = flat.unwrap();
        assert_eq!(flat, nested.unwrap());
        assert_eq!(
            (flat.rows, flat.data.as_slice()),
            (2, &[1.0, 2.0, 3.0, 4.5][..])
        );
        assert_eq!(flat.outputs, vec![0, 1]);
    }

    #[test]
    fn requested_outputs_select_and_order() {
        let b = parse(r#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[0,0]}],"outputs":[{"name":"label"}]}"#).unwrap();
        assert_eq!(b.outputs, vec![1]);
        let e = parse(
            r#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[0,0]}],"outputs":[{"name":"nope"}]}"#,
        );
        assert!(e.unwrap_err().contains("unknown output"));
    }

    #[test]
    fn refuses_contract_violations() {
        let cases = [
            (r#"{"inputs":[]}"#, "exactly one input"),
            (
                r#"{"inputs":[{"name":"x","shape":[1,2],"datatype":"FP32","data":[0,0]}]}"#,
                "unknown input",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"INT64","data":[0,0]}]}"#,
                "datatype",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,3],"datatype":"FP32","data":[0,0,0]}]}"#,
                "shape",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[2,2],"datatype":"FP32","data":[0,0]}]}"#,
                "needs 4",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[5,2],"datatype":"FP32","data":[0,0,0,0,0,0,0,0,0,0]}]}"#,
                "maximum",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[1e300,0]}]}"#,
                "finite",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":["a",0]}]}"#,
                "number",
            ),
            (
                r#"{"inputs":[{"name":"input","shape":[1,2],"datatype":"FP32","data":[0,0]}],"extra":1}"#,
                "unknown field",
            ),
        ];
        for (json, want) in cases {
            let e = parse(json).unwrap_err();
            assert!(e.contains(want), "{json}: {e}");
        }
    }

    #[test]
    fn response_has_v2_shape() {
        let batch = Batch {
            id: Some("7".into()),
            rows: 1,
            data: vec![0.0, 0.0],
            outputs: vec![1, 0],
        };
        let outputs = Outputs {
            tensors: vec![
                (vec![1, 2], OutputData::F32(vec![0.25, 0.75])),
                (vec![1], OutputData::I64(vec![1])),
            ],
        };
        let v: serde_json::Value =
            serde_json::from_slice(&response_json(&meta(), &batch, &outputs)).unwrap();
        assert_eq!(v["id"], "7");
        assert_eq!(v["model_name"], "m");
        assert_eq!(v["outputs"][0]["name"], "label");
        assert_eq!(v["outputs"][0]["data"][0], 1);
        assert_eq!(v["outputs"][1]["shape"], serde_json::json!([1, 2]));
        assert_eq!(v["outputs"][1]["data"][1], 0.75);
    }
}
