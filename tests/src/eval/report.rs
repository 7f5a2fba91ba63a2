//! Statistics over runs, the targets checked against them, and the markdown report
//! (`docs/EXTRACTION.md`).

use std::fmt::Write as _;

use modelgate_plugins::extraction::sim::AttackKind;

use super::{AttackRun, Evaluation, RUNGS};

/// The nearest-rank `q` quantile (0 < q ≤ 1) of detection counts, an undetected run (`None`)
/// counting as larger than any number; `None` when the quantile falls on an undetected run.
pub fn quantile(values: &[Option<usize>], q: f64) -> Option<usize> {
    if values.is_empty() {
        return None;
    }
    let mut v = values.to_vec();
    v.sort_by_key(|x| x.unwrap_or(usize::MAX));
    let i = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len()) - 1;
    v[i]
}

/// The exact one-sided (1 − `alpha`) Clopper–Pearson upper bound of a binomial proportion
/// with `k` successes in `n` trials (for k = 0: 1 − alpha^(1/n), about 3/n for alpha = 0.05).
pub fn clopper_pearson_upper(k: usize, n: usize, alpha: f64) -> f64 {
    if n == 0 || k >= n {
        return 1.0;
    }
    // P(X ≤ k | p) decreases in p: bisect for P(X ≤ k | p) = alpha.
    let cdf = |p: f64| {
        let (lp, lq) = (p.ln(), (1.0 - p).ln());
        let mut ln_choose = 0.0;
        let mut sum = 0.0;
        for i in 0..=k {
            if i > 0 {
                ln_choose += ((n - i + 1) as f64).ln() - (i as f64).ln();
            }
            sum += (ln_choose + i as f64 * lp + (n - i) as f64 * lq).exp();
        }
        sum
    };
    let (mut lo, mut hi) = (k as f64 / n as f64, 1.0);
    for _ in 0..100 {
        let mid = (lo + hi) / 2.0;
        if cdf(mid) > alpha {
            lo = mid;
        } else {
            hi = mid;
        }
    }
    hi
}

/// One of the targets and whether the evaluation meets it.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    /// `None`: not applicable (e.g. a split attack whose single-key version is undetected).
    pub holds: Option<bool>,
    pub detail: String,
}

impl Target {
    /// "yes", "**no**" or "n/a".
    pub fn verdict(&self) -> &'static str {
        match self.holds {
            Some(true) => "yes",
            Some(false) => "**no**",
            None => "n/a",
        }
    }
}

fn runs(runs: &[AttackRun], kind: AttackKind) -> Vec<&AttackRun> {
    runs.iter().filter(|r| r.kind == kind).collect()
}

fn counts(runs: &[&AttackRun]) -> String {
    let v: Vec<String> = runs
        .iter()
        .map(|r| r.detected_at().map_or("—".to_string(), |n| n.to_string()))
        .collect();
    v.join(", ")
}

fn within(e: &Evaluation, kinds: &[AttackKind], limit: usize, name: &str) -> Target {
    let mut holds = true;
    let mut detail = Vec::new();
    for &kind in kinds {
        let rs = runs(&e.single, kind);
        holds &= !rs.is_empty()
            && rs
                .iter()
                .all(|r| r.detected_at().is_some_and(|n| n <= limit));
        detail.push(format!("{}: {}", kind.name(), counts(&rs)));
    }
    Target {
        name: name.to_string(),
        holds: Some(holds),
        detail: format!("queries to harden per run — {}", detail.join("; ")),
    }
}

