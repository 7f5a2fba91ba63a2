//! The Open Inference Protocol (KServe v2) REST responses the embedded backend writes.
//! Requests arrive already checked and parsed by the validate stage.

use serde::Serialize;

use modelgate_plugins::schema::ValidatedRequest;

use super::metadata::ModelMetadata;
use super::model::{OutputData, Outputs};

/// A checked request, ready to run.
#[derive(Debug, PartialEq)]
pub struct Batch {
    pub id: Option<String>,
    pub rows: usize,
    pub data: Vec<f32>,
    /// Indexes into the metadata outputs, in the order to return them.
    pub outputs: Vec<usize>,
}

impl Batch {
    /// Takes the model's single FP32 input out of a validated request. The contract the
    /// request was checked against is the model's own metadata, so names and shapes fit;
    /// the error covers a contract that does not match the model.
    pub fn from_validated(
        request: ValidatedRequest,
        meta: &ModelMetadata,
    ) -> Result<Batch, String> {
        let input_name = &meta.inputs[0].name;
        let rows = request.batch;
        let outputs = if request.outputs.is_empty() {
            (0..meta.outputs.len()).collect()
        } else {
            request
                .outputs
                .iter()
                .map(|name| {
                    meta.outputs
                        .iter()
                        .position(|s| &s.name == name)
                        .ok_or_else(|| format!("unknown output {name:?}"))
                })
                .collect::<Result<_, _>>()?
        };
        let id = request.id;
        let data = request
            .inputs
            .into_iter()
            .find(|t| &t.name == input_name)
            .and_then(|t| match t.data {
                modelgate_plugins::schema::TensorData::F32(v) => Some(v),
                _ => None,
            })
            .ok_or_else(|| format!("input {input_name:?} is missing or not FP32"))?;
        if data.len() != rows * meta.features() {
            return Err(format!(
                "input {input_name:?} does not have {rows} rows of {} features",
                meta.features()
            ));
        }
        Ok(Batch {
            id,
            rows,
            data,
            outputs,
        })
    }
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
