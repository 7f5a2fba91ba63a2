//! A config generation made ready to serve: routes indexed, models loaded, upstreams
//! resolved. Built completely before it is used; requests pin one snapshot for their life.

use std::path::Path;
use std::sync::Arc;

use modelgate_config::{Backend, Config, ConfigError, Extraction, Route};
use modelgate_plugins::extraction::{Detector, DetectorOptions, Profile};

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

/// A route's detector and who it trusts.
pub struct ExtractionGuard {
    pub detector: Arc<Detector>,
    pub trusted: Vec<String>,
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
            let extraction = match &route.extraction {
                None => Some(None),
                Some(e) => extraction_guard(e, previous, &route.name)
                    .map_err(|message| {
                        errors.push(ConfigError {
                            path: format!("routes[{i}].extraction.profile"),
                            message,
                        })
                    })
                    .ok()
                    .map(Some),
            };
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
/// state, or a new one from the profile.
fn extraction_guard(
    config: &Extraction,
    previous: Option<&Snapshot>,
    route: &str,
) -> Result<Arc<ExtractionGuard>, String> {
    let text = std::fs::read_to_string(&config.profile)
        .map_err(|e| format!("cannot read {}: {e}", config.profile.display()))?;
    let profile = Profile::from_json(&text).map_err(|e| e.to_string())?;
    let carried = previous
        .and_then(|p| p.routes.iter().find(|r| &*r.name == route))
        .and_then(|r| r.extraction.as_ref())
        .filter(|g| *g.detector.profile() == profile)
        .map(|g| Arc::clone(&g.detector));
    let detector = match carried {
        Some(detector) => detector,
        None => {
            Arc::new(Detector::new(profile, DetectorOptions::default()).map_err(|e| e.to_string())?)
        }
    };
    Ok(Arc::new(ExtractionGuard {
        detector,
        trusted: config.trusted.clone(),
    }))
}
