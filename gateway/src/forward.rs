//! Forwarding to HTTP backends with the gateway's own HTTP/1.1 client
//! ([`crate::upstream_http1`]), over keep-alive connections from [`UpstreamPool`]. The
//! request body is already buffered, so head and body leave in one write; the response is
//! streamed back — or, when the gateway must rewrite it (extraction hardening), read whole
//! up to a cap and handed back to the pipeline.

use std::future::{Future, poll_fn};
use std::net::{IpAddr, SocketAddr, ToSocketAddrs};
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::Poll;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, header};
use opentelemetry::KeyValue;
use opentelemetry::trace::SpanKind;
use pingora::ErrorType;
use pingora::http::{RequestHeader, ResponseHeader};
use pingora::protocols::http::ServerSession;
use tokio::net::TcpStream;

use modelgate_config::HttpBackend;
use modelgate_plugins::auth::Caller;
use modelgate_plugins::ratelimit::Admission;
use modelgate_plugins::{Code, Denial};

use crate::telemetry::{SpanError, TRACEPARENT, TraceSpan, UPSTREAM};
use crate::upstream_http1::{self, Body, Request, RequestWriter, TimeBudget, UpstreamError};
use crate::upstream_pool::UpstreamPool;

/// Prefix of the identity headers the gateway sets for upstreams.
const IDENTITY_PREFIX: &str = "x-modelgate-";
// Built at compile time: `HeaderName::from_static` checks its input on every call.
const X_MODELGATE_CONSUMER: HeaderName = HeaderName::from_static("x-modelgate-consumer");
const X_MODELGATE_PLAN: HeaderName = HeaderName::from_static("x-modelgate-plan");
const X_MODELGATE_CREDENTIAL: HeaderName = HeaderName::from_static("x-modelgate-credential");
const X_FORWARDED_FOR: HeaderName = HeaderName::from_static("x-forwarded-for");
/// Request headers that are never passed on: set by the gateway itself (framing,
/// `X-Forwarded-For`, `traceparent`) or meant for it alone (`Expect`,
/// `Proxy-Authorization`).
static SET_BY_THE_GATEWAY: [HeaderName; 5] = [
    header::EXPECT,
    header::PROXY_AUTHORIZATION,
    header::CONTENT_LENGTH,
    X_FORWARDED_FOR,
    TRACEPARENT,
];

/// Who the upstream is told is calling, and which credentials to hold back.
pub struct Identity<'a> {
    pub caller: Option<&'a Caller>,
    /// Remove `credential_headers` (the route does not forward credentials).
    pub strip_credentials: bool,
    pub credential_headers: &'a [HeaderName],
    /// Remove the `api_key` query parameter.
    pub strip_query_key: bool,
}

/// One request to forward, as the checks before the backend left it.
pub struct Call<'a> {
    /// The request body, already read whole.
    pub body: Bytes,
    /// How many bytes of the path the route's prefix matched.
    pub prefix_len: usize,
    pub identity: Identity<'a>,
    /// Headers the gateway adds to the response (e.g. `RateLimit-*`).
    pub response_headers: Vec<(HeaderName, HeaderValue)>,
    pub mode: ResponseMode,
}

/// How the upstream's response reaches the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResponseMode {
    /// Streamed to the client as it arrives.
    Stream,
    /// Read whole (at most `cap` bytes, no content coding asked for) and returned unsent.
    Buffer { cap: usize },
}

/// What a successful exchange produced.
#[derive(Debug)]
pub enum Forwarded {
    /// The response went to the client; its status.
    Streamed(u16),
    /// The response, read whole and not yet sent ([`ResponseMode::Buffer`]); write it with
    /// [`write_buffered`].
    Buffered(Box<ResponseHeader>, Bytes),
}

impl Forwarded {
    /// The upstream's status.
    pub fn status(&self) -> u16 {
        match self {
            Forwarded::Streamed(status) => *status,
            Forwarded::Buffered(header, _) => header.status.as_u16(),
        }
    }
}

/// A route's HTTP backends, picked round-robin.
pub struct HttpUpstreams {
    peers: Vec<Backend>,
    next: AtomicUsize,
    rewrite_prefix: Option<String>,
    connect_timeout: Duration,
    /// Longest wait for each read from (and write to) an upstream.
    io_timeout: Duration,
    total_timeout: Duration,
}

