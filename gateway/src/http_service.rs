//! Serving HTTP/1.1 on Pingora's listeners without its proxy layer. Every modelgate service
//! answers each request itself (the pipeline talks to upstreams on its own), so a
//! connection is a plain loop — read a request head, answer it, log it, reuse the
//! connection — with no per-request boxed future, cache, module or subrequest machinery.
//! Pingora's proxy layer cost the routing path a quarter of its instructions (65k → 49k per
//! request, docs/BENCHMARKS.md), most of it moving its ~5 KB request future into boxes.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use pingora::ErrorType;
use pingora::apps::ServerApp;
use pingora::protocols::Stream;
use pingora::protocols::http::ServerSession;
use pingora::protocols::http::server::ReusableHttpStream;
use pingora::server::ShutdownWatch;

use modelgate_plugins::{Code, Denial};

use crate::respond;

/// [`Responder::head_deadline`] unless a service says otherwise (Pingora's default idle
/// time between requests on a kept-alive connection).
const HEAD_DEADLINE: Duration = Duration::from_secs(60);

/// A service that answers every request itself.
pub trait Responder: Send + Sync + 'static {
    /// Per-request state, handed to `log` once the request is over.
    type Ctx: Send;

    fn new_ctx(&self) -> Self::Ctx;

    /// Longest a request head may take to arrive, counted from the connection's opening or
    /// the previous response (read when the connection opens). Pingora's own timeout
    /// restarts with every read, so without it a client sending a header line now and then
    /// would hold the connection for ever (slowloris).
    fn head_deadline(&self) -> Duration {
        HEAD_DEADLINE
    }

    /// Answers one request (the head is read). `Err` only when the client connection
    /// broke; the connection is then dropped.
    fn respond(
        &self,
        session: &mut ServerSession,
        ctx: &mut Self::Ctx,
    ) -> impl Future<Output = pingora::Result<()>> + Send;

    /// Called once per answered request, after its response (or its failure).
    fn log(&self, _session: &ServerSession, _error: Option<&pingora::Error>, _ctx: &mut Self::Ctx) {
    }
}

/// A [`Responder`] as a Pingora application: `Service::new(name, HttpService(responder))`.
pub struct HttpService<R>(pub R);

#[async_trait]
impl<R: Responder> ServerApp for HttpService<R> {
    async fn process_new(
        self: &Arc<Self>,
        stream: Stream,
        shutdown: &ShutdownWatch,
    ) -> Option<Stream> {
        let mut shutdown = shutdown.clone();
        let mut session = ServerSession::new_http1(stream);
        // One timer for the connection (Pingora's, 10 ms resolution), not one per request:
        // when it fires before the head's real deadline, counted from the last answer, it
        // is set again for what is left. It also bounds the idle time between requests, so
        // Pingora keeps the connection alive without a timer of its own (`Some(0)`), which
        // it would otherwise register for every request.
        let head_deadline = self.0.head_deadline();
        let mut since = Instant::now();
        let mut timer = Box::pin(pingora::time::sleep(head_deadline));
        loop {
            let draining = *shutdown.borrow();
            session.set_keepalive((!draining).then_some(0));
            let read = {
                let read = session.read_request();
                tokio::pin!(read);
                loop {
                    // Biased: a request already buffered is answered even when shutdown
                    // begins.
                    tokio::select! {
                        biased;
                        read = &mut read => break read,
                        () = &mut timer => {
                            // Past the deadline the connection closes without an answer,
                            // whether the client is idle or part-way through a head.
                            let left = since
                                .checked_add(head_deadline)
                                .and_then(|at| at.checked_duration_since(Instant::now()))
                                .filter(|left| !left.is_zero())?;
                            timer.set(pingora::time::sleep(left));
                        }
                        _ = shutdown.changed(), if !draining => return None,
                    }
                }
            };
            match read {
                Ok(true) => {}
                Ok(false) => return None,
                Err(e) => {
                    if matches!(e.etype(), ErrorType::InvalidHTTPHeader) {
                        let denial = Denial::new(Code::BadRequest, "malformed HTTP request");
                        respond::refuse_and_close(&mut session, &denial).await;
                    }
                    return None;
                }
            }
            if session.req_header().method == http::Method::CONNECT {
                let denial = Denial::new(Code::MethodNotAllowed, "CONNECT is not supported");
                respond::refuse_and_close(&mut session, &denial).await;
                return None;
            }
            // Pipelining stays off (Pingora's default): bytes sent ahead of the response
            // keep the connection from being reused, so there is no prefix to carry over.
            let (stream, _) = self.answer(session).await?.into_parts();
            since = Instant::now();
            session = ServerSession::new_http1(stream);
        }
    }
}

impl<R: Responder> HttpService<R> {
    /// Answers the request whose head `session` holds; the connection back when it can
    /// carry another request.
    async fn answer(&self, mut session: ServerSession) -> Option<ReusableHttpStream> {
        let mut ctx = self.0.new_ctx();
        match self.0.respond(&mut session, &mut ctx).await {
            Ok(()) => {
                self.0.log(&session, None, &mut ctx);
                // The request's state (its limiter permits) goes before the connection is
                // finished (any unread body drained).
                drop(ctx);
                session.finish().await.ok().flatten()
            }
            Err(e) => {
                // Normally a broken client connection; anything else that left the request
                // unanswered still gets an answer.
                if session.response_written().is_none() {
                    let denial = Denial::new(Code::Internal, "the request could not be answered");
                    respond::refuse_and_close(&mut session, &denial).await;
                }
                self.0.log(&session, Some(&e), &mut ctx);
                None
            }
        }
    }
}
