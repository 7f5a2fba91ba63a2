//! modelgate's configuration: the file's types ([`file`]), validation that reports every
//! error with its path ([`validate()`]), and the validated model the gateway builds from
//! ([`Config`]).

pub mod duration;
pub mod file;
pub mod model;
pub mod upstream_url;
pub mod validate;

use std::fmt;
use std::path::Path;

pub use duration::parse_duration;
pub use file::{ConfigFile, LimitsSpecSection};
pub use model::{
    Auth, Backend, Config, Cost, Extraction, HttpBackend, InferencePool, JwksSource, JwtIssuer,
    Limits, OtlpTraces, Protocol, Route, SecretSource, ServerSettings, Telemetry, Validate,
};
pub use upstream_url::{UpstreamUrl, parse_upstream_url};
pub use validate::validate;

/// One problem in a config, at a path such as `routes[1].http.upstreams[0]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    pub path: String,
    pub message: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.path.is_empty() {
            write!(f, "{}", self.message)
        } else {
            write!(f, "{}: {}", self.path, self.message)
        }
    }
}

/// Parses TOML text; relative paths in it resolve against `base_dir`.
pub fn parse(text: &str, base_dir: &Path) -> Result<Config, Vec<ConfigError>> {
    let file: ConfigFile = toml::from_str(text).map_err(|e| vec![toml_error(&e, text)])?;
    validate(&file, base_dir)
}

/// Reads, parses and validates the file at `path`.
pub fn load(path: &Path) -> Result<Config, Vec<ConfigError>> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        vec![ConfigError {
            path: String::new(),
            message: format!("cannot read {}: {e}", path.display()),
        }]
    })?;
    let base_dir = path.parent().unwrap_or(Path::new("."));
    let base_dir = if base_dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        base_dir
    };
    parse(&text, base_dir)
}

