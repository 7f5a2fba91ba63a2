//! Mutated HTTP/1.1 requests over real sockets against a real gateway. Whatever a client
//! sends, the gateway answers with well-formed HTTP or closes the connection, within a
//! bounded time; never with a 5xx (its backends here are healthy); a refusal is JSON with
//! an error code; a backend sees no more requests than the client got successes for
//! (nothing refused goes through, nothing is smuggled in behind an accepted request); no
//! response carries a credential; and the gateway serves on afterwards.
//!
//! The requests start from valid ones of every kind the gateway serves (v2 JSON and binary
//! to the embedded model and to an HTTP backend behind the extraction guard, with API keys
//! and a JWT; chunked bodies; a JSON-Schema route; metadata and health; the admin
//! listener's health, metrics and token-guarded reads) and take one to
//! three mutations each (bytes changed, inserted, cut; framing headers rewritten; bodies
//! replaced; oversized, repeated or folded headers; expectations; other methods, paths and
//! versions; pipelining). Each goes on its own connection, whose write side is closed after
//! the request, so a request that claims more body than it has ends at the close instead
//! of waiting for the body timeout.
//!
//! Used by `tests/tests/wire_fuzz.rs` (a fixed seed, 2000 requests) and the
//! `wire-fuzz` binary (as many as asked).

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::{Duration, Instant};

use crate::client::find;
use crate::gateway::{ADMIN_TOKEN, GatewayProcess, Setup};
use crate::upstream::{Behaviour, Upstream};
use crate::{holdout, repo_root};

/// Longest a request may take to be answered or closed.
pub const DEADLINE: Duration = Duration::from_secs(10);

/// A v2 answer for the digits model, as the HTTP backend gives it (the guard reads and
/// hardens it).
fn v2_answer() -> &'static str {
    let body = r#"{"model_name":"digits","outputs":[{"name":"probabilities","datatype":"FP32","shape":[1,10],"data":[0.01,0.02,0.9,0.01,0.01,0.01,0.01,0.01,0.01,0.01]},{"name":"label","datatype":"INT64","shape":[1],"data":[2]}]}"#;
    let raw = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    );
    Box::leak(raw.into_boxed_str())
}

const JWT_ISSUER: &str = "https://wire.test";
const JWT_SECRET: &str = "wire-fuzz-jwt-secret-0123456789abcdef-0123";

/// A token for the trusted consumer `trusted-jwt`, allowed every model, valid for an hour.
fn jwt() -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
        + 3600;
    let claims = serde_json::json!({
        "iss": JWT_ISSUER, "aud": "modelgate", "sub": "trusted-jwt", "exp": exp,
        "scope": "digits remote", "tenant": "wire",
    });
    let key = jsonwebtoken::EncodingKey::from_secret(JWT_SECRET.as_bytes());
    let header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256);
    jsonwebtoken::encode(&header, &claims, &key).expect("HS256 signing cannot fail")
}

/// A gateway with one route of each kind, its backends, and the credentials its requests use.
pub struct Target {
    pub gateway: GatewayProcess,
    /// Behind the `remote` v2 route (answers a fixed v2 response).
    pub v2_backend: Upstream,
    /// Behind the `chat` JSON-Schema route (echoes).
    pub chat_backend: Upstream,
    /// A trusted consumer's key (never blocked by the extraction detector, so mutations keep
    /// reaching validation and the backends).
    pub key: String,
    /// An untrusted consumer's key (hardened and, when it probes, blocked).
    pub untrusted_key: String,
    /// A trusted consumer's JWT (HS256, valid for an hour).
    pub jwt: String,
    templates: Vec<Template>,
}

/// A valid request, and whether it goes to the admin listener.
struct Template {
    admin: bool,
    bytes: Vec<u8>,
}

/// One request that broke a rule.
#[derive(Debug)]
pub struct Finding {
    pub case: usize,
    pub request: Vec<u8>,
    pub problem: String,
}

impl std::fmt::Display for Finding {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "case {}: {}\n  request: {}",
            self.case,
            self.problem,
            shorten(&self.request)
        )
    }
}

