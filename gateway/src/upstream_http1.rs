//! The gateway's HTTP/1.1 client for one request–response exchange on an upstream
//! connection (RFC 9112). The request head and its buffered body leave in one write; the
//! response head is parsed with `httparse` straight into `http` parts; the body is framed
//! by `Content-Length`, `chunked` or the end of the connection, and handed out as it
//! arrives. The connection goes back to the pool only when the response was read whole,
//! both sides allow keep-alive and no byte follows the response.
//!
//! Strict by design (a gateway must never guess where a response ends): a response with
//! both `Transfer-Encoding` and `Content-Length`, with conflicting or malformed
//! `Content-Length` values, with a transfer coding other than a final `chunked` (or any on
//! HTTP/1.0), with a malformed chunk, with folded header lines, with a head over
//! [`MAX_HEAD`] bytes or [`MAX_HEADERS`] fields, or a `101` upgrade is refused as invalid.
//! Interim 1xx responses are skipped; chunk extensions and trailers are read and dropped.

use std::future::Future;
use std::io;
use std::time::{Duration, Instant};

use bytes::{Buf, Bytes, BytesMut};
use http::uri::PathAndQuery;
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Version, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Largest response head (status line and header fields) accepted.
pub const MAX_HEAD: usize = 64 * 1024;
/// Most header fields accepted in a response head.
pub const MAX_HEADERS: usize = 128;
/// Longest chunk-size line (with extensions) and most trailer bytes accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;
const MAX_TRAILERS: usize = 16 * 1024;
/// Bodies up to this size are copied behind the head to leave in one write; larger ones
/// follow the head in a second write.
const COALESCE_BODY: usize = 64 * 1024;
const READ_CHUNK: usize = 16 * 1024;

/// Why an exchange failed.
#[derive(Debug)]
pub enum UpstreamError {
    /// A read or write waited longer than the route's I/O timeout, or the exchange passed
    /// its total timeout.
    Timeout,
    /// The connection failed or closed before the response was complete.
    Broken(io::Error),
    /// The response is not valid HTTP/1.1 (what is wrong).
    Invalid(&'static str),
}

impl std::fmt::Display for UpstreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            UpstreamError::Timeout => f.write_str("timed out"),
            UpstreamError::Broken(e) => write!(f, "connection failed: {e}"),
            UpstreamError::Invalid(what) => write!(f, "invalid response: {what}"),
        }
    }
}

/// How long an exchange may take: each wait for the network at most `io`, and all of it
/// over by `deadline` (the route's total timeout). Each wait that is not ready at once gets
/// one timer bounded by both, and there is no second timer around the whole exchange.
#[derive(Clone, Copy, Debug)]
pub struct TimeBudget {
    io: Duration,
    /// `None` when the total timeout is too large to add to the clock: no total limit.
    deadline: Option<Instant>,
}

impl TimeBudget {
    /// `io` for each wait, the whole exchange within `total` from now.
    pub fn new(io: Duration, total: Duration) -> TimeBudget {
        TimeBudget {
            io,
            deadline: Instant::now().checked_add(total),
        }
    }

    /// How long the next wait may last, at most `cap`; `None` once the deadline passed.
    pub fn wait(&self, cap: Duration) -> Option<Duration> {
        let left = match self.deadline {
            Some(deadline) => deadline.saturating_duration_since(Instant::now()),
            None => cap,
        };
        Some(cap.min(left)).filter(|wait| !wait.is_zero())
    }

    /// `op`, given at most the I/O timeout and never past the deadline; `None` when cut
    /// off. Pingora's timer (10 ms resolution, its own clock thread, registered only if `op`
    /// is not ready at its first poll) rather than tokio's: a tokio timer started on the
    /// request path wakes the runtime's driver through its eventfd, one `write` system call
    /// per timer and request.
    pub async fn run<T>(&self, op: impl Future<Output = T>) -> Option<T> {
        pingora::time::timeout(self.wait(self.io)?, op).await.ok()
    }
}

/// A failed exchange, and whether it may be retried on another connection: nothing of a
/// response had arrived and the failure was not a timeout.
#[derive(Debug)]
pub struct Failure {
    pub error: UpstreamError,
    pub retryable: bool,
}

