//! A small blocking HTTP/1.0 GET for fetching JWKS documents from plain-HTTP URLs.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use modelgate_config::UpstreamUrl;

/// GETs `url`'s path; succeeds only on 200 with a body of at most `max_bytes`.
pub fn get(url: &UpstreamUrl, timeout: Duration, max_bytes: usize) -> Result<Vec<u8>, String> {
    let authority = url.authority();
    let addr = authority
        .to_socket_addrs()
        .ok()
        .and_then(|mut a| a.next())
        .ok_or_else(|| format!("cannot resolve {authority}"))?;
    let fail = |e: std::io::Error| format!("GET http://{authority}{}: {e}", url.base_path);
    let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
    stream.set_read_timeout(Some(timeout)).map_err(fail)?;
    stream.set_write_timeout(Some(timeout)).map_err(fail)?;
    let path = if url.base_path.is_empty() {
        "/"
    } else {
        &url.base_path
    };
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: {authority}\r\nAccept: application/json\r\n\r\n");
    stream.write_all(request.as_bytes()).map_err(fail)?;
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
            return Err(format!("GET http://{authority}{path}: malformed response"));
        }
        response.extend_from_slice(&chunk[..n]);
    };
    if length.is_some_and(|l| l > max_bytes) {
        return Err(format!(
            "GET http://{authority}{path}: body larger than {max_bytes} bytes"
        ));
    }
    while length.is_none_or(|l| response.len() < head_end + l) {
        let n = stream.read(&mut chunk).map_err(fail)?;
        if n == 0 {
            break;
        }
        response.extend_from_slice(&chunk[..n]);
        if response.len() > head_end + max_bytes {
            return Err(format!(
                "GET http://{authority}{path}: body larger than {max_bytes} bytes"
            ));
        }
    }
    let status_line = String::from_utf8_lossy(&response[..head_end]);
    let status = status_line.split(' ').nth(1).unwrap_or("");
    if status != "200" {
        return Err(format!("GET http://{authority}{path}: status {status}"));
    }
    let mut body = response.split_off(head_end);
    if let Some(l) = length {
        if body.len() < l {
            return Err(format!("GET http://{authority}{path}: body cut short"));
        }
        body.truncate(l);
    }
    Ok(body)
}
