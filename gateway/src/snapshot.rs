//! A config generation made ready to serve: routes indexed, models loaded, upstreams
//! resolved. Built completely before it is used; requests pin one snapshot for their life.

use std::path::Path;
use std::sync::Arc;

use modelgate_config::{Backend, Config, ConfigError, Extraction, Route};
use modelgate_plugins::extraction::{Detector, DetectorOptions, Profile};
use modelgate_plugins::schema::{Datatype, ModelContract};

use crate::authn::Authenticator;
use crate::embedded::EmbeddedModel;
use crate::forward::HttpUpstreams;
use crate::limits::PlanLimits;
use crate::routes::RouteIndex;
use crate::validation::RouteValidation;

/// One route with its backend built.
pub struct BuiltRoute {
    /// The route's name, shared with logs and metrics without copying.
    pub name: Arc<str>,
    /// The model it serves (`model` routes), shared with the access log.
    pub model: Option<Arc<str>>,
    pub config: Route,
    pub backend: BuiltBackend,
    pub validation: RouteValidation,
    /// The route's extraction detector; its state is carried over reloads while the
    /// route keeps the same profile.
    pub extraction: Option<Arc<ExtractionGuard>>,
}

/// A route's detector, who it trusts, and what it scores.
pub struct ExtractionGuard {
    pub detector: Arc<Detector>,
    pub trusted: Vec<String>,
    /// The model output the detector scores and hardens (a name in the model's metadata).
    pub output: String,
    /// Cap on an upstream response buffered for hardening (HTTP backends).
    pub max_response_bytes: usize,
}

/// A route's backend, ready to take requests.
pub enum BuiltBackend {
    Embedded(Arc<EmbeddedModel>),
    Http(HttpUpstreams),
}

/// Everything a request needs from the configuration.
pub struct Snapshot {
    pub generation: u64,
    pub config: Config,
    pub index: RouteIndex,
    pub routes: Vec<BuiltRoute>,
    pub auth: Authenticator,
    pub limits: PlanLimits,
}

