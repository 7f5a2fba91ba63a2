//! The model metadata file shipped beside an ONNX model (`models/digits.json`).

use std::path::Path;

use serde::{Deserialize, Serialize};

/// One tensor's name, Open Inference Protocol datatype and shape (`-1` = dynamic).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TensorSpec {
    pub name: String,
    pub datatype: String,
    pub shape: Vec<i64>,
}

/// Inclusive range every input feature must fall in.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct FeatureRange {
    pub min: f64,
    pub max: f64,
}

/// What the gateway needs to know about a model; extra fields in the file are kept for
/// later stages (training statistics for extraction detection).
#[derive(Debug, Clone, PartialEq, Deserialize)]
pub struct ModelMetadata {
    pub name: String,
    pub version: String,
    #[serde(default = "default_platform")]
    pub platform: String,
    pub max_batch_size: usize,
    pub inputs: Vec<TensorSpec>,
    pub outputs: Vec<TensorSpec>,
    #[serde(default)]
    pub class_labels: Vec<String>,
    pub feature_range: Option<FeatureRange>,
}

fn default_platform() -> String {
    "onnx".to_string()
}

impl ModelMetadata {
    /// Reads and checks the file: one input of rank 2 with a fixed feature dimension,
    /// batch size > 0. The error says which file and what is wrong.
    pub fn load(path: &Path) -> Result<ModelMetadata, String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let meta: ModelMetadata = serde_json::from_str(&text)
            .map_err(|e| format!("{} is not valid model metadata: {e}", path.display()))?;
        meta.check()
            .map_err(|e| format!("{}: {e}", path.display()))?;
        Ok(meta)
    }

    fn check(&self) -> Result<(), String> {
        if self.max_batch_size == 0 {
            return Err("max_batch_size must be > 0".into());
        }
        let [input] = self.inputs.as_slice() else {
            return Err("the embedded backend serves models with exactly one input".into());
        };
        if input.datatype != "FP32" || input.shape.len() != 2 || input.shape[1] <= 0 {
            return Err("the input must be FP32 with shape [-1, features]".into());
        }
        if self.outputs.is_empty() {
            return Err("at least one output is required".into());
        }
        for o in &self.outputs {
            if !matches!(o.datatype.as_str(), "FP32" | "INT64") {
                return Err(format!(
                    "output {:?}: datatype must be FP32 or INT64",
                    o.name
                ));
            }
        }
        Ok(())
    }

    /// Number of features per row (the input's second dimension).
    pub fn features(&self) -> usize {
        usize::try_from(self.inputs[0].shape[1]).unwrap_or(0)
    }
}
