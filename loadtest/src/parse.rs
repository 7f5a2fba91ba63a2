//! Sans-I/O HTTP/1.1 message framing shared by the client and the upstream server.
//!
//! The parsers never allocate: they are fed slices of a caller-owned read buffer,
//! report how many bytes they consumed, and (for bodies) optionally copy the payload
//! into a caller-provided `Vec`.

use std::fmt;

/// Largest accepted message head (start line + headers), in bytes.
pub const MAX_HEAD: usize = 64 * 1024;

/// Largest accepted chunk-size or trailer line, in bytes.
const MAX_LINE: usize = 4096;

/// A malformed or unsupported HTTP/1.1 message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ParseError(pub &'static str);

impl fmt::Display for ParseError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }
}

impl std::error::Error for ParseError {}

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyKind {
    /// No body at all.
    Empty,
    /// Exactly this many bytes (`Content-Length`).
    Length(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the peer closes the connection (responses only).
    UntilEof,
}

/// The parts of a response head the load generator cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResponseHead {
    /// Status code, e.g. 200.
    pub status: u16,
    /// Whether the connection may be reused after this response.
    pub keep_alive: bool,
    /// How the body is framed.
    pub body: BodyKind,
}

/// The parts of a request head the upstream server cares about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RequestHead {
    /// The method was `HEAD` (the response must not carry a body).
    pub head_method: bool,
    /// Whether the client wants the connection kept open.
    pub keep_alive: bool,
    /// How the body is framed.
    pub body: BodyKind,
}

/// Result of feeding bytes to a message parser.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress<H> {
    /// The message is not complete yet; `consumed` bytes may be discarded.
    Partial {
        /// Bytes consumed from the input slice.
        consumed: usize,
    },
    /// A full message was parsed; `consumed` bytes belong to it.
    Complete {
        /// Bytes consumed from the input slice.
        consumed: usize,
        /// The parsed head.
        head: H,
    },
}

/// Returns the length of the head (including the terminating blank line), if complete.
fn find_head_end(buf: &[u8]) -> Option<usize> {
    let mut i = 0;
    while let Some(p) = buf[i..].iter().position(|&b| b == b'\n') {
        let nl = i + p;
        let rest = &buf[nl + 1..];
        match rest {
            [b'\n', ..] => return Some(nl + 2),
            [b'\r', b'\n', ..] => return Some(nl + 3),
            [] | [b'\r'] => return None,
            _ => i = nl + 1,
        }
    }
    None
}

/// Splits a head into lines without their line terminators.
fn lines(head: &[u8]) -> impl Iterator<Item = &[u8]> {
    head.split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l))
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn parse_decimal(s: &[u8]) -> Result<u64, ParseError> {
    if s.is_empty() {
        return Err(ParseError("empty Content-Length"));
    }
    s.iter().try_fold(0u64, |acc, &b| {
        if !b.is_ascii_digit() {
            return Err(ParseError("invalid Content-Length"));
        }
        acc.checked_mul(10)
            .and_then(|v| v.checked_add(u64::from(b - b'0')))
            .ok_or(ParseError("Content-Length overflow"))
    })
}

fn parse_hex(s: &[u8]) -> Result<u64, ParseError> {
    if s.is_empty() {
        return Err(ParseError("empty chunk size"));
    }
    s.iter().try_fold(0u64, |acc, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err(ParseError("invalid chunk size")),
        };
        acc.checked_mul(16)
            .map(|v| v | u64::from(d))
            .ok_or(ParseError("chunk size overflow"))
    })
}

/// Framing-relevant header values.
#[derive(Debug, Default)]
struct Framing {
    content_length: Option<u64>,
    chunked: bool,
    close: bool,
    keep_alive: bool,
}

fn parse_framing<'a>(header_lines: impl Iterator<Item = &'a [u8]>) -> Result<Framing, ParseError> {
    let mut f = Framing::default();
    for line in header_lines {
        if line.is_empty() {
            break;
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ParseError("header line without ':'"))?;
        let name = &line[..colon];
        let value = trim(&line[colon + 1..]);
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_decimal(value)?;
            if f.content_length.is_some_and(|prev| prev != n) {
                return Err(ParseError("conflicting Content-Length headers"));
            }
            f.content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').next().map(trim);
            f.chunked = last.is_some_and(|t| t.eq_ignore_ascii_case(b"chunked"));
            if !f.chunked && !value.is_empty() {
                return Err(ParseError("unsupported Transfer-Encoding"));
            }
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                if token.eq_ignore_ascii_case(b"close") {
                    f.close = true;
                } else if token.eq_ignore_ascii_case(b"keep-alive") {
                    f.keep_alive = true;
                }
            }
        }
    }
    Ok(f)
}

