//! Idle keep-alive connections to HTTP upstreams, per worker thread and upstream address,
//! shared by all routes and kept across reloads.
//!
//! The connections are plain TCP streams spoken to by [`crate::upstream_http1`]. A
//! connection is only reused on the thread that opened it: with Pingora's per-thread
//! runtimes (`work_stealing = false`) its readiness events come from that thread's reactor.
//! Taking a connection picks the most recently used one that is still open; connections
//! idle for longer than [`IDLE_TIMEOUT`] are closed when met and by [`UpstreamPool::sweep`].

use std::collections::VecDeque;
use std::io::ErrorKind;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::thread::ThreadId;
use std::time::{Duration, Instant};

use foldhash::HashMap;
use tokio::net::TcpStream;

use crate::upstream_http1::UpstreamError;

/// How long an idle upstream connection stays in the pool.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(60);
/// Most idle connections kept per worker thread and upstream address; the oldest goes first.
pub const MAX_IDLE_PER_UPSTREAM: usize = 128;

/// A worker thread and an upstream address.
type Key = (ThreadId, SocketAddr);

#[derive(Default)]
pub struct UpstreamPool {
    idle: Mutex<HashMap<Key, VecDeque<Idle>>>,
}

fn key(addr: SocketAddr) -> Key {
    (std::thread::current().id(), addr)
}

struct Idle {
    stream: TcpStream,
    since: Instant,
}

impl Idle {
    fn expired(&self, now: Instant) -> bool {
        now.duration_since(self.since) >= IDLE_TIMEOUT
    }
}

impl UpstreamPool {
    /// A connection to `addr` and whether it was reused: an idle one that is still open,
    /// or else a new one (within `connect_timeout`, with `TCP_NODELAY`: each request leaves
    /// in one write).
    pub async fn connect(
        &self,
        addr: SocketAddr,
        connect_timeout: Duration,
    ) -> Result<(TcpStream, bool), UpstreamError> {
        if let Some(stream) = self.take(addr) {
            return Ok((stream, true));
        }
        let stream = tokio::time::timeout(connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| UpstreamError::Timeout)?
            .map_err(UpstreamError::Broken)?;
        stream.set_nodelay(true).map_err(UpstreamError::Broken)?;
        Ok((stream, false))
    }

    /// Keeps `stream`, whose last exchange with `addr` ended cleanly, for reuse.
    pub fn put(&self, addr: SocketAddr, stream: TcpStream) {
        let idle = Idle {
            stream,
            since: Instant::now(),
        };
        let _oldest = {
            let mut pools = self.lock();
            let pool = pools.entry(key(addr)).or_default();
            pool.push_back(idle);
            (pool.len() > MAX_IDLE_PER_UPSTREAM).then(|| pool.pop_front())
        }; // closed here, outside the lock
    }

    /// Closes the connections idle for longer than [`IDLE_TIMEOUT`]; returns how many.
    pub fn sweep(&self) -> usize {
        let now = Instant::now();
        let mut expired = Vec::new();
        self.lock().retain(|_, pool| {
            while pool.front().is_some_and(|idle| idle.expired(now)) {
                expired.extend(pool.pop_front());
            }
            !pool.is_empty()
        });
        expired.len()
    }

