//! Traces (OpenTelemetry) and W3C trace context.
//!
//! Each request gets a server span `modelgate.request` with a child per pipeline stage
//! (`modelgate.route`, `.auth`, `.body`, `.validate`, `.rate_limit`, `.extraction`,
//! `.backend`); under `modelgate.backend`, a client span `modelgate.upstream` for the HTTP
//! exchange or an internal span `modelgate.inference` for the embedded model. A valid
//! client `traceparent` makes the request span its child (same trace id); an invalid or
//! missing one starts a new trace. Upstreams get a `traceparent` whose parent-id is the
//! upstream span.
//!
//! Export is OTLP/HTTP (protobuf) through the SDK's batch processor, which owns one thread:
//! a span is handed over with a non-blocking `try_send` (dropped when the queue of 2048 is
//! full), and the export itself (a small blocking HTTP client) runs on that thread only.
//!
//! Tracing is off unless `[telemetry] otlp_endpoint` is set. Then no span object is built:
//! a request only carries its trace id (the client's or a random one) for the access log
//! and the upstream `traceparent`, which passes the client's parent-id on unchanged.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use async_trait::async_trait;
use bytes::Bytes;
use http::{HeaderName, HeaderValue};
use opentelemetry::trace::{
    Span as _, SpanContext, SpanId, SpanKind, Status, TraceContextExt as _, TraceFlags, TraceId,
    TraceState, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Context, KeyValue};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, IdGenerator as _, RandomIdGenerator, Sampler,
    SdkTracer, SdkTracerProvider,
};

use modelgate_config::{OtlpTraces, UpstreamUrl};
use modelgate_plugins::Denial;

use crate::body::BodyError;
use crate::metrics::METRICS;

/// The W3C trace-context header, read from clients and set on upstream requests.
pub const TRACEPARENT: HeaderName = HeaderName::from_static("traceparent");

/// The request span's name.
pub const REQUEST: &str = "modelgate.request";
/// The HTTP upstream exchange (client span).
pub const UPSTREAM: &str = "modelgate.upstream";
/// The embedded model's inference.
pub const INFERENCE: &str = "modelgate.inference";

/// How often the batch processor sends what it has (or sooner, at 512 spans).
const EXPORT_INTERVAL: Duration = Duration::from_secs(1);
/// Longest `url.path` recorded (paths are client-controlled).
const MAX_PATH_BYTES: usize = 256;
/// Collector answers are read up to this size.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Process-wide tracing: a tracer when export is configured, nothing otherwise.
pub struct Telemetry {
    provider: Option<SdkTracerProvider>,
    tracer: Option<SdkTracer>,
}

impl Telemetry {
    /// Tracing off: requests carry trace ids, no span is built or exported.
    pub fn off() -> Telemetry {
        Telemetry {
            provider: None,
            tracer: None,
        }
    }