/// The request as escaped text, runs of one byte longer than 16 written as `<N × b>`.
fn shorten(bytes: &[u8]) -> String {
    let mut out = String::new();
    let mut i = 0;
    while i < bytes.len() {
        let run = bytes[i..].iter().take_while(|&&b| b == bytes[i]).count();
        let shown: String = std::ascii::escape_default(bytes[i])
            .map(char::from)
            .collect();
        if run > 16 {
            out.push_str(&format!("<{run} × {shown}>"));
        } else {
            (0..run).for_each(|_| out.push_str(&shown));
        }
        i += run;
    }
    out
}

impl Target {
    /// Starts the backends and the gateway, issues the keys, and checks that every
    /// unmutated template is answered 200.
    pub fn start() -> Target {
        let models = repo_root().join("models");
        let v2_backend = Upstream::start(Behaviour::Raw(v2_answer()));
        let chat_backend = Upstream::start(Behaviour::Echo);
        let setup: Setup = GatewayProcess::setup(&format!(
            "[auth]\nkey_store = \"keys.json\"\nmax_failures_per_minute = 1000000\n\n\
             [[auth.jwt]]\nissuer = \"{JWT_ISSUER}\"\naudiences = [\"modelgate\"]\nalgorithms = [\"HS256\"]\n\
             hmac_secret_env = \"MG_WIRE_JWT_SECRET\"\ngroup_claim = \"tenant\"\n\n\
             [plans.default]\nrate = \"100000/s\"\nburst = 100000\n\n\
             [[routes]]\nname = \"digits\"\nmodel = \"digits\"\n\
             [routes.embedded]\nonnx = {onnx:?}\nmetadata = {meta:?}\n\
             [routes.extraction]\nprofile = {profile:?}\ntrusted = [\"trusted\", \"trusted-jwt\"]\n\n\
             [[routes]]\nname = \"remote\"\nmodel = \"remote\"\n\
             [routes.validate]\nmetadata = {meta:?}\n\
             [routes.http]\nupstreams = [\"{v2}\"]\n\
             [routes.extraction]\nprofile = {profile:?}\ntrusted = [\"trusted\", \"trusted-jwt\"]\n\n\
             [[routes]]\nname = \"chat\"\npath_prefix = \"/chat\"\npublic = true\n\
             [routes.validate]\njson_schema = {schema:?}\n\
             [routes.http]\nupstreams = [\"{chat}\"]\n",
            onnx = models.join("digits.onnx"),
            meta = models.join("digits.json"),
            profile = models.join("digits.profile.json"),
            v2 = v2_backend.url(),
            chat = chat_backend.url(),
            schema = repo_root().join("tests/fixtures/prompt_schema.json"),
        ))
        .env("MG_WIRE_JWT_SECRET", JWT_SECRET);
        let key = setup.issue_key("trusted", "default", "*");
        let untrusted_key = setup.issue_key("someone", "default", "*");
        let gateway = setup.start();
        let jwt = jwt();
        let templates = templates(&key, &untrusted_key, &jwt);
        let target = Target {
            gateway,
            v2_backend,
            chat_backend,
            key,
            untrusted_key,
            jwt,
            templates,
        };
        for (i, t) in target.templates.iter().enumerate() {
            let answer = exchange(target.addr(t), &t.bytes);
            let status = answer.responses.first().map(|r| r.status);
            assert_eq!(
                status,
                Some(200),
                "template {i} is not answered 200: {}",
                String::from_utf8_lossy(&answer.raw)
            );
        }
        target
    }

    /// What no response and no log line may contain: the API keys, the JWT, its secret,
    /// the admin token.
    pub fn secrets(&self) -> [&str; 5] {
        [
            &self.key,
            &self.untrusted_key,
            &self.jwt,
            JWT_SECRET,
            ADMIN_TOKEN,
        ]
    }

    /// The listener a template is for.
    fn addr(&self, template: &Template) -> std::net::SocketAddr {
        if template.admin {
            self.gateway.admin
        } else {
            self.gateway.addr
        }
    }

    /// Requests the backends have received so far.
    fn forwarded(&self) -> usize {
        self.v2_backend.seen().len() + self.chat_backend.seen().len()
    }