/// One upstream: its address, the URL's base path, and its host and port for traces.
struct Backend {
    addr: SocketAddr,
    base_path: String,
    host: String,
    port: u16,
}

/// What went wrong while forwarding.
#[derive(Debug)]
pub enum ForwardError {
    /// Nothing was sent downstream yet: answer with this denial.
    BeforeResponse(Denial),
    /// The response had started: the downstream connection must be dropped.
    AfterResponse(Box<pingora::Error>),
}

impl HttpUpstreams {
    /// Resolves every upstream address once; the error names the one that failed.
    pub fn build(config: &HttpBackend) -> Result<HttpUpstreams, (usize, String)> {
        let peers = config
            .upstreams
            .iter()
            .enumerate()
            .map(|(i, url)| {
                let addr: SocketAddr = url
                    .authority()
                    .to_socket_addrs()
                    .ok()
                    .and_then(|mut a| a.next())
                    .ok_or_else(|| (i, format!("cannot resolve {}", url.authority())))?;
                Ok(Backend {
                    addr,
                    base_path: url.base_path.clone(),
                    host: url.host.clone(),
                    port: url.port,
                })
            })
            .collect::<Result<_, _>>()?;
        Ok(HttpUpstreams {
            peers,
            next: AtomicUsize::new(0),
            rewrite_prefix: config.rewrite_prefix.clone(),
            connect_timeout: config.connect_timeout,
            io_timeout: config.read_timeout,
            total_timeout: config.total_timeout,
        })
    }

    /// Forwards `call` to the next upstream and streams the response to the client or
    /// buffers it (`call.mode`). The exchange is traced as a client span under `parent`,
    /// which the upstream's `traceparent` names.
    pub async fn forward(
        &self,
        pool: &UpstreamPool,
        session: &mut ServerSession,
        call: &Call<'_>,
        in_flight: &mut Option<Admission>,
        parent: &TraceSpan,
    ) -> Result<Forwarded, ForwardError> {
        let index = self.next.fetch_add(1, Ordering::Relaxed) % self.peers.len();
        let backend = &self.peers[index];
        let mut span = parent.child(UPSTREAM, SpanKind::Client, || {
            vec![
                KeyValue::new(
                    "http.request.method",
                    session.req_header().method.as_str().to_string(),
                ),
                KeyValue::new("server.address", backend.host.clone()),
                KeyValue::new("server.port", i64::from(backend.port)),
            ]
        });
        let traceparent = span.traceparent();
        let result = self
            .exchange_with(pool, backend, session, call, in_flight, traceparent)
            .await;
        if let Ok(forwarded) = &result {
            span.record(|| {
                vec![KeyValue::new(
                    "http.response.status_code",
                    i64::from(forwarded.status()),
                )]
            });
        }
        span.end(result)
    }

    async fn exchange_with(
        &self,
        pool: &UpstreamPool,
        backend: &Backend,
        session: &mut ServerSession,
        call: &Call<'_>,
        in_flight: &mut Option<Admission>,
        traceparent: Option<HeaderValue>,
    ) -> Result<Forwarded, ForwardError> {
        let request = self.upstream_request(session, &backend.base_path, call, traceparent)?;
        // The total timeout is kept by each wait of the exchange (see `TimeBudget`), not by
        // a timer around it.
        let link = Link {
            pool,
            addr: backend.addr,
            connect_timeout: self.connect_timeout,
            budget: TimeBudget::new(self.io_timeout, self.total_timeout),
        };
        exchange(&link, session, &request, call, in_flight).await
    }