/// The targets, one entry per checkable statement.
pub fn targets(e: &Evaluation) -> Vec<Target> {
    let b = &e.benign;
    let flagged = b.flagged_consumers.len() + b.flagged_groups.len();
    let mut out = vec![Target {
        name: format!("benign: 0 flagged of {} consumers", b.consumers),
        holds: Some(flagged == 0 && b.hardened_queries == 0 && b.consumers > 0),
        detail: format!(
            "{} consumers and {} groups flagged (any rung); {} of {} requests not answered 200; \
             {} with rows answered with the top-1 label as suspicious",
            b.flagged_consumers.len(),
            b.flagged_groups.len(),
            b.refused,
            b.requests,
            b.hardened_queries
        ),
    }];
    out.push(within(
        e,
        &[AttackKind::LineSearch, AttackKind::NesProbing],
        5,
        "probing attacks (line search, NES) detected in ≤ 5 queries",
    ));
    out.push(within(
        e,
        &[AttackKind::UniformRandom, AttackKind::OodPool],
        10,
        "random and out-of-distribution attacks detected in ≤ 10 queries",
    ));
    let jac = runs(&e.single, AttackKind::Jacobian);
    let gains: Vec<Option<f64>> = jac
        .iter()
        .map(|r| Some(r.at_detection?.0 - r.seed_only?.0))
        .collect();
    out.push(Target {
        name: "Jacobian augmentation detected before its substitute gains 2 points over its seed set alone".into(),
        holds: Some(!gains.is_empty() && gains.iter().all(|g| g.is_some_and(|g| g < 0.02))),
        detail: format!(
            "gain at detection per run (points): {}; for comparison, the gain the augmentation \
             makes without the gateway at its full budget: {}",
            gains
                .iter()
                .map(|g| g.map_or("undetected".into(), |g| format!("{:+.1}", 100.0 * g)))
                .collect::<Vec<_>>()
                .join(", "),
            jac.iter()
                .map(|r| match (r.reference_final, r.reference_seed_only) {
                    (Some(f), Some(s)) => format!("{:+.1}", 100.0 * (f.0 - s.0)),
                    _ => "—".into(),
                })
                .collect::<Vec<_>>()
                .join(", ")
        ),
    });
    for (kind, what) in [
        (AttackKind::EquationRandom, "random rows (Tramèr)"),
        (AttackKind::EquationInDistribution, "in-distribution rows"),
    ] {
        let rs = runs(&e.single, kind);
        let values: Vec<(f64, f64)> = rs.iter().filter_map(|r| r.final_agreement).collect();
        out.push(Target {
            name: format!("equation solving at d + 1 queries on {what} held under 50 % agreement"),
            holds: Some(
                !values.is_empty()
                    && values.len() == rs.len()
                    && values.iter().all(|(a, _)| *a < 0.5),
            ),
            detail: format!(
                "held-out agreement per run with the gateway: {}; without: {}",
                values
                    .iter()
                    .map(|(a, _)| format!("{:.1} %", 100.0 * a))
                    .collect::<Vec<_>>()
                    .join(", "),
                rs.iter()
                    .filter_map(|r| r.reference_final)
                    .map(|(a, _)| format!("{:.1} %", 100.0 * a))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    let mut kinds: Vec<AttackKind> = Vec::new();
    for r in &e.split {
        if !kinds.contains(&r.kind) {
            kinds.push(r.kind);
        }
    }
    for kind in kinds {
        let pairs: Vec<(Option<usize>, Option<usize>)> = runs(&e.split, kind)
            .iter()
            .map(|s| {
                let single = e
                    .single
                    .iter()
                    .find(|r| r.kind == kind && r.seed == s.seed)
                    .and_then(AttackRun::detected_at);
                (single, s.detected_at())
            })
            .collect();
        out.push(Target {
            name: format!(
                "{} split over {} keys caught (group at harden) within 2× the single-key count",
                kind.name(),
                e.split.first().map_or(0, |r| r.keys)
            ),
            holds: if pairs.iter().all(|(s, _)| s.is_none()) {
                None
            } else {
                Some(
                    pairs
                        .iter()
                        .all(|(s, g)| matches!((s, g), (Some(s), Some(g)) if *g <= 2 * s)),
                )
            },
            detail: format!(
                "single → split per run: {}",
                pairs
                    .iter()
                    .map(|(s, g)| format!("{} → {}", show(*s), show(*g)))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        });
    }
    out
}

fn show(n: Option<usize>) -> String {
    n.map_or("—".to_string(), |n| n.to_string())
}

fn pct(v: Option<(f64, f64)>) -> String {
    v.map_or("—".to_string(), |(a, _)| format!("{:.1}", 100.0 * a))
}

fn median_pct(values: impl Iterator<Item = Option<(f64, f64)>>, random: bool) -> String {
    let mut v: Vec<f64> = values
        .flatten()
        .map(|(a, r)| if random { r } else { a })
        .collect();
    if v.is_empty() {
        return "—".to_string();
    }
    v.sort_by(f64::total_cmp);
    format!("{:.1}", 100.0 * v[(v.len() - 1) / 2])
}

fn attack_table(out: &mut String, runs: &[AttackRun], split: bool) {
    let mut kinds: Vec<AttackKind> = Vec::new();
    for r in runs {
        if !kinds.contains(&r.kind) {
            kinds.push(r.kind);
        }
    }
    let _ = writeln!(
        out,
        "| attack | runs | detected | queries to harden: median / p90 | first observe (median) | {}strongest rung | agreement at detection | final agreement with gateway (queries) | without gateway at detection | without gateway, full budget (queries) |",
        if split {
            "any member at harden (median) | "
        } else {
            ""
        }
    );
    let _ = writeln!(
        out,
        "|---|---|---|---|---|{}---|---|---|---|---|",
        if split { "---|" } else { "" }
    );
    for kind in kinds {
        let rs: Vec<&AttackRun> = runs.iter().filter(|r| r.kind == kind).collect();
        let det: Vec<Option<usize>> = rs.iter().map(|r| r.detected_at()).collect();
        let observe: Vec<Option<usize>> = rs.iter().map(|r| r.first[1]).collect();
        let members: Vec<Option<usize>> = rs.iter().map(|r| r.member_first_harden).collect();
        let strongest = rs.iter().map(|r| r.max_rung).max().unwrap_or(0);
        let weakest = rs.iter().map(|r| r.max_rung).min().unwrap_or(0);
        let rung = if strongest == weakest {
            RUNGS[strongest].to_string()
        } else {
            format!("{}–{}", RUNGS[weakest], RUNGS[strongest])
        };
        let mut answered: Vec<usize> = rs.iter().map(|r| r.answered).collect();
        answered.sort_unstable();
        let ref_q = rs.iter().map(|r| r.reference_queries).max().unwrap_or(0);
        let _ = writeln!(
            out,
            "| {} | {} | {}/{} | {} / {} | {} | {}{} | {} | {} ({}) | {} | {} ({}) |",
            kind.name(),
            rs.len(),
            det.iter().filter(|d| d.is_some()).count(),
            rs.len(),
            show(quantile(&det, 0.5)),
            show(quantile(&det, 0.9)),
            show(quantile(&observe, 0.5)),
            if split {
                format!("{} | ", show(quantile(&members, 0.5)))
            } else {
                String::new()
            },
            rung,
            median_pct(rs.iter().map(|r| r.at_detection), false),
            median_pct(rs.iter().map(|r| r.final_agreement), false),
            answered[(answered.len().max(1) - 1) / 2],
            median_pct(rs.iter().map(|r| r.reference_at_detection), false),
            median_pct(rs.iter().map(|r| r.reference_final), false),
            ref_q,
        );
    }
}

/// How to read the figures (method and known limits; no measured value is stated here).
const NOTES: &str = "\n### Reading the equation-solving rows\n\n\
- Random rows (Tramèr et al.): the bundled model is an MLP, not a linear softmax, so solving \
for a linear model from d + 1 random points extrapolates badly even from full probabilities \
(the \"without\" column): the target is met, but the attack is weak here regardless of the \
gateway. Uniform random rows are also far out of distribution, so the detector hardens and \
blocks them within a few queries.\n\
- In-distribution rows: the queries are indistinguishable from a benign consumer's, so only \
the default hardening applies. Plain rounding to 2 decimals left the solve above 50 % on \
several seeds: the entries that round to 0 are what a log-probability solve feeds on (clamped \
to a constant, they make each answer an exact one-hot-like target). The default dither reports \
each such entry as 0 or 0.01 by a secret keyed hash of the row, so the solve fits noise; the \
label and every entry above 0.005 stay as rounding gives them, and a repeated row gets the \
same answer (no averaging over retries).
- What dither does not stop (\"label-only\" column): an attacker that discards the \
probabilities and solves on the top-1 labels of the same 65 answers. 65 labelled \
in-distribution rows fit a linear classifier that agrees with the model on about half the \
held-out rows, above 50 % on some seeds; no hardening that keeps the label can prevent that \
short of refusing service. It is the copycat problem on a small budget: only a per-model \
volume budget bounds it (see Known limits).";

/// Where and how the report was produced.
#[derive(Debug, Clone, Default)]
pub struct Provenance {
    pub command: String,
    pub date: String,
    pub git_rev: String,
    pub machine: String,
    pub gateway_binary: String,
}

/// The markdown report.
pub fn markdown(e: &Evaluation, p: &Provenance) -> String {
    let mut out = String::new();
    let b = &e.benign;
    let flagged = b.flagged_consumers.len();
    let _ = writeln!(
        out,
        "# Model-extraction detection: evaluation over HTTP\n\n\
         Produced by `extraction-eval` (`tests/src/eval/`, `tests/src/bin/extraction_eval.rs`): \
         benign consumers and attack simulators (`plugins/src/extraction/sim.rs`) against real \
         `modelgate` processes on loopback, the shipped `models/digits.profile.json`, default \
         detector options. Nothing in this file is typed by hand: rerun the command to \
         regenerate it.\n\n\
         - Command: `{}`\n- Date: {}\n- Git revision: {}\n- Machine: {}\n- Gateway binary: {}\n- Wall time: {:.0} s\n",
        p.command, p.date, p.git_rev, p.machine, p.gateway_binary, e.seconds
    );
    let _ = writeln!(
        out,
        "## Targets (issue #6)\n\n| target | holds | measured |\n|---|---|---|"
    );
    for t in targets(e) {
        let _ = writeln!(out, "| {} | {} | {} |", t.name, t.verdict(), t.detail);
    }
    let _ = writeln!(
        out,
        "\n## Benign traffic\n\n\
         {} consumers (JWT `sub`), in {} groups of {} (JWT `tenant`), each replaying the 360 \
         held-out rows once with one behaviour (round robin) on one guarded gateway: {} \
         requests, {} rows, {:.0} s. Requests per behaviour: {}.\n\n\
         - Flagged (any rung, observe included, from `GET /admin/suspects` at the end): {} \
         consumers, {} groups{}\n\
         - Requests not answered 200: {}\n\
         - Requests with rows answered with the top-1 label because each was itself \
         suspicious (probe or out of distribution; action `harden_query`): {}\n\
         - False-positive rate: {}/{} = {:.4} %; 95 % upper bound (one-sided Clopper–Pearson): \
         {:.3} %\n",
        b.consumers,
        b.groups,
        b.consumers.div_ceil(b.groups.max(1)),
        b.requests,
        b.rows,
        b.seconds,
        b.per_behaviour
            .iter()
            .map(|(n, c)| format!("{n} {c}"))
            .collect::<Vec<_>>()
            .join(", "),
        flagged,
        b.flagged_groups.len(),
        if flagged + b.flagged_groups.len() > 0 {
            format!(
                " ({})",
                b.flagged_consumers
                    .iter()
                    .chain(&b.flagged_groups)
                    .take(20)
                    .cloned()
                    .collect::<Vec<_>>()
                    .join(", ")
            )
        } else {
            String::new()
        },
        b.refused,
        b.hardened_queries,
        flagged,
        b.consumers,
        100.0 * flagged as f64 / b.consumers.max(1) as f64,
        100.0 * clopper_pearson_upper(flagged, b.consumers, 0.05),
    );
    for d in &b.flagged_details {
        let _ = writeln!(out, "- Flagged: `{d}`");
    }
    if !b.flagged_details.is_empty() {
        let _ = writeln!(out);
    }
    if let Some((attackers, m)) = &e.mixed {
        let flagged = m.flagged_consumers.len();
        let _ = writeln!(
            out,
            "### Benign traffic after attacks on the same gateway\n\n\
             Every attack (seed 1, one key each) first ran to its end on one guarded gateway; \
             flagged attackers publish the fingerprints of their suspicious queries to the \
             global index, which links other consumers' near-duplicate queries to them. Then {} \
             benign consumers replayed the held-out rows there, as above ({} requests).\n\n\
             - Attackers at harden or stronger: {}\n\
             - Benign consumers flagged: {} ({:.2} %; 95 % upper bound {:.2} %), groups \
             flagged: {}{}\n\
             - Benign requests not answered 200: {}; with rows answered with the top-1 \
             label as suspicious: {}\n",
            m.consumers,
            m.requests,
            if attackers.is_empty() {
                "none".to_string()
            } else {
                attackers.join(", ")
            },
            flagged,
            100.0 * flagged as f64 / m.consumers.max(1) as f64,
            100.0 * clopper_pearson_upper(flagged, m.consumers, 0.05),
            m.flagged_groups.len(),
            if flagged > 0 {
                format!(
                    " (first: {})",
                    m.flagged_consumers
                        .iter()
                        .take(10)
                        .cloned()
                        .collect::<Vec<_>>()
                        .join(", ")
                )
            } else {
                String::new()
            },
            m.refused,
            m.hardened_queries,
        );
    }
    let seeds = e.single.iter().map(|r| r.seed).max().unwrap_or(0);
    let _ = writeln!(
        out,
        "## Attacks, one key\n\n\
         Each attack ran once per seed ({seeds} seeds) on a fresh guarded gateway, one row per \
         request, until it finished its budget or every key was blocked (403). Detection = the \
         first answered query after which the admin API shows the consumer at `harden` or \
         stronger. Agreement (%) = share of the 180 held-out evaluation rows (never queried by \
         attackers) on which the attacker's substitute (softmax regression on the answers it \
         got, hardened ones included; equation solving: its linear solve) predicts the \
         model's class; medians over runs. \"Without gateway\" = the same attack and seed \
         against a gateway whose route has no detector (raw probabilities), at the detection \
         query count and at the attack's full budget.\n"
    );
    attack_table(&mut out, &e.single, false);
    if !e.split.is_empty() {
        let _ = writeln!(
            out,
            "\n## Attacks split over {} keys of one group\n\n\
             The same attacks, queries sent round robin over {} JWT consumers sharing one \
             `tenant` (a blocked key is dropped, its query goes to the next key). Detection = \
             the group at `harden` or stronger (every member inherits it).\n",
            e.split[0].keys, e.split[0].keys
        );
        attack_table(&mut out, &e.split, true);
    }
    let _ = writeln!(
        out,
        "\n## Equation solving in detail\n\n\
         Agreement on the held-out rows and on {} uniform random rows (the random variant's \
         own input distribution), with the gateway (default dither at 2 decimals, top-1 once \
         suspected) and without it (full probabilities), at d + 1 = 65 queries; and the solve \
         on the top-1 labels of the gateway's answers alone. A constant \
         classifier answering the most common class gets {:.1} % on the held-out rows and \
         {:.1} % on the random rows (the model calls most noise one class), so agreement on \
         random rows says little.\n\n\
         | attack | seed | with gateway: held-out / random | without: held-out / random | label-only, with gateway: held-out / random | rung reached |\n|---|---|---|---|---|---|",
        e.random_rows,
        100.0 * e.baselines.0,
        100.0 * e.baselines.1,
    );
    for r in e.single.iter().filter(|r| {
        matches!(
            r.kind,
            AttackKind::EquationRandom | AttackKind::EquationInDistribution
        )
    }) {
        let both = |v: Option<(f64, f64)>| {
            v.map_or("—".to_string(), |(a, b)| {
                format!("{:.1} / {:.1}", 100.0 * a, 100.0 * b)
            })
        };
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} | {} |",
            r.kind.name(),
            r.seed,
            both(r.final_agreement),
            both(r.reference_final),
            both(r.label_only),
            RUNGS[r.max_rung]
        );
    }
    let _ = writeln!(out, "{NOTES}");
    let _ = writeln!(
        out,
        "\n## Jacobian augmentation in detail\n\n\
         Agreement (%) of the substitute from the seed set alone, at detection and at the end, \
         with the gateway; and without it, from the seed set alone and at the full budget (the \
         augmentation's own gain).\n\n\
         | seed | seed set alone | at detection | detected at | final with gateway (queries) | without gateway: seed set alone | without gateway: full budget |\n|---|---|---|---|---|---|---|"
    );
    for r in e.single.iter().filter(|r| r.kind == AttackKind::Jacobian) {
        let _ = writeln!(
            out,
            "| {} | {} | {} | {} | {} ({}) | {} | {} ({}) |",
            r.seed,
            pct(r.seed_only),
            pct(r.at_detection),
            show(r.detected_at()),
            pct(r.final_agreement),
            r.answered,
            pct(r.reference_seed_only),
            pct(r.reference_final),
            r.reference_queries
        );
    }
    let _ = writeln!(out, "{LIMITS}");
    out
}

/// Known limits of the detector and of this evaluation (no measured value is stated here).
const LIMITS: &str = "\n## Known limits\n\n\
- In-distribution copycat (Knockoff-style) traffic looks like a benign replay; the detector \
leaves it alone by design (flagging it would flag benign consumers). Its substitute's \
agreement with and without the gateway is in the tables: hardening costs it little. The \
per-model volume budget (queries against d + 1, capped at harden) is the only signal that \
grows with it, and benign consumers replaying the held-out set (360 rows) pass far more than \
d + 1 queries, so at the calibrated volume threshold it does not act within a copycat's \
budget here.\n\
- Split near-duplicate probing (NES) is caught at group level by near-duplicate clusters: a \
group query within `near_distance` of three or more of the group's last 16 distinct rows. \
Probes spread wider than `near_distance` apart (calibrated from the closest distinct benign \
rows; here a per-feature σ above about 0.75) are not clustered and are left to each \
member's own detector, and so is a split attack that interleaves enough other rows to keep \
fewer than three variants of a point in the group's last 16 queries.\n\
- Substitutes are softmax regressions (deterministic, fast); a deeper substitute could get \
more out of the same answers. With this substitute the Jacobian augmentation (λ = 30 % of \
the range, where it helped in process on average) gains little or even loses agreement \
without any gateway on many seeds (last column of the Jacobian table): the Jacobian target \
is only informative on the seeds where the augmentation does gain. The default dither makes \
the seed set's own substitute noisier (compare \"seed set alone\" with and without the \
gateway), and one or two more answers move such a substitute by a few points either way. \
The answers to the first augmented queries (probes, before the consumer reaches harden) are \
top-1 labels, which keeps the gain at detection under 2 points on all but rare runs and below \
zero on average (`jacobian_substitute_gains_little_before_detection` in \
`plugins/src/extraction/tests.rs` asserts both over 50 in-process runs with fixed salts); \
each gateway draws a random salt, so a run here can still show one such seed.\n\
- Detection is read from `GET /admin/suspects` after every answered query, so the counts are \
exact for one-row requests. The detector runs on wall-clock time; a run takes seconds, so \
volume decay (half-life one day) and holds (15 min) play no part.\n\
- Runs are not bit-for-bit repeatable: each gateway draws a random fingerprint salt and \
concurrent benign members interleave differently, so the benign figures are one sample; \
rare group-level events show up only over repeated full runs.\n\
- One model (the bundled 64-feature digits MLP) and its shipped profile; other models need \
their own calibration and evaluation.";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clopper_pearson_matches_known_values() {
        // k = 0: 1 − 0.05^(1/n).
        let u = clopper_pearson_upper(0, 3000, 0.05);
        assert!((u - (1.0 - 0.05f64.powf(1.0 / 3000.0))).abs() < 1e-9, "{u}");
        // k = 1, n = 10: the one-sided 95 % upper bound is 0.3942.
        let u = clopper_pearson_upper(1, 10, 0.05);
        assert!((u - 0.3942).abs() < 1e-3, "{u}");
    }

    #[test]
    fn quantiles_count_undetected_runs_as_largest() {
        let v = [Some(3), None, Some(1), Some(2)];
        assert_eq!(quantile(&v, 0.5), Some(2));
        assert_eq!(quantile(&v, 0.9), None);
        assert_eq!(quantile(&[Some(4)], 0.9), Some(4));
    }
}
