//! Output hardening: what a consumer gets back instead of full-precision probabilities.

use serde::{Deserialize, Serialize};

use super::rng::mix64;

/// How a response's probabilities are returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OutputPolicy {
    /// Unchanged (trusted consumers, by default).
    Full,
    /// Each probability rounded to `decimals` decimals. Tiny probabilities become 0, which
    /// breaks the log-odds equations of equation-solving attacks.
    Round { decimals: u8 },
    /// Rounded to `decimals` decimals, and every value that rounds to 0 (other than the
    /// top-1) reported as 0 or one unit (10^-decimals) by a secret keyed hash of the input
    /// row and the class: the same row always gets the same answer, the label never
    /// changes, and an equation solver reading log-probabilities gets noise instead of
    /// the "tiny" entries (see docs/EXTRACTION.md).
    Dither { decimals: u8 },
    /// Only the top-1 label survives: its probability is 1, every other is 0.
    TopLabel,
}

impl OutputPolicy {
    /// Whether a model output other than the scored probabilities goes back to the consumer:
    /// every one under [`OutputPolicy::Full`]; otherwise only `integer` ones (labels) —
    /// floating-point outputs (logits, embeddings) and bytes would undo the hardening.
    pub fn keeps_other_output(self, integer: bool) -> bool {
        self == OutputPolicy::Full || integer
    }

    /// The stronger of two policies (Full < Round(many decimals) < Round(few) < TopLabel).
    pub fn stronger(self, other: OutputPolicy) -> OutputPolicy {
        if other.strength() > self.strength() {
            other
        } else {
            self
        }
    }

    /// How many decimals every hardened value has at most (`TopLabel`: 0, the values are 0
    /// and 1); `None` for [`OutputPolicy::Full`], which leaves values as they are.
    pub fn decimals(self) -> Option<u8> {
        match self {
            OutputPolicy::Full => None,
            OutputPolicy::Round { decimals } | OutputPolicy::Dither { decimals } => Some(decimals),
            OutputPolicy::TopLabel => Some(0),
        }
    }

    fn strength(self) -> u32 {
        match self {
            OutputPolicy::Full => 0,
            OutputPolicy::Round { decimals } => 1000 - u32::from(decimals.min(100)),
            OutputPolicy::Dither { decimals } => 1500 - u32::from(decimals.min(100)),
            OutputPolicy::TopLabel => 2000,
        }
    }
}

/// Rewrites `probabilities` (rows of `classes` values, row-major) in place per `policy`;
/// `row_keys[i]` is row i's secret dither key ([`OutputPolicy::Dither`]; a missing key
/// counts as 0). A trailing partial row (length not a multiple of `classes`) is left
/// untouched; NaNs stay NaN under rounding and lose to every number under
/// [`OutputPolicy::TopLabel`].
pub fn harden_outputs(
    probabilities: &mut [f32],
    classes: usize,
    policy: OutputPolicy,
    row_keys: &[u64],
) {
    if classes == 0 {
        return;
    }
    match policy {
        OutputPolicy::Full => {}
        OutputPolicy::Round { decimals } => round(probabilities, decimals),
        OutputPolicy::Dither { decimals } => {
            round(probabilities, decimals);
            let unit = 10f64.powi(-i32::from(decimals.min(9))) as f32;
            for (i, row) in probabilities.chunks_exact_mut(classes).enumerate() {
                let key = row_keys.get(i).copied().unwrap_or(0);
                let top = argmax(row);
                for (c, p) in row.iter_mut().enumerate() {
                    let bit = mix64(key ^ (c as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15)) & 1;
                    if c != top && *p == 0.0 && bit == 1 {
                        *p = unit;
                    }
                }
            }
        }
        OutputPolicy::TopLabel => {
            for row in probabilities.chunks_exact_mut(classes) {
                let top = argmax(row);
                for (i, p) in row.iter_mut().enumerate() {
                    *p = if i == top { 1.0 } else { 0.0 };
                }
            }
        }
    }
}

fn round(probabilities: &mut [f32], decimals: u8) {
    let scale = 10f64.powi(i32::from(decimals.min(9)));
    for p in probabilities.iter_mut() {
        *p = round_scaled(f64::from(*p), scale) as f32;
    }
}

/// `(v * scale).round() / scale`: `v` rounded to the decimals `scale` (a power of ten)
/// stands for.
pub(crate) fn round_scaled(v: f64, scale: f64) -> f64 {
    round_half_away(v * scale) / scale
}

/// 2⁵²: adding it to a float in `[0, 2⁵²)` rounds that float to an integer (half to even).
const SHIFT: f64 = 4_503_599_627_370_496.0;

/// [`f64::round`] (halves away from zero) in a few inline instructions: without SSE4.1,
/// the x86-64 baseline, `f64::round` is a library call, and every hardened probability
/// takes two.
fn round_half_away(x: f64) -> f64 {
    let t = x.abs();
    if t >= SHIFT || t.is_nan() {
        // Integral already, or NaN.
        return x;
    }
    let even = (t + SHIFT) - SHIFT;
    let rounded = if t - even >= 0.5 { even + 1.0 } else { even };
    rounded.copysign(x)
}

