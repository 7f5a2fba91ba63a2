//! The admin listener (loopback by default): `/healthz`, `/readyz`.

use std::sync::Arc;

use arc_swap::ArcSwap;
use async_trait::async_trait;
use bytes::Bytes;
use http::StatusCode;
use pingora::prelude::HttpPeer;
use pingora::proxy::{ProxyHttp, Session};
use pingora::{Error, ErrorType};

use modelgate_plugins::{Code, Denial};

use crate::respond;
use crate::snapshot::Snapshot;

/// The admin service.
pub struct Admin {
    pub snapshot: Arc<ArcSwap<Snapshot>>,
}

#[async_trait]
impl ProxyHttp for Admin {
    type CTX = ();

    fn new_ctx(&self) {}

    async fn request_filter(&self, session: &mut Session, _ctx: &mut ()) -> pingora::Result<bool> {
        let head = session.req_header();
        let is_get = matches!(head.method, http::Method::GET | http::Method::HEAD);
        let close = !session.is_body_empty();
        let path = session.req_header().uri.path();
        match (path, is_get) {
            ("/healthz", true) => {
                respond::json(
                    session,
                    StatusCode::OK,
                    Bytes::from_static(br#"{"status":"ok"}"#),
                    &[],
                )
                .await?
            }
            ("/readyz", true) => {
                let generation = self.snapshot.load().generation;
                let body = format!(r#"{{"ready":true,"generation":{generation}}}"#);
                respond::json(session, StatusCode::OK, Bytes::from(body), &[]).await?
            }
            ("/healthz" | "/readyz", false) => {
                let denial = Denial::new(Code::MethodNotAllowed, "method not allowed; use GET")
                    .with_header("allow", "GET, HEAD");
                respond::deny(session, &denial, close).await?
            }
            _ => {
                respond::deny(
                    session,
                    &Denial::new(Code::RouteNotFound, "no such admin endpoint"),
                    close,
                )
                .await?
            }
        }
        Ok(true)
    }

    async fn upstream_peer(
        &self,
        _session: &mut Session,
        _ctx: &mut (),
    ) -> pingora::Result<Box<HttpPeer>> {
        Err(Error::explain(
            ErrorType::InternalError,
            "the admin API has no upstream",
        ))
    }
}