    /// Starts OTLP export as configured (`None`: tracing off). Fails only if the exporter
    /// cannot be built; an unreachable collector is not an error (exports fail later, are
    /// logged, and never delay requests).
    pub fn start(traces: Option<&OtlpTraces>) -> Result<Telemetry, String> {
        let Some(traces) = traces else {
            return Ok(Telemetry::off());
        };
        let client = OtlpHttpClient {
            endpoint: traces.endpoint.clone(),
            timeout: traces.export_timeout,
            last_warning: AtomicU64::new(0),
        };
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_protocol(Protocol::HttpBinary)
            .with_endpoint(client.url())
            .with_timeout(traces.export_timeout)
            .with_http_client(client)
            .build()
            .map_err(|e| format!("cannot build the OTLP trace exporter: {e}"))?;
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(
                BatchConfigBuilder::default()
                    .with_scheduled_delay(EXPORT_INTERVAL)
                    .build(),
            )
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                traces.sampling_ratio,
            ))))
            .with_resource(
                Resource::builder()
                    .with_service_name(traces.service_name.clone())
                    .build(),
            )
            .build();
        Ok(Telemetry::with_provider(provider))
    }

    /// Traces into `provider` (tests use the SDK's in-memory exporter).
    pub fn with_provider(provider: SdkTracerProvider) -> Telemetry {
        Telemetry {
            tracer: Some(provider.tracer("modelgate")),
            provider: Some(provider),
        }
    }

    /// Whether spans are built and exported.
    pub fn is_on(&self) -> bool {
        self.tracer.is_some()
    }

    /// Exports what is queued and stops the batch thread. Blocking (up to the export
    /// timeout): call it off the async threads, at shutdown.
    pub fn shutdown(&self) {
        if let Some(provider) = &self.provider
            && let Err(e) = provider.shutdown()
        {
            log::warn!("trace export at shutdown: {e}");
        }
    }

    /// The trace of a request carrying `traceparent`: the request span when tracing is on,
    /// only ids otherwise.
    pub fn request(
        &self,
        traceparent: Option<&HeaderValue>,
        method: &str,
        path: &str,
    ) -> TraceSpan {
        let incoming = traceparent
            .and_then(|v| v.to_str().ok())
            .and_then(parse_traceparent);
        let Some(tracer) = &self.tracer else {
            let trace_id = incoming.map_or_else(
                || RandomIdGenerator::default().new_trace_id(),
                |c| c.trace_id,
            );
            return TraceSpan {
                ids: Ids {
                    trace_id,
                    parent: incoming.map(|c| (c.span_id, c.flags)),
                },
                span: None,
            };
        };
        let parent = match incoming {
            Some(c) => Context::new().with_remote_span_context(SpanContext::new(
                c.trace_id,
                c.span_id,
                c.flags,
                true,
                TraceState::default(),
            )),
            None => Context::new(),
        };
        let span = tracer
            .span_builder(REQUEST)
            .with_kind(SpanKind::Server)
            .with_attributes([
                KeyValue::new("http.request.method", method.to_string()),
                KeyValue::new("url.path", truncated(path, MAX_PATH_BYTES).to_string()),
            ])
            .start_with_context(tracer, &parent);
        let trace_id = match span.span_context().trace_id() {
            TraceId::INVALID => incoming.map_or_else(
                || RandomIdGenerator::default().new_trace_id(),
                |c| c.trace_id,
            ),
            id => id,
        };
        TraceSpan {
            ids: Ids {
                trace_id,
                parent: incoming.map(|c| (c.span_id, c.flags)),
            },
            span: Some(Recorded {
                tracer: tracer.clone(),
                span,
            }),
        }
    }
}

/// A span of a request's trace: recorded when tracing is on, ids only when it is off.
/// Dropping it ends the span.
#[derive(Default)]
pub struct TraceSpan {
    ids: Ids,
    span: Option<Recorded>,
}

struct Recorded {
    tracer: SdkTracer,
    span: opentelemetry_sdk::trace::Span,
}

/// The request's trace id and the client's parent span (id, flags), if it sent one.
#[derive(Debug, Clone, Copy)]
struct Ids {
    trace_id: TraceId,
    parent: Option<(SpanId, TraceFlags)>,
}

impl Default for Ids {
    fn default() -> Ids {
        Ids {
            trace_id: TraceId::INVALID,
            parent: None,
        }
    }
}

impl fmt::Debug for TraceSpan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TraceSpan")
            .field("trace_id", &self.ids.trace_id)
            .field("recorded", &self.span.is_some())
            .finish()
    }
}

/// A failure a span records: its stable code (`rate_limited`, `upstream_timeout`, ...).
pub trait SpanError {
    fn code(&self) -> &'static str;
}

impl SpanError for Denial {
    fn code(&self) -> &'static str {
        self.code.as_str()
    }
}

impl SpanError for BodyError {
    fn code(&self) -> &'static str {
        self.denial.code.as_str()
    }
}

impl TraceSpan {
    /// The trace id as 32 lower-case hex digits (for the access log); `None` before the
    /// request was seen.
    pub fn trace_id(&self) -> Option<String> {
        (self.ids.trace_id != TraceId::INVALID).then(|| {
            let mut text = Vec::with_capacity(32);
            push_hex(&mut text, &self.ids.trace_id.to_bytes());
            text.into_iter().map(char::from).collect()
        })
    }

    /// Whether this span is recorded (tracing on and the trace sampled).
    pub fn is_recording(&self) -> bool {
        self.span.as_ref().is_some_and(|r| r.span.is_recording())
    }

    /// A child span for a pipeline stage (`modelgate.<stage>`).
    pub fn stage(&self, name: &'static str) -> TraceSpan {
        self.child(name, SpanKind::Internal, Vec::new)
    }

