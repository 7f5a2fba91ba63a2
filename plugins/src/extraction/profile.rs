//! A calibrated, per-model detector profile (serialisable, ships as
//! `models/<name>.profile.json`) and the runtime tables derived from it.

use serde::{Deserialize, Serialize};

use super::ExtractionError;
use super::rng::SplitMix64;
use super::shapiro::SwCoefficients;

/// Everything the detector needs to know about one model. Produced by
/// [`calibrate`](super::calibrate); the detector never needs the model itself.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Profile {
    /// Format version of this document (currently 1).
    pub format: u32,
    /// Model name.
    pub model: String,
    /// Input features per row (d).
    pub features: usize,
    /// Output probabilities per row (k).
    pub classes: usize,
    /// Every feature lies in `[feature_min, feature_max]`.
    pub feature_min: f32,
    pub feature_max: f32,
    /// Queries an attacker needs to solve a linear model by equations: d + 1 (Tramèr et
    /// al., USENIX Security 2016). The volume signal is measured against it.
    pub extraction_budget: u64,
    /// Training mean per feature.
    pub feature_mean: Vec<f32>,
    /// Training std per feature, floored so constant features do not divide by zero.
    pub feature_scale: Vec<f32>,
    /// Class centroids of the training set (k × d).
    pub centroids: Vec<Vec<f32>>,
    /// Per-query parameters (what counts as a near-duplicate, out of distribution, …).
    pub query: QueryParams,
    /// Signal thresholds for one consumer: a signal's score is raw / threshold.
    pub consumer: SignalThresholds,
    /// Signal thresholds for a consumer group (all members' queries as one stream).
    pub group: SignalThresholds,
    /// Combined-score levels of the response ladder.
    pub ladder: Ladder,
    /// How the thresholds were obtained.
    pub calibration: CalibrationSummary,
}

/// Per-query parameters, calibrated on benign traffic.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryParams {
    /// Fingerprint quantisation bin width, in feature units.
    pub fingerprint_step: f32,
    /// Sliding-window length (features) of one fingerprint hash.
    pub fingerprint_window: usize,
    /// Hashes kept per query (the smallest salted window hashes).
    pub fingerprint_hashes: usize,
    /// Shared hashes with one earlier query that make a near-duplicate.
    pub fingerprint_match: usize,
    /// How many of the consumer's most recent queries a match may refer to.
    pub history: u32,
    /// A query this close (L2, feature units) to an earlier same-class prototype is a
    /// near-duplicate.
    pub near_distance: f32,
    /// Share of changed features moved by one common magnitude (relative to the nearest
    /// same-class prototype) above which a query is a sign-gradient step.
    pub step_fraction: f32,
    /// |cos| between two consecutive query steps above which the three queries lie on one
    /// line (line search).
    pub line_cosine: f32,
    /// Nearest-centroid L2 distance above which a query is out of distribution.
    pub ood_distance: f32,
    /// Same, with features divided by `feature_scale`.
    pub ood_standardized: f32,
    /// top1 − top2 below this is a low-confidence (boundary) output.
    pub boundary_margin: f32,
    /// CUSUM drifts (subtracted per query) for the three indicator streams.
    pub probing_drift: f32,
    pub ood_drift: f32,
    pub boundary_drift: f32,
    /// PRADA: distances kept for the normality test, and the least tested.
    pub distance_window: usize,
    pub distance_min: usize,
    /// PRADA prototypes kept per predicted class.
    pub prototypes_per_class: usize,
    /// Coverage: random projections (one sign bit each; ≤ 16) and their seed.
    pub projections: usize,
    pub projection_seed: u64,
}

/// One threshold per signal. A signal's score is its raw value divided by its threshold,
/// so 1.0 means "at the calibrated threshold" (above every benign value, with margin).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct SignalThresholds {
    /// CUSUM of near-duplicate / line-search / linked queries.
    pub probing: f32,
    /// PRADA: Royston z of the Shapiro–Wilk test on the window of log min-distances.
    pub distance: f32,
    /// CUSUM of out-of-distribution queries.
    pub ood: f32,
    /// Distinct input-space cells visited.
    pub coverage: f32,
    /// CUSUM of low-confidence outputs.
    pub boundary: f32,
    /// Queries (exponentially decayed count).
    pub volume: f32,
}

