//! End-to-end test harness: start a real `modelgate` process on free loopback ports,
//! talk raw HTTP/1.1 to it, and script upstreams that record what reaches them.
//!
//! The gateway binary is `target/<profile>/modelgate` (built by `scripts/test.sh`), or the
//! path in `MODELGATE_BIN`.

pub mod client;
pub mod gateway;
pub mod upstream;

use std::path::PathBuf;

/// The repository root.
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A loopback port that was free a moment ago (bound to port 0, then released).
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}