    /// The request the upstream gets, written straight into its wire bytes: the target
    /// rewritten for the backend, hop-by-hop and gateway-only headers left out, identity,
    /// framing, `X-Forwarded-For` and `traceparent` set by the gateway. Names go upstream in
    /// lower case (HTTP header names are case-insensitive).
    fn upstream_request(
        &self,
        session: &ServerSession,
        base_path: &str,
        call: &Call<'_>,
        traceparent: Option<HeaderValue>,
    ) -> Result<Request, ForwardError> {
        let identity = &call.identity;
        let downstream = session.req_header();
        let invalid = || {
            ForwardError::BeforeResponse(Denial::new(
                Code::BadRequest,
                "the request target is invalid",
            ))
        };
        let target = self.upstream_target(downstream, base_path, call.prefix_len, identity);
        let target = target.ok_or_else(invalid)?;
        // The client's fields plus room for the ones the gateway adds.
        let fields: usize = downstream
            .headers
            .iter()
            .map(|(name, value)| name.as_str().len() + value.len() + 4)
            .sum();
        let mut head =
            RequestWriter::new(&downstream.method, &target, fields + 256, call.body.len());
        let connection_listed = connection_listed(&downstream.headers);
        let buffered = call.mode != ResponseMode::Stream;
        let held_back = |name: &HeaderName| {
            is_hop_by_hop(name)
                || connection_listed.contains(name)
                || SET_BY_THE_GATEWAY.contains(name)
                // Credentials stay here unless the route forwards them.
                || (identity.strip_credentials && identity.credential_headers.contains(name))
                // A buffered response is read by the gateway: no content coding.
                || (buffered && name == header::ACCEPT_ENCODING)
                // Identity headers come only from the gateway.
                || name.as_str().starts_with(IDENTITY_PREFIX)
        };
        for (name, value) in &downstream.headers {
            if !held_back(name) {
                head.field(name, value);
            }
        }
        if let Some(caller) = identity.caller {
            let values = caller.header_values();
            for (name, value) in [
                (X_MODELGATE_CONSUMER, &values.consumer),
                (X_MODELGATE_PLAN, &values.plan),
                (X_MODELGATE_CREDENTIAL, &values.credential),
            ] {
                // A value that is not a valid header is left out (see `HeaderValues`).
                if let Some(value) = value {
                    head.field(&name, value);
                }
            }
        }
        let had_body_framing = downstream.headers.contains_key(header::CONTENT_LENGTH)
            || downstream.headers.contains_key(header::TRANSFER_ENCODING);
        if !call.body.is_empty() || had_body_framing {
            head.content_length(call.body.len());
        }
        if let Some(peer) = session.client_addr().and_then(|a| a.as_inet()) {
            let prior = downstream
                .headers
                .get(&X_FORWARDED_FOR)
                .and_then(|v| v.to_str().ok())
                .filter(|prior| !prior.trim().is_empty());
            let value = forwarded_for(prior, peer.ip()).ok_or_else(invalid)?;
            head.field(&X_FORWARDED_FOR, &value);
        }
        if let Some(traceparent) = traceparent {
            head.field(&TRACEPARENT, &traceparent);
        }
        Ok(head.finish(&call.body))
    }

    /// The target the backend gets: the client's, without an `api_key` parameter when the
    /// key came that way, under the backend's base path and the route's rewrite prefix.
    /// `None` if that is not a valid request target.
    fn upstream_target(
        &self,
        downstream: &RequestHeader,
        base_path: &str,
        prefix_len: usize,
        identity: &Identity<'_>,
    ) -> Option<PathAndQuery> {
        let original = downstream.uri.path_and_query();
        match original {
            // The common case, the target unchanged: shared, not copied and parsed again.
            Some(unchanged)
                if unchanged.as_str().starts_with('/')
                    && !identity.strip_query_key
                    && self.rewrite_prefix.is_none()
                    && base_path.trim_end_matches('/').is_empty() =>
            {
                Some(unchanged.clone())
            }
            _ => {
                let original = original.map_or("/", |p| p.as_str());
                let path_and_query = if identity.strip_query_key {
                    without_query_param(original, "api_key")
                } else {
                    original.to_string()
                };
                let rest = path_and_query.get(prefix_len..).unwrap_or("");
                let path = match &self.rewrite_prefix {
                    Some(rewrite) => join_path(base_path, &join_path(rewrite, rest)),
                    None => join_path(base_path, &path_and_query),
                };
                let uri = http::Uri::try_from(path).ok()?;
                Some(
                    uri.path_and_query()
                        .cloned()
                        .unwrap_or_else(|| PathAndQuery::from_static("/")),
                )
            }
        }
    }
}

impl SpanError for ForwardError {
    fn code(&self) -> &'static str {
        match self {
            ForwardError::BeforeResponse(denial) => denial.code.as_str(),
            ForwardError::AfterResponse(e) => e.etype().as_str(),
        }
    }
}

