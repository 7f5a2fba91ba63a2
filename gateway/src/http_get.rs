//! A small blocking HTTP/1.x client for plain-HTTP control traffic: GET for JWKS documents
//! and model metadata, POST for OTLP trace export. Never used on the request path.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use modelgate_config::UpstreamUrl;

/// GETs `url`'s path; succeeds only on 200 with a body of at most `max_bytes`.
pub fn get(url: &UpstreamUrl, timeout: Duration, max_bytes: usize) -> Result<Vec<u8>, String> {
    let authority = url.authority();
    let request = format!(
        "GET {} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n",
        path_of(url)
    );
    let (status, body) = exchange(url, request.as_bytes(), timeout, max_bytes)?;
    if status != 200 {
        return Err(format!(
            "GET http://{authority}{}: status {status}",
            path_of(url)
        ));
    }
    Ok(body)
}

/// POSTs `body` to `url`'s path with `headers` (name, value) and returns the status and the
/// response body (at most `max_bytes`). Every connect, read and write waits at most `timeout`.
pub fn post(
    url: &UpstreamUrl,
    headers: &[(&str, &str)],
    body: &[u8],
    timeout: Duration,
    max_bytes: usize,
) -> Result<(u16, Vec<u8>), String> {
    let mut request = format!(
        "POST {} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nContent-Length: {}\r\n",
        path_of(url),
        url.authority(),
        body.len()
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    request.push_str("\r\n");
    let mut bytes = request.into_bytes();
    bytes.extend_from_slice(body);
    exchange(url, &bytes, timeout, max_bytes)
}

fn path_of(url: &UpstreamUrl) -> &str {
    if url.base_path.is_empty() {
        "/"
    } else {
        &url.base_path
    }
}

/// Sends `request` on a fresh connection and reads one response: (status, body).
fn exchange(
    url: &UpstreamUrl,
    request: &[u8],
    timeout: Duration,
    max_bytes: usize,
) -> Result<(u16, Vec<u8>), String> {
    let authority = url.authority();
    let path = path_of(url);
    let addr = authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve {authority}"))?;
    let fail = |e: std::io::Error| format!("http://{authority}{path}: {e}");
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    stream.write_all(request).map_err(fail)?;
    let mut response = Vec::new();
    let mut chunk = [0u8; 16 * 1024];
    let limit = max_bytes + 16 * 1024;
    // Read until the declared body is complete (a server may keep the connection open),
    // or until EOF when no length is given.
    let (head_end, length) = loop {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok());
            break (end + 4, length);
        }
        let n = stream.read(&mut chunk).map_err(fail)?;
        if n == 0 || response.len() > limit {
            return Err(format!("http://{authority}{path}: malformed response"));
        }
        response.extend_from_slice(&chunk[..n]);
    };
    let too_large = || format!("http://{authority}{path}: body larger than {max_bytes} bytes");
    if length.is_some_and(|l| l > max_bytes) {
        return Err(too_large());
    }
    while length.is_none_or(|l| response.len() < head_end + l) {
        let n = stream.read(&mut chunk).map_err(fail)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if response.len() > head_end + max_bytes {
            return Err(too_large());
        }
    }
    let status_line = String::from_utf8_lossy(&response[..head_end]);
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| format!("http://{authority}{path}: malformed status line"))?;
    let mut body = response.split_off(head_end);
    if let Some(l) = length {
        if body.len() < l {
            return Err(format!("http://{authority}{path}: body cut short"));
        }
        body.truncate(l);
    }
    Ok((status, body))
}
