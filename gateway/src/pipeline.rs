//! The request pipeline: route → method → body → backend, ending in exactly one response.
//! Every refusal happens before an upstream is contacted.

use std::sync::Arc;

use bytes::Bytes;
use http::{Method, StatusCode};
use pingora::connectors::http::v1::Connector;
use pingora::proxy::Session;

use modelgate_plugins::auth::Caller;
use modelgate_plugins::{Code, Denial};

use crate::body::{BodyError, read_body};
use crate::embedded::InferencePool;
use crate::forward::{ForwardError, Identity};
use crate::respond;
use crate::routes::{ModelOp, Target};
use crate::snapshot::{BuiltBackend, BuiltRoute, Snapshot};

/// Process-wide resources that outlive config generations.
pub struct Shared {
    pub pool: InferencePool,
    pub connector: Connector,
}

/// What the pipeline did, for the access log.
#[derive(Debug, Default, Clone)]
pub struct Outcome {
    pub route: Option<String>,
    pub consumer: Option<String>,
    /// Time spent on the upstream exchange, for HTTP backends.
    pub upstream: Option<std::time::Duration>,
    pub status: u16,
    pub code: Option<Code>,
}

/// Handles one request end to end and writes its response. `Err` only when writing to the
/// client failed (the connection is then dropped).
pub async fn handle(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    session: &mut Session,
    outcome: &mut Outcome,
) -> pingora::Result<()> {
    match run(shared, snapshot, session, outcome).await {
        Ok(()) => Ok(()),
        Err(Failure::Deny { denial, close }) => {
            outcome.status = denial.status().as_u16();
            outcome.code = Some(denial.code);
            respond::deny(session, &denial, close).await
        }
        Err(Failure::Broken(e)) => Err(e),
    }
}

enum Failure {
    Deny { denial: Denial, close: bool },
    Broken(Box<pingora::Error>),
}

impl From<Denial> for Failure {
    fn from(denial: Denial) -> Self {
        Failure::Deny {
            denial,
            close: false,
        }
    }
}

impl From<BodyError> for Failure {
    fn from(e: BodyError) -> Self {
        Failure::Deny {
            denial: e.denial,
            close: e.close,
        }
    }
}