fn toml_error(e: &toml::de::Error, text: &str) -> ConfigError {
    let location = e.span().map(|span| {
        let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
        format!("line {line}")
    });
    ConfigError {
        path: location.unwrap_or_default(),
        message: e.message().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    const EMBEDDED: &str = r#"
[[routes]]
name = "digits"
model = "digits"
public = true
[routes.embedded]
onnx = "Cargo.toml"
metadata = "Cargo.toml"
"#;

    fn here() -> &'static Path {
        Path::new(env!("CARGO_MANIFEST_DIR"))
    }

    #[test]
    fn minimal_config_gets_secure_defaults() {
        let c = parse(EMBEDDED, here()).unwrap();
        assert_eq!(c.server.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.server.admin_listen.to_string(), "127.0.0.1:9090");
        assert_eq!(c.limits.max_body_bytes, 1024 * 1024);
        assert_eq!(c.limits.max_json_depth, 64);
        assert_eq!(c.limits.max_header_count, 100);
        assert_eq!(c.limits.max_header_bytes, 32 * 1024);
        assert_eq!(c.routes[0].max_body_bytes, 1024 * 1024);
        assert!(matches!(c.routes[0].backend, Backend::Embedded { .. }));
        assert!(
            !c.server.work_stealing,
            "connections stay on their thread by default"
        );
        let stealing = parse(
            &format!("[server]\nwork_stealing = true\n{EMBEDDED}"),
            here(),
        );
        assert!(stealing.unwrap().server.work_stealing);
    }

    #[test]
    fn the_watcher_sees_every_named_file_and_can_be_turned_off() {
        let c = parse(EMBEDDED, here()).unwrap();
        assert_eq!(c.server.watch_interval, Some(Duration::from_secs(1)));
        let files = c.named_files();
        assert!(files.iter().all(|f| f.is_absolute()), "{files:?}");
        assert!(files.contains(&here().join("Cargo.toml")), "{files:?}");
        let shipped = load(&here().join("modelgate.toml")).unwrap();
        let names: Vec<String> = shipped
            .named_files()
            .iter()
            .filter_map(|f| Some(f.file_name()?.to_str()?.to_string()))
            .collect();
        for want in [
            "keys.json",
            "digits.onnx",
            "digits.json",
            "digits.profile.json",
        ] {
            assert!(
                names.iter().any(|n| n == want),
                "{want} not watched: {names:?}"
            );
        }
        let off = parse(&format!("[server]\nwatch = false\n{EMBEDDED}"), here()).unwrap();
        assert_eq!(off.server.watch_interval, None);
        let e = parse(
            &format!("[server]\nwatch_interval = \"0s\"\n{EMBEDDED}"),
            here(),
        )
        .unwrap_err();
        assert_eq!(e[0].path, "server.watch_interval");
    }

    #[test]
    fn http_route_parses_upstreams_and_timeouts() {
        let text = r#"
[[routes]]
name = "echo"
path_prefix = "/echo/"
public = true
methods = ["post", "GET"]
max_body_bytes = 10
[routes.http]
upstreams = ["http://127.0.0.1:9001", "http://127.0.0.1:9002/base"]
rewrite_prefix = "/predict"
connect_timeout = "250ms"
read_timeout = "5s"
total_timeout = "9s"
"#;
        let c = parse(text, here()).unwrap();
        let r = &c.routes[0];
        assert_eq!(r.path_prefix.as_deref(), Some("/echo"));
        assert_eq!(r.methods, Some(vec!["POST".to_string(), "GET".to_string()]));
        assert_eq!(r.max_body_bytes, 10);
        let Backend::Http(h) = &r.backend else {
            panic!("not http")
        };
        assert_eq!(h.upstreams.len(), 2);
        assert_eq!(h.upstreams[1].base_path, "/base");
        assert_eq!(h.connect_timeout, Duration::from_millis(250));
        assert_eq!(h.total_timeout, Duration::from_secs(9));
    }

    #[test]
    fn extraction_needs_a_v2_model_route_of_either_backend() {
        let http = |extra: &str, section: &str| {
            format!(
                "[[routes]]\nname = \"m\"\nmodel = \"m\"\npublic = true\n{extra}\
                 [routes.http]\nupstreams = [\"http://127.0.0.1:9001\"]\n\
                 [routes.extraction]\nprofile = \"Cargo.toml\"\n{section}"
            )
        };
        let c = parse(
            &http("", "output = \"probs\"\nmax_response_bytes = 2048\n"),
            here(),
        )
        .unwrap();
        let e = c.routes[0].extraction.as_ref().unwrap();
        assert_eq!(e.output.as_deref(), Some("probs"));
        assert_eq!(e.max_response_bytes, 2048);
        let c = parse(&http("", ""), here()).unwrap();
        assert_eq!(
            c.routes[0].extraction.as_ref().unwrap().max_response_bytes,
            1024 * 1024
        );
        for (extra, section, path) in [
            ("path_prefix = \"/m\"\n", "", "routes[0].extraction"),
            (
                "[routes.validate]\nprotocol = \"tf_serving\"\nmetadata = \"Cargo.toml\"\n",
                "",
                "routes[0].extraction",
            ),
            (
                "",
                "max_response_bytes = 0\n",
                "routes[0].extraction.max_response_bytes",
            ),
        ] {
            let e = parse(&http(extra, section), here()).unwrap_err();
            assert_eq!(e[0].path, path, "{e:?}");
        }
        let e = parse(
            &format!(
                "{EMBEDDED}[routes.extraction]\nprofile = \"Cargo.toml\"\nmax_response_bytes = 9\n"
            ),
            here(),
        )
        .unwrap_err();
        assert_eq!(e[0].path, "routes[0].extraction.max_response_bytes");
    }

    #[test]
    fn reports_every_error_with_its_path() {
        let text = r#"
[server]
listen = "nowhere"
[limits]
max_body_bytes = 0
max_header_count = 300
max_header_bytes = 0
[[routes]]
name = "a"
model = "has space"
[routes.http]
upstreams = ["ftp://x", "http://ok:1"]
connect_timeout = "soon"
[[routes]]
name = "a"
[routes.embedded]
onnx = "missing.onnx"
"#;
        let errors = parse(text, here()).unwrap_err();
        let shown: Vec<String> = errors.iter().map(ToString::to_string).collect();
        let expect = [
            "server.listen:",
            "limits.max_body_bytes: must be > 0",
            "limits.max_header_count: must be at most 256",
            "limits.max_header_bytes: must be > 0",
            "routes[0].model:",
            "routes[0].http.upstreams[0]: invalid URL \"ftp://x\"",
            "routes[0].http.connect_timeout:",
            "routes[1].name: duplicate route name",
            "routes[1]: needs `model` or `path_prefix`",
            "routes[1].embedded.onnx: file",
            "routes[1].embedded.metadata: is required",
        ];
        for e in expect {
            assert!(
                shown.iter().any(|s| s.starts_with(e)),
                "missing {e:?} in {shown:#?}"
            );
        }
    }

    #[test]
    fn telemetry_is_off_by_default_and_parses_an_otlp_endpoint() {
        let c = parse(EMBEDDED, here()).unwrap();
        assert_eq!(c.telemetry.traces, None);
        let text = format!(
            "{EMBEDDED}\n[telemetry]\notlp_endpoint = \"http://127.0.0.1:4318\"\n\
             service_name = \"gw-eu\"\nsampling_ratio = 0.25\nexport_timeout = \"2s\"\n"
        );
        let t = parse(&text, here()).unwrap().telemetry.traces.unwrap();
        assert_eq!(t.endpoint.authority(), "127.0.0.1:4318");
        assert_eq!(t.endpoint.base_path, "/v1/traces");
        assert_eq!(t.service_name, "gw-eu");
        assert_eq!(t.sampling_ratio, 0.25);
        assert_eq!(t.export_timeout, Duration::from_secs(2));
        let custom =
            format!("{EMBEDDED}\n[telemetry]\notlp_endpoint = \"http://c:1/otlp/spans\"\n");
        let t = parse(&custom, here()).unwrap().telemetry.traces.unwrap();
        assert_eq!(t.endpoint.base_path, "/otlp/spans");
    }

    #[test]
    fn telemetry_errors_name_their_keys() {
        let text = format!(
            "{EMBEDDED}\n[telemetry]\notlp_endpoint = \"https://collector:4318\"\n\
             service_name = \"\"\nsampling_ratio = 1.5\nexport_timeout = \"0s\"\n"
        );
        let shown: Vec<String> = parse(&text, here())
            .unwrap_err()
            .iter()
            .map(ToString::to_string)
            .collect();
        for e in [
            "telemetry.otlp_endpoint: invalid URL \"https://collector:4318\": https is not supported",
            "telemetry.service_name: must be 1-255",
            "telemetry.sampling_ratio: must be between 0.0 and 1.0",
            "telemetry.export_timeout: must be > 0",
        ] {
            assert!(
                shown.iter().any(|s| s.starts_with(e)),
                "missing {e:?} in {shown:#?}"
            );
        }
        let e = parse(
            &format!("{EMBEDDED}\n[telemetry]\notlp_endpoint = \"collector:4318\"\n"),
            here(),
        )
        .unwrap_err();
        assert_eq!(e[0].path, "telemetry.otlp_endpoint", "{e:?}");
        let e = parse(
            &format!("{EMBEDDED}\n[telemetry]\nendpoint = \"x\"\n"),
            here(),
        )
        .unwrap_err();
        assert!(e[0].message.contains("endpoint"), "{e:?}");
    }

    #[test]
    fn unknown_keys_and_syntax_errors_are_refused() {
        let e = parse("[server]\nlisten_typo = 1\n", here()).unwrap_err();
        assert!(e[0].message.contains("listen_typo"), "{e:?}");
        let e = parse("[[routes]\n", here()).unwrap_err();
        assert_eq!(e[0].path, "line 1");
    }

    #[test]
    fn both_or_no_backend_is_an_error() {
        let text = "[[routes]]\nname='x'\npath_prefix='/x'\n[routes.embedded]\n[routes.http]\n";
        let e = parse(text, here()).unwrap_err();
        assert!(e.iter().any(|e| e.message.contains("exactly one")), "{e:?}");
        let e = parse("[[routes]]\nname='x'\npath_prefix='/x'\n", here()).unwrap_err();
        assert!(
            e.iter().any(|e| e.message.contains("needs a backend")),
            "{e:?}"
        );
    }

    #[test]
    fn reserved_and_duplicate_paths_are_refused() {
        let text = r#"
[[routes]]
name = "a"
path_prefix = "/v2/models/x"
[routes.http]
upstreams = ["http://h:1"]
[[routes]]
name = "b"
path_prefix = "/p"
[routes.http]
upstreams = ["http://h:1"]
[[routes]]
name = "c"
path_prefix = "/p/"
[routes.http]
upstreams = ["http://h:1"]
"#;
        let e = parse(text, here()).unwrap_err();
        assert!(
            e.iter()
                .any(|e| e.path == "routes[0].path_prefix" && e.message.contains("reserved"))
        );
        assert!(
            e.iter()
                .any(|e| e.path == "routes[2].path_prefix" && e.message.contains("two routes"))
        );
    }
}
