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
pub mod wire_fuzz;

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

/// A loopback port for a server a test starts (or for one nobody listens on): free a moment
/// ago and reserved for this test process until it exits.
///
/// A port the kernel hands out for `127.0.0.1:0` comes from the ephemeral range, where every
/// outgoing connection of the parallel tests also takes its local port: released and then
/// bound by the gateway a few milliseconds later, it can be taken in between (the gateway
/// fails to start) or handed to another test the same way. So the port is drawn below the
/// ephemeral range, held by a lock file no other test process can take while this one runs
/// (the lock goes with the process), and checked free by binding it.
pub fn free_port() -> u16 {
    static HELD: std::sync::Mutex<Vec<std::fs::File>> = std::sync::Mutex::new(Vec::new());
    let Some((low, high)) = below_ephemeral_range() else {
        return kernel_port();
    };
    let dir = std::env::temp_dir().join("modelgate-e2e-ports");
    std::fs::create_dir_all(&dir).expect("port lock directory");
    let mut state = u64::from(std::process::id())
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64)
        | 1;
    for _ in 0..10_000 {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = low + (state % u64::from(high - low)) as u16;
        let lock = std::fs::File::create(dir.join(port.to_string())).expect("port lock file");
        if lock.try_lock().is_ok() && std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            HELD.lock().unwrap_or_else(|e| e.into_inner()).push(lock);
            return port;
        }
    }
    panic!("no free loopback port in {low}..{high}");
}

/// Ports from 20000 up to the start of the kernel's ephemeral range; `None` where that range
/// is unknown or leaves too little room below it.
fn below_ephemeral_range() -> Option<(u16, u16)> {
    let text = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let start: u16 = text.split_whitespace().next()?.parse().ok()?;
    (start >= 21_000).then_some((20_000, start))
}

/// A port the kernel picked for `127.0.0.1:0`, released again.
fn kernel_port() -> u16 {
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