/// Combined-score levels: at or above a level, its action applies.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Ladder {
    pub observe: f32,
    pub harden: f32,
    pub throttle: f32,
    pub block: f32,
}

impl Default for Ladder {
    fn default() -> Self {
        Ladder {
            observe: 0.8,
            harden: 1.0,
            throttle: 2.0,
            block: 4.0,
        }
    }
}

/// What calibration saw: benign maxima of the raw signals and of the combined score.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationSummary {
    pub seed: u64,
    pub benign_rows: usize,
    pub consumers: usize,
    pub groups: usize,
    pub group_size: usize,
    /// Thresholds are the benign maximum times this margin (or a floor).
    pub margin: f32,
    pub benign_max_consumer: SignalThresholds,
    pub benign_max_group: SignalThresholds,
    /// The largest combined score any simulated benign consumer / group reached with the
    /// final thresholds (must stay below `ladder.observe`).
    pub benign_max_combined_consumer: f32,
    pub benign_max_combined_group: f32,
}

impl Profile {
    /// Parses a profile document and checks it.
    pub fn from_json(text: &str) -> Result<Self, ExtractionError> {
        let p: Profile = serde_json::from_str(text)
            .map_err(|e| ExtractionError::Profile(format!("invalid profile JSON: {e}")))?;
        p.check()?;
        Ok(p)
    }

    /// Pretty JSON with a trailing newline (stable for committing).
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    /// Checks internal consistency (lengths, positive thresholds, ordered ladder).
    pub fn check(&self) -> Result<(), ExtractionError> {
        let bad = |m: &str| Err(ExtractionError::Profile(m.to_string()));
        let (d, k, q) = (self.features, self.classes, &self.query);
        if d == 0 || k < 2 {
            return bad("features must be > 0 and classes ≥ 2");
        }
        if self.feature_mean.len() != d
            || self.feature_scale.len() != d
            || self.centroids.len() != k
            || self.centroids.iter().any(|c| c.len() != d)
        {
            return bad("feature_mean/feature_scale/centroids do not match features × classes");
        }
        if self
            .feature_scale
            .iter()
            .any(|s| !s.is_finite() || *s <= 0.0)
            || self.feature_max.is_nan()
            || self.feature_min.is_nan()
            || self.feature_max <= self.feature_min
        {
            return bad("feature_scale must be > 0 and feature_max > feature_min");
        }
        if q.fingerprint_window == 0
            || q.fingerprint_window > d
            || q.fingerprint_hashes == 0
            || q.fingerprint_match == 0
            || q.fingerprint_match > q.fingerprint_hashes
            || q.fingerprint_step.is_nan()
            || q.fingerprint_step <= 0.0
        {
            return bad("fingerprint parameters out of range");
        }
        if q.distance_window < 3 || q.distance_min < 3 || q.distance_min > q.distance_window {
            return bad("distance_window/distance_min must satisfy 3 ≤ min ≤ window");
        }
        if q.prototypes_per_class == 0 || q.projections == 0 || q.projections > 16 {
            return bad("prototypes_per_class must be > 0 and projections in 1..=16");
        }
        let positive = |t: &SignalThresholds| {
            [
                t.probing, t.distance, t.ood, t.coverage, t.boundary, t.volume,
            ]
            .iter()
            .all(|v| *v > 0.0 && v.is_finite())
        };
        if !positive(&self.consumer) || !positive(&self.group) {
            return bad("every signal threshold must be positive and finite");
        }
        let l = &self.ladder;
        if !(0.0 < l.observe
            && l.observe <= l.harden
            && l.harden <= l.throttle
            && l.throttle <= l.block)
        {
            return bad("ladder must satisfy 0 < observe ≤ harden ≤ throttle ≤ block");
        }
        Ok(())
    }
}