/// `X-Forwarded-For` with `peer` appended to the client's `prior` list (one allocation; an
/// IPv4 address is written digit by digit, without the `fmt` machinery: this runs for
/// every forwarded request). `None` if `prior` makes it an invalid header value.
fn forwarded_for(prior: Option<&str>, peer: IpAddr) -> Option<HeaderValue> {
    let mut text = Vec::with_capacity(prior.map_or(0, |p| p.len() + 2) + 15);
    if let Some(prior) = prior {
        text.extend_from_slice(prior.as_bytes());
        text.extend_from_slice(b", ");
    }
    match peer {
        IpAddr::V4(v4) => {
            for (i, octet) in v4.octets().into_iter().enumerate() {
                if i > 0 {
                    text.push(b'.');
                }
                if octet >= 100 {
                    text.push(b'0' + octet / 100);
                }
                if octet >= 10 {
                    text.push(b'0' + octet / 10 % 10);
                }
                text.push(b'0' + octet % 10);
            }
        }
        IpAddr::V6(_) => text.extend_from_slice(peer.to_string().as_bytes()),
    }
    HeaderValue::from_maybe_shared(Bytes::from(text)).ok()
}

/// One upstream exchange; a failure on a reused pooled connection before any response byte
/// is retried once on a fresh connection (the classic keep-alive race).
async fn exchange(
    link: &Link<'_>,
    session: &mut ServerSession,
    request: &Request,
    call: &Call<'_>,
    in_flight: &mut Option<Admission>,
) -> Result<Forwarded, ForwardError> {
    let mut attempt = 0;
    let (response, mut body) = loop {
        attempt += 1;
        let (stream, reused) = link.open().await?;
        match upstream_http1::exchange(stream, link.budget, request).await {
            Ok(answer) => break answer,
            Err(failure) if reused && attempt == 1 && failure.retryable => continue,
            Err(failure) => {
                return Err(ForwardError::BeforeResponse(upstream_denial(
                    &failure.error,
                )));
            }
        }
    };
    let status = response.status.as_u16();
    let response = downstream_response(response, &call.response_headers);
    if let ResponseMode::Buffer { cap } = call.mode {
        let whole = read_capped(&mut body, cap).await?;
        link.release(body);
        return Ok(Forwarded::Buffered(response, whole));
    }
    let done = body.is_done();
    if done {
        release_in_flight(in_flight);
    }
    link.to_client(session.write_response_header(response))
        .await?;
    while !body.is_done() {
        let piece = body.next().await.map_err(broken_response)?;
        let end = body.is_done();
        if end {
            release_in_flight(in_flight);
        }
        link.to_client(session.write_response_body(piece.unwrap_or_default(), end))
            .await?;
    }
    link.release(body);
    Ok(Forwarded::Streamed(status))
}

/// The connections of one exchange: pooled or new, to the chosen upstream, with the
/// route's timeouts.
struct Link<'a> {
    pool: &'a UpstreamPool,
    addr: SocketAddr,
    connect_timeout: Duration,
    budget: TimeBudget,
}

impl Link<'_> {
    /// An idle pooled connection or a new one; `true` when reused.
    async fn open(&self) -> Result<(TcpStream, bool), ForwardError> {
        let failed = |e| ForwardError::BeforeResponse(upstream_denial(&e));
        let wait = self
            .budget
            .wait(self.connect_timeout)
            .ok_or_else(|| failed(UpstreamError::Timeout))?;
        self.pool.connect(self.addr, wait).await.map_err(failed)
    }

    /// A write of the response to the client, within the exchange's time budget.
    async fn to_client(
        &self,
        write: impl Future<Output = pingora::Result<()>>,
    ) -> Result<(), ForwardError> {
        let mut write = pin!(write);
        // A write the client's socket takes at once (the usual case) never consults the
        // budget: no clock read, no timeout future (Pingora's timer itself is registered
        // only for a write that waits).
        let first = poll_fn(|cx| Poll::Ready(write.as_mut().poll(cx))).await;
        let written = match first {
            Poll::Ready(written) => Some(written),
            Poll::Pending => self.budget.run(write).await,
        };
        match written {
            Some(written) => written.map_err(ForwardError::AfterResponse),
            None => Err(ForwardError::AfterResponse(pingora::Error::new(
                ErrorType::WriteTimedout,
            ))),
        }
    }

    /// Pools the connection if the exchange left it reusable (see [`Body::into_reusable`]).
    fn release(&self, body: Body) {
        if let Some(stream) = body.into_reusable() {
            self.pool.put(self.addr, stream);
        }
    }
}