    /// How many idle connections the pool holds.
    pub fn len(&self) -> usize {
        self.lock().values().map(VecDeque::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn take(&self, addr: SocketAddr) -> Option<TcpStream> {
        let (now, key) = (Instant::now(), key(addr));
        loop {
            let idle = self.lock().get_mut(&key)?.pop_back()?;
            if idle.expired(now) {
                // The newest is expired, so are the rest.
                let _all = self.lock().remove(&key);
                return None;
            }
            if still_open(&idle.stream) {
                return Some(idle.stream);
            }
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, VecDeque<Idle>>> {
        // A panic while holding the lock leaves the map consistent: keep using it.
        self.idle.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// An idle connection is still usable when reading it would wait: no end of stream, no
/// error and no stray bytes from the upstream.
fn still_open(stream: &TcpStream) -> bool {
    let mut byte = [0u8; 1];
    matches!(stream.try_read(&mut byte), Err(e) if e.kind() == ErrorKind::WouldBlock)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;
    use tokio::net::{TcpListener, TcpStream};

    async fn server() -> (TcpListener, SocketAddr) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        (listener, addr)
    }

    async fn accept(listener: &TcpListener) -> TcpStream {
        listener.accept().await.unwrap().0
    }

    /// Opens a connection through `pool` and pools it; returns the upstream's end.
    async fn pool_one(pool: &UpstreamPool, listener: &TcpListener, addr: SocketAddr) -> TcpStream {
        let (stream, _) = pool.connect(addr, Duration::from_secs(1)).await.unwrap();
        let peer = accept(listener).await;
        pool.put(addr, stream);
        peer
    }

    #[tokio::test]
    async fn reuses_an_open_connection_and_replaces_a_closed_one() {
        let (listener, addr) = server().await;
        let pool = UpstreamPool::default();
        let timeout = Duration::from_secs(1);

        let (first, reused) = pool.connect(addr, timeout).await.unwrap();
        assert!(!reused);
        let mut first_peer = accept(&listener).await;
        pool.put(addr, first);
        let (again, reused) = pool.connect(addr, timeout).await.unwrap();
        assert!(reused, "an open idle connection is reused");
        pool.put(addr, again);

        // The upstream closes it: the pool notices and connects anew.
        first_peer.shutdown().await.unwrap();
        drop(first_peer);
        tokio::time::sleep(Duration::from_millis(50)).await;
        let (_fresh, reused) = pool.connect(addr, timeout).await.unwrap();
        assert!(!reused, "a connection closed by the upstream is not reused");
        assert!(pool.is_empty());
    }

    #[tokio::test]
    async fn a_connection_is_reused_only_on_the_thread_that_pooled_it() {
        let (listener, addr) = server().await;
        let pool = UpstreamPool::default();
        let _peer = pool_one(&pool, &listener, addr).await;
        std::thread::scope(|s| {
            let other = s.spawn(|| pool.take(addr).is_none());
            assert!(other.join().unwrap(), "taken on another thread");
        });
        assert!(pool.take(addr).is_some());
    }

    #[tokio::test]
    async fn stray_bytes_make_a_connection_unusable() {
        let (listener, addr) = server().await;
        let pool = UpstreamPool::default();
        let mut peer = pool_one(&pool, &listener, addr).await;
        peer.write_all(b"HTTP/1.1 200 OK\r\n").await.unwrap();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(pool.take(addr).is_none());
    }

    #[tokio::test]
    async fn keeps_at_most_the_limit_per_upstream() {
        let (listener, addr) = server().await;
        let pool = UpstreamPool::default();
        let mut peers = Vec::new();
        for _ in 0..MAX_IDLE_PER_UPSTREAM + 3 {
            let stream = TcpStream::connect(addr).await.unwrap();
            peers.push(accept(&listener).await);
            pool.put(addr, stream);
        }
        assert_eq!(pool.len(), MAX_IDLE_PER_UPSTREAM);
    }

    #[tokio::test]
    async fn connect_gives_up_after_its_timeout() {
        // A listener that never accepts, its backlog full: further SYNs go unanswered.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let pool = UpstreamPool::default();
        let mut queued = Vec::new();
        let started = Instant::now();
        let err = loop {
            match pool.connect(addr, Duration::from_millis(200)).await {
                Ok((stream, _)) => queued.push(stream),
                Err(e) => break e,
            }
            assert!(queued.len() < 16, "the backlog never filled");
        };
        assert!(matches!(err, UpstreamError::Timeout), "{err}");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn connect_reports_a_refused_port() {
        let (listener, addr) = server().await;
        drop(listener);
        let pool = UpstreamPool::default();
        let err = pool
            .connect(addr, Duration::from_secs(1))
            .await
            .unwrap_err();
        assert!(
            matches!(&err, UpstreamError::Broken(e) if e.kind() == ErrorKind::ConnectionRefused),
            "{err}"
        );
    }

    #[tokio::test]
    async fn sweep_closes_expired_connections() {
        let (listener, addr) = server().await;
        let pool = UpstreamPool::default();
        let _peer = pool_one(&pool, &listener, addr).await;
        assert_eq!(pool.sweep(), 0, "a fresh connection stays");
        pool.lock().get_mut(&key(addr)).unwrap()[0].since -= IDLE_TIMEOUT;
        assert_eq!(pool.sweep(), 1);
        assert!(pool.is_empty());
        assert!(pool.take(addr).is_none());
    }
}
