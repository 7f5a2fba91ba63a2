//! Per-request tracing cost on the request path: what the pipeline does for one forwarded,
//! authenticated request (request span, five stages, backend stage with the upstream client
//! span and its `traceparent`, the request span's end and the access log's trace id).
//!
//! - `off`: no `[telemetry]` (the default): ids only, no span is built.
//! - `on`: spans handed to the SDK's batch processor (its exporter discards them, so this
//!   is the request-thread side only; the export runs on the batch thread).
//! - `on_unsampled`: tracing on, `sampling_ratio = 0` and no client trace.

#![allow(clippy::unwrap_used, missing_docs)]

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use http::HeaderValue;
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use opentelemetry_sdk::error::OTelSdkResult;
use opentelemetry_sdk::trace::{
    BatchSpanProcessor, Sampler, SdkTracerProvider, SpanData, SpanExporter,
};

use modelgate::telemetry::{Telemetry, UPSTREAM};
use modelgate_plugins::Denial;

#[derive(Debug)]
struct Discard;

impl SpanExporter for Discard {
    async fn export(&self, batch: Vec<SpanData>) -> OTelSdkResult {
        black_box(batch);
        Ok(())
    }
}

fn on(ratio: f64) -> Telemetry {
    let provider = SdkTracerProvider::builder()
        .with_span_processor(BatchSpanProcessor::builder(Discard).build())
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
            ratio,
        ))))
        .build();
    Telemetry::with_provider(provider)
}

fn one_request(
    telemetry: &Telemetry,
    traceparent: Option<&HeaderValue>,
) -> (Option<HeaderValue>, Option<String>) {
    let mut request = telemetry.request(traceparent, "POST", "/echo/v1/predict");
    request.record(|| {
        vec![
            KeyValue::new("modelgate.route", "echo"),
            KeyValue::new("modelgate.model", "echo"),
        ]
    });
    for stage in [
        "modelgate.route",
        "modelgate.auth",
        "modelgate.body",
        "modelgate.validate",
        "modelgate.rate_limit",
    ] {
        request.stage(stage).end(Ok::<(), Denial>(())).unwrap();
    }
    let backend = request.stage("modelgate.backend");
    let mut upstream = backend.child(UPSTREAM, SpanKind::Client, || {
        vec![
            KeyValue::new("http.request.method", "POST"),
            KeyValue::new("server.address", "127.0.0.1".to_string()),
            KeyValue::new("server.port", 9001_i64),
        ]
    });
    let sent = upstream.traceparent();
    upstream.record(|| vec![KeyValue::new("http.response.status_code", 200_i64)]);
    upstream.end(Ok::<(), Denial>(())).unwrap();
    backend.end(Ok::<(), Denial>(())).unwrap();
    request.finish(200, || {
        vec![
            KeyValue::new("modelgate.cost", 1_i64),
            KeyValue::new("modelgate.consumer", "acme".to_string()),
        ]
    });
    (sent, request.trace_id())
}

fn bench(c: &mut Criterion) {
    let client =
        HeaderValue::from_static("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01");
    let off = Telemetry::off();
    let traced = on(1.0);
    let unsampled = on(0.0);
    let mut group = c.benchmark_group("trace_per_request");
    group.bench_function("off", |b| b.iter(|| one_request(&off, None)));
    group.bench_function("off_client_traceparent", |b| {
        b.iter(|| one_request(&off, Some(&client)))
    });
    group.bench_function("on", |b| b.iter(|| one_request(&traced, None)));
    group.bench_function("on_client_traceparent", |b| {
        b.iter(|| one_request(&traced, Some(&client)))
    });
    group.bench_function("on_unsampled", |b| b.iter(|| one_request(&unsampled, None)));
    group.finish();
    traced.shutdown();
    unsampled.shutdown();
}

criterion_group!(benches, bench);
criterion_main!(benches);
