//! The config file as written (TOML). Unknown keys are refused; values are checked in
//! [`crate::validate`], which turns this into the [`crate::Config`] model.

use serde::Deserialize;

/// The whole file.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ConfigFile {
    #[serde(default)]
    pub server: ServerSection,
    #[serde(default)]
    pub limits: LimitsSection,
    #[serde(default)]
    pub inference: InferenceSection,
    #[serde(default)]
    pub auth: AuthSection,
    /// `[plans.<name>]`: limits a caller gets by its plan.
    #[serde(default)]
    pub plans: std::collections::BTreeMap<String, LimitsSpecSection>,
    #[serde(default)]
    pub routes: Vec<RouteSection>,
    #[serde(default)]
    pub telemetry: TelemetrySection,
}

/// `[telemetry]`: OpenTelemetry traces, exported over OTLP/HTTP. Off unless
/// `otlp_endpoint` is set.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TelemetrySection {
    /// Collector base URL (`http://host:4318`; spans go to `/v1/traces` under it).
    pub otlp_endpoint: Option<String>,
    /// `service.name` of the exported spans (default `modelgate`).
    pub service_name: Option<String>,
    /// Share of new traces recorded, 0.0-1.0 (default 1.0).
    pub sampling_ratio: Option<f64>,
    /// Longest time one export (with its retries) may take (default `10s`).
    pub export_timeout: Option<String>,
}

/// Rate, burst, concurrency and quota, as written (`rate = "100/s"`, `quota = "100000/day"`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSpecSection {
    pub rate: Option<String>,
    pub burst: Option<u32>,
    pub concurrency: Option<u32>,
    pub quota: Option<String>,
    /// No limits at all (plans and route overrides only; not `plans.default`).
    pub unlimited: Option<bool>,
}

/// `[routes.validate]`: what a request body must look like.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ValidateSection {
    /// `v2` (Open Inference Protocol, default for model routes), `tf_serving`, `none`.
    pub protocol: Option<String>,
    /// JSON Schema file (Draft 2020-12 or Draft 7) every JSON body must satisfy.
    pub json_schema: Option<String>,
    /// Model metadata (KServe v2 shape) for HTTP backends; embedded models use their own.
    pub metadata: Option<String>,
    /// Most problems listed in one refusal.
    pub max_errors: Option<usize>,
    /// Accept `Content-Encoding: gzip` (decompressed with caps) instead of refusing it.
    pub gzip: Option<bool>,
}

/// `[auth]`: API keys and JWT issuers.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthSection {
    /// JSON key store (hashes only); created when first written.
    pub key_store: Option<String>,
    /// Env var holding the pepper for HMAC-SHA-256 key hashes.
    pub pepper_env: Option<String>,
    /// File holding the pepper (alternative to `pepper_env`).
    pub pepper_file: Option<String>,
    /// Headers an API key is read from (default `authorization` (Bearer) and `x-api-key`).
    pub api_key_headers: Option<Vec<String>>,
    /// On `serve`, issue one key when the key store is empty and print it once.
    pub bootstrap_key: Option<bool>,
    /// Failed attempts a peer address may make per minute before getting 429.
    pub max_failures_per_minute: Option<u32>,
    /// Peer addresses tracked by the failure limiter (memory bound).
    pub max_tracked_peers: Option<usize>,
    #[serde(default)]
    pub jwt: Vec<JwtIssuerSection>,
}

/// One `[[auth.jwt]]` issuer.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JwtIssuerSection {
    pub issuer: Option<String>,
    #[serde(default)]
    pub audiences: Vec<String>,
    #[serde(default)]
    pub algorithms: Vec<String>,
    pub jwks_file: Option<String>,
    pub jwks_url: Option<String>,
    pub jwks_refresh: Option<String>,
    pub hmac_secret_env: Option<String>,
    pub hmac_secret_file: Option<String>,
    pub leeway: Option<String>,
    pub consumer_claim: Option<String>,
    pub plan_claim: Option<String>,
    pub scopes_claim: Option<String>,
    pub group_claim: Option<String>,
    pub default_plan: Option<String>,
}

