//! The quick version of the model-extraction evaluation (issue #6) over HTTP: 60 benign
//! consumers, 30 more after every attack ran on their gateway, and one run (seed 1) of every
//! attack, single key and split over ten keys of one group, against real gateways; asserts the targets where the gateway meets them and
//! names the gaps where it does not. The full run is `extraction-eval` (docs/EXTRACTION.md).

#![allow(clippy::unwrap_used)]

use modelgate_e2e::eval::{self, AttackRun, EvalConfig, Evaluation, report};
use modelgate_plugins::extraction::sim::{AttackKind, Space};

fn runs(runs: &[AttackRun], kind: AttackKind) -> Vec<&AttackRun> {
    let found: Vec<&AttackRun> = runs.iter().filter(|r| r.kind == kind).collect();
    assert!(!found.is_empty(), "no {} run", kind.name());
    found
}

fn single_detected_at(e: &Evaluation, kind: AttackKind, seed: u64) -> usize {
    e.single
        .iter()
        .find(|r| r.kind == kind && r.seed == seed)
        .and_then(AttackRun::detected_at)
        .unwrap_or_else(|| panic!("single-key {} not detected", kind.name()))
}

#[test]
fn quick_extraction_evaluation_meets_the_targets() {
    let e = eval::evaluate(&EvalConfig::quick(), |line| eprintln!("{line}"));
    for t in report::targets(&e) {
        eprintln!("[{}] {} — {}", t.verdict(), t.name, t.detail);
    }

    // Benign: 0 flagged (no consumer, no group at any rung), every request answered.
    let b = &e.benign;
    assert!(b.consumers >= 60 && b.requests > b.consumers * 100, "{b:?}");
    assert!(
        b.flagged_consumers.is_empty() && b.flagged_groups.is_empty(),
        "benign flagged: {:?} {:?}",
        b.flagged_consumers,
        b.flagged_groups
    );
    assert_eq!(b.refused, 0, "benign requests refused");
    assert_eq!(
        b.hardened_queries, 0,
        "benign answers hardened as suspicious queries"
    );
    // ...also on a gateway where every attack ran first (flagged attackers publish to the
    // global fingerprint index).
    let (attackers, m) = e.mixed.as_ref().unwrap();
    assert!(attackers.len() >= 4, "attackers flagged: {attackers:?}");
    assert!(
        m.flagged_consumers.is_empty()
            && m.flagged_groups.is_empty()
            && m.refused == 0
            && m.hardened_queries == 0,
        "benign after attacks: {m:?}"
    );

    // Probing attacks detected (harden) in ≤ 5 queries; random and OOD in ≤ 10.
    for (kind, limit) in [
        (AttackKind::LineSearch, 5),
        (AttackKind::NesProbing, 5),
        (AttackKind::UniformRandom, 10),
        (AttackKind::OodPool, 10),
    ] {
        for r in runs(&e.single, kind) {
            assert!(
                r.detected_at().is_some_and(|n| n <= limit),
                "{} seed {}: detected at {:?}",
                kind.name(),
                r.seed,
                r.detected_at()
            );
        }
    }

    // Jacobian augmentation: detected within the first augmentation round, its substitute
    // then no more than 2 points above the seed set alone without the gateway (agreement on
    // held-out rows the attacker never queried). The issue's own criterion (gain over the
    // seed set's answers from the gateway) is reported, not asserted, on this one run with a
    // random salt: the default dither makes that baseline noisy by a few points, and a rare
    // run passes 2 points (docs/EXTRACTION.md); the plugin's unit tests assert its rate
    // over 50 runs with fixed salts.
    let seeds = AttackKind::Jacobian.seed_queries(Space::DIGITS);
    for r in runs(&e.single, AttackKind::Jacobian) {
        assert!(
            r.detected_at().is_some_and(|n| n <= seeds + 5),
            "{:?}",
            r.detected_at()
        );
        let (undefended, at_detection) =
            (r.reference_seed_only.unwrap().0, r.at_detection.unwrap().0);
        assert!(
            at_detection - undefended < 0.02,
            "Jacobian substitute {:.1} points above the undefended seed set at detection",
            100.0 * (at_detection - undefended)
        );
    }

    // Equation solving (Tramèr, d + 1 random rows, full probabilities expected): held under
    // 50 % agreement by the gateway.
    for r in runs(&e.single, AttackKind::EquationRandom) {
        let with = r.final_agreement.unwrap().0;
        assert!(with < 0.5, "equation solving (random rows) reached {with}");
    }
    // ...and on d + 1 in-distribution rows, which look benign: the default dither alone
    // holds it under 50 %, below what it gets from raw outputs. (An attacker that keeps only
    // the labels is reported, not asserted: docs/EXTRACTION.md.)
    for r in runs(&e.single, AttackKind::EquationInDistribution) {
        let (with, without) = (r.final_agreement.unwrap().0, r.reference_final.unwrap().0);
        assert!(with < 0.5, "equation solving (natural rows) reached {with}");
        assert!(
            with < without,
            "hardening did not hurt: {with} vs {without}"
        );
        assert!(r.label_only.is_some());
    }

    // Split over 10 keys of one group: caught as one (group at harden) within 2× the
    // single-key query count — for random, OOD, Jacobian, line-search and NES probing
    // (near-duplicate clusters in the group's stream).
    for kind in [
        AttackKind::UniformRandom,
        AttackKind::OodPool,
        AttackKind::Jacobian,
        AttackKind::LineSearch,
        AttackKind::NesProbing,
    ] {
        for r in runs(&e.split, kind) {
            let single = single_detected_at(&e, kind, r.seed);
            assert!(
                r.detected_at().is_some_and(|n| n <= 2 * single),
                "split {}: group at {:?}, single key at {single}",
                kind.name(),
                r.detected_at()
            );
        }
    }
}
