//! An ONNX model loaded and optimised once with tract, run on the inference pool.

use std::path::Path;
use std::sync::{Arc, Weak};

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
    /// Lives as long as the model; the run states threads keep for it hold it weakly.
    alive: Arc<()>,
}

/// The run state a thread keeps for each live model it has run. A state resets itself
/// after every run, and tract keys its per-run scratch (matrix-multiply buffers, output
/// layouts) by state and thread, so a kept state starts its next run with all of that in
/// place instead of building and dropping it each time. Owned by the one thread that runs
/// it (an inference worker holds one for its lifetime). A state holds its model's plan
/// (weights included), so one for a model that went (e.g. replaced by a config reload) is
/// dropped at the thread's next run or [`RunStates::drop_gone`], on that thread.
#[derive(Default)]
pub struct RunStates(Vec<(Weak<()>, TypedSimpleState)>);

impl RunStates {
    /// Drops the states of models that no longer exist.
    pub fn drop_gone(&mut self) {
        self.0.retain(|(model, _)| model.strong_count() > 0);
    }
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
        Ok(OnnxModel {
            plan,
            metadata,
            alive: Arc::new(()),
        })
    }

    /// Runs `rows` rows of `features` values (row-major) on the calling thread's `states`.
    /// Blocking: call it from the pool.
    pub fn infer(
        &self,
        states: &mut RunStates,
        rows: usize,
        data: &[f32],
    ) -> Result<Outputs, String> {
        let input = Tensor::from_shape(&[rows, self.metadata.features()], data)
            .map_err(|e| format!("input tensor: {e}"))?;
        let results = self
            .run(states, tvec!(input.into()))
            .map_err(|e| format!("inference: {e}"))?;
        self.outputs(&results)
    }

    /// A run's result values as outputs in metadata order.
    fn outputs(&self, results: &[TValue]) -> Result<Outputs, String> {
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

    /// One run of the plan on the kept state for this model (made on first use).
    fn run(&self, states: &mut RunStates, inputs: TVec<TValue>) -> TractResult<TVec<TValue>> {
        states.drop_gone();
        let states = &mut states.0;
        let mine = Arc::as_ptr(&self.alive);
        let i = match states.iter().position(|(model, _)| model.as_ptr() == mine) {
            Some(i) => i,
            None => {
                states.push((Arc::downgrade(&self.alive), self.plan.spawn()?));
                states.len() - 1
            }
        };
        let result = states[i].1.run(inputs);
        if result.is_err() {
            // A failed run may leave values behind; the next run starts afresh.
            states.swap_remove(i);
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digits() -> OnnxModel {
        let models = Path::new(env!("CARGO_MANIFEST_DIR")).join("../models");
        let metadata = ModelMetadata::load(&models.join("digits.json")).unwrap();
        OnnxModel::load(&models.join("digits.onnx"), metadata).unwrap()
    }

    fn rows(n: usize) -> Vec<f32> {
        (0..n * 64).map(|i| (i * 7 % 17) as f32).collect()
    }

    #[test]
    fn a_kept_state_answers_every_batch_size_as_a_fresh_run_does() {
        let (model, mut states) = (digits(), RunStates::default());
        for n in [1, 5, 2, 1, 5, 64] {
            let data = rows(n);
            let kept = model.infer(&mut states, n, &data).unwrap();
            let input = Tensor::from_shape(&[n, 64], &data).unwrap();
            let fresh = model.plan.run(tvec!(input.into())).unwrap();
            assert_eq!(kept, model.outputs(&fresh).unwrap(), "batch of {n}");
            assert_eq!(kept.tensors[0].0, [n, 10]);
        }
        assert_eq!(states.0.len(), 1, "one state per model");
    }

    #[test]
    fn a_dropped_models_state_goes_at_the_next_run_or_sweep() {
        let (old, new, mut states) = (digits(), digits(), RunStates::default());
        old.infer(&mut states, 1, &rows(1)).unwrap();
        new.infer(&mut states, 1, &rows(1)).unwrap();
        assert_eq!(states.0.len(), 2);
        drop(old);
        new.infer(&mut states, 1, &rows(1)).unwrap();
        assert_eq!(states.0.len(), 1);
        drop(new);
        states.drop_gone();
        assert!(states.0.is_empty());
    }
}