/// `[server]`: listeners and process settings (changing them needs a restart).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub threads: Option<usize>,
    /// Let idle worker threads steal tasks from busy ones (default false).
    pub work_stealing: Option<bool>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub grace_period: Option<String>,
    /// Check HTTP upstreams with a TCP connect (default true; `/readyz` and metrics).
    pub upstream_checks: Option<bool>,
    /// How often each HTTP upstream is checked (default 2s).
    pub upstream_check_interval: Option<String>,
    /// Append audit records (JSON lines) to this file instead of stderr.
    pub audit_log: Option<String>,
    /// Reload when the config file or a file it names changes (default true).
    pub watch: Option<bool>,
    /// How often watched files are checked (default 1s); a change is applied once two
    /// checks in a row agree.
    pub watch_interval: Option<String>,
    /// Env var / file holding the bearer token for the `/admin/` endpoints.
    pub admin_token_env: Option<String>,
    pub admin_token_file: Option<String>,
}

/// `[limits]`: bounds on what a client controls, defaults for every route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_body_bytes: Option<u64>,
    pub body_read_timeout: Option<String>,
    /// Time for a request head, from the connection's opening or the previous response.
    pub header_read_timeout: Option<String>,
    pub max_json_depth: Option<usize>,
    /// Most request header fields (Pingora itself refuses more than 256 with a bare 400).
    pub max_header_count: Option<usize>,
    /// Most bytes of request header names and values together.
    pub max_header_bytes: Option<usize>,
}

/// `[inference]`: the embedded backend's blocking worker pool.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InferenceSection {
    pub threads: Option<usize>,
    pub queue_depth: Option<usize>,
}

/// One `[[routes]]` entry.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RouteSection {
    pub name: Option<String>,
    /// Serve the Open Inference Protocol (KServe v2) for this model name at `/v2/models/{model}`.
    pub model: Option<String>,
    /// Serve every path under this prefix (any protocol) from this route's backend.
    pub path_prefix: Option<String>,
    /// Allowed methods for `path_prefix` routes (default: any).
    pub methods: Option<Vec<String>>,
    pub max_body_bytes: Option<u64>,
    /// No credential needed (default false: every model route requires one).
    pub public: Option<bool>,
    /// Pass `Authorization`/API-key headers on to the backend (default false).
    pub forward_credentials: Option<bool>,
    /// Also accept an API key from the `api_key` query parameter (default false).
    pub api_key_in_query: Option<bool>,
    /// Per-route limits replacing the plan's for this route.
    pub limits: Option<LimitsSpecSection>,
    /// A global limit for this route's model, whoever calls.
    pub model_limit: Option<LimitsSpecSection>,
    /// Request cost: `"rows"` (default: the batch size) or a fixed number.
    pub cost: Option<CostSection>,
    pub validate: Option<ValidateSection>,
    pub extraction: Option<ExtractionSection>,
    pub embedded: Option<EmbeddedSection>,
    pub http: Option<HttpSection>,
}

/// `[routes.embedded]`: the bundled ONNX runtime (tract).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddedSection {
    pub onnx: Option<String>,
    pub metadata: Option<String>,
}

/// `[routes.http]`: one or more HTTP backends.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSection {
    #[serde(default)]
    pub upstreams: Vec<String>,
    pub rewrite_prefix: Option<String>,
    pub connect_timeout: Option<String>,
    pub read_timeout: Option<String>,
    pub total_timeout: Option<String>,
}

/// `[routes.extraction]`: model-extraction detection for a KServe v2 model route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExtractionSection {
    /// Calibrated detector profile (`modelgate calibrate`, or the model's shipped one).
    pub profile: Option<String>,
    /// Consumers that get full-precision outputs unless they are suspected.
    #[serde(default)]
    pub trusted: Vec<String>,
    /// The model output the detector scores and hardens (default: the metadata's first).
    pub output: Option<String>,
    /// HTTP backends: cap on the buffered upstream response (default 1 MiB).
    pub max_response_bytes: Option<u64>,
}

/// `cost = "rows"` or `cost = 3`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub enum CostSection {
    Fixed(u32),
    Named(String),
}
