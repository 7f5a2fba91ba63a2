//! An ONNX model loaded and optimised once with tract, run on the inference pool.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

use super::metadata::ModelMetadata;

/// One output tensor of a run, flattened row-major.
#[derive(Debug, Clone, PartialEq)]
pub enum OutputData {
    F32(Vec<f32>),
    I64(Vec<i64>),
}

/// The result of one inference: outputs in metadata order, with their shapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Outputs {
    pub tensors: Vec<(Vec<usize>, OutputData)>,
}

/// A loaded model: the optimised plan plus its metadata.
pub struct OnnxModel {
    plan: Arc<TypedRunnableModel>,
    pub metadata: ModelMetadata,
}

impl OnnxModel {
    /// Loads, type-checks and optimises the model; fails with a message naming the file.
    pub fn load(onnx: &Path, metadata: ModelMetadata) -> Result<OnnxModel, String> {
        let fail = |e: TractError| format!("cannot load ONNX model {}: {e:#}", onnx.display());
        let features = metadata.features();
        let mut model = tract_onnx::onnx().model_for_path(onnx).map_err(fail)?;
        let batch = model.symbols.sym("batch");
        model
            .set_input_fact(0, f32::fact([batch.to_dim(), features.to_dim()]).into())
            .map_err(fail)?;
        let plan = model
            .into_optimized()
            .map_err(fail)?
            .into_runnable()
            .map_err(fail)?;
        let outlets = plan.model().output_outlets().map_err(fail)?.len();
        if outlets != metadata.outputs.len() {
            return Err(format!(
                "{}: the model has {outlets} outputs but its metadata names {}",
                onnx.display(),
                metadata.outputs.len()
            ));
        }
        Ok(OnnxModel { plan, metadata })
    }

    /// Runs `rows` rows of `features` values (row-major). Blocking: call it from the pool.
    pub fn infer(&self, rows: usize, data: Vec<f32>) -> Result<Outputs, String> {
        let input = Tensor::from_shape(&[rows, self.metadata.features()], &data)
            .map_err(|e| format!("input tensor: {e}"))?;
        let results = self
            .plan
            .run(tvec!(input.into()))
            .map_err(|e| format!("inference: {e}"))?;
        let tensors = results
            .iter()
            .zip(&self.metadata.outputs)
            .map(|(value, spec)| {
                let shape = value.shape().to_vec();
                let fail = |e: TractError| format!("output {}: {e}", spec.name);
                let plain = value.try_as_plain_ram().map_err(fail)?;
                let data = match spec.datatype.as_str() {
                    "INT64" => OutputData::I64(plain.as_slice::<i64>().map_err(fail)?.to_vec()),
                    _ => OutputData::F32(plain.as_slice::<f32>().map_err(fail)?.to_vec()),
                };
                Ok((shape, data))
            })
            .collect::<Result<_, String>>()?;
        Ok(Outputs { tensors })
    }
}
