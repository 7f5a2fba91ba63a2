//! File → model: checks every value and collects **every** error with its path.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::file::{
    AuthSection, ConfigFile, ExtractionSection, HttpSection, JwtIssuerSection, RouteSection,
    TelemetrySection,
};
use crate::model::{
    Auth, Backend, Config, Cost, Extraction, HttpBackend, InferencePool, JwksSource, JwtIssuer,
    Limits, OtlpTraces, Protocol, Route, SecretSource, ServerSettings, Telemetry, Validate,
};
use crate::{ConfigError, parse_duration, parse_upstream_url};

/// Default data listener.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8080";
/// Default admin listener (loopback only).
pub const DEFAULT_ADMIN_LISTEN: &str = "127.0.0.1:9090";
/// Default cap on request bodies: 1 MiB.
pub const DEFAULT_MAX_BODY_BYTES: u64 = 1024 * 1024;
/// Default cap on an upstream response buffered for extraction hardening: 1 MiB.
pub const DEFAULT_MAX_RESPONSE_BYTES: u64 = 1024 * 1024;
/// Hard ceiling for any body cap: 64 MiB (the body is buffered in memory).
pub const MAX_BODY_BYTES_CEILING: u64 = 64 * 1024 * 1024;
/// Pingora's own bound on request header fields (beyond it: a bare 400 from Pingora).
pub const PINGORA_MAX_HEADERS: usize = 256;
/// Pingora's own bound on the request head's size in bytes.
pub const PINGORA_MAX_HEADER_BYTES: usize = 1024 * 1024 - 1;

/// Turns a parsed file into a [`Config`]. Relative paths resolve against `base_dir`
/// (the config file's folder). Returns all errors found, each with its path.
pub fn validate(file: &ConfigFile, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let mut v = Validator {
        errors: Vec::new(),
        base_dir,
    };
    let server = v.server(file);
    let limits = v.limits(file);
    let inference = InferencePool {
        threads: v.positive("inference.threads", file.inference.threads, 1),
        queue_depth: v.positive("inference.queue_depth", file.inference.queue_depth, 64),
    };
    let auth = v.auth(&file.auth);
    let routes = v.routes(&file.routes, &limits);
    let telemetry = v.telemetry(&file.telemetry);
    if !auth.enabled() {
        for (i, r) in routes.iter().enumerate() {
            if !r.public {
                v.error(
                    format!("routes[{i}]"),
                    "needs credentials but [auth] has no key_store and no jwt issuer; \
                     configure one or set `public = true`",
                );
            }
        }
    }
    if v.errors.is_empty() {
        Ok(Config {
            server,
            limits,
            inference,
            auth,
            plans: file.plans.clone(),
            routes,
            telemetry,
        })
    } else {
        Err(v.errors)
    }
}

struct Validator<'a> {
    errors: Vec<ConfigError>,
    base_dir: &'a Path,
}