    /// A child span; `attributes` is called only when the span is recorded.
    pub fn child(
        &self,
        name: &'static str,
        kind: SpanKind,
        attributes: impl FnOnce() -> Vec<KeyValue>,
    ) -> TraceSpan {
        let Some(parent) = &self.span else {
            return TraceSpan {
                ids: self.ids,
                span: None,
            };
        };
        let mut builder = parent.tracer.span_builder(name).with_kind(kind);
        if parent.span.is_recording() {
            builder = builder.with_attributes(attributes());
        }
        let cx = Context::new().with_remote_span_context(parent.span.span_context().clone());
        TraceSpan {
            ids: self.ids,
            span: Some(Recorded {
                span: builder.start_with_context(&parent.tracer, &cx),
                tracer: parent.tracer.clone(),
            }),
        }
    }

    /// Adds attributes (computed only when the span is recorded).
    pub fn record(&mut self, attributes: impl FnOnce() -> Vec<KeyValue>) {
        if let Some(r) = &mut self.span
            && r.span.is_recording()
        {
            r.span.set_attributes(attributes());
        }
    }

    /// Ends the span with `result`: a failure records its code and an error status.
    pub fn end<T, E: SpanError>(mut self, result: Result<T, E>) -> Result<T, E> {
        if let (Some(r), Err(e)) = (&mut self.span, &result) {
            r.span
                .set_attribute(KeyValue::new("modelgate.code", e.code()));
            r.span.set_status(Status::error(e.code()));
        }
        result
    }

    /// Ends the request span with the response status: 5xx is an error (a server span's
    /// rule); `attributes` is called only when the span is recorded.
    pub fn finish(&mut self, status: u16, attributes: impl FnOnce() -> Vec<KeyValue>) {
        let Some(mut r) = self.span.take() else {
            return;
        };
        if r.span.is_recording() {
            r.span.set_attributes(attributes());
            r.span.set_attribute(KeyValue::new(
                "http.response.status_code",
                i64::from(status),
            ));
            if status >= 500 {
                r.span.set_status(Status::error(format!("status {status}")));
            }
        }
        r.span.end();
    }

    /// The `traceparent` for a request this span makes: this span as the parent when
    /// tracing is on; else the client's (passed on unchanged) or a fresh parent-id.
    /// (Always `Some`: the value is hex digits and dashes.)
    pub fn traceparent(&self) -> Option<HeaderValue> {
        let own = self
            .span
            .as_ref()
            .map(|r| r.span.span_context())
            .filter(|c| c.is_valid())
            .map(|c| (c.trace_id(), c.span_id(), c.trace_flags()));
        let (trace_id, span_id, flags) = own.unwrap_or_else(|| match self.ids.parent {
            Some((span_id, flags)) => (self.ids.trace_id, span_id, flags),
            None => (
                self.ids.trace_id,
                RandomIdGenerator::default().new_span_id(),
                TraceFlags::SAMPLED,
            ),
        });
        // Written by hand: this runs for every forwarded request, and `format!` of the ids
        // costs several times more.
        let mut text = Vec::with_capacity(55);
        text.extend_from_slice(b"00-");
        push_hex(&mut text, &trace_id.to_bytes());
        text.push(b'-');
        push_hex(&mut text, &span_id.to_bytes());
        text.push(b'-');
        push_hex(&mut text, &[flags.to_u8()]);
        HeaderValue::from_maybe_shared(Bytes::from(text)).ok()
    }
}