/// Sums a query needs against each of a few d-vectors (centroids, projections) at once.
pub(crate) const LANES: usize = 4;

/// Rows of d values (row-major in [`ByFeature::new`]) stored feature-major in blocks of
/// [`LANES`] rows: one pass over a query's features updates `LANES` sums side by side, which
/// the compiler vectorises. Each sum still adds its terms in feature order, so results equal
/// a row-by-row loop bit for bit.
#[derive(Debug)]
pub(crate) struct ByFeature {
    rows: usize,
    /// blocks × d × LANES; rows past `rows` in the last block are zero.
    data: Vec<f32>,
    d: usize,
}

impl ByFeature {
    fn new(row_major: &[f32], d: usize) -> Self {
        let rows = row_major.len() / d;
        let blocks = rows.div_ceil(LANES);
        let mut data = vec![0.0; blocks * d * LANES];
        for (r, row) in row_major.chunks_exact(d).enumerate() {
            let (block, lane) = (r / LANES, r % LANES);
            for (i, v) in row.iter().enumerate() {
                data[(block * d + i) * LANES + lane] = *v;
            }
        }
        ByFeature { rows, data, d }
    }

    /// Each block: `d` groups of `LANES` values (feature i of each row), and how many of its
    /// lanes are rows.
    pub fn blocks(&self) -> impl Iterator<Item = (&[[f32; LANES]], usize)> {
        self.data
            .chunks_exact(self.d * LANES)
            .enumerate()
            .map(|(b, block)| (block.as_chunks().0, (self.rows - b * LANES).min(LANES)))
    }
}

/// Runtime tables derived once from a [`Profile`].
#[derive(Debug)]
pub(crate) struct Model {
    pub d: usize,
    pub k: usize,
    pub min: f32,
    /// Feature units per u8 step (prototypes) and per u16 step (line-search rows).
    pub u8_unit: f32,
    pub u16_unit: f32,
    pub inv_scale: Vec<f32>,
    /// The k class centroids.
    pub centroids: ByFeature,
    /// The random projections, already divided by `feature_scale`.
    pub projection: ByFeature,
    /// Projection offsets: projection · mean.
    pub projection_offset: Vec<f32>,
    /// Shapiro–Wilk coefficients for each window size up to `distance_window`.
    pub sw: Vec<Option<SwCoefficients>>,
    pub inv_fingerprint_step: f32,
    /// The centre of each fingerprint bin, in feature units.
    pub bin_centre: [f32; 256],
    pub q: QueryParams,
}

impl Model {
    pub fn new(p: &Profile) -> Result<Self, ExtractionError> {
        p.check()?;
        let d = p.features;
        let range = p.feature_max - p.feature_min;
        let inv_scale: Vec<f32> = p.feature_scale.iter().map(|s| 1.0 / s).collect();
        let mut rng = SplitMix64::new(p.query.projection_seed);
        let r = p.query.projections;
        let mut projection = Vec::with_capacity(r * d);
        for _ in 0..r {
            for inv in &inv_scale {
                projection.push(rng.normal() as f32 * inv);
            }
        }
        let projection_offset = projection
            .chunks_exact(d)
            .map(|row| row.iter().zip(&p.feature_mean).map(|(a, m)| a * m).sum())
            .collect();
        let sw = (0..=p.query.distance_window)
            .map(|n| {
                if n >= p.query.distance_min {
                    SwCoefficients::new(n)
                } else {
                    None
                }
            })
            .collect();
        Ok(Model {
            d,
            k: p.classes,
            min: p.feature_min,
            u8_unit: range / 255.0,
            u16_unit: range / 65535.0,
            inv_scale,
            centroids: ByFeature::new(&p.centroids.concat(), d),
            projection: ByFeature::new(&projection, d),
            projection_offset,
            sw,
            inv_fingerprint_step: 1.0 / p.query.fingerprint_step,
            bin_centre: std::array::from_fn(|b| {
                p.feature_min + (b as f32 + 0.5) * p.query.fingerprint_step
            }),
            q: p.query.clone(),
        })
    }
}