    /// Sends `cases` mutated requests (reproducible from `seed`), then checks that the
    /// gateway still runs and serves.
    pub fn run(&mut self, cases: usize, seed: u64) -> Report {
        let mut rng = Rng::new(seed);
        let mut report = Report::default();
        for case in 0..cases {
            let template = &self.templates[rng.below(self.templates.len())];
            let request = mutate(&template.bytes, &mut rng);
            let before = self.forwarded();
            let started = Instant::now();
            let answer = exchange(self.addr(template), &request);
            let head_request = request.starts_with(b"HEAD ");
            let mut problems = check(&answer, head_request, &self.secrets());
            if started.elapsed() > DEADLINE {
                problems.push(format!("took {:?}", started.elapsed()));
            }
            let forwarded = self.forwarded() - before;
            // Each request a backend sees is one the client got a success for: nothing
            // refused goes through, and nothing is smuggled in behind an accepted one.
            let successes = answer
                .responses
                .iter()
                .filter(|r| (200..300).contains(&r.status))
                .count();
            if forwarded > successes {
                problems.push(format!(
                    "{forwarded} request(s) reached a backend for {successes} success(es)"
                ));
            }
            report.count(&answer, forwarded);
            report
                .findings
                .extend(problems.into_iter().map(|problem| Finding {
                    case,
                    request: request.clone(),
                    problem,
                }));
            if let Some(status) = self.gateway.wait_exit(Duration::ZERO) {
                report.findings.push(Finding {
                    case,
                    request,
                    problem: format!("the gateway exited ({status})"),
                });
                return report;
            }
        }
        let live = exchange(self.gateway.addr, &self.templates[0].bytes);
        if live.responses.first().map(|r| r.status) != Some(200) {
            report.findings.push(Finding {
                case: cases,
                request: self.templates[0].bytes.clone(),
                problem: format!(
                    "a valid request fails after the run: {}",
                    String::from_utf8_lossy(&live.raw)
                ),
            });
        }
        report
    }
}

/// What a run found, and what it covered.
#[derive(Debug, Default)]
pub struct Report {
    pub findings: Vec<Finding>,
    /// Responses per status.
    pub statuses: BTreeMap<u16, usize>,
    /// Refusals per `error.code`.
    pub codes: BTreeMap<String, usize>,
    /// Requests that reached a backend.
    pub forwarded: usize,
    /// Connections closed with no response at all.
    pub closed_silently: usize,
}

impl Report {
    fn count(&mut self, answer: &Answer, forwarded: usize) {
        self.forwarded += forwarded;
        if answer.raw.is_empty() && !answer.timed_out {
            self.closed_silently += 1;
        }
        for r in &answer.responses {
            *self.statuses.entry(r.status).or_default() += 1;
            if let Some(code) = serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned))
            {
                *self.codes.entry(code).or_default() += 1;
            }
        }
    }
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let join = |m: Vec<String>| m.join(", ");
        writeln!(
            f,
            "statuses: {}",
            join(
                self.statuses
                    .iter()
                    .map(|(s, n)| format!("{s}: {n}"))
                    .collect()
            )
        )?;
        writeln!(
            f,
            "error codes: {}",
            join(
                self.codes
                    .iter()
                    .map(|(c, n)| format!("{c}: {n}"))
                    .collect()
            )
        )?;
        write!(
            f,
            "reached a backend: {}; closed without a response: {}; findings: {}",
            self.forwarded,
            self.closed_silently,
            self.findings.len()
        )
    }
}