/// Appends `bytes` as lower-case hex.
fn push_hex(out: &mut Vec<u8>, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    for b in bytes {
        out.extend_from_slice(&[DIGITS[usize::from(b >> 4)], DIGITS[usize::from(b & 0xf)]]);
    }
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn truncated(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// A parsed, valid `traceparent`.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Incoming {
    trace_id: TraceId,
    span_id: SpanId,
    flags: TraceFlags,
}

/// `version-traceid-parentid-flags` (W3C Trace Context): lower-case hex, version not `ff`,
/// ids not all zero. Anything else is ignored (a new trace starts).
fn parse_traceparent(v: &str) -> Option<Incoming> {
    let mut parts = v.split('-');
    let lower_hex = |s: &str, n: usize| {
        s.len() == n
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    };
    let (Some(version), Some(trace), Some(span), Some(flags), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return None;
    };
    if !(lower_hex(version, 2)
        && version != "ff"
        && lower_hex(trace, 32)
        && lower_hex(span, 16)
        && lower_hex(flags, 2))
    {
        return None;
    }
    let trace_id = TraceId::from_hex(trace).ok()?;
    let span_id = SpanId::from_hex(span).ok()?;
    let flags = u8::from_str_radix(flags, 16).ok()?;
    (trace_id != TraceId::INVALID && span_id != SpanId::INVALID).then_some(Incoming {
        trace_id,
        span_id,
        // Only the sampled bit is defined; the others are not passed on.
        flags: TraceFlags::new(flags) & TraceFlags::SAMPLED,
    })
}

/// POSTs OTLP batches with [`crate::http_get::post`]. The SDK's batch processor calls it on
/// its own thread (never a request thread), so blocking here delays only the next batch.
#[derive(Debug)]
struct OtlpHttpClient {
    endpoint: UpstreamUrl,
    timeout: Duration,
    /// Unix seconds of the last failure logged: at most one warning a minute.
    last_warning: AtomicU64,
}

impl OtlpHttpClient {
    fn url(&self) -> String {
        format!(
            "http://{}{}",
            self.endpoint.authority(),
            self.endpoint.base_path
        )
    }

    fn warn(&self, message: &str) {
        let now = crate::authn::unix_now();
        let last = self.last_warning.load(Ordering::Relaxed);
        if now >= last + 60
            && self
                .last_warning
                .compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed)
                .is_ok()
        {
            log::warn!("trace export to {} failed: {message}", self.url());
        }
    }
}