/// The whole response body, or a denial when it passes `cap` bytes (the connection is
/// then dropped, not pooled) or breaks off.
async fn read_capped(body: &mut Body, cap: usize) -> Result<Bytes, ForwardError> {
    let mut whole = BytesMut::new();
    while let Some(piece) = body
        .next()
        .await
        .map_err(|e| ForwardError::BeforeResponse(upstream_denial(&e)))?
    {
        if whole.len() + piece.len() > cap {
            log::warn!("upstream response refused: larger than the route's {cap}-byte cap");
            return Err(ForwardError::BeforeResponse(Denial::new(
                Code::UpstreamInvalidResponse,
                "the upstream's response is larger than this route accepts",
            )));
        }
        whole.extend_from_slice(&piece);
    }
    Ok(whole.freeze())
}

/// Sends a buffered upstream response with `body` (possibly rewritten) in place of the
/// upstream's, framed by `Content-Length`. In-flight permits go back before it is written.
pub async fn write_buffered(
    session: &mut ServerSession,
    mut response: Box<ResponseHeader>,
    body: Bytes,
    in_flight: &mut Option<Admission>,
) -> pingora::Result<()> {
    response.remove_header(&header::TRANSFER_ENCODING);
    response.insert_header(header::CONTENT_LENGTH, body.len().to_string())?;
    release_in_flight(in_flight);
    session.write_response_header(response).await?;
    if !body.is_empty() {
        session.write_response_body(body, true).await?;
    }
    Ok(())
}

/// Gives the limiter's in-flight permits back just before the last response byte is
/// written: the client may send its next request as soon as it has this response.
fn release_in_flight(in_flight: &mut Option<Admission>) {
    drop(in_flight.take());
}

/// The upstream's response header as the client gets it: hop-by-hop headers dropped (but
/// `Transfer-Encoding`: Pingora re-frames the body from it) and the gateway's `extra`
/// headers set, replacing any the upstream sent. Edited as plain `http` parts, without
/// Pingora's original-case name map: names go out in lower case and the reason phrase is
/// the standard one.
fn downstream_response(
    mut parts: http::response::Parts,
    extra: &[(HeaderName, HeaderValue)],
) -> Box<ResponseHeader> {
    for name in response_hop_by_hop(&parts.headers) {
        parts.headers.remove(&name);
    }
    for (name, value) in extra {
        parts.headers.insert(name.clone(), value.clone());
    }
    Box::new(ResponseHeader::from(parts))
}

/// The headers named in `Connection` (RFC 9110 §7.6.1); usually none, and then no
/// allocation.
fn connection_listed(headers: &HeaderMap) -> Vec<HeaderName> {
    headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|token| HeaderName::try_from(token.trim()).ok())
        .collect()
}

/// The response headers that do not go downstream: those named in `Connection` and the
/// fixed hop-by-hop set, but `Transfer-Encoding` (Pingora re-frames the body from it).
fn response_hop_by_hop(headers: &HeaderMap) -> Vec<HeaderName> {
    let fixed = headers
        .keys()
        .filter(|k| is_hop_by_hop(k) && *k != header::TRANSFER_ENCODING)
        .cloned();
    let mut names = connection_listed(headers);
    names.extend(fixed);
    names.dedup();
    names
}

fn is_hop_by_hop(name: &HeaderName) -> bool {
    matches!(
        name.as_str(),
        "connection"
            | "keep-alive"
            | "proxy-connection"
            | "proxy-authenticate"
            | "te"
            | "trailer"
            | "transfer-encoding"
            | "upgrade"
    )
}

fn join_path(prefix: &str, rest: &str) -> String {
    let prefix = prefix.trim_end_matches('/');
    match rest {
        "" => {
            if prefix.is_empty() {
                "/".to_string()
            } else {
                prefix.to_string()
            }
        }
        r if r.starts_with('/') => format!("{prefix}{r}"),
        r if r.starts_with('?') => format!("{}{r}", if prefix.is_empty() { "/" } else { prefix }),
        r => format!("{prefix}/{r}"),
    }
}

