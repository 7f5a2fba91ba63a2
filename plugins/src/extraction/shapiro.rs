//! Shapiro–Wilk normality test, Royston's approximation (Royston 1992 for the coefficients,
//! Royston 1995 / algorithm AS R94 for the p-value), the same algorithm `scipy.stats.shapiro`
//! and R's `shapiro.test` use. Valid for 3 ≤ n ≤ 5000.
//!
//! [`SwCoefficients`] depend only on `n`: PRADA's window has a fixed maximum size, so the
//! detector computes them once per size and the per-query cost is a sort and a dot product.

#![allow(clippy::excessive_precision)] // published constants (AS 241), kept as printed

/// The result of one test.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ShapiroWilk {
    /// W in (0, 1]; near 1 for normal samples.
    pub w: f64,
    /// Royston's normalising transform of W: approximately N(0, 1) under normality, large
    /// when the sample is not normal.
    pub z: f64,
}

impl ShapiroWilk {
    /// The upper-tail p-value, `1 − Φ(z)` (computed on demand: the detector reads `z` only).
    pub fn p(&self) -> f64 {
        normal_upper_tail(self.z)
    }
}

/// The coefficients `a_i` for one sample size.
#[derive(Debug, Clone)]
pub struct SwCoefficients {
    n: usize,
    a: Vec<f64>,
    royston: Royston,
}

impl SwCoefficients {
    /// Coefficients for samples of size `n`; `None` when `n < 3` or `n > 5000`.
    pub fn new(n: usize) -> Option<Self> {
        if !(3..=5000).contains(&n) {
            return None;
        }
        let nf = n as f64;
        if n == 3 {
            let s = std::f64::consts::FRAC_1_SQRT_2;
            return Some(SwCoefficients {
                n,
                a: vec![-s, 0.0, s],
                royston: Royston::new(n),
            });
        }
        let m: Vec<f64> = (1..=n)
            .map(|i| normal_quantile((i as f64 - 0.375) / (nf + 0.25)))
            .collect();
        let mm: f64 = m.iter().map(|v| v * v).sum();
        let u = 1.0 / nf.sqrt();
        let poly = |c: &[f64; 6]| c.iter().rev().fold(0.0, |acc, &k| acc * u + k);
        let an = poly(&[0.0, 0.221157, -0.147981, -2.071190, 4.434685, -2.706056])
            + m[n - 1] / mm.sqrt();
        let mut a = vec![0.0; n];
        if n > 5 {
            let an1 = poly(&[0.0, 0.042981, -0.293762, -1.752461, 5.682633, -3.582633])
                + m[n - 2] / mm.sqrt();
            let phi = (mm - 2.0 * m[n - 1] * m[n - 1] - 2.0 * m[n - 2] * m[n - 2])
                / (1.0 - 2.0 * an * an - 2.0 * an1 * an1);
            for i in 2..n - 2 {
                a[i] = m[i] / phi.sqrt();
            }
            a[0] = -an;
            a[1] = -an1;
            a[n - 2] = an1;
            a[n - 1] = an;
        } else {
            let phi = (mm - 2.0 * m[n - 1] * m[n - 1]) / (1.0 - 2.0 * an * an);
            for i in 1..n - 1 {
                a[i] = m[i] / phi.sqrt();
            }
            a[0] = -an;
            a[n - 1] = an;
        }
        Some(SwCoefficients {
            n,
            a,
            royston: Royston::new(n),
        })
    }

    /// The sample size these coefficients are for.
    pub fn len(&self) -> usize {
        self.n
    }

    /// Always false: a coefficient set has at least 3 entries.
    pub fn is_empty(&self) -> bool {
        false
    }

    /// Tests an ascending-sorted sample of exactly `len()` values. `None` when the length
    /// differs or the sample has (numerically) no spread.
    pub fn test_sorted(&self, sorted: &[f64]) -> Option<ShapiroWilk> {
        if sorted.len() != self.n {
            return None;
        }
        let nf = self.n as f64;
        let mean = sorted.iter().sum::<f64>() / nf;
        let ss: f64 = sorted.iter().map(|x| (x - mean) * (x - mean)).sum();
        if ss <= 1e-12 * (1.0 + mean * mean) * nf {
            return None;
        }
        let num: f64 = self.a.iter().zip(sorted).map(|(a, x)| a * x).sum();
        let w = (num * num / ss).clamp(0.0, 1.0);
        Some(ShapiroWilk {
            w,
            z: self.royston.z(w),
        })
    }
}

/// Tests any sample (it is copied and sorted). `None` when `n < 3`, `n > 5000` or the
/// sample has no spread.
pub fn shapiro_wilk(sample: &[f64]) -> Option<ShapiroWilk> {
    let coefficients = SwCoefficients::new(sample.len())?;
    let mut sorted = sample.to_vec();
    sorted.sort_by(f64::total_cmp);
    coefficients.test_sorted(&sorted)
}

