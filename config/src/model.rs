//! The validated configuration the gateway builds from. Every value here has passed
//! [`crate::validate`]: paths are absolute, durations parsed, URLs split.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use serde::Serialize;

use crate::UpstreamUrl;

/// A complete, valid configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Config {
    pub server: ServerSettings,
    pub limits: Limits,
    pub inference: InferencePool,
    pub auth: Auth,
    /// Plan name → limits as written; parsed (with paths in errors) when a snapshot is built.
    pub plans: std::collections::BTreeMap<String, crate::file::LimitsSpecSection>,
    pub routes: Vec<Route>,
    pub telemetry: Telemetry,
}

/// OpenTelemetry settings; a change needs a restart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Telemetry {
    /// Where spans are exported; `None` turns tracing off (the default).
    pub traces: Option<OtlpTraces>,
}

/// OTLP/HTTP (protobuf) trace export.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OtlpTraces {
    /// The collector; `base_path` is the full path spans are POSTed to (`/v1/traces` when
    /// the configured URL had no path).
    pub endpoint: UpstreamUrl,
    pub service_name: String,
    /// Share of new traces recorded, in 0.0..=1.0; a client's `traceparent` sampled flag
    /// decides for the traces it continues.
    pub sampling_ratio: f64,
    #[serde(serialize_with = "crate::duration::serialize")]
    pub export_timeout: Duration,
}

impl Config {
    /// Every file the config names (read when a snapshot is built), for the reload
    /// watcher. The config file itself is not included.
    pub fn named_files(&self) -> Vec<PathBuf> {
        let secret = |s: &Option<SecretSource>| match s {
            Some(SecretSource::File(p)) => Some(p.clone()),
            _ => None,
        };
        let mut files: Vec<PathBuf> = Vec::new();
        files.extend(self.auth.key_store.clone());
        files.extend(secret(&self.auth.pepper));
        files.extend(secret(&self.server.admin_token));
        for issuer in &self.auth.jwt {
            if let JwksSource::File(p) = &issuer.jwks {
                files.push(p.clone());
            }
            files.extend(secret(&issuer.hmac_secret));
        }
        for route in &self.routes {
            if let Backend::Embedded { onnx, metadata } = &route.backend {
                files.extend([onnx.clone(), metadata.clone()]);
            }
            files.extend(route.validate.json_schema.clone());
            files.extend(route.validate.metadata.clone());
            files.extend(route.extraction.as_ref().map(|e| e.profile.clone()));
        }
        files.sort();
        files.dedup();
        files
    }
}

/// Authentication settings.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Auth {
    /// API key store file, if API keys are enabled.
    pub key_store: Option<PathBuf>,
    /// Where the key-hash pepper comes from, if anywhere.
    pub pepper: Option<SecretSource>,
    /// Lower-case header names carrying API keys; `authorization` means `Bearer <key>`.
    pub api_key_headers: Vec<String>,
    pub bootstrap_key: bool,
    pub max_failures_per_minute: u32,
    pub max_tracked_peers: usize,
    pub jwt: Vec<JwtIssuer>,
}

impl Auth {
    /// Whether any credential could be accepted.
    pub fn enabled(&self) -> bool {
        self.key_store.is_some() || !self.jwt.is_empty()
    }
}

/// A secret read at build time from an env var or a file (never from the config itself).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SecretSource {
    Env(String),
    File(PathBuf),
}

/// Where an issuer's signing keys come from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum JwksSource {
    None,
    File(PathBuf),
    /// Fetched over plain HTTP, refreshed every `refresh`.
    Url {
        url: UpstreamUrl,
        #[serde(serialize_with = "crate::duration::serialize")]
        refresh: Duration,
    },
}

/// One JWT issuer.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JwtIssuer {
    pub issuer: String,
    pub audiences: Vec<String>,
    /// Upper-case algorithm names (`RS256`, `EdDSA`, ...), checked against the known set.
    pub algorithms: Vec<String>,
    pub jwks: JwksSource,
    pub hmac_secret: Option<SecretSource>,
    #[serde(serialize_with = "crate::duration::serialize")]
    pub leeway: Duration,
    pub consumer_claim: String,
    pub plan_claim: String,
    pub scopes_claim: String,
    pub group_claim: Option<String>,
    pub default_plan: String,
}