/// `path?query` without any `name=...` pair.
fn without_query_param(path_and_query: &str, name: &str) -> String {
    let Some((path, query)) = path_and_query.split_once('?') else {
        return path_and_query.to_string();
    };
    let kept: Vec<&str> = query
        .split('&')
        .filter(|pair| pair.split('=').next() != Some(name))
        .collect();
    if kept.is_empty() {
        path.to_string()
    } else {
        format!("{path}?{}", kept.join("&"))
    }
}

fn timeout_denial() -> Denial {
    Denial::new(Code::UpstreamTimeout, "the upstream did not answer in time")
}

fn upstream_denial(e: &UpstreamError) -> Denial {
    log::warn!("upstream failed: {e}");
    match e {
        UpstreamError::Timeout => timeout_denial(),
        UpstreamError::Broken(_) => Denial::new(
            Code::UpstreamUnavailable,
            "the upstream refused or reset the connection",
        ),
        UpstreamError::Invalid(_) => Denial::new(
            Code::UpstreamInvalidResponse,
            "the upstream's response is not valid HTTP/1.1 or cannot be forwarded",
        ),
    }
}

/// An upstream failure after the response began: the client connection must be dropped.
fn broken_response(e: UpstreamError) -> ForwardError {
    log::warn!("upstream response broke off: {e}");
    let kind = match e {
        UpstreamError::Timeout => ErrorType::ReadTimedout,
        UpstreamError::Broken(_) | UpstreamError::Invalid(_) => ErrorType::ReadError,
    };
    ForwardError::AfterResponse(pingora::Error::explain(kind, e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    #[test]
    fn removes_one_query_parameter() {
        assert_eq!(without_query_param("/a?api_key=x&b=1", "api_key"), "/a?b=1");
        assert_eq!(without_query_param("/a?api_key=x", "api_key"), "/a");
        assert_eq!(without_query_param("/a?b=1&api_key", "api_key"), "/a?b=1");
        assert_eq!(
            without_query_param("/a?api_keys=1", "api_key"),
            "/a?api_keys=1"
        );
        assert_eq!(without_query_param("/a", "api_key"), "/a");
    }

    #[test]
    fn appends_the_peer_to_x_forwarded_for() {
        let text = |prior, ip: &str| {
            forwarded_for(prior, ip.parse().unwrap()).map(|v| v.to_str().unwrap().to_string())
        };
        for ip in [
            "0.0.0.0",
            "127.0.0.1",
            "10.20.30.40",
            "192.168.100.255",
            "255.9.99.100",
        ] {
            assert_eq!(text(None, ip).as_deref(), Some(ip));
        }
        assert_eq!(text(None, "::1").as_deref(), Some("::1"));
        assert_eq!(
            text(Some("203.0.113.7"), "10.0.0.1").as_deref(),
            Some("203.0.113.7, 10.0.0.1")
        );
        assert_eq!(
            text(Some("a\u{7f}b"), "10.0.0.1"),
            None,
            "invalid prior value"
        );
    }

    #[test]
    fn joins_paths() {
        assert_eq!(join_path("", "/a?b"), "/a?b");
        assert_eq!(join_path("/base", "/a"), "/base/a");
        assert_eq!(join_path("/predict", ""), "/predict");
        assert_eq!(join_path("/predict", "?x=1"), "/predict?x=1");
        assert_eq!(join_path("/", ""), "/");
        assert_eq!(join_path("/", "/x"), "/x");
    }

    #[test]
    fn strips_hop_by_hop_and_connection_listed_headers() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            ("connection", "keep-alive, x-secret-hop"),
            ("x-secret-hop", "1"),
            ("keep-alive", "timeout=5"),
            ("te", "trailers"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("x-end-to-end", "kept"),
        ] {
            h.append(k, HeaderValue::from_static(v));
        }
        assert_eq!(connection_listed(&h), ["keep-alive", "x-secret-hop"]);
        let response_side = response_hop_by_hop(&h);
        assert!(!response_side.contains(&header::TRANSFER_ENCODING));
        for name in response_side {
            h.remove(name);
        }
        assert_eq!(h.len(), 2);
        assert_eq!(h["transfer-encoding"], "chunked");
        assert_eq!(h["x-end-to-end"], "kept");
    }
}