/// Royston's transform of W into z (≈ N(0,1) under normality) for one sample size: the
/// parts that depend on `n` alone, computed once.
#[derive(Debug, Clone, Copy)]
enum Royston {
    /// n = 3: the exact distribution of W.
    Three,
    /// 4 ≤ n ≤ 11: z = (−ln(γ − ln(1 − W)) − μ) / σ.
    Small { gamma: f64, mu: f64, sigma: f64 },
    /// n ≥ 12: z = (ln(1 − W) − μ) / σ.
    Large { mu: f64, sigma: f64 },
}

impl Royston {
    fn new(n: usize) -> Self {
        let nf = n as f64;
        if n == 3 {
            Royston::Three
        } else if n <= 11 {
            Royston::Small {
                gamma: 0.459 * nf - 2.273,
                mu: 0.5440 - 0.39978 * nf + 0.025054 * nf * nf - 0.0006714 * nf * nf * nf,
                sigma: (1.3822 - 0.77857 * nf + 0.062767 * nf * nf - 0.0020322 * nf * nf * nf)
                    .exp(),
            }
        } else {
            let u = nf.ln();
            Royston::Large {
                mu: 0.0038915 * u * u * u - 0.083751 * u * u - 0.31082 * u - 1.5861,
                sigma: (0.0030302 * u * u - 0.082676 * u - 0.4803).exp(),
            }
        }
    }

    fn z(self, w: f64) -> f64 {
        let one_minus_w = (1.0 - w).max(1e-300);
        match self {
            Royston::Three => {
                let p = (6.0 / std::f64::consts::PI) * (w.sqrt().asin() - 0.75f64.sqrt().asin());
                -normal_quantile(p.clamp(0.0, 1.0).max(1e-300))
            }
            Royston::Small { gamma, mu, sigma } => (-(gamma - one_minus_w.ln()).ln() - mu) / sigma,
            Royston::Large { mu, sigma } => (one_minus_w.ln() - mu) / sigma,
        }
    }
}

/// Φ⁻¹(p), Wichura's algorithm AS 241 (PPND16), relative error about 1e-16.
/// Returns ±infinity at 0 and 1 and NaN outside [0, 1].
pub fn normal_quantile(p: f64) -> f64 {
    if !(0.0..=1.0).contains(&p) {
        return f64::NAN;
    }
    if p == 0.0 {
        return f64::NEG_INFINITY;
    }
    if p == 1.0 {
        return f64::INFINITY;
    }
    let q = p - 0.5;
    if q.abs() <= 0.425 {
        let r = 0.180625 - q * q;
        return q
            * (((((((2509.0809287301226727 * r + 33430.575583588128105) * r
                + 67265.770927008700853)
                * r
                + 45921.953931549871457)
                * r
                + 13731.693765509461125)
                * r
                + 1971.5909503065514427)
                * r
                + 133.14166789178437745)
                * r
                + 3.387132872796366608)
            / (((((((5226.495278852545925 * r + 28729.085735721942674) * r
                + 39307.89580009271061)
                * r
                + 21213.794301586595867)
                * r
                + 5394.1960214247511077)
                * r
                + 687.1870074920579083)
                * r
                + 42.313330701600911252)
                * r
                + 1.0);
    }
    let r0 = if q < 0.0 { p } else { 1.0 - p };
    let mut r = (-r0.ln()).sqrt();
    let value = if r <= 5.0 {
        r -= 1.6;
        (((((((7.7454501427834140764e-4 * r + 0.0227238449892691845833) * r
            + 0.24178072517745061177)
            * r
            + 1.27045825245236838258)
            * r
            + 3.64784832476320460504)
            * r
            + 5.7694972214606914055)
            * r
            + 4.6303378461565452959)
            * r
            + 1.42343711074968357734)
            / (((((((1.05075007164441684324e-9 * r + 5.475938084995344946e-4) * r
                + 0.0151986665636164571966)
                * r
                + 0.14810397642748007459)
                * r
                + 0.68976733498510000455)
                * r
                + 1.6763848301838038494)
                * r
                + 2.05319162663775882187)
                * r
                + 1.0)
    } else {
        r -= 5.0;
        (((((((2.01033439929228813265e-7 * r + 2.71155556874348757815e-5) * r
            + 0.0012426609473880784386)
            * r
            + 0.026532189526576123093)
            * r
            + 0.29656057182850489123)
            * r
            + 1.7848265399172913358)
            * r
            + 5.4637849111641143699)
            * r
            + 6.6579046435011037772)
            / (((((((2.04426310338993978564e-15 * r + 1.4215117583164458887e-7) * r
                + 1.8463183175100546818e-5)
                * r
                + 7.868691311456132591e-4)
                * r
                + 0.0148753612908506148525)
                * r
                + 0.13692988092273580531)
                * r
                + 0.59983220655588793769)
                * r
                + 1.0)
    };
    if q < 0.0 { -value } else { value }
}

/// 1 − Φ(z), via the complementary error function.
pub fn normal_upper_tail(z: f64) -> f64 {
    0.5 * erfc(z / std::f64::consts::SQRT_2)
}

