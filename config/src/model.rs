//! The validated configuration the gateway builds from. Every value here has passed
//! [`crate::validate`]: paths are absolute, durations parsed, URLs split.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use crate::UpstreamUrl;

/// A complete, valid configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Config {
    pub server: ServerSettings,
    pub limits: Limits,
    pub inference: InferencePool,
    pub routes: Vec<Route>,
}

/// Listener and process settings; a change to these needs a restart.
#[derive(Debug, Clone, PartialEq)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Pingora worker threads for the data listener.
    pub threads: usize,
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
    /// How long in-flight requests may finish after SIGTERM.
    pub grace_period: Duration,
}

/// Bounds on what a client controls.
#[derive(Debug, Clone, PartialEq)]
pub struct Limits {
    pub max_body_bytes: u64,
    /// The whole request body must arrive within this time.
    pub body_read_timeout: Duration,
    pub max_json_depth: usize,
}

/// The embedded backend's blocking pool.
#[derive(Debug, Clone, PartialEq)]
pub struct InferencePool {
    pub threads: usize,
    /// Jobs waiting beyond the running ones; a full queue answers 503.
    pub queue_depth: usize,
}

/// One route: what it matches and where it sends matched requests.
#[derive(Debug, Clone, PartialEq)]
pub struct Route {
    pub name: String,
    /// Model name served over the Open Inference Protocol at `/v2/models/{model}`.
    pub model: Option<String>,
    /// Path prefix (segment-aligned) served from the backend.
    pub path_prefix: Option<String>,
    /// Allowed methods (upper case) for path-prefix requests; `None` allows any.
    pub methods: Option<Vec<String>>,
    pub max_body_bytes: u64,
    pub backend: Backend,
}

/// Where a route's requests are answered.
#[derive(Debug, Clone, PartialEq)]
pub enum Backend {
    /// The embedded ONNX runtime, serving the model file with its metadata.
    Embedded {
        onnx: PathBuf,
        metadata: PathBuf,
    },
    Http(HttpBackend),
}

/// HTTP backends, picked round-robin.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpBackend {
    pub upstreams: Vec<UpstreamUrl>,
    /// Replaces the matched `path_prefix` (or `/v2/models/{model}`) when forwarding.
    pub rewrite_prefix: Option<String>,
    pub connect_timeout: Duration,
    /// Longest wait for any single read from the upstream.
    pub read_timeout: Duration,
    /// Longest time for the whole upstream exchange.
    pub total_timeout: Duration,
}
