//! The embedded backend: ONNX models run in-process with tract, served over the Open
//! Inference Protocol so the gateway works with no other service running.

pub mod metadata;
pub mod model;
pub mod pool;
pub mod v2;

use std::path::Path;
use std::sync::Arc;

use http::{HeaderValue, header};
use modelgate_plugins::schema::ValidatedRequest;
use modelgate_plugins::{Code, Denial};

pub use metadata::ModelMetadata;
pub use model::{OnnxModel, OutputData, Outputs, RunStates};
pub use pool::{InferencePool, PoolError};

/// A model ready to serve: loaded once per config generation, shared by requests.
pub struct EmbeddedModel {
    model: Arc<OnnxModel>,
}

impl EmbeddedModel {
    /// Loads the metadata and the ONNX file; fails with a message naming the bad file.
    pub fn load(onnx: &Path, metadata: &Path) -> Result<EmbeddedModel, String> {
        let meta = ModelMetadata::load(metadata)?;
        Ok(EmbeddedModel {
            model: Arc::new(OnnxModel::load(onnx, meta)?),
        })
    }

    /// The model's metadata.
    pub fn metadata(&self) -> &ModelMetadata {
        &self.model.metadata
    }

    /// Runs a validated infer request on the pool; returns the batch (its input rows kept)
    /// and the model's outputs.
    pub async fn run(
        &self,
        pool: &InferencePool,
        request: ValidatedRequest,
    ) -> Result<(v2::Batch, Outputs), Denial> {
        let batch = v2::Batch::from_validated(request, self.metadata())
            .map_err(|m| Denial::new(Code::InvalidInput, m))?;
        let model = Arc::clone(&self.model);
        let (batch, outputs) = pool
            .run(move |states| {
                let outputs = model.infer(states, batch.rows, &batch.data);
                (batch, outputs)
            })
            .await
            .map_err(|e| match e {
                PoolError::Full => {
                    Denial::new(Code::Overloaded, "the model is busy; retry shortly")
                        .with_header(header::RETRY_AFTER, HeaderValue::from_static("1"))
                }
                PoolError::Stopped => Denial::new(Code::Internal, "inference is unavailable"),
            })?;
        let outputs = outputs.map_err(|e| {
            log::error!(
                "embedded inference failed for model {}: {e}",
                self.metadata().name
            );
            Denial::new(Code::Internal, "inference failed")
        })?;
        Ok((batch, outputs))
    }

    /// The response JSON for a run.
    pub fn respond(&self, batch: &v2::Batch, outputs: &Outputs) -> Vec<u8> {
        v2::response_json(self.metadata(), batch, outputs)
    }
}