impl Validator<'_> {
    fn error(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.errors.push(ConfigError {
            path: path.into(),
            message: message.into(),
        });
    }

    fn server(&mut self, file: &ConfigFile) -> ServerSettings {
        let s = &file.server;
        let listen = self.socket_addr("server.listen", s.listen.as_deref(), DEFAULT_LISTEN);
        let admin_listen = self.socket_addr(
            "server.admin_listen",
            s.admin_listen.as_deref(),
            DEFAULT_ADMIN_LISTEN,
        );
        if listen == admin_listen && listen.port() != 0 {
            self.error("server.admin_listen", "must differ from server.listen");
        }
        ServerSettings {
            listen,
            admin_listen,
            threads: self.positive("server.threads", s.threads, 2),
            work_stealing: s.work_stealing.unwrap_or(false),
            pid_file: self.path_or(s.pid_file.as_deref(), "/tmp/modelgate.pid"),
            upgrade_sock: self.path_or(s.upgrade_sock.as_deref(), "/tmp/modelgate_upgrade.sock"),
            grace_period: self.duration("server.grace_period", s.grace_period.as_deref(), "10s"),
            upstream_check_interval: {
                let interval = self.duration(
                    "server.upstream_check_interval",
                    s.upstream_check_interval.as_deref(),
                    "2s",
                );
                if interval.is_zero() {
                    self.error(
                        "server.upstream_check_interval",
                        "must be > 0 (use upstream_checks = false)",
                    );
                }
                s.upstream_checks.unwrap_or(true).then_some(interval)
            },
            audit_log: s.audit_log.as_deref().map(|p| self.base_dir.join(p)),
            watch_interval: {
                let interval =
                    self.duration("server.watch_interval", s.watch_interval.as_deref(), "1s");
                if interval.is_zero() {
                    self.error("server.watch_interval", "must be > 0 (use watch = false)");
                }
                s.watch.unwrap_or(true).then_some(interval)
            },
            admin_token: self.secret_source(
                "server.admin_token",
                s.admin_token_env.as_deref(),
                s.admin_token_file.as_deref(),
            ),
        }
    }

    fn limits(&mut self, file: &ConfigFile) -> Limits {
        let l = &file.limits;
        Limits {
            max_body_bytes: self.body_cap(
                "limits.max_body_bytes",
                l.max_body_bytes,
                DEFAULT_MAX_BODY_BYTES,
            ),
            body_read_timeout: self.duration(
                "limits.body_read_timeout",
                l.body_read_timeout.as_deref(),
                "10s",
            ),
            header_read_timeout: self.duration(
                "limits.header_read_timeout",
                l.header_read_timeout.as_deref(),
                "60s",
            ),
            max_json_depth: self.positive("limits.max_json_depth", l.max_json_depth, 64),
            max_header_count: self.bounded(
                "limits.max_header_count",
                l.max_header_count,
                100,
                PINGORA_MAX_HEADERS,
            ),
            max_header_bytes: self.bounded(
                "limits.max_header_bytes",
                l.max_header_bytes,
                32 * 1024,
                PINGORA_MAX_HEADER_BYTES,
            ),
        }
    }

    fn routes(&mut self, routes: &[RouteSection], limits: &Limits) -> Vec<Route> {
        if routes.is_empty() {
            self.error("routes", "at least one route is required");
        }
        let mut names = HashSet::new();
        let mut models = HashSet::new();
        let mut prefixes = HashSet::new();
        let mut out = Vec::with_capacity(routes.len());
        for (i, r) in routes.iter().enumerate() {
            let at = format!("routes[{i}]");
            let name = match &r.name {
                Some(n) if !n.trim().is_empty() => n.clone(),
                _ => {
                    self.error(format!("{at}.name"), "is required");
                    format!("route-{i}")
                }
            };
            if !names.insert(name.clone()) {
                self.error(
                    format!("{at}.name"),
                    format!("duplicate route name {name:?}"),
                );
            }
            if let Some(m) = &r.model {
                if !is_model_name(m) {
                    self.error(
                        format!("{at}.model"),
                        "must be 1-64 chars of [A-Za-z0-9_.-]",
                    );
                } else if !models.insert(m.clone()) {
                    self.error(
                        format!("{at}.model"),
                        format!("model {m:?} is served by two routes"),
                    );
                }
            }
            if let Some(p) = &r.path_prefix {
                if !p.starts_with('/') || p.contains(['?', '#']) || p.contains("//") {
                    self.error(
                        format!("{at}.path_prefix"),
                        "must start with '/' and be a plain path",
                    );
                } else if p.starts_with("/v2/models") || p == "/v2" {
                    self.error(
                        format!("{at}.path_prefix"),
                        "/v2/models is reserved; use `model`",
                    );
                } else if !prefixes.insert(p.trim_end_matches('/').to_string()) {
                    self.error(
                        format!("{at}.path_prefix"),
                        format!("{p:?} is used by two routes"),
                    );
                }
            }
            if r.model.is_none() && r.path_prefix.is_none() {
                self.error(&at, "needs `model` or `path_prefix`");
            }
            let methods = r.methods.as_ref().map(|ms| {
                ms.iter()
                    .enumerate()
                    .filter_map(|(j, m)| {
                        let up = m.to_ascii_uppercase();
                        if up.is_empty() || !up.bytes().all(|b| b.is_ascii_uppercase()) {
                            self.error(
                                format!("{at}.methods[{j}]"),
                                format!("{m:?} is not a method"),
                            );
                            None
                        } else {
                            Some(up)
                        }
                    })
                    .collect()
            });
            let max_body_bytes = self.body_cap(
                &format!("{at}.max_body_bytes"),
                r.max_body_bytes,
                limits.max_body_bytes,
            );
            let backend = self.backend(&at, r);
            out.push(Route {
                name,
                model: r.model.clone(),
                path_prefix: r
                    .path_prefix
                    .as_ref()
                    .map(|p| p.trim_end_matches('/').to_string()),
                methods,
                max_body_bytes,
                public: r.public.unwrap_or(false),
                forward_credentials: r.forward_credentials.unwrap_or(false),
                api_key_in_query: r.api_key_in_query.unwrap_or(false),
                limits: r.limits.clone(),
                model_limit: r.model_limit.clone(),
                cost: self.cost(&at, r.cost.as_ref()),
                validate: self.validate_section(&at, r),
                extraction: r.extraction.as_ref().map(|e| self.extraction(&at, r, e)),
                backend,
            });
        }
        out
    }

    fn auth(&mut self, a: &AuthSection) -> Auth {
        let pepper = self.secret_source(
            "auth.pepper",
            a.pepper_env.as_deref(),
            a.pepper_file.as_deref(),
        );
        let api_key_headers = match &a.api_key_headers {
            None => vec!["authorization".to_string(), "x-api-key".to_string()],
            Some(list) => {
                if list.is_empty() {
                    self.error("auth.api_key_headers", "must name at least one header");
                }
                list.iter()
                    .enumerate()
                    .map(|(i, h)| {
                        let lower = h.to_ascii_lowercase();
                        if lower.is_empty()
                            || !lower
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                        {
                            self.error(
                                format!("auth.api_key_headers[{i}]"),
                                format!("{h:?} is not a header name"),
                            );
                        }
                        lower
                    })
                    .collect()
            }
        };
        let max_failures_per_minute = match a.max_failures_per_minute {
            Some(0) => {
                self.error("auth.max_failures_per_minute", "must be > 0");
                30
            }
            Some(n) => n,
            None => 30,
        };
        let jwt = a
            .jwt
            .iter()
            .enumerate()
            .map(|(i, j)| self.jwt_issuer(&format!("auth.jwt[{i}]"), j))
            .collect();
        Auth {
            key_store: a.key_store.as_deref().map(|p| self.base_dir.join(p)),
            pepper,
            api_key_headers,
            bootstrap_key: a.bootstrap_key.unwrap_or(false),
            max_failures_per_minute,
            max_tracked_peers: self.positive("auth.max_tracked_peers", a.max_tracked_peers, 10_000),
            jwt,
        }
    }

    fn jwt_issuer(&mut self, at: &str, j: &JwtIssuerSection) -> JwtIssuer {
        const ALGORITHMS: [&str; 12] = [
            "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "EdDSA",
            "HS256", "HS384", "HS512",
        ];
        let issuer = j.issuer.clone().unwrap_or_default();
        if issuer.is_empty() {
            self.error(format!("{at}.issuer"), "is required");
        }
        if j.audiences.is_empty() || j.audiences.iter().any(String::is_empty) {
            self.error(
                format!("{at}.audiences"),
                "at least one non-empty audience is required",
            );
        }
        if j.algorithms.is_empty() {
            self.error(
                format!("{at}.algorithms"),
                "at least one algorithm is required",
            );
        }
        for (k, alg) in j.algorithms.iter().enumerate() {
            if !ALGORITHMS.contains(&alg.as_str()) {
                self.error(
                    format!("{at}.algorithms[{k}]"),
                    format!("{alg:?} is not one of {}", ALGORITHMS.join(", ")),
                );
            }
        }
        let hmac_secret = self.secret_source(
            &format!("{at}.hmac_secret"),
            j.hmac_secret_env.as_deref(),
            j.hmac_secret_file.as_deref(),
        );
        let wants_hmac = j.algorithms.iter().any(|a| a.starts_with("HS"));
        if wants_hmac && hmac_secret.is_none() {
            self.error(
                format!("{at}.algorithms"),
                "HS* algorithms need hmac_secret_env or hmac_secret_file",
            );
        }
        let refresh = self.duration(
            &format!("{at}.jwks_refresh"),
            j.jwks_refresh.as_deref(),
            "5m",
        );
        let jwks = match (&j.jwks_file, &j.jwks_url) {
            (Some(_), Some(_)) => {
                self.error(at, "set jwks_file or jwks_url, not both");
                JwksSource::None
            }
            (Some(file), None) => {
                JwksSource::File(self.required_file(&format!("{at}.jwks_file"), Some(file)))
            }
            (None, Some(url)) => match parse_upstream_url(url) {
                Ok(url) => JwksSource::Url { url, refresh },
                Err(e) => {
                    self.error(format!("{at}.jwks_url"), e);
                    JwksSource::None
                }
            },
            (None, None) => {
                if j.algorithms.iter().any(|a| !a.starts_with("HS")) {
                    self.error(at, "asymmetric algorithms need jwks_file or jwks_url");
                }
                JwksSource::None
            }
        };
        let claim = |value: &Option<String>, default: &str| {
            value.clone().unwrap_or_else(|| default.to_string())
        };
        JwtIssuer {
            issuer,
            audiences: j.audiences.clone(),
            algorithms: j.algorithms.clone(),
            jwks,
            hmac_secret,
            leeway: self.duration_allow_zero(&format!("{at}.leeway"), j.leeway.as_deref(), "60s"),
            consumer_claim: claim(&j.consumer_claim, "sub"),
            plan_claim: claim(&j.plan_claim, "plan"),
            scopes_claim: claim(&j.scopes_claim, "scope"),
            group_claim: j.group_claim.clone(),
            default_plan: claim(&j.default_plan, "default"),
        }
    }

    fn secret_source(
        &mut self,
        at: &str,
        env: Option<&str>,
        file: Option<&str>,
    ) -> Option<SecretSource> {
        match (env, file) {
            (Some(_), Some(_)) => {
                self.error(at, "set the _env or the _file variant, not both");
                None
            }
            (Some(var), None) => Some(SecretSource::Env(var.to_string())),
            (None, Some(file)) => Some(SecretSource::File(self.base_dir.join(file))),
            (None, None) => None,
        }
    }

    fn cost(&mut self, at: &str, cost: Option<&crate::file::CostSection>) -> Cost {
        use crate::file::CostSection;
        match cost {
            None => Cost::Rows,
            Some(CostSection::Named(n)) if n == "rows" => Cost::Rows,
            Some(CostSection::Fixed(n)) if *n > 0 => Cost::Fixed(*n),
            Some(_) => {
                self.error(format!("{at}.cost"), "must be \"rows\" or a number > 0");
                Cost::Rows
            }
        }
    }

    fn validate_section(&mut self, at: &str, r: &RouteSection) -> Validate {
        let v = r.validate.clone().unwrap_or_default();
        let protocol = match v.protocol.as_deref() {
            None if r.model.is_some() => Protocol::V2,
            None | Some("none") => Protocol::None,
            Some("v2") => Protocol::V2,
            Some("tf_serving") => Protocol::TfServing,
            Some(other) => {
                self.error(
                    format!("{at}.validate.protocol"),
                    format!("{other:?} is not one of v2, tf_serving, none"),
                );
                Protocol::None
            }
        };
        let json_schema = v
            .json_schema
            .as_deref()
            .map(|p| self.required_file(&format!("{at}.validate.json_schema"), Some(p)));
        let metadata = v
            .metadata
            .as_deref()
            .map(|p| self.required_file(&format!("{at}.validate.metadata"), Some(p)));
        Validate {
            protocol,
            json_schema,
            metadata,
            max_errors: self.positive(&format!("{at}.validate.max_errors"), v.max_errors, 10),
            gzip: v.gzip.unwrap_or(false),
        }
    }

    fn backend(&mut self, at: &str, r: &RouteSection) -> Backend {
        match (&r.embedded, &r.http) {
            (Some(e), None) => {
                let onnx = self.required_file(&format!("{at}.embedded.onnx"), e.onnx.as_deref());
                let metadata =
                    self.required_file(&format!("{at}.embedded.metadata"), e.metadata.as_deref());
                if r.model.is_none() {
                    self.error(
                        format!("{at}.embedded"),
                        "an embedded backend needs `model`",
                    );
                }
                Backend::Embedded { onnx, metadata }
            }
            (None, Some(h)) => Backend::Http(self.http(&format!("{at}.http"), h)),
            (Some(_), Some(_)) => {
                self.error(at, "set exactly one of `embedded` or `http`, not both");
                Backend::Http(self.http(&format!("{at}.http"), &HttpSection::default()))
            }
            (None, None) => {
                self.error(
                    at,
                    "needs a backend: `[routes.embedded]` or `[routes.http]`",
                );
                Backend::Http(self.http(&format!("{at}.http"), &HttpSection::default()))
            }
        }
    }

    /// `[routes.extraction]`: only on a KServe v2 model route (`model`, no `path_prefix`,
    /// protocol v2), so every inference the route forwards is scored.
    fn extraction(&mut self, at: &str, r: &RouteSection, e: &ExtractionSection) -> Extraction {
        let v2 = matches!(
            r.validate.as_ref().and_then(|v| v.protocol.as_deref()),
            None | Some("v2")
        );
        if r.model.is_none() || r.path_prefix.is_some() || !v2 {
            self.error(
                format!("{at}.extraction"),
                "needs a KServe v2 model route: `model` set, no `path_prefix`, validate.protocol v2",
            );
        }
        let max_response_bytes = self.body_cap(
            &format!("{at}.extraction.max_response_bytes"),
            e.max_response_bytes,
            DEFAULT_MAX_RESPONSE_BYTES,
        );
        if e.max_response_bytes.is_some() && r.http.is_none() {
            self.error(
                format!("{at}.extraction.max_response_bytes"),
                "applies to HTTP backends only",
            );
        }
        Extraction {
            profile: self.required_file(&format!("{at}.extraction.profile"), e.profile.as_deref()),
            trusted: e.trusted.clone(),
            output: e.output.clone(),
            max_response_bytes,
        }
    }

    fn http(&mut self, at: &str, h: &HttpSection) -> HttpBackend {
        if h.upstreams.is_empty() {
            self.error(
                format!("{at}.upstreams"),
                "at least one upstream URL is required",
            );
        }
        let upstreams = h
            .upstreams
            .iter()
            .enumerate()
            .filter_map(|(i, u)| match parse_upstream_url(u) {
                Ok(url) => Some(url),
                Err(e) => {
                    self.error(format!("{at}.upstreams[{i}]"), e);
                    None
                }
            })
            .collect();
        if let Some(p) = &h.rewrite_prefix
            && (!p.starts_with('/') || p.contains(['?', '#']))
        {
            self.error(
                format!("{at}.rewrite_prefix"),
                "must start with '/' and be a plain path",
            );
        }
        let connect_timeout = self.duration(
            &format!("{at}.connect_timeout"),
            h.connect_timeout.as_deref(),
            "2s",
        );
        let read_timeout = self.duration(
            &format!("{at}.read_timeout"),
            h.read_timeout.as_deref(),
            "30s",
        );
        let total_timeout = self.duration(
            &format!("{at}.total_timeout"),
            h.total_timeout.as_deref(),
            "60s",
        );
        if total_timeout < connect_timeout {
            self.error(format!("{at}.total_timeout"), "must be >= connect_timeout");
        }
        HttpBackend {
            upstreams,
            rewrite_prefix: h
                .rewrite_prefix
                .as_ref()
                .map(|p| p.trim_end_matches('/').to_string()),
            connect_timeout,
            read_timeout,
            total_timeout,
        }
    }

    fn telemetry(&mut self, t: &TelemetrySection) -> Telemetry {
        let service_name = t.service_name.as_deref().unwrap_or("modelgate");
        let name_ok = (1..=255).contains(&service_name.len())
            && service_name
                .bytes()
                .all(|b| b.is_ascii_graphic() || b == b' ');
        if !name_ok {
            self.error(
                "telemetry.service_name",
                "must be 1-255 printable ASCII characters",
            );
        }
        let sampling_ratio = t.sampling_ratio.unwrap_or(1.0);
        if !(0.0..=1.0).contains(&sampling_ratio) {
            self.error("telemetry.sampling_ratio", "must be between 0.0 and 1.0");
        }
        let export_timeout = self.duration(
            "telemetry.export_timeout",
            t.export_timeout.as_deref(),
            "10s",
        );
        let endpoint = t.otlp_endpoint.as_deref().and_then(|text| {
            let parsed = if text.starts_with("https://") {
                Err(format!(
                    "invalid URL {text:?}: https is not supported; export to a collector \
                     on http:// (e.g. a local agent)"
                ))
            } else {
                parse_upstream_url(text)
            };
            parsed
                .map_err(|e| self.error("telemetry.otlp_endpoint", e))
                .ok()
        });
        Telemetry {
            traces: endpoint.map(|mut endpoint| {
                if endpoint.base_path.is_empty() {
                    endpoint.base_path = "/v1/traces".to_string();
                }
                OtlpTraces {
                    endpoint,
                    service_name: service_name.to_string(),
                    sampling_ratio,
                    export_timeout,
                }
            }),
        }
    }

    fn socket_addr(&mut self, path: &str, value: Option<&str>, default: &str) -> SocketAddr {
        let text = value.unwrap_or(default);
        text.parse().unwrap_or_else(|_| {
            self.error(
                path,
                format!("{text:?} is not an address like \"127.0.0.1:8080\""),
            );
            SocketAddr::from(([127, 0, 0, 1], 0))
        })
    }

    /// Like [`Self::positive`], and at most `max`.
    fn bounded(&mut self, path: &str, value: Option<usize>, default: usize, max: usize) -> usize {
        let value = self.positive(path, value, default);
        if value > max {
            self.error(path, format!("must be at most {max}"));
            return default;
        }
        value
    }

    fn positive(&mut self, path: &str, value: Option<usize>, default: usize) -> usize {
        match value {
            Some(0) => {
                self.error(path, "must be > 0");
                default
            }
            Some(v) => v,
            None => default,
        }
    }

    fn body_cap(&mut self, path: &str, value: Option<u64>, default: u64) -> u64 {
        match value {
            Some(0) => {
                self.error(path, "must be > 0");
                default
            }
            Some(v) if v > MAX_BODY_BYTES_CEILING => {
                self.error(
                    path,
                    format!("must be <= {MAX_BODY_BYTES_CEILING} (64 MiB)"),
                );
                default
            }
            Some(v) => v,
            None => default,
        }
    }

    fn duration(&mut self, path: &str, value: Option<&str>, default: &str) -> Duration {
        match parse_duration(value.unwrap_or(default)) {
            Ok(d) if d.is_zero() => {
                self.error(path, "must be > 0");
                Duration::from_secs(1)
            }
            Ok(d) => d,
            Err(e) => {
                self.error(path, e);
                Duration::from_secs(1)
            }
        }
    }

    fn duration_allow_zero(&mut self, path: &str, value: Option<&str>, default: &str) -> Duration {
        parse_duration(value.unwrap_or(default)).unwrap_or_else(|e| {
            self.error(path, e);
            Duration::ZERO
        })
    }

    fn path_or(&self, value: Option<&str>, default: &str) -> PathBuf {
        self.base_dir.join(value.unwrap_or(default))
    }

    fn required_file(&mut self, path: &str, value: Option<&str>) -> PathBuf {
        let Some(value) = value else {
            self.error(path, "is required");
            return PathBuf::new();
        };
        let full = self.base_dir.join(value);
        if !full.is_file() {
            self.error(path, format!("file {} not found", full.display()));
        }
        full
    }
}

/// Model names appear in URLs and metric labels: a short, safe charset.
fn is_model_name(name: &str) -> bool {
    (1..=64).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'))
}
