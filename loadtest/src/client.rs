//! Minimal HTTP/1.1 client: URL parsing, pre-encoded requests and keep-alive connections.

use std::fmt;
use std::io;
use std::net::{SocketAddr, ToSocketAddrs};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::parse::{ParseError, Progress, ResponseHead, ResponseParser};

/// Initial size of a connection's read buffer.
const READ_BUF: usize = 16 * 1024;

/// A parsed `http://host[:port]/path` URL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Url {
    /// Host name or IP address (IPv6 without brackets).
    pub host: String,
    /// TCP port (80 if absent).
    pub port: u16,
    /// `host[:port]` as written, used for the `Host` header.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

impl Url {
    /// Parses an `http://` URL; `https` and user info are rejected.
    pub fn parse(s: &str) -> Result<Self, String> {
        let err = |why: &str| format!("invalid URL {s:?}: {why}");
        let scheme_end = s
            .find("://")
            .ok_or_else(|| err("expected http://host:port/path"))?;
        let scheme = &s[..scheme_end];
        if scheme.eq_ignore_ascii_case("https") {
            return Err(err("https is not supported (plain HTTP/1.1 only)"));
        }
        if !scheme.eq_ignore_ascii_case("http") {
            return Err(err("scheme must be http"));
        }
        let rest = &s[scheme_end + 3..];
        let rest = rest.split('#').next().unwrap_or_default();
        let split = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(split);
        if authority.is_empty() {
            return Err(err("missing host"));
        }
        if authority.contains('@') {
            return Err(err("user info is not supported"));
        }
        let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
            let (host, after) = v6
                .split_once(']')
                .ok_or_else(|| err("unterminated IPv6 address"))?;
            let port = match after {
                "" => None,
                p => Some(
                    p.strip_prefix(':')
                        .ok_or_else(|| err("garbage after IPv6 address"))?,
                ),
            };
            (host, port)
        } else {
            match authority.split_once(':') {
                Some((h, p)) => (h, Some(p)),
                None => (authority, None),
            }
        };
        if host.is_empty() {
            return Err(err("missing host"));
        }
        let port = match port {
            None => 80,
            Some(p) => p.parse::<u16>().map_err(|_| err("invalid port"))?,
        };
        let path = match path {
            "" => "/".to_owned(),
            p if p.starts_with('?') => format!("/{p}"),
            p => p.to_owned(),
        };
        if path
            .bytes()
            .any(|b| b.is_ascii_whitespace() || b.is_ascii_control())
        {
            return Err(err("path contains whitespace or control characters"));
        }
        Ok(Self {
            host: host.to_owned(),
            port,
            authority: authority.to_owned(),
            path,
        })
    }

    /// Resolves the host to a socket address (first result, blocking DNS lookup).
    pub fn resolve(&self) -> io::Result<SocketAddr> {
        (self.host.as_str(), self.port)
            .to_socket_addrs()?
            .next()
            .ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{} did not resolve", self.host),
                )
            })
    }
}

/// Parses a `Name: value` header argument.
pub fn parse_header(s: &str) -> Result<(String, String), String> {
    let (name, value) = s
        .split_once(':')
        .ok_or_else(|| format!("invalid header {s:?}: expected 'Name: value'"))?;
    let name = name.trim();
    let value = value.trim();
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(format!("invalid header name in {s:?}"));
    }
    if value.bytes().any(|b| b == b'\r' || b == b'\n') {
        return Err(format!("invalid header value in {s:?}"));
    }
    Ok((name.to_owned(), value.to_owned()))
}

/// A pool of fully encoded requests (head + body), built once before a run.
#[derive(Debug, Clone)]
pub struct RequestPool {
    requests: Vec<Box<[u8]>>,
    head_method: bool,
    labels: Option<Vec<Vec<i64>>>,
}

