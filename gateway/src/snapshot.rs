//! A config generation made ready to serve: routes indexed, models loaded, upstreams
//! resolved. Built completely before it is used; requests pin one snapshot for their life.

use std::path::Path;
use std::sync::Arc;

use modelgate_config::{Backend, Config, ConfigError, Route};

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
    pub config: Route,
    pub backend: BuiltBackend,
    pub validation: RouteValidation,
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
            if let (Some(backend), Some(validation)) = (backend, validation) {
                routes.push(BuiltRoute {
                    name: Arc::from(route.name.as_str()),
                    config: route.clone(),
                    backend,
                    validation,
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
