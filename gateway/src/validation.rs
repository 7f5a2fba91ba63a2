//! The validate stage as a route sees it: the model contract and JSON Schema compiled once
//! per snapshot, applied to the buffered body before any upstream is chosen.

use std::sync::Arc;
use std::time::Duration;

use http::HeaderMap;

use modelgate_config::{Backend, ConfigError, Protocol, Route};
use modelgate_plugins::Denial;
use modelgate_plugins::schema::{
    InferFormat, JsonSchema, ModelContract, ValidatedRequest, ValidationLimits, validate_infer,
    validate_json,
};

use crate::http_get;

const METADATA_TIMEOUT: Duration = Duration::from_secs(5);
const METADATA_MAX_BYTES: usize = 1024 * 1024;

/// One route's checks.
pub struct RouteValidation {
    pub contract: Option<Arc<ModelContract>>,
    format: InferFormat,
    schema: Option<JsonSchema>,
    limits: ValidationLimits,
}

impl RouteValidation {
    /// Compiles the route's schema and loads its contract: the embedded model's metadata, the
    /// `validate.metadata` file, or the backend's `GET /v2/models/{m}`. Errors carry paths.
    pub fn build(
        at: &str,
        route: &Route,
        max_depth: usize,
    ) -> Result<RouteValidation, ConfigError> {
        let fail = |path: &str, message: String| ConfigError {
            path: format!("{at}.{path}"),
            message,
        };
        let v = &route.validate;
        let limits = ValidationLimits {
            max_depth,
            max_errors: v.max_errors,
            allow_gzip: v.gzip,
            ..ValidationLimits::default()
        };
        let schema = match &v.json_schema {
            None => None,
            Some(path) => {
                let doc = read_json(path).map_err(|e| fail("validate.json_schema", e))?;
                Some(
                    JsonSchema::compile(&doc, None)
                        .map_err(|e| fail("validate.json_schema", e.to_string()))?,
                )
            }
        };
        let embedded_metadata = match &route.backend {
            Backend::Embedded { metadata, .. } => Some(metadata),
            Backend::Http(_) => None,
        };
        let contract = match (
            embedded_metadata.or(v.metadata.as_ref()),
            v.protocol,
            &route.backend,
        ) {
            // The embedded backend always runs on a checked request.
            (Some(path), _, Backend::Embedded { .. }) => {
                Some(load_contract(path).map_err(|e| fail("embedded.metadata", e))?)
            }
            (_, Protocol::None, _) => None,
            (Some(path), _, _) => {
                Some(load_contract(path).map_err(|e| fail("validate.metadata", e))?)
            }
            (None, _, Backend::Http(http)) => {
                let model = route.model.as_deref().ok_or_else(|| {
                    fail(
                        "validate.metadata",
                        "a path-prefix route checked against a model needs a metadata file".into(),
                    )
                })?;
                let mut url = http
                    .upstreams
                    .first()
                    .cloned()
                    .ok_or_else(|| fail("http.upstreams", "empty".into()))?;
                url.base_path = format!("{}/v2/models/{model}", url.base_path);
                let body =
                    http_get::get(&url, METADATA_TIMEOUT, METADATA_MAX_BYTES).map_err(|e| {
                        fail(
                            "validate.metadata",
                            format!(
                                "no metadata file and the backend's metadata is unavailable: {e}"
                            ),
                        )
                    })?;
                let doc: serde_json::Value = serde_json::from_slice(&body).map_err(|e| {
                    fail(
                        "validate.metadata",
                        format!("backend metadata is not JSON: {e}"),
                    )
                })?;
                Some(
                    ModelContract::from_metadata_json(&doc)
                        .map_err(|e| fail("validate.metadata", e.to_string()))?,
                )
            }
            (None, _, Backend::Embedded { .. }) => None,
        };
        let format = match v.protocol {
            Protocol::TfServing => InferFormat::TfPredict,
            _ => InferFormat::V2,
        };
        Ok(RouteValidation {
            contract: contract.map(Arc::new),
            format,
            schema,
            limits,
        })
    }

    /// Checks an inference body (contract first, then the route's schema on the JSON).
    /// `Ok(None)` when the route has no contract.
    pub fn check_infer(
        &self,
        headers: &HeaderMap,
        body: &[u8],
    ) -> Result<Option<ValidatedRequest>, Denial> {
        self.check_schema(headers, body)?;
        match &self.contract {
            Some(contract) => {
                validate_infer(self.format, headers, body, contract, &self.limits).map(Some)
            }
            None => Ok(None),
        }
    }

    /// Checks any other body with a payload against the route's JSON Schema, if it has one.
    pub fn check_schema(&self, headers: &HeaderMap, body: &[u8]) -> Result<(), Denial> {
        match &self.schema {
            Some(schema) if !body.is_empty() => {
                validate_json(headers, body, schema, &self.limits).map(|_| ())
            }
            _ => Ok(()),
        }
    }

    /// Whether bodies on this route's non-v2 paths are inference requests (TF-Serving).
    pub fn is_tf_serving(&self) -> bool {
        self.format == InferFormat::TfPredict
    }
}

fn load_contract(path: &std::path::Path) -> Result<ModelContract, String> {
    ModelContract::from_metadata_json(&read_json(path)?).map_err(|e| e.to_string())
}

fn read_json(path: &std::path::Path) -> Result<serde_json::Value, String> {
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    serde_json::from_slice(&bytes).map_err(|e| format!("{} is not JSON: {e}", path.display()))
}