#[async_trait]
impl opentelemetry_http::HttpClient for OtlpHttpClient {
    async fn send_bytes(
        &self,
        request: http::Request<Bytes>,
    ) -> Result<http::Response<Bytes>, opentelemetry_http::HttpError> {
        let headers: Vec<(&str, &str)> = request
            .headers()
            .iter()
            .filter_map(|(k, v)| Some((k.as_str(), v.to_str().ok()?)))
            .collect();
        let sent = crate::http_get::post(
            &self.endpoint,
            &headers,
            request.body(),
            self.timeout,
            MAX_RESPONSE_BYTES,
        );
        let (status, body) = sent.inspect_err(|e| {
            METRICS.trace_export(false);
            self.warn(e);
        })?;
        let ok = (200..300).contains(&status);
        METRICS.trace_export(ok);
        if !ok {
            self.warn(&format!("status {status}"));
        }
        Ok(http::Response::builder()
            .status(status)
            .body(Bytes::from(body))?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use opentelemetry_sdk::trace::{InMemorySpanExporter, SpanData};

    const CLIENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    fn in_memory(ratio: f64) -> (Telemetry, InMemorySpanExporter) {
        let exporter = InMemorySpanExporter::default();
        let provider = SdkTracerProvider::builder()
            .with_simple_exporter(exporter.clone())
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                ratio,
            ))))
            .build();
        (Telemetry::with_provider(provider), exporter)
    }

    /// What the pipeline does for a forwarded request; returns the upstream `traceparent`.
    fn forwarded_request(telemetry: &Telemetry, traceparent: Option<&str>) -> (String, String) {
        let header = traceparent.map(|v| HeaderValue::from_str(v).unwrap());
        let mut request = telemetry.request(header.as_ref(), "POST", "/echo/x");
        request.record(|| vec![KeyValue::new("modelgate.route", "echo")]);
        for stage in ["modelgate.route", "modelgate.auth", "modelgate.body"] {
            request.stage(stage).end(Ok::<(), Denial>(())).unwrap();
        }
        let backend = request.stage("modelgate.backend");
        let upstream = backend.child(UPSTREAM, SpanKind::Client, || {
            vec![KeyValue::new("server.address", "127.0.0.1")]
        });
        let sent = upstream
            .traceparent()
            .unwrap()
            .to_str()
            .unwrap()
            .to_string();
        drop(upstream);
        drop(backend);
        let trace_id = request.trace_id().unwrap();
        request.finish(200, Vec::new);
        (sent, trace_id)
    }

    fn by_name<'a>(spans: &'a [SpanData], name: &str) -> &'a SpanData {
        spans.iter().find(|s| s.name == name).unwrap()
    }

    #[test]
    fn span_tree_continues_the_client_trace_and_parents_the_upstream() {
        let (telemetry, exporter) = in_memory(1.0);
        let (sent, logged) = forwarded_request(&telemetry, Some(CLIENT));
        let spans = exporter.get_finished_spans().unwrap();
        assert_eq!(spans.len(), 6, "{spans:#?}");
        let client = parse_traceparent(CLIENT).unwrap();
        for s in &spans {
            assert_eq!(s.span_context.trace_id(), client.trace_id, "{}", s.name);
        }
        assert_eq!(logged, "4bf92f3577b34da6a3ce929d0e0e4736");
        let root = by_name(&spans, REQUEST);
        assert_eq!(root.parent_span_id, client.span_id);
        assert!(root.parent_span_is_remote);
        assert_eq!(root.span_kind, SpanKind::Server);
        let roots: Vec<_> = spans
            .iter()
            .filter(|s| s.parent_span_id == client.span_id)
            .collect();
        assert_eq!(roots.len(), 1);
        let root_id = root.span_context.span_id();
        for stage in [
            "modelgate.route",
            "modelgate.auth",
            "modelgate.body",
            "modelgate.backend",
        ] {
            let s = by_name(&spans, stage);
            assert_eq!(s.parent_span_id, root_id, "{stage}");
            assert!(!s.parent_span_is_remote);
        }
        let upstream = by_name(&spans, UPSTREAM);
        assert_eq!(upstream.span_kind, SpanKind::Client);
        assert_eq!(
            upstream.parent_span_id,
            by_name(&spans, "modelgate.backend").span_context.span_id()
        );
        assert_eq!(
            sent,
            format!(
                "00-4bf92f3577b34da6a3ce929d0e0e4736-{}-01",
                upstream.span_context.span_id()
            )
        );
        assert!(
            root.attributes
                .contains(&KeyValue::new("modelgate.route", "echo"))
        );
        assert!(
            root.attributes
                .contains(&KeyValue::new("http.response.status_code", 200_i64))
        );
    }

    #[test]
    fn invalid_traceparent_starts_a_new_trace() {
        let (telemetry, exporter) = in_memory(1.0);
        for bad in [
            "",
            "00-0000-00f067aa0ba902b7-01",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
        ] {
            exporter.reset();
            let (sent, logged) = forwarded_request(&telemetry, Some(bad));
            let spans = exporter.get_finished_spans().unwrap();
            let root = by_name(&spans, REQUEST);
            assert_eq!(root.parent_span_id, SpanId::INVALID, "{bad}");
            let trace_id = root.span_context.trace_id().to_string();
            assert_ne!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_eq!(logged, trace_id);
            assert!(sent.starts_with(&format!("00-{trace_id}-")), "{sent}");
            assert!(parse_traceparent(&sent).is_some(), "{sent}");
        }
    }

    #[test]
    fn unsampled_traces_export_nothing_but_keep_one_trace_id() {
        let (telemetry, exporter) = in_memory(0.0);
        let (sent, logged) = forwarded_request(&telemetry, None);
        assert!(exporter.get_finished_spans().unwrap().is_empty());
        let parsed = parse_traceparent(&sent).unwrap();
        assert_eq!(parsed.trace_id.to_string(), logged);
        assert!(!parsed.flags.is_sampled());
        // A sampled client trace is recorded whatever the ratio.
        let (_, logged) = forwarded_request(&telemetry, Some(CLIENT));
        assert_eq!(logged, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(exporter.get_finished_spans().unwrap().len(), 6);
    }

    #[test]
    fn recorded_paths_are_capped() {
        let (telemetry, exporter) = in_memory(1.0);
        let long = format!("/echo/{}", "é".repeat(300));
        telemetry.request(None, "GET", &long).finish(404, Vec::new);
        let spans = exporter.get_finished_spans().unwrap();
        let path = spans[0]
            .attributes
            .iter()
            .find(|kv| kv.key.as_str() == "url.path")
            .unwrap()
            .value
            .to_string();
        assert!(
            path.len() <= MAX_PATH_BYTES && long.starts_with(&path),
            "{path}"
        );
    }

    #[test]
    fn off_passes_the_client_traceparent_on_or_starts_one() {
        let telemetry = Telemetry::off();
        let (sent, logged) = forwarded_request(&telemetry, Some(CLIENT));
        assert_eq!(sent, CLIENT);
        assert_eq!(logged, "4bf92f3577b34da6a3ce929d0e0e4736");
        let (sent, logged) = forwarded_request(&telemetry, Some("00-bad"));
        let parsed = parse_traceparent(&sent).unwrap();
        assert_eq!(parsed.trace_id.to_string(), logged);
        let (other, _) = forwarded_request(&telemetry, None);
        assert_ne!(sent, other);
        assert!(!telemetry.request(None, "GET", "/").is_recording());
    }
}
