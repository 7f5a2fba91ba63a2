//! The request pipeline: route → method → auth → body → validate → rate limit →
//! extraction → backend, ending in exactly one response. Every refusal happens before an
//! upstream is contacted. Each stage is a child span of the request's trace.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderName, HeaderValue, Method, StatusCode, header};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use pingora::protocols::http::ServerSession;

use modelgate_config::Cost;
use modelgate_plugins::auth::Caller;
use modelgate_plugins::ratelimit::{Admission, LimitSpec, Limiter, Refusal, RefusalReason};
use modelgate_plugins::{Code, Denial};

use crate::body::{BodyError, read_body};
use crate::embedded::v2::Batch;
use crate::embedded::{EmbeddedModel, InferencePool, OutputData, Outputs};
use crate::forward::{Call, ForwardError, Forwarded, Identity, ResponseMode, write_buffered};
use crate::guard;
use crate::respond;
use crate::routes::{ModelOp, Target};
use crate::snapshot::{BuiltBackend, BuiltRoute, ExtractionGuard, Snapshot};
use crate::telemetry::{INFERENCE, SpanError, Telemetry, TraceSpan};
use crate::upstream_pool::UpstreamPool;
use modelgate_plugins::extraction::Action;
use modelgate_plugins::schema::ValidatedRequest;

/// Process-wide resources that outlive config generations.
pub struct Shared {
    pub pool: InferencePool,
    /// Idle keep-alive connections to HTTP upstreams.
    pub upstream_pool: UpstreamPool,
    /// Rate-limit, quota and in-flight state: outlives config generations.
    pub limiter: Limiter,
    /// Span export (set at start; a change needs a restart).
    pub telemetry: Telemetry,
}

/// What the pipeline did, for the access log; it also holds the limiter's admission
/// (in-flight permits) until the request context is dropped.
#[derive(Debug, Default)]
pub struct Outcome {
    pub route: Option<Arc<str>>,
    pub model: Option<Arc<str>>,
    /// Who made the request, once authenticated.
    pub caller: Option<Arc<Caller>>,
    /// Time spent on the upstream exchange, for HTTP backends.
    pub upstream: Option<std::time::Duration>,
    /// Cost charged against the caller's limits.
    pub cost: u32,
    /// The limiter's admission (in-flight permits) while the request runs.
    pub admission: Option<Admission>,
    /// Rate-limit budget left after this request, for the access log.
    pub ratelimit_remaining: Option<u64>,
    /// The limiter's decision (`admitted` or the refusal code) and what bound it
    /// (`consumer` or `model`), when the limiter was asked.
    pub ratelimit: Option<(&'static str, &'static str)>,
    /// The extraction detector's action, when it reached at least `observe`.
    pub extraction: Option<&'static str>,
    pub status: u16,
    pub code: Option<Code>,
    /// The request's span (or only its trace ids, when tracing is off).
    pub trace: TraceSpan,
}

/// Handles one request end to end and writes its response. `Err` only when writing to the
/// client failed (the connection is then dropped).
pub async fn handle(
    shared: &Shared,
    snapshot: &Arc<Snapshot>,
    session: &mut ServerSession,
    outcome: &mut Outcome,
) -> pingora::Result<()> {
    let result = run(shared, snapshot, session, outcome).await;
    // Permits are normally given back just before the last response byte (`ok_json`,
    // `forward`); refusals and failures give them back here, before the error is written,
    // never as late as Pingora dropping the request context (after logging).
    outcome.admission = None;
    match result {
        Ok(()) => Ok(()),
        Err(Failure::Deny { denial, close }) => {
            outcome.status = denial.status().as_u16();
            outcome.code = Some(denial.code);
            respond::deny(session, &denial, close).await
        }
        Err(Failure::Broken(e)) => Err(e),
    }
}

