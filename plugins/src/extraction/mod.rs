//! Model-extraction detection: a streaming, per-consumer (and per-group) detector fed with
//! every validated input row and the model's output probabilities. No model is needed at
//! run time: a calibrated [`Profile`] (from the model's metadata and benign traffic) holds
//! every threshold.
//!
//! # Signals
//!
//! Each signal has a raw value and a calibrated threshold; its score is raw / threshold, so
//! 1.0 is "above every simulated benign consumer, with margin".
//!
//! - **probing** — CUSUM over a per-query indicator: the query shares at least
//!   `fingerprint_match` of its salted, quantised sliding-window hashes with one of the
//!   consumer's recent queries (Blacklight, USENIX Security 2022), or lies within
//!   `near_distance` of one of its last 16 distinct rows, or moves from its nearest
//!   same-class prototype by a sign step (most changed features by the same magnitude:
//!   Jacobian augmentation), or continues a straight line through the two previous queries
//!   (line search; a return to the row before last is a revisit, not a line step), or
//!   near-duplicates a recent query of an already flagged consumer (global index). Exact
//!   retries are exempt.
//! - **distance** — PRADA (EuroS&P 2019): the minimum distance of each query to bounded
//!   per-class prototypes of the consumer's earlier queries; Royston's Shapiro–Wilk z on
//!   the window of log distances (synthetic queries make it non-normal).
//! - **ood** — CUSUM over "nearest training centroid farther than benign traffic ever is".
//! - **coverage** — distinct cells (sign patterns of random projections) visited.
//! - **boundary** — CUSUM over low-confidence outputs (top1 − top2 small).
//! - **volume** — decayed query count against the model's extraction budget (d + 1, the
//!   equation-solving bound); capped so volume alone never goes beyond hardening.
//!
//! The combined score is the strongest signal plus a quarter of every other signal's
//! excess over 0.5. The [`Ladder`] turns it into an [`Action`]: observe, harden, throttle,
//! block; reached actions are held (`hold_secs`, `block_secs`) so an attacker cannot shed
//! them with a few benign queries.
//!
//! # Groups and coalitions
//!
//! Queries of consumers with a group (org, tenant) also feed the group's merged stream, so a
//! random or line-search attack split across keys accumulates as one. The group stream uses
//! only signals that aggregate over members (probing by line geometry or by near-duplicate
//! clusters, ood, boundary, coverage): members replaying the same data legitimately
//! near-duplicate each other now and then, so single near-duplicates and distance signals
//! are per consumer, and the group counts a query as probing only when it lies within
//! `near_distance` of at least three of the group's last 16 distinct rows (NES-style
//! probing spread over keys). Consumers flagged at harden or
//! above publish the fingerprints of their suspicious queries (probing or out of
//! distribution; not their natural-looking ones, which benign consumers replaying the same
//! data would match) to a global TTL-bounded index; other consumers whose
//! queries match them are linked (and count them as probing).
//!
//! # Output hardening
//!
//! Untrusted consumers get [`DetectorOptions::default_output`] (probabilities rounded to two
//! decimals, entries that round to 0 dithered to 0 or 0.01 by a keyed hash of the row):
//! equation solving at d + 1 queries, on random or natural rows, then stays far from the
//! model. Suspects get [`DetectorOptions::suspect_output`] (top-1 label only), and so does an
//! untrusted consumer's answer to a row that is itself suspicious (a probe or out of
//! distribution; [`Assessment::hardened_rows`]) before its score reaches harden: an attack's
//! first probes then teach it no more than their labels (in the evaluation, the Jacobian
//! augmentation's first augmented answers), and the other rows of a batch keep theirs.
//! Benign calibration traffic has no such rows. Apply an assessment with
//! [`Detector::harden_assessed`] (the detector holds the dither key).
//!
//! # Bounds
//!
//! A consumer's state is fixed at creation: for the bundled 64-feature, 10-class model
//! about 17 KiB (8 KiB fingerprint table, 7.5 KiB prototypes, window, last rows, coverage
//! bitmap), and at most 32 KiB for any profile with k·d ≤ 8192 and d ≤ 1024
//! ([`Detector::consumer_state_bytes`]). Idle state is evicted; the number of consumers
//! and groups is capped; only an authenticated [`Identity`] creates state.

mod calibrate;
mod detector;
mod harden;
mod metadata;
mod profile;
mod rng;
mod shapiro;
#[cfg(any(test, feature = "sim"))]
pub mod sim;
mod tracker;

#[cfg(test)]
pub(crate) mod testkit;
#[cfg(test)]
mod tests;

pub use calibrate::{
    BenignBehaviour, BenignRequest, CalibrationOptions, benign_session, calibrate,
};
pub use detector::{
    Action, Assessment, Detector, DetectorOptions, GroupAssessment, Identity, Signal, SignalScores,
    SuspectKind, SuspectReport,
};
pub(crate) use harden::round_scaled;
pub use harden::{OutputPolicy, harden_outputs};
pub use metadata::{CentroidDistance, FeatureRange, ModelMetadata, TrainingStats};
pub use profile::{CalibrationSummary, Ladder, Profile, QueryParams, SignalThresholds};
pub use shapiro::{ShapiroWilk, SwCoefficients, normal_quantile, normal_upper_tail, shapiro_wilk};

/// Why the detector refused an input or a configuration.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ExtractionError {
    #[error("model metadata: {0}")]
    Metadata(String),
    #[error("detector profile: {0}")]
    Profile(String),
    #[error("calibration: {0}")]
    Calibration(String),
    #[error(
        "expected rows of {features} features and {classes} outputs each, got {inputs} inputs and {outputs} outputs"
    )]
    Shape {
        features: usize,
        classes: usize,
        inputs: usize,
        outputs: usize,
    },
    #[error("inputs and outputs must be finite")]
    NotFinite,
}