/// Sends `request` on `stream` and reads the response head (interim 1xx responses are
/// skipped; `101 Switching Protocols` is refused); the body follows from [`Body`].
pub async fn exchange(
    stream: TcpStream,
    budget: TimeBudget,
    request: &Request,
) -> Result<(http::response::Parts, Body), Failure> {
    let mut conn = Connection {
        stream,
        buf: BytesMut::new(),
        budget,
    };
    let failed = |error, answered: bool| Failure {
        retryable: !answered && !matches!(error, UpstreamError::Timeout),
        error,
    };
    if let Err(error) = conn.send(request).await {
        return Err(failed(error, false));
    }
    let mut answered = false;
    loop {
        let parsed = match conn.read_head().await {
            Ok(parsed) => parsed,
            Err(error) => return Err(failed(error, answered || !conn.buf.is_empty())),
        };
        answered = true;
        let invalid = |what| Failure {
            error: UpstreamError::Invalid(what),
            retryable: false,
        };
        if parsed.status == StatusCode::SWITCHING_PROTOCOLS {
            return Err(invalid("upgrades are not proxied"));
        }
        if parsed.status.is_informational() {
            continue;
        }
        let framing = Framing::of(&parsed, &request.method).map_err(|e| invalid(e.0))?;
        let keep_alive = framing.is_delimited() && allows_keep_alive(&parsed);
        let mut body = Body {
            conn,
            framing,
            keep_alive,
        };
        body.framing
            .settle(&mut body.conn.buf)
            .map_err(|e| invalid(e.0))?;
        return Ok((parsed, body));
    }
}

/// A response head or body that breaks the rules (see the module doc).
#[derive(Debug, PartialEq, Eq)]
struct Invalid(&'static str);

impl From<Invalid> for UpstreamError {
    fn from(e: Invalid) -> UpstreamError {
        UpstreamError::Invalid(e.0)
    }
}

struct Connection {
    stream: TcpStream,
    /// Bytes read and not yet consumed.
    buf: BytesMut,
    budget: TimeBudget,
}

impl Connection {
    async fn send(&mut self, request: &Request) -> Result<(), UpstreamError> {
        self.write(&request.wire).await?;
        if let Some(rest) = &request.rest {
            self.write(rest).await?;
        }
        Ok(())
    }

    async fn write(&mut self, bytes: &[u8]) -> Result<(), UpstreamError> {
        // Most writes fit the socket buffer at once: those need no timer.
        let sent = match self.stream.try_write(bytes) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => 0,
            Err(e) => return Err(UpstreamError::Broken(e)),
        };
        match &bytes[sent..] {
            [] => Ok(()),
            rest => timed(&self.budget, self.stream.write_all(rest)).await,
        }
    }

    /// Reads more bytes into the buffer; 0 at the end of the stream.
    async fn read_more(&mut self) -> Result<usize, UpstreamError> {
        self.buf.reserve(READ_CHUNK);
        timed(&self.budget, self.stream.read_buf(&mut self.buf)).await
    }

    async fn read_head(&mut self) -> Result<http::response::Parts, UpstreamError> {
        loop {
            if !self.buf.is_empty()
                && let Some(parts) = parse_head(&mut self.buf)?
            {
                return Ok(parts);
            }
            if self.read_more().await? == 0 {
                return Err(UpstreamError::Broken(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before the response head was complete",
                )));
            }
        }
    }
}

/// `io` within `budget`.
async fn timed<T>(
    budget: &TimeBudget,
    io: impl Future<Output = io::Result<T>>,
) -> Result<T, UpstreamError> {
    match budget.run(io).await {
        Some(result) => result.map_err(UpstreamError::Broken),
        None => Err(UpstreamError::Timeout),
    }
}

