//! Mutated HTTP/1.1 requests against a real gateway (`modelgate_e2e::wire_fuzz`): a fixed
//! seed and 2000 requests here; `cargo run -p modelgate-e2e --bin wire-fuzz` runs
//! as many as asked.

use modelgate_e2e::wire_fuzz::Target;

#[test]
fn mutated_requests_get_a_clean_answer_or_a_close() {
    let mut target = Target::start();
    let report = target.run(2000, 0x5eed_0001);
    println!("{report}");
    let shown: Vec<String> = report
        .findings
        .iter()
        .take(10)
        .map(ToString::to_string)
        .collect();
    assert!(report.findings.is_empty(), "{report}\n{}", shown.join("\n"));
    // The run reached every layer: answers, refusals of several kinds, backends.
    let answered =
        |lo: u16, hi: u16| -> usize { report.statuses.range(lo..hi).map(|(_, n)| n).sum() };
    assert!(answered(200, 300) >= 50, "{report}");
    assert!(report.statuses.range(400..500).count() >= 5, "{report}");
    assert!(report.codes.len() >= 6, "{report}");
    assert!(report.forwarded >= 20, "{report}");
    // The gateway wrote no credential into its logs either.
    let logs = target.gateway.logs();
    for secret in target.secrets() {
        assert!(
            !logs.contains(&secret[secret.len() - 20..]),
            "a credential in the logs"
        );
    }
}
