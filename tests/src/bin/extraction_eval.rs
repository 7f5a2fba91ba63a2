//! `extraction-eval`: the full model-extraction evaluation over HTTP (issue #6). Writes the
//! markdown report (`docs/EXTRACTION.md` by default).
//!
//! ```text
//! cargo build --release --bins
//! MODELGATE_BIN=target/release/modelgate \
//!   cargo run --release -p modelgate-e2e --bin extraction-eval -- --consumers 3000 --seeds 5 --out docs/EXTRACTION.md
//! ```
//!
//! `--consumers`: benign consumers (default 3000); `--seeds`: runs per attack (default 5);
//! `--mixed`: benign consumers replaying after attacks on one gateway (default 300, 0: skip).

use std::process::Command;

use modelgate_e2e::eval::{self, EvalConfig, report};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut consumers = 3000usize;
    let mut seeds = 5usize;
    let mut mixed = 300usize;
    let mut out = modelgate_e2e::repo_root().join("docs/EXTRACTION.md");
    let mut i = 0;
    while i < args.len() {
        let value = args.get(i + 1).cloned().unwrap_or_default();
        match args[i].as_str() {
            "--consumers" => consumers = value.parse().unwrap_or_else(|_| usage()),
            "--seeds" => seeds = value.parse().unwrap_or_else(|_| usage()),
            "--mixed" => mixed = value.parse().unwrap_or_else(|_| usage()),
            "--out" => out = value.into(),
            _ => usage(),
        }
        i += 2;
    }
    let mut config = EvalConfig::full(consumers, seeds);
    config.mixed_consumers = mixed;
    let evaluation = eval::evaluate(&config, |line| eprintln!("{line}"));
    let gateway = modelgate_e2e::gateway::binary();
    let provenance = report::Provenance {
        command: {
            // The target dir, when not the default, is part of the command.
            let target = std::env::var("CARGO_TARGET_DIR")
                .map(|t| format!("CARGO_TARGET_DIR={t} "))
                .unwrap_or_default();
            format!(
                "{target}cargo build --release --bins && {target}{}cargo run --release -p modelgate-e2e --bin extraction-eval -- {}",
                std::env::var("MODELGATE_BIN")
                    .map(|b| format!("MODELGATE_BIN={b} "))
                    .unwrap_or_default(),
                args.join(" ")
            )
        },
        date: shell("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
        git_rev: {
            let rev = shell("git", &["rev-parse", "--short", "HEAD"]);
            // The report itself does not count as a change.
            let exclude = format!(":(exclude){}", out.display());
            let dirty = !shell("git", &["status", "--porcelain", "--", ".", &exclude]).is_empty();
            if dirty {
                format!("{rev} (with uncommitted changes)")
            } else {
                rev
            }
        },
        machine: format!(
            "{}, {} CPUs ({})",
            shell("uname", &["-srm"]),
            std::thread::available_parallelism().map_or(0, |n| n.get()),
            std::fs::read_to_string("/proc/cpuinfo")
                .ok()
                .and_then(|c| {
                    c.lines()
                        .find(|l| l.starts_with("model name"))
                        .and_then(|l| l.split_once(':'))
                        .map(|(_, m)| m.trim().to_string())
                })
                .unwrap_or_else(|| "unknown CPU".into())
        ),
        gateway_binary: gateway.display().to_string(),
    };
    let markdown = report::markdown(&evaluation, &provenance);
    if let Err(e) = std::fs::write(&out, &markdown) {
        eprintln!("cannot write {}: {e}", out.display());
        std::process::exit(1);
    }
    for t in report::targets(&evaluation) {
        eprintln!("[{}] {} — {}", t.verdict(), t.name, t.detail);
    }
    eprintln!("wrote {}", out.display());
}

fn shell(cmd: &str, args: &[&str]) -> String {
    Command::new(cmd)
        .args(args)
        .current_dir(modelgate_e2e::repo_root())
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default()
}

fn usage() -> ! {
    eprintln!("usage: extraction-eval [--consumers N] [--seeds N] [--mixed N] [--out FILE]");
    std::process::exit(2)
}