/// The response head at the front of `buf`, taken out of it; `None` until it is complete.
fn parse_head(buf: &mut BytesMut) -> Result<Option<http::response::Parts>, Invalid> {
    let mut fields = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut fields);
    let len = match response.parse(&buf[..]) {
        Ok(httparse::Status::Complete(len)) if len <= MAX_HEAD => len,
        Ok(httparse::Status::Partial) if buf.len() <= MAX_HEAD => return Ok(None),
        Ok(_) => return Err(Invalid("the response head is too large")),
        Err(httparse::Error::TooManyHeaders) => {
            return Err(Invalid("the response has too many header fields"));
        }
        Err(_) => return Err(Invalid("the response head is malformed")),
    };
    let status = response
        .code
        .and_then(|code| StatusCode::from_u16(code).ok())
        .ok_or(Invalid("the response status is invalid"))?;
    let version = match response.version {
        Some(0) => Version::HTTP_10,
        _ => Version::HTTP_11,
    };
    // Names are parsed now; values are sliced from the head once it is taken out of `buf`
    // (no copy each).
    let start = buf.as_ptr() as usize;
    let mut names = Vec::with_capacity(response.headers.len());
    for field in response.headers.iter() {
        let name = HeaderName::from_bytes(field.name.as_bytes())
            .map_err(|_| Invalid("a response header name is invalid"))?;
        let from = field.value.as_ptr() as usize - start;
        names.push((name, from..from + field.value.len()));
    }
    let head = buf.split_to(len).freeze();
    // Room for the fields added on the way downstream (`Date`, `Connection`, the three
    // `RateLimit-*` fields, a route's response headers) without the map growing and
    // rehashing.
    let mut headers = HeaderMap::with_capacity(names.len() + 8);
    for (name, range) in names {
        let value = HeaderValue::from_maybe_shared(head.slice(range))
            .map_err(|_| Invalid("a response header value is invalid"))?;
        headers.append(name, value);
    }
    let (mut parts, ()) = http::Response::new(()).into_parts();
    parts.status = status;
    parts.version = version;
    parts.headers = headers;
    Ok(Some(parts))
}

/// A request ready for the wire (RFC 9112 §3): the head, with the body behind it when the
/// body is small enough to leave in the same write. Written from `http` types only (the
/// method, the target, names and values are valid by construction), so nothing in it can
/// split the message.
pub struct Request {
    method: Method,
    wire: Vec<u8>,
    /// The body, when it did not go behind the head.
    rest: Option<Bytes>,
}

/// Whether a body of `len` bytes leaves in the same write as the head.
fn goes_behind_the_head(len: usize) -> bool {
    len <= COALESCE_BODY
}

/// Writes a request head straight into the bytes that leave (no header map in between).
pub struct RequestWriter {
    method: Method,
    wire: Vec<u8>,
}

impl RequestWriter {
    /// Starts with `METHOD target HTTP/1.1`; `fields` is a guess at the size of the header
    /// fields to come, `body` the body's length (room is made for it if it will follow the
    /// head in the same write).
    pub fn new(
        method: &Method,
        target: &PathAndQuery,
        fields: usize,
        body: usize,
    ) -> RequestWriter {
        let behind = if goes_behind_the_head(body) { body } else { 0 };
        let line = method.as_str().len() + target.as_str().len() + 12;
        let mut wire = Vec::with_capacity(line + fields + 2 + behind);
        wire.extend_from_slice(method.as_str().as_bytes());
        wire.push(b' ');
        wire.extend_from_slice(target.as_str().as_bytes());
        wire.extend_from_slice(b" HTTP/1.1\r\n");
        RequestWriter {
            method: method.clone(),
            wire,
        }
    }

    /// Adds the header field `name: value`.
    pub fn field(&mut self, name: &HeaderName, value: &HeaderValue) {
        for part in [name.as_str().as_bytes(), b": ", value.as_bytes(), b"\r\n"] {
            self.wire.extend_from_slice(part);
        }
    }

    /// Adds `Content-Length: length` (digits written straight into the head: no
    /// `HeaderValue` to allocate for it).
    pub fn content_length(&mut self, length: usize) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut n = length;
        loop {
            at -= 1;
            digits[at] = b'0' + (n % 10) as u8;
            n /= 10;
            if n == 0 {
                break;
            }
        }
        for part in [b"content-length: ".as_slice(), &digits[at..], b"\r\n"] {
            self.wire.extend_from_slice(part);
        }
    }

    /// Ends the head; `body` goes behind it when it is at most [`COALESCE_BODY`] bytes and
    /// in a second write otherwise.
    pub fn finish(mut self, body: &Bytes) -> Request {
        self.wire.extend_from_slice(b"\r\n");
        let rest = if goes_behind_the_head(body.len()) {
            self.wire.extend_from_slice(body);
            None
        } else {
            Some(body.clone())
        };
        Request {
            method: self.method,
            wire: self.wire,
            rest,
        }
    }
}