/// Header count and size within the configured bounds (431 otherwise), before anything else.
fn check_headers(
    header: &pingora::http::RequestHeader,
    limits: &modelgate_config::Limits,
) -> Result<(), Denial> {
    let count = header.headers.len();
    if count > limits.max_header_count {
        return Err(Denial::new(
            Code::HeadersTooLarge,
            format!(
                "{count} header fields; at most {} are accepted",
                limits.max_header_count
            ),
        ));
    }
    let bytes: usize = header
        .headers
        .iter()
        .map(|(name, value)| name.as_str().len() + value.len())
        .sum();
    if bytes > limits.max_header_bytes {
        return Err(Denial::new(
            Code::HeadersTooLarge,
            format!(
                "{bytes} bytes of header names and values; at most {} are accepted",
                limits.max_header_bytes
            ),
        ));
    }
    Ok(())
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

impl SpanError for Failure {
    fn code(&self) -> &'static str {
        match self {
            Failure::Deny { denial, .. } => denial.code.as_str(),
            Failure::Broken(e) => e.etype().as_str(),
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
    session: &mut ServerSession,
    outcome: &mut Outcome,
) -> Result<(), Failure> {
    let path = session.req_header().uri.path().to_string();
    let method = session.req_header().method.clone();
    // Until the body is read, a refusal must close the connection if a body is pending.
    let early = |denial: Denial, session: &mut ServerSession| Failure::Deny {
        close: !session.is_body_empty(),
        denial,
    };
    let limits = &snapshot.config.limits;
    check_headers(session.req_header(), limits).map_err(|d| early(d, session))?;
    // 1. Route (and method).
    let span = outcome.trace.stage("modelgate.route");
    let (target, route_index) = span
        .end(route(snapshot, &path, &method))
        .map_err(|d| early(d, session))?;
    let route = route_index.map(|i| &snapshot.routes[i]);
    if let Some(r) = route {
        outcome.route = Some(Arc::clone(&r.name));
        outcome.model = r.model.clone();
        outcome.trace.record(|| {
            let mut attributes = vec![KeyValue::new("modelgate.route", r.name.to_string())];
            if let Some(model) = &r.config.model {
                attributes.push(KeyValue::new("modelgate.model", model.clone()));
            }
            attributes
        });
    }
    // 2. Authenticate (and check scopes).
    let caller = match route {
        Some(r) if !r.config.public => {
            let span = outcome.trace.stage("modelgate.auth");
            let caller = span
                .end(authenticate(snapshot, r, session).await)
                .map_err(|d| early(d, session))?;
            outcome.caller = Some(Arc::clone(&caller));
            Some(caller)
        }
        _ => None,
    };
    // 4. Read the whole body, capped, before any upstream is chosen.
    let cap = route.map_or(limits.max_body_bytes, |r| r.config.max_body_bytes);
    let span = outcome.trace.stage("modelgate.body");
    let body = span.end(read_body(session, cap, limits.body_read_timeout).await)?;
    // 5. Validate against the model contract / JSON Schema; parsed once for what follows.
    let span = outcome.trace.stage("modelgate.validate");
    let validated = span.end(validate(&target, route, &method, session, &body))?;
    // 3. Rate limits, quotas and in-flight caps, charged the request's cost (known now).
    let mut response_headers = Vec::new();
    let mut plan_spec = None;
    if let (Some(caller), Some(r), Some(index)) = (&caller, route, route_index) {
        let cost = match r.config.cost {
            Cost::Fixed(n) => n,
            Cost::Rows => validated
                .as_ref()
                .map_or(1, |v| u32::try_from(v.batch.max(1)).unwrap_or(u32::MAX)),
        };
        let (spec, model_spec) = snapshot.limits.for_request(&caller.plan, index);
        // An unlimited plan is still throttled, from the default plan, once suspected.
        plan_spec = Some(spec.unwrap_or(snapshot.limits.default_spec()));
        let model = r.config.model.as_deref().zip(model_spec);
        outcome.cost = cost;
        let span = outcome.trace.stage("modelgate.rate_limit");
        let checked = match spec {
            Some(spec) => {
                Some(
                    shared
                        .limiter
                        .check(&caller.consumer, &r.config.name, spec, model, cost),
                )
            }
            None => shared.limiter.check_unlimited(model, cost),
        };
        let checked = checked.transpose().map_err(|refusal| {
            let denial = rate_denial(&refusal);
            outcome.ratelimit = Some((denial.code.as_str(), refusal.by.as_str()));
            denial
        });
        if let Some(admission) = span.end(checked)? {
            outcome.ratelimit = Some(("admitted", ""));
            if spec.is_some() {
                response_headers.extend(admission.headers().fields());
                outcome.ratelimit_remaining = Some(admission.remaining);
            }
            // Held until the response is written (`handle` releases it; a client
            // abort drops the request context and with it the permits).
            outcome.admission = Some(admission);
        }
    }

    // 7. Answer: the gateway's own endpoints, the embedded model, or an HTTP upstream.
    let backend = outcome.trace.stage("modelgate.backend");
    let answered = async {
        match (target, route) {
            (Target::ServerLive, _) => ok_json(session, outcome, br#"{"live":true}"#, &[]).await,
            (Target::ServerReady, _) => ok_json(session, outcome, br#"{"ready":true}"#, &[]).await,
            (Target::ServerMetadata, _) => {
                let meta = concat!(
                    r#"{"name":"modelgate","version":""#,
                    env!("CARGO_PKG_VERSION"),
                    r#"","extensions":[]}"#
                );
                ok_json(session, outcome, meta.as_bytes(), &[]).await
            }
            (
                target @ (Target::Model { prefix_len, .. } | Target::Prefix { prefix_len, .. }),
                Some(
                    route @ BuiltRoute {
                        backend: BuiltBackend::Http(upstreams),
                        ..
                    },
                ),
            ) => {
                // A blocked (or throttled) consumer sends nothing upstream, not even a
                // metadata request; only inferences are checked on the way back.
                let guarded = match (route.extraction.as_deref(), caller.as_ref()) {
                    (Some(guard), Some(caller)) => {
                        let inference = guarded_inference(&target, validated.as_ref(), guard)?;
                        screen(shared, plan_spec, guard, caller, route, outcome)?;
                        inference.map(|inference| (guard, caller, inference))
                    }
                    _ => None,
                };
                let config = &route.config;
                let call = Call {
                    body,
                    prefix_len,
                    identity: Identity {
                        caller: caller.as_deref(),
                        strip_credentials: !config.forward_credentials,
                        credential_headers: snapshot.auth.credential_headers(),
                        strip_query_key: config.api_key_in_query && !config.forward_credentials,
                    },
                    response_headers,
                    mode: guarded
                        .as_ref()
                        .map_or(ResponseMode::Stream, |(guard, ..)| ResponseMode::Buffer {
                            cap: guard.max_response_bytes,
                        }),
                };
                let forwarded =
                    forward(shared, upstreams, session, &call, outcome, &backend).await?;
                let Forwarded::Buffered(header, body) = forwarded else {
                    return Ok(());
                };
                // Only a success carries outputs; the upstream's errors pass as they are.
                let body = match guarded {
                    Some((guard, caller, inference)) if header.status.is_success() => {
                        guard::harden_v2_response(
                            guard,
                            caller,
                            inference,
                            body,
                            &mut outcome.extraction,
                        )?
                    }
                    _ => body,
                };
                write_buffered(session, header, body, &mut outcome.admission)
                    .await
                    .map_err(Failure::Broken)
            }
            (
                Target::Model { op, version, .. },
                Some(
                    route @ BuiltRoute {
                        backend: BuiltBackend::Embedded(model),
                        ..
                    },
                ),
            ) => {
                let meta = model.metadata();
                if version.is_some_and(|v| v != meta.version) {
                    return Err(Denial::new(Code::ModelNotFound, "unknown model version").into());
                }
                match op {
                    ModelOp::Metadata => {
                        let body = crate::embedded::v2::metadata_json(meta);
                        ok_json(session, outcome, &body, &response_headers).await
                    }
                    ModelOp::Ready => {
                        let body =
                            serde_json::json!({"name": meta.name, "ready": true}).to_string();
                        ok_json(session, outcome, body.as_bytes(), &response_headers).await
                    }
                    ModelOp::Infer => {
                        let request = validated.ok_or_else(|| {
                            Denial::new(Code::Internal, "inference is unavailable")
                        })?;
                        let guard = route.extraction.as_deref().zip(caller.as_ref());
                        if let Some((guard, caller)) = guard {
                            screen(shared, plan_spec, guard, caller, route, outcome)?;
                        }
                        let span = backend.child(INFERENCE, SpanKind::Internal, || {
                            vec![KeyValue::new("modelgate.batch", request.batch as i64)]
                        });
                        let (mut batch, mut outputs) =
                            span.end(model.run(&shared.pool, request).await)?;
                        if let Some((guard, caller)) = guard {
                            assess_embedded(
                                guard,
                                caller,
                                model,
                                &mut batch,
                                &mut outputs,
                                outcome,
                            )?;
                        }
                        let response = model.respond(&batch, &outputs);
                        ok_json(session, outcome, &response, &response_headers).await
                    }
                    ModelOp::Other => {
                        Err(Denial::new(Code::RouteNotFound, "no such model endpoint").into())
                    }
                }
            }
            // Path-prefix routes are HTTP-only (config validation), so nothing else matches.
            (Target::Model { .. } | Target::Prefix { .. }, _) => {
                Err(Denial::new(Code::RouteNotFound, "no route for this path").into())
            }
        }
    }
    .await;
    backend.end(answered)
}

/// Stage 1: the target for `path`, its route's index (if any), and the method check.
fn route<'p>(
    snapshot: &Snapshot,
    path: &'p str,
    method: &Method,
) -> Result<(Target<'p>, Option<usize>), Denial> {
    let target = snapshot.index.resolve(path)?;
    let route_index = match &target {
        Target::Model { route, .. } | Target::Prefix { route, .. } => Some(*route),
        _ => None,
    };
    let route = route_index.map(|i| &snapshot.routes[i]);
    check_method(&target, route, method)?;
    check_tf_verb(&target, route, method, path)?;
    Ok((target, route_index))
}

/// Stage 5: the body against the route's contract; the parsed inference request when the
/// target is an inference.
fn validate(
    target: &Target<'_>,
    route: Option<&BuiltRoute>,
    method: &Method,
    session: &ServerSession,
    body: &[u8],
) -> Result<Option<ValidatedRequest>, Denial> {
    let headers = &session.req_header().headers;
    match (target, route) {
        (
            Target::Model {
                op: ModelOp::Infer, ..
            },
            Some(r),
        ) => r.validation.check_infer(headers, body),
        (Target::Prefix { .. }, Some(r))
            if r.validation.is_tf_serving() && *method == Method::POST =>
        {
            r.validation.check_infer(headers, body)
        }
        (_, Some(r)) => r.validation.check_schema(headers, body).map(|()| None),
        _ => Ok(None),
    }
}

/// Stage 6 before the backend, the same on both backends: [`guard::screen`] in its span; a
/// block is recorded as the request's extraction action.
fn screen(
    shared: &Shared,
    plan: Option<&LimitSpec>,
    guard: &ExtractionGuard,
    caller: &Caller,
    route: &BuiltRoute,
    outcome: &mut Outcome,
) -> Result<(), Denial> {
    let span = outcome.trace.stage("modelgate.extraction");
    let screened = guard::screen(shared, plan, guard, caller, &route.name, outcome.cost);
    if matches!(&screened, Err(d) if d.code == Code::ExtractionSuspected) {
        outcome.extraction = Some(Action::Block.as_str());
    }
    span.end(screened)
}

/// What a guarded HTTP route forwards: an inference (its validated request, which must
/// leave the scored output in) to be checked, metadata and ready requests as they are;
/// other model sub-paths would answer unchecked and are refused (404).
fn guarded_inference<'v>(
    target: &Target<'_>,
    validated: Option<&'v ValidatedRequest>,
    guard: &ExtractionGuard,
) -> Result<Option<&'v ValidatedRequest>, Denial> {
    match target {
        Target::Model {
            op: ModelOp::Infer, ..
        } => {
            let request =
                validated.ok_or_else(|| Denial::new(Code::Internal, "inference is unavailable"))?;
            guard::check_requested_outputs(guard, request).map(|()| Some(request))
        }
        Target::Model {
            op: ModelOp::Metadata | ModelOp::Ready,
            ..
        } => Ok(None),
        _ => Err(Denial::new(
            Code::RouteNotFound,
            "this route serves the model's metadata, ready and infer endpoints only",
        )),
    }
}

/// Stage 6 after the embedded model ran: [`guard::assess`] on the scored output, then only
/// the outputs the policy keeps go back.
fn assess_embedded(
    guard: &ExtractionGuard,
    caller: &Caller,
    model: &EmbeddedModel,
    batch: &mut Batch,
    outputs: &mut Outputs,
    outcome: &mut Outcome,
) -> Result<(), Denial> {
    let scored = model
        .metadata()
        .outputs
        .iter()
        .position(|o| o.name == guard.output);
    let Some((_, OutputData::F32(scores))) = scored.and_then(|i| outputs.tensors.get_mut(i)) else {
        // The snapshot checked the output is an FP32 one; never answer unchecked.
        log::error!("extraction guard: output {:?} is not FP32", guard.output);
        return Err(Denial::new(Code::Internal, "inference failed"));
    };
    let policy = guard::assess(guard, caller, &batch.data, scores, &mut outcome.extraction);
    let tensors = &outputs.tensors;
    batch.outputs.retain(|&i| {
        Some(i) == scored
            || policy.keeps_other_output(matches!(tensors.get(i), Some((_, OutputData::I64(_)))))
    });
    Ok(())
}

/// A refusal by the limiter as a 429 with `Retry-After` (when waiting can help) and the
/// `RateLimit-*` headers.
pub(crate) fn rate_denial(refusal: &Refusal) -> Denial {
    let (code, message) = match refusal.reason {
        RefusalReason::RateLimited => (Code::RateLimited, "rate limit exceeded"),
        RefusalReason::QuotaExhausted => (Code::QuotaExhausted, "quota exhausted for this window"),
        RefusalReason::TooManyConcurrent => {
            (Code::TooManyConcurrent, "too many requests in flight")
        }
        RefusalReason::CostExceedsBurst => (
            Code::CostExceedsBurst,
            "this request costs more than the limit allows at once; send smaller batches",
        ),
    };
    let mut denial = Denial::new(code, message);
    denial.retry_after = refusal.retry_after;
    for (name, value) in refusal.headers().fields() {
        denial = denial.with_header(name, value);
    }
    denial
}

/// Authenticates the caller and checks its scopes cover the route's model (or, for a
/// path-prefix route without a model, the route's name).
async fn authenticate(
    snapshot: &Snapshot,
    route: &BuiltRoute,
    session: &ServerSession,
) -> Result<Arc<Caller>, Denial> {
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

/// Forwards `call` to the route's upstreams, recording the upstream time and status.
async fn forward(
    shared: &Shared,
    upstreams: &crate::forward::HttpUpstreams,
    session: &mut ServerSession,
    call: &Call<'_>,
    outcome: &mut Outcome,
    span: &TraceSpan,
) -> Result<Forwarded, Failure> {
    let started = std::time::Instant::now();
    let result = upstreams
        .forward(
            &shared.upstream_pool,
            session,
            call,
            &mut outcome.admission,
            span,
        )
        .await;
    outcome.upstream = Some(started.elapsed());
    match result {
        Ok(forwarded) => {
            outcome.status = forwarded.status();
            Ok(forwarded)
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

/// A TF-Serving route takes POSTs to `…:predict` only: other verbs (`:classify`,
/// `:regress`) have no contract to check and must not pass unchecked.
fn check_tf_verb(
    target: &Target<'_>,
    route: Option<&BuiltRoute>,
    method: &Method,
    path: &str,
) -> Result<(), Denial> {
    match (target, route) {
        (Target::Prefix { .. }, Some(r))
            if r.validation.is_tf_serving()
                && *method == Method::POST
                && !path.ends_with(":predict") =>
        {
            Err(Denial::new(
                Code::RouteNotFound,
                "this route serves TF-Serving `:predict` requests only",
            ))
        }
        _ => Ok(()),
    }
}

fn method_not_allowed(allow: &str) -> Denial {
    let denial = Denial::new(
        Code::MethodNotAllowed,
        format!("method not allowed; use {allow}"),
    );
    // Configured method names are tokens; anything else would not be a valid header.
    match HeaderValue::from_str(allow) {
        Ok(value) => denial.with_header(header::ALLOW, value),
        Err(_) => denial,
    }
}

async fn ok_json(
    session: &mut ServerSession,
    outcome: &mut Outcome,
    body: &[u8],
    headers: &[(HeaderName, HeaderValue)],
) -> Result<(), Failure> {
    outcome.status = 200;
    // The answer is ready: in-flight permits go back before it is written (see `forward`).
    outcome.admission = None;
    respond::json(
        session,
        StatusCode::OK,
        Bytes::copy_from_slice(body),
        headers,
    )
    .await
    .map_err(Failure::Broken)
}