impl RequestPool {
    /// Encodes one request per body (or a single body-less request if `bodies` is empty).
    ///
    /// `Host`, `Content-Length` and (for non-empty bodies) `Content-Type:
    /// application/json` are added unless `headers` already sets them.
    pub fn build(
        method: &str,
        url: &Url,
        headers: &[(String, String)],
        bodies: &[Vec<u8>],
    ) -> Self {
        let has = |n: &str| headers.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
        let mut head = format!("{method} {} HTTP/1.1\r\n", url.path);
        if !has("host") {
            head.push_str(&format!("Host: {}\r\n", url.authority));
        }
        for (k, v) in headers {
            if !k.eq_ignore_ascii_case("content-length") {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
        }
        let set_type = !has("content-type");
        let wants_length = !matches!(method, "GET" | "HEAD" | "DELETE" | "OPTIONS" | "TRACE");
        let encode = |body: &[u8]| -> Box<[u8]> {
            let mut req = Vec::with_capacity(head.len() + body.len() + 64);
            req.extend_from_slice(head.as_bytes());
            if !body.is_empty() && set_type {
                req.extend_from_slice(b"Content-Type: application/json\r\n");
            }
            if !body.is_empty() || wants_length {
                req.extend_from_slice(format!("Content-Length: {}\r\n", body.len()).as_bytes());
            }
            req.extend_from_slice(b"\r\n");
            req.extend_from_slice(body);
            req.into_boxed_slice()
        };
        let requests = if bodies.is_empty() {
            vec![encode(&[])]
        } else {
            bodies.iter().map(|b| encode(b)).collect()
        };
        Self {
            requests,
            head_method: method == "HEAD",
            labels: None,
        }
    }

    /// Gives request `i` the header `name: values[i]`, cycling the requests so that every
    /// value is sent (e.g. one API key per consumer, to create per-consumer state).
    pub fn with_rotating_header(mut self, name: &str, values: &[String]) -> Self {
        if values.is_empty() {
            return self;
        }
        let n = self.requests.len().max(values.len());
        self.requests = (0..n)
            .map(|i| {
                let base = &self.requests[i % self.requests.len()];
                let line_end = base
                    .windows(2)
                    .position(|w| w == b"\r\n")
                    .map_or(0, |p| p + 2);
                let mut req = Vec::with_capacity(base.len() + name.len() + values[0].len() + 4);
                req.extend_from_slice(&base[..line_end]);
                req.extend_from_slice(
                    format!("{name}: {}\r\n", values[i % values.len()]).as_bytes(),
                );
                req.extend_from_slice(&base[line_end..]);
                req.into_boxed_slice()
            })
            .collect();
        self
    }

    /// Attaches the expected labels for each request (same order as the bodies).
    pub fn with_labels(mut self, labels: Vec<Vec<i64>>) -> Self {
        self.labels = Some(labels);
        self
    }

    /// Number of distinct requests.
    pub fn len(&self) -> usize {
        self.requests.len()
    }

    /// Whether the pool is empty (never true for a built pool).
    pub fn is_empty(&self) -> bool {
        self.requests.is_empty()
    }

    /// Index into the pool for request sequence number `n` (cycling).
    pub fn index(&self, n: u64) -> usize {
        (n % self.requests.len().max(1) as u64) as usize
    }

    /// The encoded request at `index`.
    pub fn request(&self, index: usize) -> &[u8] {
        &self.requests[index]
    }

    /// Expected labels for the request at `index`, if labels were attached.
    pub fn labels(&self, index: usize) -> Option<&[i64]> {
        self.labels
            .as_ref()
            .and_then(|l| l.get(index))
            .map(Vec::as_slice)
    }

    /// Whether the requests use the `HEAD` method.
    pub fn head_method(&self) -> bool {
        self.head_method
    }
}

/// Why a request failed.
#[derive(Debug)]
pub enum RequestError {
    /// The peer closed the connection before the response was complete.
    Closed,
    /// Socket error (e.g. connection reset).
    Io(io::Error),
    /// The response was not valid HTTP/1.1.
    Protocol(ParseError),
}

impl fmt::Display for RequestError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Closed => f.write_str("connection closed mid-response"),
            Self::Io(e) => write!(f, "I/O error: {e}"),
            Self::Protocol(e) => write!(f, "protocol error: {e}"),
        }
    }
}

impl std::error::Error for RequestError {}

impl From<io::Error> for RequestError {
    fn from(e: io::Error) -> Self {
        Self::Io(e)
    }
}

impl From<ParseError> for RequestError {
    fn from(e: ParseError) -> Self {
        Self::Protocol(e)
    }
}

/// A keep-alive HTTP/1.1 connection with a reusable read buffer.
#[derive(Debug)]
pub struct Connection {
    stream: TcpStream,
    buf: Vec<u8>,
    start: usize,
    end: usize,
    parser: ResponseParser,
}

