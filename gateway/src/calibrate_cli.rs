//! `modelgate calibrate`: computes an extraction-detector profile for an embedded model
//! from benign traffic (rows in the held-out file format), running the model itself to
//! get the outputs the detector will see.

use std::path::Path;

use modelgate_config::{Backend, Config};
use modelgate_plugins::extraction::{
    CalibrationOptions, ModelMetadata as DetectorMetadata, calibrate,
};

use crate::embedded::metadata::ModelMetadata;
use crate::embedded::model::{OnnxModel, OutputData, RunStates};

/// Calibrates the route serving `model` on the rows of `benign` (`{"rows": [[...]], ...}`)
/// and returns the profile JSON. Errors name the file or setting at fault.
pub fn run(config: &Config, model: &str, benign: &Path) -> Result<String, String> {
    let route = config
        .routes
        .iter()
        .find(|r| r.model.as_deref() == Some(model))
        .ok_or_else(|| format!("no route serves model {model:?}"))?;
    let Backend::Embedded { onnx, metadata } = &route.backend else {
        return Err(format!(
            "model {model:?} is not served by the embedded backend"
        ));
    };
    let metadata_text = std::fs::read_to_string(metadata)
        .map_err(|e| format!("cannot read {}: {e}", metadata.display()))?;
    let detector_meta = DetectorMetadata::from_json(&metadata_text).map_err(|e| e.to_string())?;
    let onnx_model = OnnxModel::load(onnx, ModelMetadata::load(metadata)?)?;
    let rows = read_rows(benign, onnx_model.metadata.features())?;
    let batch = onnx_model.metadata.max_batch_size.max(1);
    let mut outputs = Vec::with_capacity(rows.len());
    let mut states = RunStates::default();
    for chunk in rows.chunks(batch) {
        let result = onnx_model.infer(&mut states, chunk.len(), &chunk.concat())?;
        let (shape, probabilities) = result
            .tensors
            .iter()
            .find_map(|(shape, data)| match data {
                OutputData::F32(v) if shape.len() == 2 => Some((shape, v)),
                _ => None,
            })
            .ok_or("the model has no [batch, classes] FP32 output to calibrate on")?;
        outputs.extend(probabilities.chunks(shape[1]).map(<[f32]>::to_vec));
    }
    let profile = calibrate(
        &detector_meta,
        &rows,
        &outputs,
        &CalibrationOptions::default(),
    )
    .map_err(|e| e.to_string())?;
    Ok(profile.to_json())
}

fn read_rows(path: &Path, features: usize) -> Result<Vec<Vec<f32>>, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let doc: serde_json::Value =
        serde_json::from_str(&text).map_err(|e| format!("{} is not JSON: {e}", path.display()))?;
    let rows = doc["rows"]
        .as_array()
        .ok_or_else(|| format!("{}: expected {{\"rows\": [[...], ...]}}", path.display()))?;
    rows.iter()
        .enumerate()
        .map(|(i, row)| {
            let values: Vec<f32> = row
                .as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(serde_json::Value::as_f64)
                        .map(|v| v as f32)
                        .collect()
                })
                .unwrap_or_default();
            if values.len() == features {
                Ok(values)
            } else {
                Err(format!(
                    "{}: rows[{i}] must have {features} numbers",
                    path.display()
                ))
            }
        })
        .collect()
}
