//! The body stage: read the whole request body, capped and under a deadline, before any
//! upstream is chosen — so a refused request sends no byte upstream.

use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use pingora::protocols::http::ServerSession;

use modelgate_plugins::body::{Framing, check_framing, check_running_total};
use modelgate_plugins::{Code, Denial};

/// A body read that failed; `close` says the connection cannot be reused (body unread).
#[derive(Debug)]
pub struct BodyError {
    pub denial: Denial,
    pub close: bool,
}

/// Reads the body into memory. Refuses a declared length over `cap` before reading, and a
/// chunked body as soon as it passes `cap`; answers `100 Continue` only to bodies it accepts.
pub async fn read_body(
    session: &mut ServerSession,
    cap: u64,
    timeout: Duration,
) -> Result<Bytes, BodyError> {
    let head = session.req_header();
    let framing = check_framing(&head.method, &head.headers, cap).map_err(|denial| BodyError {
        denial,
        close: true,
    })?;
    let expects_continue = head
        .headers
        .get(http::header::EXPECT)
        .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"100-continue"));
    let mut buf = match framing {
        Framing::Empty => return Ok(Bytes::new()),
        Framing::Length(_) | Framing::Chunked => BytesMut::new(),
    };
    let fail = |code: Code, message: &str| BodyError {
        denial: Denial::new(code, message),
        close: true,
    };
    if expects_continue {
        session
            .write_continue_response()
            .await
            .map_err(|_| fail(Code::BadRequest, "connection failed"))?;
    }
    let deadline = Instant::now() + timeout;
    let mut left = timeout;
    while !session.is_body_done() {
        // Pingora's timer, as for upstream I/O (see `TimeBudget::run`): no eventfd write.
        let chunk = pingora::time::timeout(left, session.read_request_body())
            .await
            .map_err(|_| {
                fail(
                    Code::RequestTimeout,
                    "the request body did not arrive in time",
                )
            })?
            .map_err(|_| {
                fail(
                    Code::BadRequest,
                    "the request body is malformed or was cut short",
                )
            })?;
        let Some(chunk) = chunk else { break };
        check_running_total((buf.len() + chunk.len()) as u64, cap).map_err(|denial| BodyError {
            denial,
            close: true,
        })?;
        if buf.is_empty() {
            if session.is_body_done() {
                // The whole body in one read (the common case): no copy.
                return Ok(chunk);
            }
            if let Framing::Length(n) = framing {
                // Bounded by `cap`, checked above.
                buf.reserve(usize::try_from(n).unwrap_or(0));
            }
        }
        buf.extend_from_slice(&chunk);
        left = deadline.saturating_duration_since(Instant::now());
    }
    Ok(buf.freeze())
}
