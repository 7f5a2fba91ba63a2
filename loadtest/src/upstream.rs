//! A minimal, fast HTTP/1.1 keep-alive server answering every request with a fixed
//! `200` response; the "fast upstream" for gateway benchmarks.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::parse::{MAX_HEAD, Progress, RequestParser};

/// Upstream server settings.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Response body sent for every request.
    pub body: Vec<u8>,
    /// Delay before answering (per batch of received requests).
    pub delay: Duration,
}

impl Default for UpstreamConfig {
    fn default() -> Self {
        Self {
            body: br#"{"ok":true}"#.to_vec(),
            delay: Duration::ZERO,
        }
    }
}

/// Pre-encoded responses.
struct Responses {
    keep_alive: Vec<u8>,
    close: Vec<u8>,
    /// Length of the head in `keep_alive` (for `HEAD` requests).
    keep_alive_head: usize,
    /// Length of the head in `close`.
    close_head: usize,
    bad_request: &'static [u8],
    delay: Duration,
}

impl Responses {
    fn new(cfg: &UpstreamConfig) -> Self {
        let encode = |conn: &str| {
            let head = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n{conn}\r\n",
                cfg.body.len()
            );
            let mut r = head.clone().into_bytes();
            r.extend_from_slice(&cfg.body);
            (r, head.len())
        };
        let (keep_alive, keep_alive_head) = encode("");
        let (close, close_head) = encode("Connection: close\r\n");
        Self {
            keep_alive,
            close,
            keep_alive_head,
            close_head,
            bad_request:
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            delay: cfg.delay,
        }
    }
}

/// Accepts connections on `listener` forever, serving each on its own task.
pub async fn serve(listener: TcpListener, cfg: UpstreamConfig) -> io::Result<()> {
    let responses = Arc::new(Responses::new(&cfg));
    loop {
        match listener.accept().await {
            Ok((stream, _)) => {
                let responses = Arc::clone(&responses);
                tokio::spawn(async move {
                    // Client resets at the end of a run are normal; nothing to report.
                    let _ = handle(stream, &responses).await;
                });
            }
            // E.g. out of file descriptors: back off instead of spinning.
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
}

async fn handle(mut stream: TcpStream, responses: &Responses) -> io::Result<()> {
    stream.set_nodelay(true)?;
    let mut buf = vec![0u8; 16 * 1024];
    let mut out = Vec::with_capacity(4 * responses.keep_alive.len());
    let (mut start, mut end) = (0usize, 0usize);
    let mut parser = RequestParser::new();
    loop {
        // Answer every complete request in the buffer (handles pipelining too).
        let mut close = false;
        while start < end {
            match parser.feed(&buf[start..end]) {
                Ok(Progress::Complete { consumed, head }) => {
                    start += consumed;
                    let (resp, head_len) = if head.keep_alive {
                        (&responses.keep_alive, responses.keep_alive_head)
                    } else {
                        (&responses.close, responses.close_head)
                    };
                    out.extend_from_slice(if head.head_method {
                        &resp[..head_len]
                    } else {
                        resp
                    });
                    if !head.keep_alive {
                        close = true;
                        break;
                    }
                }
                Ok(Progress::Partial { consumed }) => {
                    start += consumed;
                    break;
                }
                Err(_) => {
                    out.extend_from_slice(responses.bad_request);
                    close = true;
                    break;
                }
            }
        }
        if start == end {
            start = 0;
            end = 0;
        }
        if !out.is_empty() {
            if !responses.delay.is_zero() {
                tokio::time::sleep(responses.delay).await;
            }
            stream.write_all(&out).await?;
            out.clear();
        }
        if close {
            return stream.shutdown().await;
        }
        if end == buf.len() {
            if start > 0 {
                buf.copy_within(start..end, 0);
                end -= start;
                start = 0;
            } else if buf.len() < 2 * MAX_HEAD {
                let len = buf.len() * 2;
                buf.resize(len, 0);
            } else {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "request head too large",
                ));
            }
        }
        let n = stream.read(&mut buf[end..]).await?;
        if n == 0 {
            return Ok(());
        }
        end += n;
    }
}