/// Index of the largest value (the first on ties; NaN never wins).
pub(crate) fn argmax(row: &[f32]) -> usize {
    let mut best = 0;
    let mut best_v = f32::NEG_INFINITY;
    for (i, &v) in row.iter().enumerate() {
        if v > best_v {
            best = i;
            best_v = v;
        }
    }
    best
}

/// top1 − top2 of one probability row (1.0 for a single class).
pub(crate) fn margin(row: &[f32]) -> f32 {
    let (mut a, mut b) = (f32::NEG_INFINITY, f32::NEG_INFINITY);
    for &v in row {
        if v > a {
            b = a;
            a = v;
        } else if v > b {
            b = v;
        }
    }
    if b == f32::NEG_INFINITY { 1.0 } else { a - b }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn rounding_equals_the_standard_round(bits in any::<u64>(), x in -1e3f64..1e3) {
            for v in [f64::from_bits(bits), x, x.trunc() + 0.5, x.trunc() - 0.5, x * 1e14] {
                let (ours, std) = (round_half_away(v), v.round());
                prop_assert!(ours.to_bits() == std.to_bits() || (ours.is_nan() && std.is_nan()), "{v}");
            }
        }
    }

    #[test]
    fn rounding_edges() {
        for v in [
            0.0,
            -0.0,
            0.5,
            -0.5,
            1.5,
            2.5,
            -2.5,
            0.49999999999999994,
            4503599627370495.5,
            4503599627370497.0,
            f64::MAX,
            f64::INFINITY,
            f64::NEG_INFINITY,
            f64::MIN_POSITIVE,
        ] {
            assert_eq!(round_half_away(v).to_bits(), v.round().to_bits(), "{v}");
        }
        assert!(round_half_away(f64::NAN).is_nan());
    }

    #[test]
    fn rounding_and_top_label() {
        let mut p = vec![0.123456, 0.876544, 0.0004, 0.9996];
        harden_outputs(&mut p, 2, OutputPolicy::Round { decimals: 2 }, &[]);
        assert_eq!(p, vec![0.12, 0.88, 0.0, 1.0]);
        let mut p = vec![0.2, 0.5, 0.3, 0.6, 0.1, 0.3, 0.5];
        harden_outputs(&mut p, 3, OutputPolicy::TopLabel, &[]);
        assert_eq!(
            p,
            vec![0.0, 1.0, 0.0, 1.0, 0.0, 0.0, 0.5],
            "partial row untouched"
        );
        let mut p = vec![0.3, 0.7];
        harden_outputs(&mut p, 2, OutputPolicy::Full, &[]);
        assert_eq!(p, vec![0.3, 0.7]);
    }

    #[test]
    fn dither_keeps_the_label_and_is_a_function_of_the_key() {
        let policy = OutputPolicy::Dither { decimals: 2 };
        let row = [0.0004, 0.003, 0.9, 0.0001, 0.0965, 0.0, 0.0, 0.0, 0.0, 0.0];
        let harden = |key: u64| {
            let mut p = row.to_vec();
            harden_outputs(&mut p, 10, policy, &[key]);
            p
        };
        let mut patterns = std::collections::HashSet::new();
        for key in 0..64u64 {
            let p = harden(key);
            assert_eq!(p, harden(key), "same key, same answer");
            assert_eq!(
                (p[2], p[4]),
                (0.9, 0.1),
                "values that round above 0 are plain rounded"
            );
            assert!(
                p.iter().all(|x| *x == 0.0 || *x == 0.01 || *x >= 0.1),
                "{p:?}"
            );
            assert_eq!(argmax(&p), 2);
            patterns.insert(p.iter().map(|x| x.to_bits()).collect::<Vec<_>>());
        }
        assert!(
            patterns.len() > 32,
            "keys barely change the answer: {}",
            patterns.len()
        );
        let mut one = vec![0.001, 0.999];
        harden_outputs(&mut one, 2, policy, &[]);
        assert_eq!(one[1], 1.0, "the top-1 is never dithered");
    }

    #[test]
    fn policy_strength_orders_policies() {
        let r2 = OutputPolicy::Round { decimals: 2 };
        let r4 = OutputPolicy::Round { decimals: 4 };
        assert_eq!(OutputPolicy::Full.stronger(r4), r4);
        assert_eq!(r4.stronger(r2), r2);
        assert_eq!(r2.stronger(OutputPolicy::TopLabel), OutputPolicy::TopLabel);
        let d2 = OutputPolicy::Dither { decimals: 2 };
        assert_eq!(r2.stronger(d2), d2);
        assert_eq!(d2.stronger(OutputPolicy::TopLabel), OutputPolicy::TopLabel);
        assert!(OutputPolicy::Full.keeps_other_output(false));
        assert!(!r2.keeps_other_output(false) && r2.keeps_other_output(true));
        assert!(OutputPolicy::TopLabel.keeps_other_output(true));
        assert_eq!(margin(&[0.1, 0.7, 0.2]), 0.5);
        assert_eq!(argmax(&[0.1, f32::NAN, 0.7]), 2);
    }
}
