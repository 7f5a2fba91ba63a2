//! The Pingora `ProxyHttp` implementation: thin. Everything happens in `request_filter`
//! (the pipeline answers every request itself), so Pingora never opens an upstream on its
//! own and a refused request cannot leak a byte upstream.

use std::sync::Arc;
use std::time::Instant;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use opentelemetry::KeyValue;
use pingora::modules::http::HttpModules;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType};

use crate::metrics::{METRICS, RequestRecord};
use crate::pipeline::{self, Outcome, Shared};
use crate::snapshot::Snapshot;

/// The data-plane service.
pub struct Gateway {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
    pub shared: Arc<Shared>,
}

/// Per-request state kept for logging.
pub struct RequestCtx {
    started: Instant,
    generation: u64,
    outcome: Outcome,
}

#[async_trait]
impl ProxyHttp for Gateway {
    type CTX = RequestCtx;

    /// No downstream modules: Pingora's default adds a (disabled) response-compression
    /// module that still allocates and runs its filters on every request.
    fn init_downstream_modules(&self, _modules: &mut HttpModules) {}

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            generation: 0,
            outcome: Outcome::default(),
        }
    }

    async fn request_filter(
        &self,
        session: &mut Session,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<bool> {
        let snapshot = self.snapshot.load_full();
        ctx.generation = snapshot.generation;
        let request = session.req_header();
        ctx.outcome.trace = self.shared.telemetry.request(
            request.headers.get("traceparent"),
            request.method.as_str(),
            request.uri.path(),
        );
        pipeline::handle(&self.shared, &snapshot, session, &mut ctx.outcome).await?;
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut RequestCtx,
    ) -> pingora::Result<Box<HttpPeer>> {
        // Unreachable: request_filter always answers.
        Err(Error::explain(
            ErrorType::InternalError,
            "no upstream outside the pipeline",
        ))
    }

    async fn logging(&self, session: &mut Session, error: Option<&Error>, ctx: &mut RequestCtx) {
        let mut trace = std::mem::take(&mut ctx.outcome.trace);
        let o = &ctx.outcome;
        let total = ctx.started.elapsed();
        // A response that broke off mid-way has no status of its own.
        let status = if o.status == 0 && error.is_some() {
            499
        } else {
            o.status
        };
        METRICS.request(&RequestRecord {
            route: o.route.clone().unwrap_or_else(|| Arc::from("none")),
            model: o.model.clone(),
            status,
            code: o.code.map_or("", |c| c.as_str()),
            total,
            upstream: o.upstream,
            ratelimit: o.ratelimit,
            extraction: o.extraction,
            denied_at: o.code.map(|c| c.stage()),
        });
        trace.finish(status, || {
            let mut attributes = vec![
                KeyValue::new("modelgate.generation", ctx.generation as i64),
                KeyValue::new("modelgate.cost", i64::from(o.cost)),
            ];
            if let Some(code) = o.code {
                attributes.push(KeyValue::new("modelgate.code", code.as_str()));
            }
            if let Some(caller) = &o.caller {
                attributes.push(KeyValue::new("modelgate.consumer", caller.consumer.clone()));
            }
            if let Some(action) = o.extraction {
                attributes.push(KeyValue::new("modelgate.extraction", action));
            }
            if let Some(e) = error {
                attributes.push(KeyValue::new("error.type", e.etype().as_str()));
            }
            attributes
        });
        if log::log_enabled!(target: "access", log::Level::Info) {
            log::info!(
                target: "access",
                "{}",
                serde_json::json!({
                    "ts_ms": unix_millis(),
                    "method": session.req_header().method.as_str(),
                    "path": session.req_header().uri.path(),
                    "route": o.route.as_deref(),
                    "model": o.model.as_deref(),
                    "consumer": o.caller.as_ref().map(|c| &c.consumer),
                    "cost": o.cost,
                    "extraction": o.extraction,
                    "ratelimit": o.ratelimit.map(|(decision, _)| decision),
                    "ratelimit_remaining": o.ratelimit_remaining,
                    "status": status,
                    "code": o.code.map(|c| c.as_str()),
                    "duration_us": total.as_micros() as u64,
                    "upstream_us": o.upstream.map(|d| d.as_micros() as u64),
                    "gateway_us": o.upstream.map(|d| total.saturating_sub(d).as_micros() as u64),
                    "generation": ctx.generation,
                    "trace_id": trace.trace_id(),
                    "error": error.map(|e| e.etype().as_str()),
                })
            );
        }
    }
}

fn unix_millis() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
