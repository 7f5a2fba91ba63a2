//! Calibration: thresholds from benign traffic. Simulated benign consumers (and groups of
//! them) replay the given rows with realistic behaviours; every threshold is set above the
//! benign maximum with a margin.

use super::ExtractionError;
use super::detector::SignalScores;
use super::harden::argmax;
use super::metadata::ModelMetadata;
use super::profile::{CalibrationSummary, Ladder, Model, Profile, QueryParams, SignalThresholds};
use super::rng::SplitMix64;
use super::tracker::{Query, Raw, Scope, Tracker};

/// Calibration knobs. The defaults produce the shipped profiles.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationOptions {
    /// Seed of every random choice (simulations, projections): same inputs, same profile.
    pub seed: u64,
    /// Simulated benign consumers (each replays the rows once with one behaviour).
    pub consumers: usize,
    /// Simulated benign groups and members per group.
    pub groups: usize,
    pub group_size: usize,
    /// Thresholds = benign maximum × margin (or the signal's floor).
    pub margin: f32,
    /// Largest per-feature noise σ of noisy consumers, as a fraction of the feature range.
    pub max_noise: f32,
    /// Simulated consumers used to set the per-query parameters (first pass).
    pub probe_consumers: usize,
}

impl Default for CalibrationOptions {
    fn default() -> Self {
        CalibrationOptions {
            seed: 0x6d6f_6465_6c67_6174,
            consumers: 240,
            groups: 32,
            group_size: 10,
            margin: 1.5,
            max_noise: 1.0 / 16.0,
            probe_consumers: 60,
        }
    }
}

/// How a simulated benign consumer replays the rows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenignBehaviour {
    /// Every row once, shuffled, one row per request.
    RandomOrder,
    /// Every row once, grouped by predicted class.
    SortedByClass,
    /// Every row once, shuffled, with small Gaussian noise (clipped to the range).
    SmallNoise,
    /// Shuffled; some requests are re-sent identically one to three times.
    Retries,
    /// Shuffled, in batches of 1–32 rows.
    Bursts,
    /// A random 30–100 % subset, sorted by class, noisy, with retries and batches.
    Mixed,
}

impl BenignBehaviour {
    /// Every behaviour.
    pub const ALL: [BenignBehaviour; 6] = [
        BenignBehaviour::RandomOrder,
        BenignBehaviour::SortedByClass,
        BenignBehaviour::SmallNoise,
        BenignBehaviour::Retries,
        BenignBehaviour::Bursts,
        BenignBehaviour::Mixed,
    ];
}

/// One simulated request: row-major features and, per row, the index of the source row.
#[derive(Debug, Clone, PartialEq)]
pub struct BenignRequest {
    pub rows: Vec<f32>,
    pub sources: Vec<usize>,
}

/// A benign consumer's requests. `labels[i]` is the (predicted) class of `rows[i]`;
/// `max_noise` is σ as a fraction of `range`.
pub fn benign_session(
    rows: &[Vec<f32>],
    labels: &[usize],
    behaviour: BenignBehaviour,
    range: (f32, f32),
    max_noise: f32,
    seed: u64,
) -> Vec<BenignRequest> {
    let mut rng = SplitMix64::new(seed);
    let mut order: Vec<usize> = (0..rows.len()).collect();
    rng.shuffle(&mut order);
    use BenignBehaviour as B;
    if behaviour == B::Mixed {
        let keep = rows.len() * (30 + rng.below(71)) / 100;
        order.truncate(keep.max(1));
    }
    if matches!(behaviour, B::SortedByClass | B::Mixed) {
        order.sort_by_key(|&i| labels.get(i).copied().unwrap_or(0));
    }
    let sigma = if matches!(behaviour, B::SmallNoise | B::Mixed) {
        (range.1 - range.0) * max_noise * (0.25 + 0.75 * rng.next_f64() as f32)
    } else {
        0.0
    };
    let mut out = Vec::new();
    let mut i = 0;
    while i < order.len() {
        let batch = match behaviour {
            B::Bursts => 1 + rng.below(32),
            B::Mixed => 1 + rng.below(4),
            _ => 1,
        };
        let take = &order[i..(i + batch).min(order.len())];
        i += take.len();
        let mut req = BenignRequest {
            rows: Vec::new(),
            sources: take.to_vec(),
        };
        for &s in take {
            for &x in &rows[s] {
                let v = if sigma > 0.0 {
                    (x + sigma * rng.normal() as f32).clamp(range.0, range.1)
                } else {
                    x
                };
                req.rows.push(v);
            }
        }
        let retries = if matches!(behaviour, B::Retries | B::Mixed) && rng.below(100) < 15 {
            1 + rng.below(3)
        } else {
            0
        };
        for _ in 0..retries {
            out.push(req.clone());
        }
        out.push(req);
    }
    out
}