/// erfc(x) with relative error below 1.2e-7 everywhere (Numerical Recipes' Chebyshev fit).
fn erfc(x: f64) -> f64 {
    let z = x.abs();
    let t = 1.0 / (1.0 + 0.5 * z);
    let ans = t
        * (-z * z - 1.26551223
            + t * (1.00002368
                + t * (0.37409196
                    + t * (0.09678418
                        + t * (-0.18628806
                            + t * (0.27886807
                                + t * (-1.13520398
                                    + t * (1.48851587 + t * (-0.82215223 + t * 0.17087277)))))))))
            .exp();
    if x >= 0.0 { ans } else { 2.0 - ans }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn close(a: f64, b: f64, tol: f64) -> bool {
        (a - b).abs() <= tol
    }

    #[test]
    fn quantiles_match_known_values() {
        for (p, z) in [
            (0.001, -3.090232306167813),
            (0.025, -1.959963984540054),
            (0.3, -0.5244005127080407),
            (0.5, 0.0),
            (0.9, 1.2815515655446004),
            (0.999999, 4.753424308822899),
        ] {
            assert!(
                close(normal_quantile(p), z, 1e-9),
                "{p}: {}",
                normal_quantile(p)
            );
        }
        assert!(close(normal_upper_tail(1.959963984540054), 0.025, 1e-7));
        assert!(close(normal_upper_tail(-1.0), 0.8413447460685429, 1e-7));
    }

    /// Reference values from `scipy.stats.shapiro` (same algorithm, swilk.f).
    #[test]
    fn matches_scipy_reference_values() {
        let cases: Vec<(Vec<f64>, f64, f64)> = vec![
            (
                vec![
                    148.0, 154.0, 158.0, 160.0, 161.0, 162.0, 166.0, 170.0, 182.0, 195.0, 236.0,
                ],
                0.7888146948631716,
                0.006703814061898823,
            ),
            (
                (1..=12).map(f64::from).collect(),
                0.9668963633332522,
                0.8757314438730024,
            ),
            (vec![1.0, 2.0, 4.0], 0.9642857142857142, 0.6368868450289689),
            (
                vec![2.1, 3.4, 1.9, 5.6, 4.4],
                0.9320849391953863,
                0.6106559022604845,
            ),
            (
                vec![
                    0.7959, 1.2559, 0.9232, 0.7872, 0.551, 1.0382, 0.5755, 2.2235, 3.3149, 0.4836,
                    1.5689, 0.7527, 0.8394, 2.5983, 0.0737, 0.0912, 0.0204, 1.7875, 1.5058, 2.0403,
                ],
                0.932501051733422,
                0.17249581682061282,
            ),
            (NORMAL_64.to_vec(), 0.9798891373646542, 0.3802256175191281),
        ];
        for (sample, w, p) in cases {
            let r = shapiro_wilk(&sample).expect("testable");
            assert!(close(r.w, w, 1e-5), "n={} W {} vs {w}", sample.len(), r.w);
            assert!(
                close(r.p(), p, 2e-4),
                "n={} p {} vs {p}",
                sample.len(),
                r.p()
            );
        }
    }

    #[test]
    fn rejects_degenerate_samples_and_flags_bimodal_ones() {
        assert!(shapiro_wilk(&[1.0, 2.0]).is_none());
        assert!(shapiro_wilk(&[3.0; 10]).is_none());
        let mut bimodal: Vec<f64> = (0..32).map(|i| 1.0 + 0.01 * f64::from(i)).collect();
        bimodal.extend((0..32).map(|i| 10.0 + 0.01 * f64::from(i)));
        let r = shapiro_wilk(&bimodal).expect("testable");
        assert!(r.w < 0.8 && r.z > 5.0, "{r:?}");
        let normal = shapiro_wilk(&NORMAL_64).expect("testable");
        assert!(normal.z < 1.0, "{normal:?}");
    }

    /// 64 draws of N(0,1) (numpy RandomState(1), rounded to 4 decimals).
    const NORMAL_64: [f64; 64] = [
        1.6243, -0.6118, -0.5282, -1.073, 0.8654, -2.3015, 1.7448, -0.7612, 0.319, -0.2494, 1.4621,
        -2.0601, -0.3224, -0.3841, 1.1338, -1.0999, -0.1724, -0.8779, 0.0422, 0.5828, -1.1006,
        1.1447, 0.9016, 0.5025, 0.9009, -0.6837, -0.1229, -0.9358, -0.2679, 0.5304, -0.6917,
        -0.3968, -0.6872, -0.8452, -0.6712, -0.0127, -1.1173, 0.2344, 1.6598, 0.742, -0.1918,
        -0.8876, -0.7472, 1.6925, 0.0508, -0.637, 0.1909, 2.1003, 0.1202, 0.6172, 0.3002, -0.3522,
        -1.1425, -0.3493, -0.2089, 0.5866, 0.839, 0.9311, 0.2856, 0.8851, -0.7544, 1.2529, 0.5129,
        -0.2981,
    ];
}
