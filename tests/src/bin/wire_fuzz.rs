//! Sends mutated HTTP/1.1 requests to a fresh gateway and lists every one that broke a rule
//! (see `modelgate_e2e::wire_fuzz`), then what the run covered.
//!
//! cargo build --release --bins && MODELGATE_BIN=target/release/modelgate \
//!   cargo run --release -p modelgate-e2e --bin wire-fuzz -- --cases 20000 --seed 7

use modelgate_e2e::wire_fuzz::Target;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (mut cases, mut seed) = (5000usize, 1u64);
    for pair in args.chunks(2) {
        let value = pair.get(1).map(String::as_str).unwrap_or_default();
        match pair[0].as_str() {
            "--cases" => cases = value.parse().unwrap_or_else(|_| usage()),
            "--seed" => seed = value.parse().unwrap_or_else(|_| usage()),
            _ => usage(),
        }
    }
    let mut target = Target::start();
    let started = std::time::Instant::now();
    let report = target.run(cases, seed);
    for f in &report.findings {
        println!("{f}\n");
    }
    println!(
        "{cases} requests (seed {seed}) in {:.1} s\n{report}",
        started.elapsed().as_secs_f64()
    );
    // `exit` runs no destructors: stop the gateway first.
    drop(target);
    std::process::exit(i32::from(!report.findings.is_empty()));
}

fn usage() -> ! {
    eprintln!("usage: wire-fuzz [--cases N] [--seed N]");
    std::process::exit(2);
}