impl Snapshot {
    /// Builds every route's backend and the auth stage; collects every failure with its
    /// config path. State that outlives a generation is taken over from `previous`.
    pub fn build(
        config: Config,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, Vec<ConfigError>> {
        let mut errors = Vec::new();
        let auth = Authenticator::build(&config.auth, previous.map(|p| &p.auth))
            .map_err(|e| errors.extend(e))
            .ok();
        let mut routes = Vec::with_capacity(config.routes.len());
        for (i, route) in config.routes.iter().enumerate() {
            let backend = match &route.backend {
                Backend::Embedded { onnx, metadata } => match EmbeddedModel::load(onnx, metadata) {
                    Ok(model) => {
                        let served = route.model.as_deref().unwrap_or_default();
                        if model.metadata().name != served {
                            errors.push(ConfigError {
                                path: format!("routes[{i}].model"),
                                message: format!(
                                    "{served:?} differs from the metadata's model name {:?}",
                                    model.metadata().name
                                ),
                            });
                        }
                        Some(BuiltBackend::Embedded(Arc::new(model)))
                    }
                    Err(message) => {
                        errors.push(ConfigError {
                            path: format!("routes[{i}].embedded"),
                            message,
                        });
                        None
                    }
                },
                Backend::Http(http) => match HttpUpstreams::build(http) {
                    Ok(upstreams) => Some(BuiltBackend::Http(upstreams)),
                    Err((j, message)) => {
                        errors.push(ConfigError {
                            path: format!("routes[{i}].http.upstreams[{j}]"),
                            message,
                        });
                        None
                    }
                },
            };
            let validation = RouteValidation::build(
                &format!("routes[{i}]"),
                route,
                config.limits.max_json_depth,
            )
            .map_err(|e| errors.push(e))
            .ok();
            let contract = validation.as_ref().and_then(|v| v.contract.as_deref());
            let extraction = match &route.extraction {
                None => Some(None),
                Some(e) => extraction_guard(e, contract, previous, &route.name)
                    .map_err(|(field, message)| {
                        errors.push(ConfigError {
                            path: format!("routes[{i}].extraction{field}"),
                            message,
                        })
                    })
                    .ok()
                    .map(Some),
            };
            if let (Some(BuiltBackend::Embedded(model)), Some(Some(guard))) =
                (&backend, &extraction)
                && !model
                    .metadata()
                    .outputs
                    .iter()
                    .any(|o| o.name == guard.output && o.datatype == "FP32")
            {
                errors.push(ConfigError {
                    path: format!("routes[{i}].extraction.output"),
                    message: format!("{:?} is not an FP32 output of the model", guard.output),
                });
            }
            if let (Some(backend), Some(validation), Some(extraction)) =
                (backend, validation, extraction)
            {
                routes.push(BuiltRoute {
                    name: Arc::from(route.name.as_str()),
                    model: route.model.as_deref().map(Arc::from),
                    config: route.clone(),
                    backend,
                    validation,
                    extraction,
                });
            }
        }
        let limits = PlanLimits::build(&config)
            .map_err(|e| errors.extend(e))
            .ok();
        let (Some(auth), Some(limits)) = (auth, limits) else {
            return Err(errors);
        };
        if !errors.is_empty() {
            return Err(errors);
        }
        let index = RouteIndex::new(
            routes
                .iter()
                .map(|r| (r.config.model.as_deref(), r.config.path_prefix.as_deref())),
        );
        Ok(Snapshot {
            generation,
            config,
            index,
            routes,
            auth,
            limits,
        })
    }

    /// Reads, validates and builds the config file: what `check`, `serve` and reloads run.
    pub fn load(
        path: &Path,
        generation: u64,
        previous: Option<&Snapshot>,
    ) -> Result<Snapshot, Vec<ConfigError>> {
        Snapshot::build(modelgate_config::load(path)?, generation, previous)
    }
}

/// The route's detector: the previous generation's (same route, same profile) with its
/// state, or a new one from the profile. The model's contract must fit the profile: one
/// FP32 (or FP16) input of the profile's feature count per row, and the scored output
/// among its outputs. Errors name the failing field under `extraction`.
fn extraction_guard(
    config: &Extraction,
    contract: Option<&ModelContract>,
    previous: Option<&Snapshot>,
    route: &str,
) -> Result<Arc<ExtractionGuard>, (&'static str, String)> {
    let text = std::fs::read_to_string(&config.profile).map_err(|e| {
        (
            ".profile",
            format!("cannot read {}: {e}", config.profile.display()),
        )
    })?;
    let profile = Profile::from_json(&text).map_err(|e| (".profile", e.to_string()))?;
    let contract = contract.ok_or(("", "needs the model's metadata (a v2 contract)".into()))?;
    check_contract(contract, &profile).map_err(|m| ("", m))?;
    let output = match &config.output {
        Some(name) if contract.outputs.contains(name) => name.clone(),
        Some(name) => {
            return Err((".output", format!("the model has no output {name:?}")));
        }
        None => contract
            .outputs
            .first()
            .cloned()
            .ok_or(("", "the model's metadata lists no outputs".into()))?,
    };
    let carried = previous
        .and_then(|p| p.routes.iter().find(|r| &*r.name == route))
        .and_then(|r| r.extraction.as_ref())
        .filter(|g| *g.detector.profile() == profile)
        .map(|g| Arc::clone(&g.detector));
    let detector = match carried {
        Some(detector) => detector,
        None => Arc::new(
            Detector::new(profile, DetectorOptions::default())
                .map_err(|e| (".profile", e.to_string()))?,
        ),
    };
    Ok(Arc::new(ExtractionGuard {
        detector,
        trusted: config.trusted.clone(),
        output,
        max_response_bytes: usize::try_from(config.max_response_bytes).unwrap_or(usize::MAX),
    }))
}

/// One floating-point input whose rows (the dimensions after the batch one, when the model
/// batches) hold the profile's feature count, when the shape fixes it.
fn check_contract(contract: &ModelContract, profile: &Profile) -> Result<(), String> {
    let [input] = contract.inputs.as_slice() else {
        return Err(format!(
            "the detector reads one input; the model has {}",
            contract.inputs.len()
        ));
    };
    if !matches!(input.datatype, Datatype::Fp32 | Datatype::Fp16) {
        return Err(format!(
            "the detector reads FP32 or FP16 input; {:?} is {}",
            input.name, input.datatype
        ));
    }
    let row = input
        .shape
        .get(usize::from(contract.max_batch_size > 0)..)
        .unwrap_or(&[]);
    let features = row.iter().try_fold(1usize, |n, &d| {
        usize::try_from(d).ok().map(|d| n.saturating_mul(d))
    });
    match features {
        Some(n) if n != profile.features => Err(format!(
            "the profile is for {} features per row; input {:?} has {n}",
            profile.features, input.name
        )),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn profile() -> Profile {
        Profile::from_json(include_str!("../../models/digits.profile.json")).unwrap()
    }

    fn contract(inputs: serde_json::Value, max_batch_size: u64) -> ModelContract {
        ModelContract::from_metadata_json(&json!({
            "name": "m", "max_batch_size": max_batch_size, "inputs": inputs,
            "outputs": [{"name": "probabilities"}]
        }))
        .unwrap()
    }

    #[test]
    fn the_contract_must_fit_the_profile() {
        let input = |datatype: &str, shape: serde_json::Value| json!([{"name": "input", "datatype": datatype, "shape": shape}]);
        let fits = [
            contract(input("FP32", json!([-1, 64])), 8),
            contract(input("FP16", json!([-1, 8, 8])), 8),
            contract(input("FP32", json!([64])), 0),
            contract(input("FP32", json!([-1, -1])), 8),
        ];
        for c in &fits {
            assert_eq!(check_contract(c, &profile()), Ok(()), "{c:?}");
        }
        let two = json!([
            {"name": "a", "datatype": "FP32", "shape": [64]},
            {"name": "b", "datatype": "FP32", "shape": [64]}
        ]);
        let misfits = [
            (contract(input("FP32", json!([-1, 63])), 8), "63"),
            (contract(input("FP32", json!([2, 64])), 0), "has 128"),
            (contract(input("INT64", json!([-1, 64])), 8), "FP32 or FP16"),
            (contract(two, 0), "one input"),
        ];
        for (c, message) in misfits {
            let e = check_contract(&c, &profile()).unwrap_err();
            assert!(e.contains(message), "{e}");
        }
    }
}
