//! Traces end to end: a real gateway exports OTLP/HTTP (protobuf) spans to an in-process
//! collector on loopback; the span tree continues the client's `traceparent`, the upstream
//! gets the upstream span as its parent, and a collector that never answers costs requests
//! nothing.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::span::SpanKind;
use prost::Message;

use modelgate_e2e::client::{self, post_json};
use modelgate_e2e::gateway::{GatewayProcess, digits_route};
use modelgate_e2e::upstream::{Behaviour, Upstream};

const ECHO_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const DIGITS_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
const CLIENT_SPAN: &str = "00f067aa0ba902b7";

/// One OTLP export as the collector received it.
struct Export {
    path: String,
    content_type: String,
    request: ExportTraceServiceRequest,
}

/// A minimal OTLP/HTTP collector on `127.0.0.1:0`: answers every POST with 200.
struct Collector {
    addr: SocketAddr,
    exports: Arc<Mutex<Vec<Export>>>,
}

impl Collector {
    fn start() -> Collector {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let exports = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&exports);
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                if let Some(export) = receive(stream) {
                    seen.lock().unwrap().push(export);
                }
            }
        });
        Collector { addr, exports }
    }

    /// Every span received so far, with its service name.
    fn spans(&self) -> Vec<(String, Span)> {
        let exports = self.exports.lock().unwrap();
        let mut out = Vec::new();
        for export in exports.iter() {
            assert_eq!(export.path, "/v1/traces");
            assert_eq!(export.content_type, "application/x-protobuf");
            for resource in &export.request.resource_spans {
                let service = resource
                    .resource
                    .as_ref()
                    .and_then(|r| r.attributes.iter().find(|kv| kv.key == "service.name"))
                    .and_then(|kv| kv.value.as_ref()?.value.clone());
                let service = match service {
                    Some(AnyValue::StringValue(s)) => s,
                    _ => String::new(),
                };
                for scope in &resource.scope_spans {
                    for span in &scope.spans {
                        out.push((service.clone(), span.clone()));
                    }
                }
            }
        }
        out
    }

    /// Waits until `count` spans of `trace_id` arrived (the gateway exports every second).
    fn wait_for(&self, trace_id: &str, count: usize) -> Vec<(String, Span)> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let spans: Vec<_> = self
                .spans()
                .into_iter()
                .filter(|(_, s)| hex(&s.trace_id) == trace_id)
                .collect();
            if spans.len() >= count || Instant::now() > deadline {
                return spans;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

fn receive(mut stream: TcpStream) -> Option<Export> {
    stream
        .set_read_timeout(Some(Duration::from_secs(10)))
        .ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let head_end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let head = String::from_utf8_lossy(&buf[..head_end]).to_string();
    let header = |name: &str| {
        head.lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.trim().eq_ignore_ascii_case(name))
            .map(|(_, v)| v.trim().to_string())
    };
    let length: usize = header("content-length")?.parse().ok()?;
    while buf.len() < head_end + length {
        let n = stream.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    stream
        .write_all(b"HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
        .ok()?;
    Some(Export {
        path: head.split(' ').nth(1)?.to_string(),
        content_type: header("content-type")?,
        request: ExportTraceServiceRequest::decode(&buf[head_end..head_end + length]).ok()?,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn by_name<'a>(spans: &'a [(String, Span)], name: &str) -> &'a Span {
    &spans
        .iter()
        .find(|(_, s)| s.name == name)
        .unwrap_or_else(|| panic!("no {name} span"))
        .1
}

fn config(collector: SocketAddr, upstream: &Upstream) -> String {
    format!(
        "[telemetry]\notlp_endpoint = \"http://{collector}\"\nservice_name = \"mg-e2e\"\n\n\
         [[routes]]\nname = \"echo\"\npath_prefix = \"/echo\"\npublic = true\n\
         [routes.http]\nupstreams = [{:?}]\n\n{}",
        upstream.url(),
        digits_route()
    )
}

#[test]
fn exported_span_tree_continues_the_client_trace_and_parents_the_upstream_call() {
    let collector = Collector::start();
    let up = Upstream::start(Behaviour::Echo);
    let gw = GatewayProcess::start(&config(collector.addr, &up));

    let r = post_json(
        gw.addr,
        "/echo/predict",
        br#"{"x":1}"#,
        &format!("traceparent: 00-{ECHO_TRACE}-{CLIENT_SPAN}-01\r\n"),
    );
    assert_eq!(r.status, 200);
    let row = vec![0.0f32; 64];
    let body = serde_json::json!({"inputs": [{"name": "input", "shape": [1, 64], "datatype": "FP32", "data": row}]});
    let r = post_json(
        gw.addr,
        "/v2/models/digits/infer",
        body.to_string().as_bytes(),
        &format!("traceparent: 00-{DIGITS_TRACE}-{CLIENT_SPAN}-01\r\n"),
    );
    assert_eq!(r.status, 200, "{}", r.json());

    // Forwarded request: request span, its stages (public route: no auth, no rate limit),
    // and the upstream call under the backend stage.
    let spans = collector.wait_for(ECHO_TRACE, 6);
    let mut names: Vec<&str> = spans.iter().map(|(_, s)| s.name.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "modelgate.backend",
            "modelgate.body",
            "modelgate.request",
            "modelgate.route",
            "modelgate.upstream",
            "modelgate.validate",
        ],
        "{spans:#?}"
    );
    assert!(spans.iter().all(|(service, _)| service == "mg-e2e"));
    let root = by_name(&spans, "modelgate.request");
    assert_eq!(hex(&root.parent_span_id), CLIENT_SPAN);
    assert_eq!(root.kind, SpanKind::Server as i32);
    let attributes: HashMap<&str, String> = root
        .attributes
        .iter()
        .map(|kv| {
            let value = match kv.value.as_ref().and_then(|v| v.value.clone()) {
                Some(AnyValue::StringValue(s)) => s,
                Some(AnyValue::IntValue(i)) => i.to_string(),
                other => format!("{other:?}"),
            };
            (kv.key.as_str(), value)
        })
        .collect();
    assert_eq!(attributes["modelgate.route"], "echo");
    assert_eq!(attributes["http.response.status_code"], "200");
    assert_eq!(attributes["url.path"], "/echo/predict");
    for stage in [
        "modelgate.route",
        "modelgate.body",
        "modelgate.validate",
        "modelgate.backend",
    ] {
        assert_eq!(
            by_name(&spans, stage).parent_span_id,
            root.span_id,
            "{stage}"
        );
    }
    let upstream = by_name(&spans, "modelgate.upstream");
    assert_eq!(upstream.kind, SpanKind::Client as i32);
    assert_eq!(
        upstream.parent_span_id,
        by_name(&spans, "modelgate.backend").span_id
    );
    // The upstream saw the upstream span as its parent, in the client's trace.
    assert_eq!(
        up.seen()[0].header("traceparent").unwrap(),
        format!("00-{ECHO_TRACE}-{}-01", hex(&upstream.span_id))
    );
    // The access log names the same trace.
    let logs = gw.logs();
    let access = logs
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .find(|v| v["path"] == "/echo/predict")
        .unwrap();
    assert_eq!(access["trace_id"], ECHO_TRACE);

    // Embedded model: the inference span sits under the backend stage.
    let spans = collector.wait_for(DIGITS_TRACE, 6);
    let inference = by_name(&spans, "modelgate.inference");
    assert_eq!(
        inference.parent_span_id,
        by_name(&spans, "modelgate.backend").span_id
    );
    assert_eq!(
        hex(&by_name(&spans, "modelgate.request").parent_span_id),
        CLIENT_SPAN
    );
}

#[test]
fn a_collector_that_never_answers_costs_requests_nothing() {
    // Accepts connections (the kernel does) but never reads or answers.
    let silent = TcpListener::bind("127.0.0.1:0").unwrap();
    let up = Upstream::start(Behaviour::Echo);
    let rest = format!(
        "[telemetry]\notlp_endpoint = \"http://{}\"\nexport_timeout = \"1s\"\n\n\
         [[routes]]\nname = \"echo\"\npath_prefix = \"/echo\"\npublic = true\n\
         [routes.http]\nupstreams = [{:?}]\n",
        silent.local_addr().unwrap(),
        up.url()
    );
    let gw = GatewayProcess::start(&rest);
    let mut conn = client::Conn::open(gw.addr).unwrap();
    for _ in 0..200 {
        let r = conn
            .request(b"GET /echo/x HTTP/1.1\r\nHost: t\r\n\r\n")
            .unwrap();
        assert_eq!(r.status, 200);
    }
    // The failed export is counted and logged (once a minute at most), off the request path.
    let metrics = || String::from_utf8_lossy(&client::get(gw.admin, "/metrics").body).to_string();
    let failed = || {
        metrics().lines().any(|l| {
            l.strip_prefix("modelgate_trace_exports_total{result=\"failed\"} ")
                .is_some_and(|n| n != "0")
        })
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !failed() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(failed(), "{}", metrics());
    assert!(gw.logs().contains("trace export to"), "{}", gw.logs());
    let r = conn
        .request(b"GET /echo/x HTTP/1.1\r\nHost: t\r\n\r\n")
        .unwrap();
    assert_eq!(r.status, 200);
    drop(silent);
}