/// Whether the upstream allows another request on the connection: HTTP/1.1 unless it said
/// `Connection: close`, HTTP/1.0 only if it said `Connection: keep-alive`.
fn allows_keep_alive(head: &http::response::Parts) -> bool {
    let has = |token: &str| {
        head.headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| v.as_bytes().split(|b| *b == b','))
            .any(|t| t.trim_ascii().eq_ignore_ascii_case(token.as_bytes()))
    };
    match head.version {
        Version::HTTP_10 => has("keep-alive"),
        _ => !has("close"),
    }
}

/// Where the response body ends.
#[derive(Debug, PartialEq, Eq)]
enum Framing {
    /// This many bytes are left.
    Length(u64),
    Chunked(Chunked),
    /// Everything until the upstream closes the connection.
    UntilClose,
    /// The body is complete.
    Done,
}

impl Framing {
    /// RFC 9112 §6.3, strictly.
    fn of(head: &http::response::Parts, method: &Method) -> Result<Framing, Invalid> {
        let no_body = *method == Method::HEAD
            || head.status == StatusCode::NO_CONTENT
            || head.status == StatusCode::NOT_MODIFIED;
        if no_body {
            return Ok(Framing::Done);
        }
        let codings = head.headers.get_all(header::TRANSFER_ENCODING);
        if codings.iter().next().is_some() {
            if head.version == Version::HTTP_10 {
                return Err(Invalid("an HTTP/1.0 response has Transfer-Encoding"));
            }
            if head.headers.contains_key(header::CONTENT_LENGTH) {
                return Err(Invalid(
                    "the response has Transfer-Encoding and Content-Length",
                ));
            }
            let tokens: Vec<&[u8]> = codings
                .iter()
                .flat_map(|v| v.as_bytes().split(|b| *b == b','))
                .map(<[u8]>::trim_ascii)
                .filter(|t| !t.is_empty())
                .collect();
            let chunked = |t: &&[u8]| t.eq_ignore_ascii_case(b"chunked");
            return match tokens.split_last() {
                Some((last, rest)) if chunked(last) && !rest.iter().any(chunked) => {
                    Ok(Framing::Chunked(Chunked::default()))
                }
                _ => Err(Invalid(
                    "the response's transfer coding does not end in chunked",
                )),
            };
        }
        match content_length(&head.headers)? {
            Some(0) => Ok(Framing::Done),
            Some(n) => Ok(Framing::Length(n)),
            None => Ok(Framing::UntilClose),
        }
    }

    /// Whether the body's end is known without the connection closing.
    fn is_delimited(&self) -> bool {
        !matches!(self, Framing::UntilClose)
    }

    fn is_done(&self) -> bool {
        matches!(self, Framing::Done | Framing::Chunked(Chunked::Done))
    }