/// Valid requests of every kind the target serves.
fn templates(key: &str, untrusted: &str, jwt: &str) -> Vec<Template> {
    let (rows, _) = holdout();
    let row: Vec<String> = rows[0].iter().map(|v| v.to_string()).collect();
    let json = format!(
        r#"{{"id":"1","inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":[{}]}}]}}"#,
        row.join(",")
    );
    let post = |path: &str, auth: &str, extra: &str, body: &[u8]| {
        let mut r = format!(
            "POST {path} HTTP/1.1\r\nHost: t\r\n{auth}Content-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        r.extend_from_slice(body);
        r
    };
    let x_key = format!("x-api-key: {key}\r\n");
    let bearer = format!("Authorization: Bearer {key}\r\n");
    let untrusted = format!("x-api-key: {untrusted}\r\n");
    let jwt = format!("Authorization: Bearer {jwt}\r\n");

    let mut chunked = format!(
        "POST /v2/models/digits/infer HTTP/1.1\r\nHost: t\r\n{x_key}Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    .into_bytes();
    let (a, b) = json.as_bytes().split_at(json.len() / 3);
    for part in [a, b] {
        chunked.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
        chunked.extend_from_slice(part);
        chunked.extend_from_slice(b"\r\n");
    }
    chunked.extend_from_slice(b"0\r\n\r\n");

    let header = r#"{"inputs":[{"name":"input","shape":[1,64],"datatype":"FP32","parameters":{"binary_data_size":256}}]}"#;
    let mut binary = header.as_bytes().to_vec();
    for v in &rows[1] {
        binary.extend_from_slice(&v.to_le_bytes());
    }
    let binary_extra = format!("Inference-Header-Content-Length: {}\r\n", header.len());
    let binary = {
        let mut r = format!(
            "POST /v2/models/remote/infer HTTP/1.1\r\nHost: t\r\n{x_key}Content-Type: application/octet-stream\r\n{binary_extra}Content-Length: {}\r\n\r\n",
            binary.len()
        )
        .into_bytes();
        r.extend_from_slice(&binary);
        r
    };

    let data = vec![
        b"GET /v2/health/live HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        post("/v2/models/digits/infer", &x_key, "", json.as_bytes()),
        post("/v2/models/remote/infer", &bearer, "", json.as_bytes()),
        post("/v2/models/remote/infer", &untrusted, "", json.as_bytes()),
        post("/v2/models/digits/infer", &jwt, "", json.as_bytes()),
        chunked,
        binary,
        post("/chat/v1/complete", "", "", br#"{"prompt":"hello","n":2}"#),
        format!("GET /v2/models/digits HTTP/1.1\r\nHost: t\r\n{x_key}\r\n").into_bytes(),
    ];
    let admin = |method: &str, path: &str| {
        format!("{method} {path} HTTP/1.1\r\nHost: t\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nContent-Length: 0\r\n\r\n")
            .into_bytes()
    };
    let admin = vec![
        b"GET /healthz HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        b"GET /metrics HTTP/1.1\r\nHost: t\r\n\r\n".to_vec(),
        admin("GET", "/admin/suspects"),
        admin("GET", "/admin/config"),
    ];
    let tag = |admin: bool| move |bytes| Template { admin, bytes };
    data.into_iter()
        .map(tag(false))
        .chain(admin.into_iter().map(tag(true)))
        .collect()
}

/// Small, fast, reproducible (xorshift64).
struct Rng(u64);

impl Rng {
    /// A distinct sequence for every seed (xorshift's state must not be 0).
    fn new(seed: u64) -> Rng {
        Rng((seed ^ 0x9E37_79B9_7F4A_7C15).max(1))
    }

    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }

    fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }
}

/// Bytes that matter to HTTP and JSON parsers.
const SPECIAL: &[u8] = b"\r\n\0 \t:;,\"\\{}[]-+.eE0123456789\x7f\x80\xff";

/// Where the head ends (the index after `\r\n\r\n`), or the whole length.
fn head_end(r: &[u8]) -> usize {
    find(r, b"\r\n\r\n").map_or(r.len(), |i| i + 4)
}

/// `request` with one to three mutations.
fn mutate(request: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut r = request.to_vec();
    for _ in 0..1 + rng.below(3) {
        mutate_once(&mut r, rng);
    }
    r
}

fn mutate_once(r: &mut Vec<u8>, rng: &mut Rng) {
    let head = head_end(r);
    match rng.below(15) {
        // A few bytes changed anywhere.
        0 => {
            for _ in 0..1 + rng.below(4) {
                if !r.is_empty() {
                    let at = rng.below(r.len());
                    r[at] = if rng.below(2) == 0 {
                        *rng.pick(SPECIAL)
                    } else {
                        rng.next() as u8
                    };
                }
            }
        }
        // Bytes inserted.
        1 => {
            let at = rng.below(r.len() + 1);
            let n = 1 + rng.below(8);
            let bytes: Vec<u8> = (0..n).map(|_| *rng.pick(SPECIAL)).collect();
            r.splice(at..at, bytes);
        }
        // A range deleted.
        2 if !r.is_empty() => {
            let at = rng.below(r.len());
            let end = (at + 1 + rng.below(64)).min(r.len());
            r.drain(at..end);
        }
        // Cut short.
        3 => r.truncate(rng.below(r.len() + 1)),
        // Content-Length rewritten (or added).
        4 => {
            let body = r.len() - head;
            let value = rng
                .pick(&[
                    "0".to_string(),
                    (body.saturating_sub(1)).to_string(),
                    (body + 1).to_string(),
                    (body + 100_000).to_string(),
                    "18446744073709551616".to_string(),
                    "-1".to_string(),
                    format!("{body}, {body}"),
                    format!(" {body} "),
                    format!("0x{body:x}"),
                    format!("+{body}"),
                ])
                .clone();
            set_header(r, "Content-Length", &value);
        }
        // Transfer-Encoding added or rewritten.
        5 => {
            let value = *rng.pick(&[
                "chunked",
                "gzip, chunked",
                "chunked, identity",
                "identity",
                " chunked",
                "CHUNKED",
            ]);
            set_header(r, "Transfer-Encoding", value);
        }
        // A header repeated.
        6 => {
            let lines = header_lines(r, head);
            if let Some(&(start, end)) = lines.get(rng.below(lines.len().max(1))) {
                let line = r[start..end].to_vec();
                r.splice(end..end, line);
            }
        }
        // A long header value, or very many headers.
        7 => {
            let n = *rng.pick(&[1000, 9000, 70_000]);
            let extra = if rng.below(2) == 0 {
                format!("X-Long: {}\r\n", "a".repeat(n))
            } else {
                (0..n / 40).map(|i| format!("X-H{i}: v\r\n")).collect()
            };
            insert_header(r, extra.as_bytes());
        }
        // The body replaced.
        8 => {
            let depth = *rng.pick(&[10, 100, 5000]);
            let body: Vec<u8> = match rng.below(6) {
                0 => format!("{}{}", "[".repeat(depth), "]".repeat(depth)).into_bytes(),
                1 => format!(r#"{{"inputs":{}1{}}}"#, "[".repeat(depth), "]".repeat(depth)).into_bytes(),
                2 => format!(r#"{{"inputs":[{{"name":"input","shape":[1,64],"datatype":"FP32","data":[{}]}}]}}"#, "1e999,".repeat(63) + "1").into_bytes(),
                3 => format!(r#"{{"id":"{}"}}"#, "\\ud800".repeat(depth)).into_bytes(),
                4 => (0..depth).map(|_| rng.next() as u8).collect(),
                _ => format!(r#"{{"inputs":[{{"name":"input","shape":[{},64],"datatype":"FP32","data":[]}}]}}"#, u64::MAX).into_bytes(),
            };
            r.truncate(head);
            r.extend_from_slice(&body);
            let len = body.len().to_string();
            set_header(r, "Content-Length", &len);
        }
        // Another method.
        9 => {
            let method = *rng.pick(&[
                "PUT",
                "DELETE",
                "OPTIONS",
                "TRACE",
                "PATCH",
                "HEAD",
                "CONNECT",
                "G ET",
                "",
                "POST POST",
            ]);
            if let Some(sp) = r.iter().position(|&b| b == b' ') {
                r.splice(..sp, method.bytes());
            }
        }
        // Another path.
        10 => {
            let path = *rng.pick(&[
                "/v2/models/digits/../remote/infer",
                "/v2/models/%2e%2e/digits/infer",
                "//v2/models/digits/infer",
                "/v2/models/digits/infer?x=%ff%00",
                "/v2/models/digits/versions/1/infer",
                "/v2/models/DIGITS/infer",
                "/chat/../v2/models/digits/infer",
                "*",
                "http://evil.example/v2/models/digits/infer",
                "/v2/models/digits/infer#frag",
            ]);
            replace_target(r, path);
        }
        // Another version.
        11 => {
            let version = *rng.pick(&[
                "HTTP/1.0",
                "HTTP/2.0",
                "HTTP/0.9",
                "HTTP/1.1x",
                "http/1.1",
                "HTTP/1",
            ]);
            if let Some(eol) = find(r, b"\r\n")
                && let Some(sp) = r[..eol].iter().rposition(|&b| b == b' ')
            {
                r.splice(sp + 1..eol, version.bytes());
            }
        }
        // Credentials changed: another header, a mangled key, two keys.
        12 => {
            let value: &[u8] = rng.pick::<&[u8]>(&[
                &b"x-api-key: mg_0000000000000000_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA\r\n"
                    [..],
                &b"Authorization: Bearer \r\n"[..],
                &b"Authorization: Basic dXNlcjpwYXNz\r\n"[..],
                &b"Authorization: Bearer a.b.c\r\n"[..],
                &b"Authorization: Bearer eyJhbGciOiJub25lIn0.eyJpc3MiOiJ4In0.\r\n"[..],
                &b"x-api-key: \xff\xfe\r\n"[..],
            ]);
            insert_header(r, value);
        }
        // Framing and connection headers: expectations, folded lines (a smuggling vector),
        // a second Host, connection options.
        13 => {
            let value: &[u8] = rng.pick::<&[u8]>(&[
                &b"Expect: 100-continue\r\n"[..],
                &b"Expect: 200-ok\r\n"[..],
                &b"X-Folded: a\r\n b\r\n"[..],
                &b"Content-Length: 5\r\n 0\r\n"[..],
                &b"Host: other.example\r\n"[..],
                &b"Connection: close\r\n"[..],
                &b"Connection: keep-alive, Upgrade\r\nUpgrade: websocket\r\n"[..],
                &b"TE: trailers\r\n"[..],
                &b" leading-space: x\r\n"[..],
                &b"Bad Name: x\r\n"[..],
            ]);
            insert_header(r, value);
        }
        // A second request right behind the first (pipelining).
        _ => {
            let copy = r.clone();
            r.extend_from_slice(&copy);
        }
    }
}

/// (start, end) of each header line (end after its `\r\n`).
fn header_lines(r: &[u8], head: usize) -> Vec<(usize, usize)> {
    let mut lines = Vec::new();
    let Some(first) = find(&r[..head], b"\r\n") else {
        return lines;
    };
    let mut start = first + 2;
    while let Some(len) = find(&r[start..head], b"\r\n") {
        if len == 0 {
            break;
        }
        lines.push((start, start + len + 2));
        start += len + 2;
    }
    lines
}

/// Inserts a raw header line after the request line.
fn insert_header(r: &mut Vec<u8>, line: &[u8]) {
    let at = find(r, b"\r\n").map_or(r.len(), |i| i + 2);
    r.splice(at..at, line.iter().copied());
}

/// Replaces the header `name` (every copy) with one `name: value`, or adds it.
fn set_header(r: &mut Vec<u8>, name: &str, value: &str) {
    let head = head_end(r);
    let lines = header_lines(r, head);
    for &(start, end) in lines.iter().rev() {
        let line = &r[start..end];
        if line.len() > name.len()
            && line[..name.len()].eq_ignore_ascii_case(name.as_bytes())
            && line[name.len()] == b':'
        {
            r.drain(start..end);
        }
    }
    insert_header(r, format!("{name}: {value}\r\n").as_bytes());
}

/// Replaces the request target (between the first two spaces).
fn replace_target(r: &mut Vec<u8>, target: &str) {
    let Some(a) = r.iter().position(|&b| b == b' ') else {
        return;
    };
    let Some(len) = r[a + 1..].iter().position(|&b| b == b' ' || b == b'\r') else {
        return;
    };
    r.splice(a + 1..a + 1 + len, target.bytes());
}

/// One response as read off the wire.
#[derive(Debug)]
pub struct Response {
    pub status: u16,
    pub head: String,
    pub body: Vec<u8>,
}

/// What came back on a connection.
pub struct Answer {
    pub raw: Vec<u8>,
    pub responses: Vec<Response>,
    /// Bytes after the last response that are not a response.
    pub trailing: Option<String>,
    pub timed_out: bool,
}

/// Sends `request` on a new connection, closes the write side, and reads until the
/// gateway closes (or [`DEADLINE`] passes).
pub fn exchange(addr: std::net::SocketAddr, request: &[u8]) -> Answer {
    let started = Instant::now();
    let mut raw = Vec::new();
    let mut timed_out = false;
    if let Ok(mut stream) = TcpStream::connect(addr) {
        let _ = stream.set_nodelay(true);
        // The gateway may refuse and close before all of a large request is written.
        let _ = stream.write_all(request);
        let _ = stream.shutdown(Shutdown::Write);
        let mut chunk = [0u8; 16 * 1024];
        loop {
            let left = DEADLINE.saturating_sub(started.elapsed());
            if left.is_zero() {
                timed_out = true;
                break;
            }
            let _ = stream.set_read_timeout(Some(left));
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => raw.extend_from_slice(&chunk[..n]),
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    timed_out = true;
                    break;
                }
                // A reset after a refusal: what was read stands.
                Err(_) => break,
            }
        }
    }
    let (responses, trailing) = parse_responses(&raw, request.starts_with(b"HEAD "));
    Answer {
        raw,
        responses,
        trailing,
        timed_out,
    }
}

/// Splits `raw` into responses framed by `Content-Length` (the gateway frames every answer
/// so); what does not parse is returned as trailing text.
fn parse_responses(mut raw: &[u8], head_request: bool) -> (Vec<Response>, Option<String>) {
    let mut responses = Vec::new();
    while !raw.is_empty() {
        let end = head_end(raw);
        let head = String::from_utf8_lossy(&raw[..end]).into_owned();
        let status = head
            .strip_prefix("HTTP/1.1 ")
            .and_then(|s| s.get(..3))
            .and_then(|s| s.parse::<u16>().ok());
        let length = head
            .lines()
            .filter_map(|l| l.split_once(':'))
            .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
            .and_then(|(_, v)| v.trim().parse::<usize>().ok());
        // An interim answer (`100 Continue`) has no body.
        let length = length.or(status.filter(|s| (100..200).contains(s)).map(|_| 0));
        let (Some(status), Some(length)) = (status, length) else {
            return (responses, Some(head));
        };
        // The answer to HEAD has no body, unless the request was too malformed to be read
        // as HEAD (a 400 with its JSON error, then a close).
        let rest = &raw[end.min(raw.len())..];
        let length = if head_request && (rest.is_empty() || rest.starts_with(b"HTTP/1.1 ")) {
            0
        } else {
            length
        };
        if end == raw.len() && !head.ends_with("\r\n\r\n") || raw.len() < end + length {
            return (responses, Some(head));
        }
        responses.push(Response {
            status,
            head,
            body: raw[end..end + length].to_vec(),
        });
        raw = &raw[end + length..];
    }
    (responses, None)
}

/// The rules one exchange must keep.
fn check(answer: &Answer, head_request: bool, secrets: &[&str]) -> Vec<String> {
    let mut problems = Vec::new();
    if answer.timed_out {
        problems.push(format!(
            "no answer and no close within {DEADLINE:?} (read: {:?})",
            String::from_utf8_lossy(&answer.raw)
        ));
    }
    if let Some(text) = &answer.trailing {
        problems.push(format!("not a well-formed response: {text:?}"));
    }
    for r in &answer.responses {
        if r.status >= 500 {
            problems.push(format!(
                "answered {}: {}",
                r.status,
                String::from_utf8_lossy(&r.body)
            ));
        }
        if r.status >= 400 && !(head_request && r.body.is_empty()) {
            let code = serde_json::from_slice::<serde_json::Value>(&r.body)
                .ok()
                .and_then(|v| v["error"]["code"].as_str().map(str::to_owned));
            if code.is_none_or(|c| c.is_empty()) {
                problems.push(format!(
                    "a {} without a JSON error code: {}",
                    r.status,
                    String::from_utf8_lossy(&r.body)
                ));
            }
        }
    }
    let text = String::from_utf8_lossy(&answer.raw);
    for secret in secrets {
        if text.contains(&secret[secret.len() - 20..]) {
            problems.push("a credential came back in a response".to_owned());
        }
    }
    problems
}
