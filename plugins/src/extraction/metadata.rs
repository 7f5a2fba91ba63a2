//! The part of a model's metadata file (`models/<name>.json`) that calibration reads.
//! Unknown fields are ignored: the file belongs to the model, not to the detector.

use serde::Deserialize;

use super::ExtractionError;

/// Model metadata needed to calibrate a detector profile.
#[derive(Debug, Clone, Deserialize)]
pub struct ModelMetadata {
    pub name: String,
    pub feature_range: FeatureRange,
    pub class_labels: Vec<String>,
    pub training: TrainingStats,
}

/// The range every input feature lies in.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct FeatureRange {
    pub min: f32,
    pub max: f32,
}

/// Statistics of the training set, in raw feature units.
#[derive(Debug, Clone, Deserialize)]
pub struct TrainingStats {
    pub feature_mean: Vec<f32>,
    /// Population standard deviation; 0 for constant features.
    pub feature_std: Vec<f32>,
    /// One mean row per class.
    pub class_centroids: Vec<Vec<f32>>,
    /// Quantiles of each training row's L2 distance to its nearest class centroid.
    pub centroid_distance: CentroidDistance,
}

/// Quantiles of the nearest-centroid distance over the training rows.
#[derive(Debug, Clone, Copy, Deserialize)]
pub struct CentroidDistance {
    pub p50: f32,
    pub p90: f32,
    pub p99: f32,
    pub max: f32,
}

impl ModelMetadata {
    /// Parses and checks a metadata document.
    ///
    /// Fails when the JSON is malformed or the statistics are inconsistent (empty, ragged,
    /// non-finite, or an empty feature range).
    pub fn from_json(text: &str) -> Result<Self, ExtractionError> {
        let meta: ModelMetadata = serde_json::from_str(text)
            .map_err(|e| ExtractionError::Metadata(format!("invalid metadata JSON: {e}")))?;
        meta.check()?;
        Ok(meta)
    }

    /// Number of input features.
    pub fn features(&self) -> usize {
        self.training.feature_mean.len()
    }

    /// Number of output classes.
    pub fn classes(&self) -> usize {
        self.training.class_centroids.len()
    }

    fn check(&self) -> Result<(), ExtractionError> {
        let bad = |m: &str| Err(ExtractionError::Metadata(m.to_string()));
        let d = self.features();
        let t = &self.training;
        if d == 0 || t.feature_std.len() != d {
            return bad("training.feature_mean/feature_std must be non-empty and equally long");
        }
        if self.classes() < 2 || t.class_centroids.iter().any(|c| c.len() != d) {
            return bad("training.class_centroids must hold ≥ 2 rows of feature length");
        }
        if self.feature_range.max.partial_cmp(&self.feature_range.min)
            != Some(std::cmp::Ordering::Greater)
        {
            return bad("feature_range.max must exceed feature_range.min");
        }
        let finite = t
            .feature_mean
            .iter()
            .chain(&t.feature_std)
            .chain(t.class_centroids.iter().flatten())
            .all(|v| v.is_finite());
        if !finite || t.feature_std.iter().any(|s| *s < 0.0) {
            return bad("training statistics must be finite and std ≥ 0");
        }
        Ok(())
    }
}