    /// The body bytes at the front of `buf`, taken out of it with the framing around them.
    fn take(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, Invalid> {
        let piece = match self {
            Framing::Length(left) | Framing::Chunked(Chunked::Data(left)) if !buf.is_empty() => {
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                buf.split_to(n as usize).freeze()
            }
            Framing::UntilClose if !buf.is_empty() => buf.split().freeze(),
            _ => return Ok(None),
        };
        self.settle(buf)?;
        Ok(Some(piece))
    }

    /// Moves past the framing at the front of `buf`, so that the body is done as soon as
    /// its last piece is taken.
    fn settle(&mut self, buf: &mut BytesMut) -> Result<(), Invalid> {
        match self {
            Framing::Length(0) => *self = Framing::Done,
            Framing::Chunked(chunked) => {
                if *chunked == Chunked::Data(0) {
                    *chunked = Chunked::DataEnd;
                }
                chunked.settle(buf)?;
            }
            _ => {}
        }
        Ok(())
    }
}

/// The `Content-Length`: every value (repeated fields, comma lists) the same decimal
/// number, or invalid.
fn content_length(headers: &HeaderMap) -> Result<Option<u64>, Invalid> {
    let mut length = None;
    for value in headers.get_all(header::CONTENT_LENGTH) {
        for token in value.as_bytes().split(|b| *b == b',') {
            let token = token.trim_ascii();
            let n =
                (!token.is_empty() && token.len() <= 18 && token.iter().all(u8::is_ascii_digit))
                    .then(|| token.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0')))
                    .ok_or(Invalid("the response's Content-Length is invalid"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Invalid(
                    "the response has conflicting Content-Length values",
                ));
            }
            length = Some(n);
        }
    }
    Ok(length)
}

/// A chunked body decoder (RFC 9112 §7.1), fed from the connection's buffer.
#[derive(Debug, Default, PartialEq, Eq)]
enum Chunked {
    /// Before a chunk-size line.
    #[default]
    Size,
    /// Inside a chunk: this many data bytes are left.
    Data(u64),
    /// After a chunk's data: its CRLF.
    DataEnd,
    /// After the last chunk: trailer lines (this many bytes so far) up to a blank line.
    Trailers(usize),
    Done,
}

impl Chunked {
    /// Consumes framing from `buf` (size lines, CRLFs, trailers) until chunk data or the
    /// end of the body, or until `buf` runs out.
    fn settle(&mut self, buf: &mut BytesMut) -> Result<(), Invalid> {
        loop {
            match *self {
                Chunked::Size => {
                    let Some(line) = take_line(buf, MAX_CHUNK_LINE)? else {
                        return Ok(());
                    };
                    let size = chunk_size(&line)?;
                    *self = if size == 0 {
                        Chunked::Trailers(0)
                    } else {
                        Chunked::Data(size)
                    };
                }
                Chunked::DataEnd => {
                    if buf.len() < 2 {
                        return Ok(());
                    }
                    if &buf[..2] != b"\r\n" {
                        return Err(Invalid("a chunk does not end with CRLF"));
                    }
                    buf.advance(2);
                    *self = Chunked::Size;
                }
                Chunked::Trailers(seen) => {
                    let Some(line) = take_line(buf, MAX_TRAILERS.saturating_sub(seen + 2))? else {
                        return Ok(());
                    };
                    *self = if line.is_empty() {
                        Chunked::Done
                    } else {
                        Chunked::Trailers(seen + line.len() + 2)
                    };
                }
                Chunked::Data(_) | Chunked::Done => return Ok(()),
            }
        }
    }
}

/// The next CRLF-terminated line of `buf` without its CRLF, taken out of `buf`; `None`
/// until a whole line is there. A line longer than `max` or with a bare CR or LF is
/// invalid.
fn take_line(buf: &mut BytesMut, max: usize) -> Result<Option<BytesMut>, Invalid> {
    let searched = &buf[..buf.len().min(max + 2)];
    match searched.iter().position(|b| *b == b'\n') {
        Some(end) if end > 0 && buf[end - 1] == b'\r' => {
            let line = buf.split_to(end - 1);
            buf.advance(2);
            if line.contains(&b'\r') {
                return Err(Invalid("a chunked body has a bare CR"));
            }
            Ok(Some(line))
        }
        Some(_) => Err(Invalid("a chunked body has a bare LF")),
        None if searched.len() > max => Err(Invalid("a chunk line or the trailers are too long")),
        None => Ok(None),
    }
}

/// The size of a chunk from its size line: hex digits, then optionally whitespace and
/// `;extensions`.
fn chunk_size(line: &[u8]) -> Result<u64, Invalid> {
    let digits = line.iter().take_while(|b| b.is_ascii_hexdigit()).count();
    let rest = line[digits..].trim_ascii_start();
    if digits == 0 || digits > 15 || !(rest.is_empty() || rest[0] == b';') {
        return Err(Invalid("a chunk size is invalid"));
    }
    let hex =
        std::str::from_utf8(&line[..digits]).map_err(|_| Invalid("a chunk size is invalid"))?;
    u64::from_str_radix(hex, 16).map_err(|_| Invalid("a chunk size is invalid"))
}

/// A response body being read from its connection.
pub struct Body {
    conn: Connection,
    framing: Framing,
    keep_alive: bool,
}

impl Body {
    /// Whether the whole body has been handed out.
    pub fn is_done(&self) -> bool {
        self.framing.is_done()
    }

    /// The next piece of the body, `None` once it is complete. After a piece, [`is_done`]
    /// tells whether it was the last.
    ///
    /// [`is_done`]: Body::is_done
    pub async fn next(&mut self) -> Result<Option<Bytes>, UpstreamError> {
        loop {
            if let Some(piece) = self.framing.take(&mut self.conn.buf)? {
                return Ok(Some(piece));
            }
            if self.is_done() {
                return Ok(None);
            }
            if self.conn.read_more().await? == 0 {
                if self.framing == Framing::UntilClose {
                    self.framing = Framing::Done;
                    return Ok(None);
                }
                return Err(UpstreamError::Broken(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "closed before the response body was complete",
                )));
            }
        }
    }

    /// The connection, if the response was read whole, keep-alive is allowed and nothing
    /// followed the response.
    pub fn into_reusable(self) -> Option<TcpStream> {
        (self.is_done() && self.keep_alive && self.conn.buf.is_empty()).then_some(self.conn.stream)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wait_is_capped_by_what_is_left_of_the_total() {
        let budget = TimeBudget::new(Duration::from_secs(5), Duration::from_secs(60));
        assert_eq!(
            budget.wait(Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
        let short = TimeBudget::new(Duration::from_secs(5), Duration::from_millis(300));
        let wait = short.wait(Duration::from_secs(5)).expect("time left");
        assert!(wait <= Duration::from_millis(300) && wait > Duration::from_millis(200));
        let spent = TimeBudget::new(Duration::from_secs(5), Duration::ZERO);
        assert_eq!(spent.wait(Duration::from_secs(5)), None);
        // A total too large for the clock is no total limit, not a panic.
        let endless = TimeBudget::new(Duration::from_secs(5), Duration::MAX);
        assert_eq!(
            endless.wait(Duration::from_secs(5)),
            Some(Duration::from_secs(5))
        );
    }

    fn head(raw: &str) -> Result<Option<http::response::Parts>, Invalid> {
        parse_head(&mut BytesMut::from(raw))
    }

    fn framing(raw: &str, method: &Method) -> Result<Framing, Invalid> {
        Framing::of(&head(raw).unwrap().unwrap(), method)
    }

    #[test]
    fn parses_a_head_and_leaves_the_body() {
        let mut buf =
            BytesMut::from("HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b c\r\n\r\nhi");
        let parts = parse_head(&mut buf).unwrap().unwrap();
        assert_eq!(parts.status, StatusCode::CREATED);
        assert_eq!(parts.version, Version::HTTP_11);
        assert_eq!(parts.headers["x-a"], "b c");
        assert_eq!(&buf[..], b"hi");
        assert!(
            head("HTTP/1.1 200 OK\r\nX: 1\r\n").unwrap().is_none(),
            "partial"
        );
        assert_eq!(
            head("HTTP/1.0 200 OK\r\n\r\n").unwrap().unwrap().version,
            Version::HTTP_10
        );
    }

    #[test]
    fn refuses_malformed_heads() {
        for raw in [
            "HTTP/1.1 20 OK\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX : folded-name\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\r\n continued\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\rb\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX: a\x00b\r\n\r\n",
        ] {
            assert!(head(raw).is_err(), "{raw:?}");
        }
        let many = format!(
            "HTTP/1.1 200 OK\r\n{}\r\n",
            "X: 1\r\n".repeat(MAX_HEADERS + 1)
        );
        assert_eq!(
            head(&many).err(),
            Some(Invalid("the response has too many header fields"))
        );
        let long = format!("HTTP/1.1 200 OK\r\nX: {}\r\n\r\n", "a".repeat(MAX_HEAD));
        assert_eq!(
            head(&long).err(),
            Some(Invalid("the response head is too large"))
        );
        let unfinished = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD));
        assert_eq!(
            head(&unfinished).err(),
            Some(Invalid("the response head is too large"))
        );
    }

    #[test]
    fn frames_bodies_by_rfc_9112() {
        let (get, head) = (Method::GET, Method::HEAD);
        let chunked = Framing::Chunked(Chunked::Size);
        for (raw, method, expected) in [
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 12\r\n\r\n",
                &get,
                Framing::Length(12),
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
                &get,
                Framing::Done,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
                &get,
                Framing::Length(7),
            ),
            ("HTTP/1.1 200 OK\r\n\r\n", &get, Framing::UntilClose),
            (
                "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
                &get,
                chunked,
            ),
            // No body, whatever the head says.
            (
                "HTTP/1.1 204 No Content\r\nContent-Length: 5\r\n\r\n",
                &get,
                Framing::Done,
            ),
            (
                "HTTP/1.1 304 Not Modified\r\nTransfer-Encoding: chunked\r\n\r\n",
                &get,
                Framing::Done,
            ),
            (
                "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
                &head,
                Framing::Done,
            ),
        ] {
            assert_eq!(framing(raw, method), Ok(expected), "{raw:?}");
        }
    }

    #[test]
    fn refuses_ambiguous_framing() {
        for raw in [
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3, 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 0x3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: \r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: xchunked\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
        ] {
            assert!(framing(raw, &Method::GET).is_err(), "{raw:?}");
        }
    }

    #[test]
    fn keep_alive_follows_the_version_and_connection_header() {
        let allows = |raw: &str| allows_keep_alive(&head(raw).unwrap().unwrap());
        assert!(allows("HTTP/1.1 200 OK\r\n\r\n"));
        assert!(!allows(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\n\r\n"
        ));
        assert!(!allows("HTTP/1.0 200 OK\r\n\r\n"));
        assert!(allows("HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\n\r\n"));
    }

    /// Decodes chunked `wire` fed in pieces of `step` bytes: the body, the bytes after it and
    /// whether it was complete, or the first error.
    fn dechunk(wire: &[u8], step: usize) -> Result<(Vec<u8>, BytesMut, bool), Invalid> {
        let mut framing = Framing::Chunked(Chunked::default());
        let (mut buf, mut body) = (BytesMut::new(), Vec::new());
        for piece in wire.chunks(step) {
            buf.extend_from_slice(piece);
            framing.settle(&mut buf)?;
            while let Some(piece) = framing.take(&mut buf)? {
                body.extend_from_slice(&piece);
            }
        }
        Ok((body, buf, framing.is_done()))
    }

    #[test]
    fn decodes_chunked_bodies_in_any_split() {
        let wire = b"5;ext=1\r\nhello\r\n1A \r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        for step in [1, 2, 3, 7, wire.len()] {
            let (body, rest, done) = dechunk(wire, step).unwrap();
            assert!(done, "step {step}");
            assert_eq!(body, b"helloabcdefghijklmnopqrstuvwxyz", "step {step}");
            assert_eq!(&rest[..], b"NEXT", "bytes after the body stay");
        }
    }