/// Computes a detector [`Profile`] for a model from benign rows and the model's outputs for
/// them (`outputs[i]`: probabilities for `rows[i]`).
///
/// Noisy simulated rows reuse their source row's outputs (the detector's calibration never
/// runs the model). Fails when rows/outputs are empty, ragged or inconsistent with the
/// metadata.
pub fn calibrate(
    meta: &ModelMetadata,
    rows: &[Vec<f32>],
    outputs: &[Vec<f32>],
    opts: &CalibrationOptions,
) -> Result<Profile, ExtractionError> {
    let (d, k) = (meta.features(), meta.classes());
    if rows.is_empty()
        || rows.len() != outputs.len()
        || rows.iter().any(|r| r.len() != d)
        || outputs.iter().any(|o| o.len() != k)
    {
        return Err(ExtractionError::Calibration(format!(
            "need equally many rows ({d} features) and outputs ({k} classes)"
        )));
    }
    let range = (meta.feature_range.min, meta.feature_range.max);
    let width = range.1 - range.0;
    let labels: Vec<usize> = outputs.iter().map(|o| argmax(o)).collect();
    let mut rng = SplitMix64::new(opts.seed);

    // Per-query OOD thresholds: benign rows and noisy copies (twice the simulated noise),
    // against the centroids.
    let scale: Vec<f32> = meta
        .training
        .feature_std
        .iter()
        .map(|s| s.max(width / 16.0))
        .collect();
    let (mut max_raw, mut max_std) = (meta.training.centroid_distance.max, 0.0f32);
    for row in rows {
        for noisy in [false, true] {
            let r: Vec<f32> = row
                .iter()
                .map(|&x| {
                    let n = if noisy {
                        2.0 * width * opts.max_noise * rng.normal() as f32
                    } else {
                        0.0
                    };
                    (x + n).clamp(range.0, range.1)
                })
                .collect();
            let (raw, std) = nearest_centroid(&r, &meta.training.class_centroids, &scale);
            max_raw = max_raw.max(raw);
            max_std = max_std.max(std);
        }
    }

    let mut profile = Profile {
        format: 1,
        model: meta.name.clone(),
        features: d,
        classes: k,
        feature_min: range.0,
        feature_max: range.1,
        extraction_budget: d as u64 + 1,
        feature_mean: meta.training.feature_mean.clone(),
        feature_scale: scale,
        centroids: meta.training.class_centroids.clone(),
        query: QueryParams {
            fingerprint_step: width / 4.0,
            fingerprint_window: 6.min(d),
            fingerprint_hashes: 16,
            fingerprint_match: 16,
            history: 256,
            near_distance: 0.0,
            line_cosine: 2.0,
            step_fraction: 2.0,
            ood_distance: max_raw * 1.1,
            ood_standardized: max_std * 1.1,
            boundary_margin: 0.5,
            probing_drift: 0.5,
            ood_drift: 0.25,
            boundary_drift: 0.5,
            distance_window: 64,
            distance_min: 20,
            prototypes_per_class: (8192 / (k * d)).clamp(1, 16),
            projections: 12,
            projection_seed: rng.next_u64(),
        },
        consumer: unit_thresholds(),
        group: unit_thresholds(),
        ladder: Ladder::default(),
        calibration: CalibrationSummary {
            seed: opts.seed,
            benign_rows: rows.len(),
            consumers: opts.consumers,
            groups: opts.groups,
            group_size: opts.group_size,
            margin: opts.margin,
            benign_max_consumer: SignalThresholds::default(),
            benign_max_group: SignalThresholds::default(),
            benign_max_combined_consumer: 0.0,
            benign_max_combined_group: 0.0,
        },
    };

    // Pass 1: per-query near-duplicate parameters.
    let model = Model::new(&profile)?;
    let salt = rng.next_u64();
    let (mut max_shared, mut min_near, mut max_cos) = (0usize, f32::INFINITY, 0.0f32);
    let mut max_step = 0.0f32;
    for c in 0..opts.probe_consumers {
        let b = BenignBehaviour::ALL[c % BenignBehaviour::ALL.len()];
        let session = benign_session(rows, &labels, b, range, opts.max_noise, rng.next_u64());
        let mut t = Tracker::new(&model, Scope::Consumer);
        let mut q = Query::new(d);
        for req in &session {
            for (row, &src) in req.rows.chunks_exact(d).zip(&req.sources) {
                q.compute(&model, salt, row, &outputs[src]);
                let o = t.ingest(&model, &q, false);
                if !o.duplicate {
                    max_shared = max_shared.max(o.shared);
                    min_near = o.near.map_or(min_near, |n| min_near.min(n));
                    max_cos = o.cos.map_or(max_cos, |c| max_cos.max(c));
                    max_step = o.step.map_or(max_step, |s| max_step.max(s));
                }
            }
        }
    }
    let qp = &mut profile.query;
    qp.fingerprint_match = (max_shared + 2).clamp(qp.fingerprint_hashes / 2, qp.fingerprint_hashes);
    qp.near_distance = if min_near.is_finite() {
        min_near / 1.15
    } else {
        width / 4.0
    };
    qp.line_cosine = (1.0 - (1.0 - max_cos) / 2.0).max(0.95);
    qp.step_fraction = (1.0 - (1.0 - max_step) / 2.0).max(0.6);

    // Pass 2: signal maxima of benign consumers and groups.
    let model = Model::new(&profile)?;
    let mut consumer_traj: Vec<Vec<Raw>> = Vec::new();
    for c in 0..opts.consumers {
        let b = BenignBehaviour::ALL[c % BenignBehaviour::ALL.len()];
        let session = benign_session(rows, &labels, b, range, opts.max_noise, rng.next_u64());
        let mut t = Tracker::new(&model, Scope::Consumer);
        let mut traj = Vec::with_capacity(session.len());
        let mut q = Query::new(d);
        for (now, req) in session.iter().enumerate() {
            t.add_volume(req.sources.len(), now as u64, 86_400);
            for (row, &src) in req.rows.chunks_exact(d).zip(&req.sources) {
                q.compute(&model, salt, row, &outputs[src]);
                t.ingest(&model, &q, false);
            }
            traj.push(t.raw());
        }
        consumer_traj.push(traj);
    }
    let mut group_traj: Vec<Vec<Raw>> = Vec::new();
    for _ in 0..opts.groups {
        let mut sessions: Vec<(Vec<BenignRequest>, usize)> = (0..opts.group_size)
            .map(|_| {
                let b = BenignBehaviour::ALL[rng.below(BenignBehaviour::ALL.len())];
                (
                    benign_session(rows, &labels, b, range, opts.max_noise, rng.next_u64()),
                    0,
                )
            })
            .collect();
        let mut t = Tracker::new(&model, Scope::Group);
        let mut traj = Vec::new();
        let mut q = Query::new(d);
        let mut now = 0u64;
        loop {
            let open: Vec<usize> = (0..sessions.len())
                .filter(|&i| sessions[i].1 < sessions[i].0.len())
                .collect();
            if open.is_empty() {
                break;
            }
            let m = open[rng.below(open.len())];
            let (session, next) = &mut sessions[m];
            let req = &session[*next];
            *next += 1;
            now += 1;
            t.add_volume(req.sources.len(), now, 86_400);
            for (row, &src) in req.rows.chunks_exact(d).zip(&req.sources) {
                q.compute(&model, salt, row, &outputs[src]);
                t.ingest(&model, &q, false);
            }
            traj.push(t.raw());
        }
        group_traj.push(traj);
    }

    let max_of = |trajs: &[Vec<Raw>]| {
        let mut m = SignalThresholds::default();
        for r in trajs.iter().flatten() {
            m.probing = m.probing.max(r.probing);
            m.distance = m.distance.max(r.distance);
            m.ood = m.ood.max(r.ood);
            m.coverage = m.coverage.max(r.coverage);
            m.boundary = m.boundary.max(r.boundary);
            m.volume = m.volume.max(r.volume);
        }
        m
    };
    let budget = profile.extraction_budget as f32;
    let margin = opts.margin;
    let thresholds = |m: &SignalThresholds| SignalThresholds {
        probing: (m.probing * margin).max(1.0),
        distance: (m.distance * margin).max(2.0),
        ood: (m.ood * margin).max(1.5),
        coverage: (m.coverage * margin).max(16.0),
        boundary: (m.boundary * margin).max(3.0),
        volume: (m.volume * margin).max(budget * 100.0),
    };
    let bc = max_of(&consumer_traj);
    let bg = max_of(&group_traj);
    profile.consumer = thresholds(&bc);
    profile.group = thresholds(&bg);
    // Members replaying the same data with noise add cells as the group grows: more margin.
    profile.group.coverage = (bg.coverage * 2.0 * margin / 1.5).max(profile.group.coverage);
    profile.calibration.benign_max_consumer = bc;
    profile.calibration.benign_max_group = bg;
    let max_combined = |trajs: &[Vec<Raw>], t: &SignalThresholds, group: bool| {
        trajs
            .iter()
            .flatten()
            .map(|r| {
                let mut s = SignalScores {
                    probing: r.probing / t.probing,
                    distance: r.distance / t.distance,
                    ood: r.ood / t.ood,
                    coverage: (r.coverage / t.coverage).min(1.0),
                    boundary: r.boundary / t.boundary,
                    volume: (r.volume / t.volume).min(1.0),
                };
                if group {
                    s.distance = 0.0;
                    s.volume = 0.0;
                }
                s.combined()
            })
            .fold(0.0f32, f32::max)
    };
    profile.calibration.benign_max_combined_consumer =
        max_combined(&consumer_traj, &profile.consumer, false);
    profile.calibration.benign_max_combined_group = max_combined(&group_traj, &profile.group, true);
    profile.check()?;
    Ok(profile)
}

fn unit_thresholds() -> SignalThresholds {
    SignalThresholds {
        probing: 1.0,
        distance: 1.0,
        ood: 1.0,
        coverage: 1.0,
        boundary: 1.0,
        volume: 1.0,
    }
}

/// (raw, standardised) L2 distance to the nearest centroid.
fn nearest_centroid(row: &[f32], centroids: &[Vec<f32>], scale: &[f32]) -> (f32, f32) {
    let (mut raw, mut std) = (f32::INFINITY, f32::INFINITY);
    for c in centroids {
        let (mut r, mut s) = (0.0f32, 0.0f32);
        for ((x, m), sc) in row.iter().zip(c).zip(scale) {
            let diff = x - m;
            r += diff * diff;
            s += (diff / sc) * (diff / sc);
        }
        raw = raw.min(r);
        std = std.min(s);
    }
    (raw.sqrt(), std.sqrt())
}