async fn run(
    shared: &Shared,
    snapshot: &Snapshot,
    session: &mut Session,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    let path = session.req_header().uri.path().to_string();
    let method = session.req_header().method.clone();
    // Until the body is read, a refusal must close the connection if a body is pending.
    let early = |denial: Denial, session: &mut Session| Failure::Deny {
        close: !session.is_body_empty(),
        denial,
    };
    let target = snapshot
        .index
        .resolve(&path)
        .map_err(|d| early(d, session))?;
    let limits = &snapshot.config.limits;
    let route = match &target {
        Target::Model { route, .. } | Target::Prefix { route, .. } => {
            let built = &snapshot.routes[*route];
            outcome.route = Some(built.config.name.clone());
            Some(built)
        }
        _ => None,
    };
    check_method(&target, route, &method).map_err(|d| early(d, session))?;
    let caller = match route {
        Some(r) if !r.config.public => {
            let caller = authenticate(snapshot, r, session)
                .await
                .map_err(|d| early(d, session))?;
            outcome.consumer = Some(caller.consumer.clone());
            Some(caller)
        }
        _ => None,
    };
    let cap = route.map_or(limits.max_body_bytes, |r| r.config.max_body_bytes);
    let body = read_body(session, cap, limits.body_read_timeout).await?;

    match (target, route) {
        (Target::ServerLive, _) => ok_json(session, outcome, br#"{"live":true}"#).await,
        (Target::ServerReady, _) => ok_json(session, outcome, br#"{"ready":true}"#).await,
        (Target::ServerMetadata, _) => {
            let meta = concat!(
                r#"{"name":"modelgate","version":""#,
                env!("CARGO_PKG_VERSION"),
                r#"","extensions":[]}"#
            );
            ok_json(session, outcome, meta.as_bytes()).await
        }
        (
            Target::Model {
                op,
                version,
                prefix_len,
                ..
            },
            Some(route),
        ) => match &route.backend {
            BuiltBackend::Embedded(model) => {
                let meta = model.metadata();
                if version.is_some_and(|v| v != meta.version) {
                    return Err(Denial::new(Code::ModelNotFound, "unknown model version").into());
                }
                match op {
                    ModelOp::Metadata => {
                        let body = crate::embedded::v2::metadata_json(meta);
                        ok_json(session, outcome, &body).await
                    }
                    ModelOp::Ready => {
                        let body =
                            serde_json::json!({"name": meta.name, "ready": true}).to_string();
                        ok_json(session, outcome, body.as_bytes()).await
                    }
                    ModelOp::Infer => {
                        let response = model
                            .infer(&shared.pool, &body, limits.max_json_depth)
                            .await?;
                        ok_json(session, outcome, &response).await
                    }
                    ModelOp::Other => {
                        Err(Denial::new(Code::RouteNotFound, "no such model endpoint").into())
                    }
                }
            }
            BuiltBackend::Http(upstreams) => {
                forward(
                    shared,
                    snapshot,
                    route,
                    upstreams,
                    caller.as_ref(),
                    session,
                    body,
                    prefix_len,
                    outcome,
                )
                .await
            }
        },
        (Target::Prefix { prefix_len, .. }, Some(route)) => match &route.backend {
            BuiltBackend::Http(upstreams) => {
                forward(
                    shared,
                    snapshot,
                    route,
                    upstreams,
                    caller.as_ref(),
                    session,
                    body,
                    prefix_len,
                    outcome,
                )
                .await
            }
            BuiltBackend::Embedded(_) => {
                Err(Denial::new(Code::RouteNotFound, "no route for this path").into())
            }
        },
        (Target::Model { .. } | Target::Prefix { .. }, None) => {
            Err(Denial::new(Code::RouteNotFound, "no route for this path").into())
        }
    }
}

/// Authenticates the caller and checks its scopes cover the route's model (or, for a
/// path-prefix route without a model, the route's name).
async fn authenticate(
    snapshot: &Snapshot,
    route: &BuiltRoute,
    session: &Session,
) -> Result<Caller, Denial> {
    let peer = session
        .client_addr()
        .and_then(|a| a.as_inet())
        .map(|a| a.ip());
    let caller = snapshot
        .auth
        .authenticate(session.req_header(), peer, &route.config)
        .await?;
    let scope = route.config.model.as_deref().unwrap_or(&route.config.name);
    if caller.scopes.allows(scope) {
        Ok(caller)
    } else {
        Err(Denial::new(
            Code::ModelNotAllowed,
            "this credential may not use this model",
        ))
    }
}

#[allow(clippy::too_many_arguments)]
async fn forward(
    shared: &Shared,
    snapshot: &Snapshot,
    route: &BuiltRoute,
    upstreams: &crate::forward::HttpUpstreams,
    caller: Option<&Caller>,
    session: &mut Session,
    body: Bytes,
    prefix_len: usize,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    let identity = Identity {
        caller,
        strip_credentials: !route.config.forward_credentials,
        credential_headers: snapshot.auth.credential_headers().cloned().collect(),
        strip_query_key: route.config.api_key_in_query && !route.config.forward_credentials,
    };
    let started = std::time::Instant::now();
    let result = upstreams
        .forward(&shared.connector, session, body, prefix_len, &identity)
        .await;
    outcome.upstream = Some(started.elapsed());
    match result {
        Ok(status) => {
            outcome.status = status;
            Ok(())
        }
        Err(ForwardError::BeforeResponse(denial)) => Err(denial.into()),
        Err(ForwardError::AfterResponse(e)) => Err(Failure::Broken(e)),
    }
}

fn check_method(
    target: &Target<'_>,
    route: Option<&BuiltRoute>,
    method: &Method,
) -> Result<(), Denial> {
    let allowed: &[&str] = match target {
        Target::ServerLive | Target::ServerReady | Target::ServerMetadata => &["GET", "HEAD"],
        Target::Model {
            op: ModelOp::Infer, ..
        } => &["POST"],
        Target::Model {
            op: ModelOp::Metadata | ModelOp::Ready,
            ..
        } => &["GET", "HEAD"],
        Target::Model {
            op: ModelOp::Other, ..
        } => return Ok(()),
        Target::Prefix { .. } => match route.and_then(|r| r.config.methods.as_ref()) {
            Some(methods) if methods.iter().any(|m| m == method.as_str()) => return Ok(()),
            Some(methods) => {
                return Err(method_not_allowed(&methods.join(", ")));
            }
            None => return Ok(()),
        },
    };
    if allowed.contains(&method.as_str()) {
        Ok(())
    } else {
        Err(method_not_allowed(&allowed.join(", ")))
    }
}

fn method_not_allowed(allow: &str) -> Denial {
    Denial::new(
        Code::MethodNotAllowed,
        format!("method not allowed; use {allow}"),
    )
    .with_header("allow", allow)
}

async fn ok_json(session: &mut Session, outcome: &mut Outcome, body: &[u8]) -> Result<(), Failure> {
    outcome.status = 200;
    respond::json(session, StatusCode::OK, Bytes::copy_from_slice(body), &[])
        .await
        .map_err(Failure::Broken)
}