impl Connection {
    /// Opens a TCP connection (with `TCP_NODELAY`).
    pub async fn connect(addr: SocketAddr) -> io::Result<Self> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: vec![0; READ_BUF],
            start: 0,
            end: 0,
            parser: ResponseParser::new(),
        })
    }

    /// Sends one encoded request and reads its response.
    ///
    /// The body is appended to `sink` when given, otherwise discarded. If the returned
    /// head says `keep_alive == false`, or on error, the connection must be dropped.
    pub async fn request(
        &mut self,
        req: &[u8],
        head_method: bool,
        mut sink: Option<&mut Vec<u8>>,
    ) -> Result<ResponseHead, RequestError> {
        if self.start != self.end {
            return Err(ParseError("unsolicited data before request").into());
        }
        self.stream.write_all(req).await?;
        self.parser.reset(head_method);
        loop {
            if self.start < self.end {
                match self
                    .parser
                    .feed(&self.buf[self.start..self.end], sink.as_deref_mut())?
                {
                    Progress::Complete { consumed, head } => {
                        self.start += consumed;
                        if self.start == self.end {
                            self.start = 0;
                            self.end = 0;
                        }
                        return Ok(head);
                    }
                    Progress::Partial { consumed } => self.start += consumed,
                }
            }
            if self.start == self.end {
                self.start = 0;
                self.end = 0;
            } else if self.end == self.buf.len() {
                if self.start > 0 {
                    self.buf.copy_within(self.start..self.end, 0);
                    self.end -= self.start;
                    self.start = 0;
                } else {
                    let len = self.buf.len() * 2;
                    self.buf.resize(len, 0);
                }
            }
            let n = self.stream.read(&mut self.buf[self.end..]).await?;
            if n == 0 {
                return self.parser.feed_eof().ok_or(RequestError::Closed);
            }
            self.end += n;
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn url_parsing() {
        let u = Url::parse("http://127.0.0.1:8080/v2/models/digits/infer").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.authority.as_str()),
            ("127.0.0.1", 8080, "127.0.0.1:8080")
        );
        assert_eq!(u.path, "/v2/models/digits/infer");
        let u = Url::parse("HTTP://example.com").unwrap();
        assert_eq!((u.port, u.path.as_str()), (80, "/"));
        let u = Url::parse("http://[::1]:9000?x=1#frag").unwrap();
        assert_eq!(
            (u.host.as_str(), u.port, u.path.as_str()),
            ("::1", 9000, "/?x=1")
        );
        for bad in [
            "127.0.0.1:80/x",
            "https://a/",
            "ftp://a/",
            "http:///x",
            "http://a:99999/",
            "http://u@a/",
            "http://a/b c",
        ] {
            assert!(Url::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn rotating_headers_cover_every_value() {
        let url = Url::parse("http://h:1/p").unwrap();
        let pool = RequestPool::build("POST", &url, &[], &[b"a".to_vec(), b"bb".to_vec()])
            .with_rotating_header("x-api-key", &["k0".into(), "k1".into(), "k2".into()]);
        assert_eq!(pool.len(), 3);
        assert_eq!(
            pool.request(2),
            b"POST /p HTTP/1.1\r\nx-api-key: k2\r\nHost: h:1\r\nContent-Type: application/json\r\nContent-Length: 1\r\n\r\na"
        );
        assert!(pool.request(1).ends_with(b"\r\n\r\nbb"));
    }

    #[test]
    fn header_parsing() {
        assert_eq!(
            parse_header("X-Api-Key:  secret ").unwrap(),
            ("X-Api-Key".into(), "secret".into())
        );
        assert!(parse_header("novalue").is_err());
        assert!(parse_header(": v").is_err());
        assert!(parse_header("Bad Name: v").is_err());
    }

    #[test]
    fn request_encoding() {
        let url = Url::parse("http://h:1/p").unwrap();
        let pool = RequestPool::build(
            "POST",
            &url,
            &[("X-Key".into(), "k".into())],
            &[b"{}".to_vec()],
        );
        assert_eq!(
            pool.request(0),
            b"POST /p HTTP/1.1\r\nHost: h:1\r\nX-Key: k\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}"
        );
        let pool = RequestPool::build("GET", &url, &[("host".into(), "other".into())], &[]);
        assert_eq!(pool.len(), 1);
        assert_eq!(pool.request(0), b"GET /p HTTP/1.1\r\nhost: other\r\n\r\n");
        assert_eq!(pool.index(7), 0);
    }
}
