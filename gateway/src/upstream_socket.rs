//! Upstream TCP connections that send each request in one write.
//!
//! Pingora's upstream streams have no write buffer and its HTTP/1 client flushes the request
//! head before it writes the body, so a `POST` left in two `sendto`s, each a separate trip
//! through the network stack and a separate wake-up of the upstream. [`connect`] opens
//! connections (Pingora "virtual" sockets) that hold written bytes until the connection is
//! next read, shut down, or more than [`HOLD_LIMIT`] bytes are waiting. An HTTP/1 client
//! reads the response right after sending the request, so head and body leave together just
//! before that read.
//!
//! The price is that `flush` sends nothing by itself: these connections only suit exchanges
//! that read after they write, which is what the gateway's forwarding does.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use pingora::protocols::l4::ext::connect as tcp_connect;
use pingora::protocols::l4::stream::Stream;
use pingora::protocols::l4::virt::{VirtualSockOpt, VirtualSocket, VirtualSocketStream};
use pingora::{Error, ErrorType, OrErr};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;

/// Most bytes a connection holds back; a larger request goes out in more than one write.
pub const HOLD_LIMIT: usize = 16 * 1024;

/// Opens a connection to `addr` over a [`OneWriteSocket`], giving up after `timeout`.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> pingora::Result<Stream> {
    let tcp = match tokio::time::timeout(timeout, tcp_connect(&addr, None)).await {
        Ok(tcp) => tcp?,
        Err(_) => {
            return Error::e_explain(
                ErrorType::ConnectTimedout,
                format!("timeout {timeout:?} connecting to {addr}"),
            );
        }
    };
    tcp.set_nodelay(true)
        .or_err(ErrorType::SocketError, "setting TCP_NODELAY")?;
    Ok(Stream::from(VirtualSocketStream::new(Box::new(
        OneWriteSocket::new(tcp),
    ))))
}

/// A TCP stream whose writes wait in a buffer until the stream is read or shut down, or
/// the buffer would pass [`HOLD_LIMIT`].
#[derive(Debug)]
pub struct OneWriteSocket {
    tcp: TcpStream,
    held: Vec<u8>,
    /// How much of `held` the kernel has taken so far.
    sent: usize,
}

impl OneWriteSocket {
    pub fn new(tcp: TcpStream) -> Self {
        OneWriteSocket {
            tcp,
            held: Vec::new(),
            sent: 0,
        }
    }

    /// Hands every held byte to the kernel.
    fn poll_send_held(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while self.sent < self.held.len() {
            let n = ready!(Pin::new(&mut self.tcp).poll_write(cx, &self.held[self.sent..]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.sent += n;
        }
        self.held.clear();
        self.sent = 0;
        Poll::Ready(Ok(()))
    }
}

impl VirtualSocket for OneWriteSocket {
    /// `NoDelay` (already set by [`connect`]); the gateway asks for no other option.
    fn set_socket_option(&self, opt: VirtualSockOpt) -> io::Result<()> {
        match opt {
            VirtualSockOpt::NoDelay => self.tcp.set_nodelay(true),
            other => Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("{other:?} is not supported on upstream connections"),
            )),
        }
    }
}

impl AsyncRead for OneWriteSocket {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.tcp).poll_read(cx, buf)
    }
}

impl AsyncWrite for OneWriteSocket {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        if this.held.len() + buf.len() > HOLD_LIMIT {
            ready!(this.poll_send_held(cx))?;
            if buf.len() > HOLD_LIMIT {
                return Pin::new(&mut this.tcp).poll_write(cx, buf);
            }
        }
        this.held.extend_from_slice(buf);
        Poll::Ready(Ok(buf.len()))
    }

    /// Sends nothing: held bytes leave with the next read (see the module docs).
    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        ready!(this.poll_send_held(cx))?;
        Pin::new(&mut this.tcp).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpListener;

    async fn pair() -> (OneWriteSocket, TcpStream) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (client, server) = tokio::join!(TcpStream::connect(addr), listener.accept());
        (OneWriteSocket::new(client.unwrap()), server.unwrap().0)
    }

    /// What the peer has received so far, without waiting for more.
    async fn received(peer: &mut TcpStream) -> Vec<u8> {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut out = vec![0; 64 * 1024];
        match peer.try_read(&mut out) {
            Ok(n) => out.truncate(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => out.clear(),
            Err(e) => panic!("{e}"),
        }
        out
    }

    #[tokio::test]
    async fn holds_writes_until_the_connection_is_read() {
        let (mut socket, mut peer) = pair().await;
        socket.write_all(b"POST / HTTP/1.1\r\n\r\n").await.unwrap();
        socket.flush().await.unwrap();
        socket.write_all(b"body").await.unwrap();
        socket.flush().await.unwrap();
        assert!(
            received(&mut peer).await.is_empty(),
            "nothing before a read"
        );

        let mut answer = [0; 2];
        let (read, ()) = tokio::join!(socket.read_exact(&mut answer), async {
            assert_eq!(received(&mut peer).await, b"POST / HTTP/1.1\r\n\r\nbody");
            peer.write_all(b"ok").await.unwrap();
        });
        read.unwrap();
        assert_eq!(&answer, b"ok");
    }

    #[tokio::test]
    async fn shutdown_sends_what_is_held() {
        let (mut socket, mut peer) = pair().await;
        socket.write_all(b"last words").await.unwrap();
        socket.shutdown().await.unwrap();
        let mut all = Vec::new();
        peer.read_to_end(&mut all).await.unwrap();
        assert_eq!(all, b"last words");
    }

    #[tokio::test]
    async fn writes_past_the_limit_go_out_in_order() {
        let (mut socket, mut peer) = pair().await;
        let big: Vec<u8> = (0..3 * HOLD_LIMIT).map(|i| (i % 251) as u8).collect();
        let (written, all) = tokio::join!(
            async {
                socket.write_all(b"head").await?;
                socket.write_all(&big).await?;
                socket.write_all(b"tail").await?;
                socket.shutdown().await
            },
            async {
                let mut all = Vec::new();
                peer.read_to_end(&mut all).await.map(|_| all)
            }
        );
        written.unwrap();
        let all = all.unwrap();
        assert_eq!(all.len(), big.len() + 8);
        assert_eq!(&all[..4], b"head");
        assert_eq!(&all[4..4 + big.len()], &big[..]);
        assert_eq!(&all[4 + big.len()..], b"tail");
    }

    #[tokio::test]
    async fn connect_gives_up_after_its_timeout() {
        // A listener that never accepts, its backlog full: further SYNs go unanswered.
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let listener = socket.listen(1).unwrap();
        let addr = listener.local_addr().unwrap();
        let mut queued = Vec::new();
        let started = std::time::Instant::now();
        let err = loop {
            match connect(addr, Duration::from_millis(200)).await {
                Ok(stream) => queued.push(stream),
                Err(e) => break e,
            }
            assert!(queued.len() < 16, "the backlog never filled");
        };
        assert_eq!(err.etype(), &ErrorType::ConnectTimedout, "{err}");
        assert!(started.elapsed() >= Duration::from_millis(200));
    }

    #[tokio::test]
    async fn connect_reports_a_refused_port() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = connect(addr, Duration::from_secs(1)).await.unwrap_err();
        assert_eq!(err.etype(), &ErrorType::ConnectRefused);
    }
}
