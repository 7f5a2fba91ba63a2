//! The one place that turns verdicts and results into HTTP responses. Error bodies are
//! `{"error":{"code":"...","message":"..."}}`; they never carry secrets or internal causes.

use bytes::Bytes;
use http::{HeaderName, HeaderValue, StatusCode, header};
use pingora::http::ResponseHeader;
use pingora::protocols::http::ServerSession;

use modelgate_plugins::Denial;

const CONNECTION_CLOSE: (HeaderName, HeaderValue) =
    (header::CONNECTION, HeaderValue::from_static("close"));

/// The JSON body of a denial.
pub fn denial_body(denial: &Denial) -> Bytes {
    let mut error = serde_json::json!({ "code": denial.code.as_str(), "message": denial.message });
    if !denial.details.is_empty() {
        error["details"] = serde_json::json!(denial.details);
    }
    let body = serde_json::json!({ "error": error });
    Bytes::from(serde_json::to_vec(&body).unwrap_or_default())
}

/// Sends a denial. `close` ends the connection afterwards (e.g. an unread body remains).
pub async fn deny(
    session: &mut ServerSession,
    denial: &Denial,
    close: bool,
) -> pingora::Result<()> {
    let mut headers = denial.headers.clone();
    if let Some(after) = denial.retry_after {
        let secs = modelgate_plugins::ratelimit::ceil_secs(after).max(1);
        headers.push((header::RETRY_AFTER, HeaderValue::from(secs)));
    }
    if close {
        session.set_keepalive(None);
        headers.push(CONNECTION_CLOSE);
    }
    json(session, denial.status(), denial_body(denial), &headers).await
}

/// Sends a complete response of `content_type` with `Content-Length` and `extra_headers`.
pub async fn body(
    session: &mut ServerSession,
    status: StatusCode,
    content_type: &str,
    body: Bytes,
    extra_headers: &[(HeaderName, HeaderValue)],
) -> pingora::Result<()> {
    let header = head(status, content_type, body.len(), extra_headers)?;
    let head_only = session.req_header().method == http::Method::HEAD;
    session.write_response_header(Box::new(header)).await?;
    if !head_only {
        session.write_response_body(body, true).await?;
    }
    Ok(())
}

/// Refuses what came on the connection before any request could be served (a malformed
/// head, `CONNECT`) and closes it. Works without a parsed request.
pub async fn refuse_and_close(session: &mut ServerSession, denial: &Denial) {
    let body = denial_body(denial);
    let close = [CONNECTION_CLOSE];
    match head(denial.status(), "application/json", body.len(), &close) {
        // Turns keep-alive off, then writes the head and the body.
        Ok(header) => {
            if let Err(e) = session.write_error_response(header, body).await {
                log::debug!("cannot send the {} refusal: {e}", denial.code.as_str());
            }
        }
        Err(e) => log::error!("cannot build the {} refusal: {e}", denial.code.as_str()),
    }
    session.shutdown().await;
}

/// The head of a complete response of `content_type` and `len` bytes, never cached.
fn head(
    status: StatusCode,
    content_type: &str,
    len: usize,
    extra_headers: &[(HeaderName, HeaderValue)],
) -> pingora::Result<ResponseHeader> {
    // Without Pingora's original-case name map: names are lower case anyway, and each
    // header costs far less to add (see `forward::downstream_response`).
    let mut header = ResponseHeader::build_no_case(status, Some(3 + extra_headers.len()))?;
    header.insert_header(http::header::CONTENT_TYPE, content_type)?;
    header.insert_header(http::header::CONTENT_LENGTH, len.to_string())?;
    header.insert_header(http::header::CACHE_CONTROL, "no-store")?;
    for (name, value) in extra_headers {
        header.append_header(name.clone(), value.clone())?;
    }
    Ok(header)
}

/// Sends a complete JSON response with `Content-Length`.
pub async fn json(
    session: &mut ServerSession,
    status: StatusCode,
    json: Bytes,
    extra_headers: &[(HeaderName, HeaderValue)],
) -> pingora::Result<()> {
    body(session, status, "application/json", json, extra_headers).await
}
