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
    pub routes: Vec<RouteSection>,
}

/// `[server]`: listeners and process settings (changing them needs a restart).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerSection {
    pub listen: Option<String>,
    pub admin_listen: Option<String>,
    pub threads: Option<usize>,
    pub pid_file: Option<String>,
    pub upgrade_sock: Option<String>,
    pub grace_period: Option<String>,
}

/// `[limits]`: bounds on what a client controls, defaults for every route.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitsSection {
    pub max_body_bytes: Option<u64>,
    pub body_read_timeout: Option<String>,
    pub max_json_depth: Option<usize>,
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
