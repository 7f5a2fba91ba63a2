//! Scripted HTTP/1.1 upstreams that record every connection and request reaching them.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the upstream does with each request.
#[derive(Debug, Clone)]
pub enum Behaviour {
    /// Answer 200 with a JSON echo of the request (method, path, headers, body length).
    Echo,
    /// Answer like `Echo`, then close the connection without saying so (no
    /// `Connection: close`), like a server whose keep-alive timeout ran out.
    EchoThenClose,
    /// Wait, then answer like `Echo`.
    Stall(Duration),
    /// Close the connection without answering.
    Reset,
    /// Answer with this raw response (status line, headers, body).
    Raw(&'static str),
    /// Answer like `Raw`, then close the connection.
    RawThenClose(&'static str),
    /// Answer a head announcing a long body at once, then send the body a byte at a time,
    /// one every given interval: each read stays under a read timeout, the whole does not.
    Trickle(Duration),
}

/// A request as the upstream saw it.
#[derive(Debug, Clone)]
pub struct Seen {
    pub method: String,
    pub target: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Seen {
    /// First header value by case-insensitive name.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A running scripted upstream on `127.0.0.1:0`.
pub struct Upstream {
    pub addr: SocketAddr,
    pub connections: Arc<AtomicUsize>,
    pub requests: Arc<Mutex<Vec<Seen>>>,
}

impl Upstream {
    /// Starts the upstream; it serves until the test process ends.
    pub fn start(behaviour: Behaviour) -> Upstream {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind upstream");
        let addr = listener.local_addr().expect("addr");
        let connections = Arc::new(AtomicUsize::new(0));
        let requests = Arc::new(Mutex::new(Vec::new()));
        let (conns, reqs) = (Arc::clone(&connections), Arc::clone(&requests));
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                conns.fetch_add(1, Ordering::SeqCst);
                let (reqs, behaviour) = (Arc::clone(&reqs), behaviour.clone());
                std::thread::spawn(move || serve(stream, &behaviour, &reqs));
            }
        });
        Upstream {
            addr,
            connections,
            requests,
        }
    }

    /// `http://127.0.0.1:PORT`
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Connections accepted so far.
    pub fn connection_count(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }

    /// Requests seen so far.
    pub fn seen(&self) -> Vec<Seen> {
        self.requests.lock().expect("lock").clone()
    }
}

fn serve(stream: TcpStream, behaviour: &Behaviour, requests: &Mutex<Vec<Seen>>) {
    let mut writer = match stream.try_clone() {
        Ok(w) => w,
        Err(_) => return,
    };
    let mut reader = BufReader::new(stream);
    while let Some(seen) = read_request(&mut reader) {
        requests.lock().expect("lock").push(seen.clone());
        let response = match behaviour {
            Behaviour::Reset => return,
            Behaviour::Raw(raw) | Behaviour::RawThenClose(raw) => raw.to_string(),
            Behaviour::Stall(wait) => {
                std::thread::sleep(*wait);
                echo(&seen)
            }
            Behaviour::Echo | Behaviour::EchoThenClose => echo(&seen),
            Behaviour::Trickle(every) => {
                let head = "HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n";
                if writer.write_all(head.as_bytes()).is_err() {
                    return;
                }
                for _ in 0..1000 {
                    std::thread::sleep(*every);
                    if writer.write_all(b"x").is_err() {
                        return;
                    }
                }
                continue;
            }
        };
        if writer.write_all(response.as_bytes()).is_err()
            || matches!(
                behaviour,
                Behaviour::EchoThenClose | Behaviour::RawThenClose(_)
            )
        {
            return;
        }
    }
}

fn echo(seen: &Seen) -> String {
    let body = serde_json::json!({
        "method": seen.method,
        "target": seen.target,
        "headers": seen.headers,
        "body_len": seen.body.len(),
        "body": String::from_utf8_lossy(&seen.body),
    })
    .to_string();
    format!(
        "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nX-Upstream: yes\r\nConnection: keep-alive, X-Hop\r\nX-Hop: drop-me\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// One line, its bytes read as UTF-8 with replacements (header values may carry
/// obs-text); `None` at the end of the stream.
fn read_line(reader: &mut BufReader<TcpStream>) -> Option<String> {
    let mut line = Vec::new();
    if reader.read_until(b'\n', &mut line).ok()? == 0 {
        return None;
    }
    Some(String::from_utf8_lossy(&line).into_owned())
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Seen> {
    let line = read_line(reader)?;
    let mut parts = line.trim_end().split(' ');
    let method = parts.next()?.to_string();
    let target = parts.next()?.to_string();
    let mut headers = Vec::new();
    loop {
        let h = read_line(reader)?;
        let h = h.trim_end();
        if h.is_empty() {
            break;
        }
        let (k, v) = h.split_once(':')?;
        headers.push((k.trim().to_string(), v.trim().to_string()));
    }
    let length = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
        .and_then(|(_, v)| v.parse::<usize>().ok())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        method,
        target,
        headers,
        body,
    })
}
