//! End-to-end test harness: start a real `modelgate` process on free loopback ports,
//! talk raw HTTP/1.1 to it, and script upstreams that record what reaches them.
//!
//! The gateway binary is `target/<profile>/modelgate` (built by `scripts/test.sh`), or the
//! path in `MODELGATE_BIN`.

pub mod client;
pub mod digits;
pub mod eval;
pub mod gateway;
pub mod upstream;

use std::path::PathBuf;

/// Polls `probe` every 20 ms until it returns true or `within` passes; the last answer.
pub fn eventually(within: std::time::Duration, mut probe: impl FnMut() -> bool) -> bool {
    let deadline = std::time::Instant::now() + within;
    while std::time::Instant::now() < deadline {
        if probe() {
            return true;
        }
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    probe()
}

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// `n` rows of uniform random pixels in [0, 16] (xorshift from `seed`: reproducible).
pub fn random_rows(n: usize, mut seed: u64) -> Vec<Vec<f32>> {
    (0..n)
        .map(|_| {
            (0..64)
                .map(|_| {
                    seed ^= seed << 13;
                    seed ^= seed >> 7;
                    seed ^= seed << 17;
                    (seed % 17) as f32
                })
                .collect()
        })
        .collect()
}

/// The bundled model's held-out rows (64 pixel values each) and labels.
pub fn holdout() -> (Vec<Vec<f32>>, Vec<i64>) {
    let text = std::fs::read_to_string(repo_root().join("models/digits_holdout.json"))
        .expect("held-out file");
    let v: serde_json::Value = serde_json::from_str(&text).expect("held-out JSON");
    let number_rows = |key: &str| v[key].as_array().cloned().unwrap_or_default();
    let rows = number_rows("rows")
        .iter()
        .map(|r| {
            r.as_array()
                .map(|r| {
                    r.iter()
                        .filter_map(|x| x.as_f64())
                        .map(|x| x as f32)
                        .collect()
                })
                .unwrap_or_default()
        })
        .collect();
    let labels = number_rows("labels")
        .iter()
        .filter_map(|l| l.as_i64())
        .collect();
    (rows, labels)
}