/// Listener and process settings; a change to these needs a restart.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ServerSettings {
    pub listen: SocketAddr,
    pub admin_listen: SocketAddr,
    /// Pingora worker threads for the data listener.
    pub threads: usize,
    /// Whether Pingora's worker threads steal tasks from each other. Off by default: each
    /// connection stays on the thread it was given (measured faster for short requests).
    pub work_stealing: bool,
    pub pid_file: PathBuf,
    pub upgrade_sock: PathBuf,
    /// How long in-flight requests may finish after SIGTERM.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub grace_period: Duration,
    /// How often each HTTP upstream gets a TCP connect check (`/readyz`, metrics);
    /// `None`: no checks, and readiness does not depend on upstreams.
    #[serde(serialize_with = "crate::duration::serialize_option")]
    pub upstream_check_interval: Option<Duration>,
    /// Audit records go to this file (JSON lines) instead of stderr.
    pub audit_log: Option<PathBuf>,
    /// Poll interval of the file watcher that reloads on changes; `None`: no watcher.
    #[serde(serialize_with = "crate::duration::serialize_option")]
    pub watch_interval: Option<Duration>,
    /// Token for the `/admin/` endpoints; without one the mutating ones are refused and
    /// the read-only ones answer only on a loopback admin listener.
    pub admin_token: Option<SecretSource>,
}

/// Bounds on what a client controls.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Limits {
    pub max_body_bytes: u64,
    /// The whole request body must arrive within this time.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub body_read_timeout: Duration,
    /// A request head must arrive within this time of the connection's opening or of the
    /// previous response (so it bounds the keep-alive idle time too); a client that sends
    /// a header line now and then cannot hold a connection longer. Read when a connection
    /// opens (a reload applies it to new connections).
    #[serde(serialize_with = "crate::duration::serialize")]
    pub header_read_timeout: Duration,
    pub max_json_depth: usize,
    /// Most request header fields; more get 431.
    pub max_header_count: usize,
    /// Most bytes of header names and values together; more get 431.
    pub max_header_bytes: usize,
}

/// The embedded backend's blocking pool.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct InferencePool {
    pub threads: usize,
    /// Jobs waiting beyond the running ones; a full queue answers 503.
    pub queue_depth: usize,
}

/// One route: what it matches and where it sends matched requests.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Route {
    pub name: String,
    /// Model name served over the Open Inference Protocol at `/v2/models/{model}`.
    pub model: Option<String>,
    /// Path prefix (segment-aligned) served from the backend.
    pub path_prefix: Option<String>,
    /// Allowed methods (upper case) for path-prefix requests; `None` allows any.
    pub methods: Option<Vec<String>>,
    pub max_body_bytes: u64,
    pub public: bool,
    pub forward_credentials: bool,
    pub api_key_in_query: bool,
    /// Limits replacing the plan's on this route.
    pub limits: Option<crate::file::LimitsSpecSection>,
    /// Global limit for this route's model.
    pub model_limit: Option<crate::file::LimitsSpecSection>,
    pub cost: Cost,
    pub validate: Validate,
    pub extraction: Option<Extraction>,
    pub backend: Backend,
}

/// Where a route's requests are answered.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backend {
    /// The embedded ONNX runtime, serving the model file with its metadata.
    Embedded {
        onnx: PathBuf,
        metadata: PathBuf,
    },
    Http(HttpBackend),
}

/// HTTP backends, picked round-robin.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HttpBackend {
    pub upstreams: Vec<UpstreamUrl>,
    /// Replaces the matched `path_prefix` (or `/v2/models/{model}`) when forwarding.
    pub rewrite_prefix: Option<String>,
    #[serde(serialize_with = "crate::duration::serialize")]
    pub connect_timeout: Duration,
    /// Longest wait for any single read from the upstream.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub read_timeout: Duration,
    /// Longest time for the whole upstream exchange.
    #[serde(serialize_with = "crate::duration::serialize")]
    pub total_timeout: Duration,
}

/// What one request costs against rate limits and quotas.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Cost {
    /// The number of rows (batch size) the request asks for; 1 when not an inference.
    Rows,
    Fixed(u32),
}

/// The request protocol a route checks bodies against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Protocol {
    /// Open Inference Protocol (KServe v2), checked against the model's metadata.
    V2,
    /// TF-Serving `:predict` bodies (`instances` / `inputs`).
    TfServing,
    /// No protocol check (a JSON Schema may still apply).
    None,
}

/// Input validation settings for a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Validate {
    pub protocol: Protocol,
    pub json_schema: Option<PathBuf>,
    /// Model metadata file for HTTP backends.
    pub metadata: Option<PathBuf>,
    pub max_errors: usize,
    pub gzip: bool,
}

/// Model-extraction detection settings for a route.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Extraction {
    pub profile: PathBuf,
    pub trusted: Vec<String>,
    /// The scored output's name; `None` means the model metadata's first output.
    pub output: Option<String>,
    /// Cap on a buffered upstream response (HTTP backends).
    pub max_response_bytes: u64,
}