    #[test]
    fn refuses_malformed_chunks() {
        for wire in [
            &b"5\r\nhelloX\r\n0\r\n\r\n"[..],
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\r\nhello\r\n0\r\n\r\n",
            b"-5\r\nhello\r\n0\r\n\r\n",
            b"\r\nhello\r\n0\r\n\r\n",
            b"5 x\r\nhello\r\n0\r\n\r\n",
            b"1000000000000000\r\n",
            b"0\r\nX: 1\n\r\n",
        ] {
            assert!(
                dechunk(wire, 1).is_err(),
                "{:?}",
                String::from_utf8_lossy(wire)
            );
        }
        let long_line = format!("1;{}\r\nx\r\n0\r\n\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert!(dechunk(long_line.as_bytes(), 64).is_err());
        let trailers = format!("0\r\n{}\r\n", "X: 1\r\n".repeat(MAX_TRAILERS / 6 + 1));
        assert!(dechunk(trailers.as_bytes(), 64).is_err());
    }

    #[test]
    fn encodes_the_request_head_with_a_small_body_behind_it() {
        let target = PathAndQuery::from_static("/v2/x?q=1");
        let mut writer = RequestWriter::new(&Method::POST, &target, 0, 2);
        writer.field(&header::HOST, &HeaderValue::from_static("up"));
        writer.content_length(2);
        for value in ["a", "b"] {
            writer.field(
                &HeaderName::from_static("x-many"),
                &HeaderValue::from_static(value),
            );
        }
        let request = writer.finish(&Bytes::from_static(b"{}"));
        assert_eq!(request.method, Method::POST);
        assert_eq!(
            &request.wire[..],
            b"POST /v2/x?q=1 HTTP/1.1\r\nhost: up\r\ncontent-length: 2\r\nx-many: a\r\nx-many: b\r\n\r\n{}"
        );
        assert!(request.rest.is_none());
    }

    #[test]
    fn content_length_is_written_in_decimal() {
        for length in [0, 7, 10, 1_048_576, usize::MAX] {
            let mut writer =
                RequestWriter::new(&Method::POST, &PathAndQuery::from_static("/"), 0, 0);
            writer.content_length(length);
            let request = writer.finish(&Bytes::new());
            let expected = format!("POST / HTTP/1.1\r\ncontent-length: {length}\r\n\r\n");
            assert_eq!(request.wire, expected.as_bytes());
        }
    }

    #[test]
    fn a_large_body_leaves_in_its_own_write() {
        let body = Bytes::from(vec![b'x'; COALESCE_BODY + 1]);
        let target = PathAndQuery::from_static("/");
        let request = RequestWriter::new(&Method::PUT, &target, 0, body.len()).finish(&body);
        assert_eq!(&request.wire[..], b"PUT / HTTP/1.1\r\n\r\n");
        assert!(
            request.wire.capacity() < COALESCE_BODY,
            "no room made for the body"
        );
        assert_eq!(request.rest.as_ref(), Some(&body));
    }

    mod properties {
        use super::*;
        use proptest::collection::vec;
        use proptest::prelude::*;

        /// `body` chunked in pieces of `sizes` (cycled), with an extension and a trailer.
        fn chunked(body: &[u8], sizes: &[usize]) -> Vec<u8> {
            let mut wire = Vec::new();
            let mut rest = body;
            for size in sizes.iter().cycle() {
                if rest.is_empty() {
                    break;
                }
                let (piece, tail) = rest.split_at((*size).min(rest.len()));
                wire.extend_from_slice(format!("{:X};x=1\r\n", piece.len()).as_bytes());
                wire.extend_from_slice(piece);
                wire.extend_from_slice(b"\r\n");
                rest = tail;
            }
            wire.extend_from_slice(b"0\r\nX-Trailer: t\r\n\r\n");
            wire
        }

        proptest! {
            #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

            #[test]
            fn chunked_bodies_decode_to_what_was_sent(
                body in vec(any::<u8>(), 0..3000),
                sizes in vec(1usize..400, 1..8),
                step in 1usize..200,
            ) {
                let mut wire = chunked(&body, &sizes);
                wire.extend_from_slice(b"NEXT");
                let (got, rest, done) = dechunk(&wire, step).unwrap();
                prop_assert!(done);
                prop_assert_eq!(got, body);
                prop_assert_eq!(&rest[..], b"NEXT");
            }

            #[test]
            fn arbitrary_bytes_never_panic_the_parsers(
                bytes in vec(any::<u8>(), 0..600),
                step in 1usize..64,
            ) {
                let mut buf = BytesMut::from(&bytes[..]);
                if let Ok(Some(parts)) = parse_head(&mut buf) {
                    let _ = Framing::of(&parts, &Method::GET);
                    prop_assert!(buf.len() < bytes.len());
                }
                if let Ok((body, _, _)) = dechunk(&bytes, step) {
                    prop_assert!(body.len() <= bytes.len());
                }
            }

            #[test]
            fn mangled_responses_are_parsed_or_refused(
                flips in vec((any::<prop::sample::Index>(), any::<u8>()), 1..4),
                cut in any::<prop::sample::Index>(),
                step in 1usize..64,
            ) {
                let mut raw = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n5\r\nhello\r\n0\r\n\r\n".to_vec();
                for (at, byte) in flips {
                    let i = at.index(raw.len());
                    raw[i] = byte;
                }
                raw.truncate(cut.index(raw.len() + 1));
                let mut buf = BytesMut::from(&raw[..]);
                if let Ok(Some(parts)) = parse_head(&mut buf) {
                    let _ = allows_keep_alive(&parts);
                    if let Ok(Framing::Chunked(_)) = Framing::of(&parts, &Method::GET) {
                        let _ = dechunk(&buf, step);
                    }
                }
            }
        }
    }
}