/// Parses an HTTP version token; returns `true` for HTTP/1.1.
fn parse_version(v: &[u8]) -> Result<bool, ParseError> {
    match v {
        b"HTTP/1.1" => Ok(true),
        b"HTTP/1.0" => Ok(false),
        _ => Err(ParseError("unsupported HTTP version")),
    }
}

/// Parses a complete response head (as delimited by the blank line).
///
/// `head_request` tells whether the request was `HEAD`, whose response has no body.
pub fn parse_response_head(head: &[u8], head_request: bool) -> Result<ResponseHead, ParseError> {
    let mut it = lines(head);
    let status_line = it.next().ok_or(ParseError("empty response"))?;
    let (version, rest) = status_line
        .split_at_checked(8)
        .ok_or(ParseError("truncated status line"))?;
    let http11 = parse_version(version)?;
    let status = match rest {
        [b' ', a, b, c, ..] if a.is_ascii_digit() && b.is_ascii_digit() && c.is_ascii_digit() => {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err(ParseError("invalid status code")),
    };
    let f = parse_framing(it)?;
    let mut keep_alive = if http11 {
        !f.close
    } else {
        f.keep_alive && !f.close
    };
    let body = if head_request || (100..200).contains(&status) || status == 204 || status == 304 {
        BodyKind::Empty
    } else if f.chunked {
        BodyKind::Chunked
    } else if let Some(n) = f.content_length {
        if n == 0 {
            BodyKind::Empty
        } else {
            BodyKind::Length(n)
        }
    } else {
        keep_alive = false;
        BodyKind::UntilEof
    };
    Ok(ResponseHead {
        status,
        keep_alive,
        body,
    })
}

/// Parses a complete request head (as delimited by the blank line).
pub fn parse_request_head(head: &[u8]) -> Result<RequestHead, ParseError> {
    let mut it = lines(head);
    let request_line = it.next().ok_or(ParseError("empty request"))?;
    let mut parts = request_line.split(|&b| b == b' ');
    let method = parts
        .next()
        .filter(|m| !m.is_empty())
        .ok_or(ParseError("missing method"))?;
    let _target = parts
        .next()
        .filter(|t| !t.is_empty())
        .ok_or(ParseError("missing request target"))?;
    let http11 = parse_version(parts.next().ok_or(ParseError("missing HTTP version"))?)?;
    let f = parse_framing(it)?;
    let body = if f.chunked {
        BodyKind::Chunked
    } else {
        match f.content_length {
            Some(0) | None => BodyKind::Empty,
            Some(n) => BodyKind::Length(n),
        }
    };
    Ok(RequestHead {
        head_method: method == b"HEAD",
        keep_alive: if http11 {
            !f.close
        } else {
            f.keep_alive && !f.close
        },
        body,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum BodyState {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    ChunkDataEnd,
    Trailer,
    UntilEof,
    Done,
}

/// Incremental decoder for a message body (length-delimited, chunked or until EOF).
#[derive(Debug, Clone, Copy)]
pub struct BodyDecoder {
    state: BodyState,
}

impl BodyDecoder {
    /// Creates a decoder for a body framed as `kind`.
    pub fn new(kind: BodyKind) -> Self {
        let state = match kind {
            BodyKind::Empty | BodyKind::Length(0) => BodyState::Done,
            BodyKind::Length(n) => BodyState::Length(n),
            BodyKind::Chunked => BodyState::ChunkSize,
            BodyKind::UntilEof => BodyState::UntilEof,
        };
        Self { state }
    }

    /// Decodes from `data`, appending payload bytes to `sink` when given.
    ///
    /// Returns the number of bytes consumed and whether the body is complete.
    pub fn decode(
        &mut self,
        data: &[u8],
        mut sink: Option<&mut Vec<u8>>,
    ) -> Result<(usize, bool), ParseError> {
        let mut pos = 0;
        loop {
            match self.state {
                BodyState::Done => return Ok((pos, true)),
                BodyState::UntilEof => {
                    if let Some(s) = sink.as_mut() {
                        s.extend_from_slice(&data[pos..]);
                    }
                    return Ok((data.len(), false));
                }
                BodyState::Length(rem) | BodyState::ChunkData(rem) => {
                    let avail = data.len() - pos;
                    let n = usize::try_from(rem).map_or(avail, |r| r.min(avail));
                    if let Some(s) = sink.as_mut() {
                        s.extend_from_slice(&data[pos..pos + n]);
                    }
                    pos += n;
                    let left = rem - n as u64;
                    let chunked = matches!(self.state, BodyState::ChunkData(_));
                    self.state = match (left, chunked) {
                        (0, false) => BodyState::Done,
                        (0, true) => BodyState::ChunkDataEnd,
                        (l, false) => BodyState::Length(l),
                        (l, true) => BodyState::ChunkData(l),
                    };
                    if left > 0 {
                        return Ok((pos, false));
                    }
                }
                BodyState::ChunkSize | BodyState::ChunkDataEnd | BodyState::Trailer => {
                    let rest = &data[pos..];
                    let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                        if rest.len() > MAX_LINE {
                            return Err(ParseError("chunk line too long"));
                        }
                        return Ok((pos, false));
                    };
                    let line = &rest[..nl];
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    pos += nl + 1;
                    self.state = match self.state {
                        BodyState::ChunkSize => {
                            let size = line
                                .split(|&b| b == b';')
                                .next()
                                .map(trim)
                                .unwrap_or_default();
                            match parse_hex(size)? {
                                0 => BodyState::Trailer,
                                n => BodyState::ChunkData(n),
                            }
                        }
                        BodyState::ChunkDataEnd if line.is_empty() => BodyState::ChunkSize,
                        BodyState::ChunkDataEnd => {
                            return Err(ParseError("missing CRLF after chunk data"));
                        }
                        _ if line.is_empty() => BodyState::Done,
                        _ => BodyState::Trailer,
                    };
                }
            }
        }
    }

    /// Whether the body is complete if the peer closes the connection now.
    pub fn complete_at_eof(&self) -> bool {
        matches!(self.state, BodyState::UntilEof | BodyState::Done)
    }
}

#[derive(Debug, Clone, Copy)]
enum State<H> {
    Head,
    Body { head: H, decoder: BodyDecoder },
}

/// Incremental HTTP/1.1 response parser.
#[derive(Debug, Clone, Copy)]
pub struct ResponseParser {
    state: State<ResponseHead>,
    head_request: bool,
}

impl Default for ResponseParser {
    fn default() -> Self {
        Self::new()
    }
}

impl ResponseParser {
    /// Creates a parser waiting for a response head.
    pub fn new() -> Self {
        Self {
            state: State::Head,
            head_request: false,
        }
    }

    /// Prepares for the response to a new request (`head_request`: the method is `HEAD`).
    pub fn reset(&mut self, head_request: bool) {
        self.state = State::Head;
        self.head_request = head_request;
    }

    /// Feeds buffered bytes; interim (1xx) responses are skipped.
    ///
    /// A `Partial` result may consume less than all of `data` (an incomplete head is
    /// left in place); call again with the unconsumed bytes plus newly read ones.
    pub fn feed(
        &mut self,
        data: &[u8],
        sink: Option<&mut Vec<u8>>,
    ) -> Result<Progress<ResponseHead>, ParseError> {
        let mut pos = 0;
        loop {
            match &mut self.state {
                State::Head => {
                    let Some(end) = find_head_end(&data[pos..]) else {
                        if data.len() - pos > MAX_HEAD {
                            return Err(ParseError("response head too large"));
                        }
                        return Ok(Progress::Partial { consumed: pos });
                    };
                    let head = parse_response_head(&data[pos..pos + end], self.head_request)?;
                    pos += end;
                    if (100..200).contains(&head.status) && head.status != 101 {
                        continue;
                    }
                    self.state = State::Body {
                        head,
                        decoder: BodyDecoder::new(head.body),
                    };
                }
                State::Body { head, decoder } => {
                    let (n, done) = decoder.decode(&data[pos..], sink)?;
                    pos += n;
                    if done {
                        let head = *head;
                        self.state = State::Head;
                        return Ok(Progress::Complete {
                            consumed: pos,
                            head,
                        });
                    }
                    return Ok(Progress::Partial { consumed: pos });
                }
            }
        }
    }

    /// Signals that the peer closed the connection; returns the head if that completes
    /// a response delimited by EOF.
    pub fn feed_eof(&mut self) -> Option<ResponseHead> {
        match self.state {
            State::Body { head, decoder } if decoder.complete_at_eof() => {
                self.state = State::Head;
                Some(head)
            }
            _ => None,
        }
    }
}

/// Incremental HTTP/1.1 request parser (bodies are decoded and discarded).
#[derive(Debug, Clone, Copy)]
pub struct RequestParser {
    state: State<RequestHead>,
}

impl Default for RequestParser {
    fn default() -> Self {
        Self::new()
    }
}

impl RequestParser {
    /// Creates a parser waiting for a request head.
    pub fn new() -> Self {
        Self { state: State::Head }
    }

    /// Feeds buffered bytes; see [`ResponseParser::feed`] for the contract.
    pub fn feed(&mut self, data: &[u8]) -> Result<Progress<RequestHead>, ParseError> {
        let mut pos = 0;
        loop {
            match &mut self.state {
                State::Head => {
                    // Tolerate stray CRLFs between requests (RFC 9112 §2.2).
                    while let [b'\r' | b'\n', ..] = &data[pos..] {
                        pos += 1;
                    }
                    let Some(end) = find_head_end(&data[pos..]) else {
                        if data.len() - pos > MAX_HEAD {
                            return Err(ParseError("request head too large"));
                        }
                        return Ok(Progress::Partial { consumed: pos });
                    };
                    let head = parse_request_head(&data[pos..pos + end])?;
                    pos += end;
                    self.state = State::Body {
                        head,
                        decoder: BodyDecoder::new(head.body),
                    };
                }
                State::Body { head, decoder } => {
                    let (n, done) = decoder.decode(&data[pos..], None)?;
                    pos += n;
                    if done {
                        let head = *head;
                        self.state = State::Head;
                        return Ok(Progress::Complete {
                            consumed: pos,
                            head,
                        });
                    }
                    return Ok(Progress::Partial { consumed: pos });
                }
            }
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    /// Feeds `chunks` one at a time through a buffer, like a socket would deliver them.
    fn feed_split(chunks: &[&[u8]], head_request: bool) -> (ResponseHead, Vec<u8>, usize) {
        let mut p = ResponseParser::new();
        p.reset(head_request);
        let mut buf = Vec::new();
        let mut body = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            match p.feed(&buf, Some(&mut body)).unwrap() {
                Progress::Partial { consumed } => {
                    buf.drain(..consumed);
                }
                Progress::Complete { consumed, head } => {
                    buf.drain(..consumed);
                    return (head, body, buf.len());
                }
            }
        }
        panic!("response incomplete");
    }

    /// Splits `msg` into every possible pair of pieces and checks the result is stable.
    fn all_splits(msg: &[u8]) -> (ResponseHead, Vec<u8>) {
        let whole = feed_split(&[msg], false);
        assert_eq!(whole.2, 0);
        for i in 1..msg.len() {
            let (a, b) = msg.split_at(i);
            let split = feed_split(&[a, b], false);
            assert_eq!((split.0, &split.1), (whole.0, &whole.1), "split at {i}");
        }
        let bytes: Vec<&[u8]> = msg.chunks(1).collect();
        assert_eq!(feed_split(&bytes, false).1, whole.1);
        (whole.0, whole.1)
    }

    #[test]
    fn content_length_response() {
        let msg = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\ncontent-length: 11\r\n\r\n{\"ok\":true}";
        let (head, body) = all_splits(msg);
        assert_eq!(head.status, 200);
        assert!(head.keep_alive);
        assert_eq!(head.body, BodyKind::Length(11));
        assert_eq!(body, b"{\"ok\":true}");
    }

    #[test]
    fn chunked_response_with_extensions_and_trailers() {
        let msg = b"HTTP/1.1 201 Created\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n\
            5;ext=1\r\nhello\r\n1\r\n \r\nA\r\n0123456789\r\n0\r\nX-Trailer: yes\r\n\r\n";
        let (head, body) = all_splits(msg);
        assert_eq!(head.status, 201);
        assert_eq!(head.body, BodyKind::Chunked);
        assert_eq!(body, b"hello 0123456789");
    }

    #[test]
    fn pipelined_responses_leave_remainder() {
        let msg = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nabHTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n\r\n";
        let (head, body, rest) = feed_split(&[msg], false);
        assert_eq!((head.status, body.as_slice(), rest), (200, &b"ab"[..], 45));
    }

    #[test]
    fn connection_close_and_http10() {
        let (h, _) =
            all_splits(b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 1\r\n\r\nx");
        assert!(!h.keep_alive);
        let (h, _) = all_splits(b"HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\nx");
        assert!(!h.keep_alive);
        let (h, _) =
            all_splits(b"HTTP/1.0 200 OK\r\nConnection: Keep-Alive\r\nContent-Length: 1\r\n\r\nx");
        assert!(h.keep_alive);
    }

    #[test]
    fn no_body_statuses_and_head_requests() {
        let (h, b, rest) = feed_split(&[b"HTTP/1.1 204 No Content\r\n\r\n"], false);
        assert_eq!(
            (h.status, h.body, b.len(), rest),
            (204, BodyKind::Empty, 0, 0)
        );
        let (h, b, _) = feed_split(&[b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n"], true);
        assert_eq!((h.status, h.body, b.len()), (200, BodyKind::Empty, 0));
    }

    #[test]
    fn interim_responses_are_skipped() {
        let (h, b) = all_splits(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        );
        assert_eq!((h.status, b.as_slice()), (200, &b"ok"[..]));
    }

    #[test]
    fn body_until_eof() {
        let mut p = ResponseParser::new();
        let mut body = Vec::new();
        let r = p
            .feed(b"HTTP/1.1 200 OK\r\n\r\nabc", Some(&mut body))
            .unwrap();
        assert_eq!(r, Progress::Partial { consumed: 22 });
        let head = p.feed_eof().unwrap();
        assert_eq!(
            (head.status, head.keep_alive, body.as_slice()),
            (200, false, &b"abc"[..])
        );
    }

    #[test]
    fn eof_mid_body_is_incomplete() {
        let mut p = ResponseParser::new();
        let r = p
            .feed(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nab", None)
            .unwrap();
        assert_eq!(r, Progress::Partial { consumed: 40 });
        assert_eq!(p.feed_eof(), None);
    }

    #[test]
    fn malformed_responses() {
        let bad: &[&[u8]] = &[
            b"HTTP/2 200 OK\r\n\r\n",
            b"HTTP/1.1 2x0 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: abc\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nNoColon\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n1\r\nabc\r\n",
        ];
        for msg in bad {
            assert!(
                ResponseParser::new().feed(msg, None).is_err(),
                "{}",
                String::from_utf8_lossy(msg)
            );
        }
        let huge = vec![b'a'; MAX_HEAD + 1];
        assert!(ResponseParser::new().feed(&huge, None).is_err());
    }

    #[test]
    fn request_parser_handles_bodies_and_pipelining() {
        let msg = b"POST /x HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n\r\nabc\
            POST /y HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n\
            GET /z HTTP/1.1\r\nConnection: close\r\n\r\n\
            HEAD /h HTTP/1.0\r\n\r\n";
        let mut p = RequestParser::new();
        let mut pos = 0;
        let mut heads = Vec::new();
        while pos < msg.len() {
            match p.feed(&msg[pos..]).unwrap() {
                Progress::Complete { consumed, head } => {
                    pos += consumed;
                    heads.push(head);
                }
                Progress::Partial { .. } => panic!("incomplete at {pos}"),
            }
        }
        assert_eq!(heads.len(), 4);
        assert_eq!(heads[0].body, BodyKind::Length(3));
        assert_eq!(heads[1].body, BodyKind::Chunked);
        assert!(heads[1].keep_alive && !heads[2].keep_alive);
        assert!(heads[3].head_method && !heads[3].keep_alive);

        // Byte-at-a-time delivery.
        let mut p = RequestParser::new();
        let mut buf = Vec::new();
        let mut complete = 0;
        for &b in msg.iter() {
            buf.push(b);
            loop {
                match p.feed(&buf).unwrap() {
                    Progress::Complete { consumed, .. } => {
                        buf.drain(..consumed);
                        complete += 1;
                    }
                    Progress::Partial { consumed } => {
                        buf.drain(..consumed);
                        break;
                    }
                }
            }
        }
        assert_eq!(complete, 4);
    }
}
