//! The data-plane service: every request goes through the pipeline, which answers it (a
//! refused request never reaches an upstream), then into the metrics, trace and access log.

use std::sync::Arc;
use std::time::{Duration, Instant};

use arc_swap::ArcSwap;
use opentelemetry::KeyValue;
use pingora::Error;
use pingora::protocols::http::ServerSession;

use crate::http_service::Responder;
use crate::metrics::{METRICS, RequestRecord};
use crate::pipeline::{self, Outcome, Shared};
use crate::snapshot::Snapshot;
use crate::telemetry::TRACEPARENT;

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

impl Responder for Gateway {
    type Ctx = RequestCtx;

    fn head_deadline(&self) -> Duration {
        self.snapshot.load().config.limits.header_read_timeout
    }

    fn new_ctx(&self) -> RequestCtx {
        RequestCtx {
            started: Instant::now(),
            generation: 0,
            outcome: Outcome::default(),
        }
    }

    async fn respond(
        &self,
        session: &mut ServerSession,
        ctx: &mut RequestCtx,
    ) -> pingora::Result<()> {
        let snapshot = self.snapshot.load_full();
        ctx.generation = snapshot.generation;
        let request = session.req_header();
        ctx.outcome.trace = self.shared.telemetry.request(
            request.headers.get(TRACEPARENT),
            request.method.as_str(),
            request.uri.path(),
        );
        pipeline::handle(&self.shared, &snapshot, session, &mut ctx.outcome).await
    }

    fn log(&self, session: &ServerSession, error: Option<&Error>, ctx: &mut RequestCtx) {
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
