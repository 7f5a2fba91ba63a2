//! The admin listener (loopback by default): `/healthz`, `/readyz` and `/metrics` for
//! probes and scrapers, open; `GET /admin/config` and `GET /admin/suspects` (who is
//! suspected of what: worth keeping from the suspects themselves) need the admin bearer
//! token when one is configured, and without one answer only on a loopback listener;
//! mutating endpoints (`POST /admin/reload`, `DELETE /admin/suspects/{id}`) always need the
//! token, and are off without one.

use std::sync::Arc;

use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use pingora::protocols::http::ServerSession;
use subtle::ConstantTimeEq;

use modelgate_plugins::{Code, Denial};

use crate::health::UpstreamHealth;
use crate::http_service::Responder;
use crate::reload::Reloader;
use crate::respond;

/// The admin service.
pub struct Admin {
    pub reloader: Arc<Reloader>,
    /// Bearer token for mutating endpoints, read at start-up.
    pub token: Option<Vec<u8>>,
    /// Upstream health checks, for `/readyz`.
    pub health: Arc<UpstreamHealth>,
    /// Whether the admin listener is on a loopback address.
    pub loopback: bool,
}

impl Responder for Admin {
    type Ctx = ();

    fn new_ctx(&self) {}

    async fn respond(&self, session: &mut ServerSession, _ctx: &mut ()) -> pingora::Result<()> {
        let close = !session.is_body_empty();
        let method = session.req_header().method.clone();
        let path = session.req_header().uri.path().to_string();
        let read_only = matches!(method, http::Method::GET | http::Method::HEAD);
        match (path.as_str(), read_only, method == http::Method::POST) {
            ("/healthz", true, _) => {
                let body = Bytes::from_static(br#"{"status":"ok"}"#);
                respond::json(session, StatusCode::OK, body, &[]).await?
            }
            ("/metrics", true, _) => {
                let body = Bytes::from(crate::metrics::METRICS.render());
                respond::body(
                    session,
                    StatusCode::OK,
                    "text/plain; version=0.0.4",
                    body,
                    &[],
                )
                .await?
            }
            ("/admin/config", true, _) => {
                if let Err(denial) = self.authorize_read(session) {
                    respond::deny(session, &denial, close).await?;
                    return Ok(());
                }
                let body = self.config_view();
                respond::json(session, StatusCode::OK, Bytes::from(body), &[]).await?
            }
            ("/readyz", true, _) => {
                // Ready: a snapshot is live and every HTTP route has an upstream up.
                let snapshot = self.reloader.snapshot.load();
                let unready = self.health.unready_routes(&snapshot);
                let status = if unready.is_empty() {
                    StatusCode::OK
                } else {
                    StatusCode::SERVICE_UNAVAILABLE
                };
                let body = serde_json::json!({
                    "ready": unready.is_empty(),
                    "generation": snapshot.generation,
                    "routes_without_upstreams": unready,
                });
                respond::json(session, status, Bytes::from(body.to_string()), &[]).await?
            }
            ("/admin/suspects", true, _) => {
                if let Err(denial) = self.authorize_read(session) {
                    respond::deny(session, &denial, close).await?;
                    return Ok(());
                }
                let body = serde_json::to_vec_pretty(&self.suspects()).unwrap_or_default();
                respond::json(session, StatusCode::OK, Bytes::from(body), &[]).await?
            }
            (p, _, _) if p.starts_with("/admin/suspects/") && method == http::Method::DELETE => {
                if let Err(denial) = self.authorize(session) {
                    respond::deny(session, &denial, close).await?;
                    return Ok(());
                }
                let id = p.trim_start_matches("/admin/suspects/");
                let cleared = self.clear_suspect(id);
                log::info!(target: "audit", "{}", serde_json::json!({"event": "suspect_cleared", "id": id, "found": cleared}));
                if cleared {
                    let body = Bytes::from(serde_json::json!({"cleared": id}).to_string());
                    respond::json(session, StatusCode::OK, body, &[]).await?
                } else {
                    let denial = Denial::new(Code::RouteNotFound, "no such suspect");
                    respond::deny(session, &denial, close).await?
                }
            }
            ("/admin/reload", _, true) => {
                if let Err(denial) = self.authorize(session) {
                    respond::deny(session, &denial, close).await?;
                    return Ok(());
                }
                let reloader = Arc::clone(&self.reloader);
                let status = tokio::task::spawn_blocking(move || reloader.reload())
                    .await
                    .unwrap_or_default();
                let code = if status.ok {
                    StatusCode::OK
                } else {
                    StatusCode::UNPROCESSABLE_ENTITY
                };
                let body = serde_json::to_vec(&status).unwrap_or_default();
                respond::json(session, code, Bytes::from(body), &[]).await?
            }
            ("/admin/reload", _, false) => {
                let denial = Denial::new(Code::MethodNotAllowed, "method not allowed; use POST")
                    .with_header(header::ALLOW, HeaderValue::from_static("POST"));
                respond::deny(session, &denial, close).await?
            }
            ("/healthz" | "/readyz" | "/metrics" | "/admin/config", false, _) => {
                let denial = Denial::new(Code::MethodNotAllowed, "method not allowed; use GET")
                    .with_header(header::ALLOW, HeaderValue::from_static("GET, HEAD"));
                respond::deny(session, &denial, close).await?
            }
            _ => {
                let denial = Denial::new(Code::RouteNotFound, "no such admin endpoint");
                respond::deny(session, &denial, close).await?
            }
        }
        Ok(())
    }
}

impl Admin {
    /// The live config, as the gateway understood it. Secrets are never in the config
    /// itself (only the names of env vars and files holding them).
    fn config_view(&self) -> Vec<u8> {
        let snapshot = self.reloader.snapshot.load();
        let body = serde_json::json!({
            "generation": snapshot.generation,
            "last_reload": self.reloader.last_status(),
            // Secrets are never in the config, only where to read them (env var or file name).
            "config": &snapshot.config,
        });
        serde_json::to_vec_pretty(&body).unwrap_or_default()
    }

    /// Every route's suspects: per-signal scores, queries seen, action.
    fn suspects(&self) -> serde_json::Value {
        let snapshot = self.reloader.snapshot.load();
        let now = crate::authn::unix_now();
        let routes: serde_json::Map<String, serde_json::Value> = snapshot
            .routes
            .iter()
            .filter_map(|r| {
                let guard = r.extraction.as_ref()?;
                Some((
                    r.name.to_string(),
                    serde_json::json!(guard.detector.suspects(now)),
                ))
            })
            .collect();
        serde_json::json!({ "routes": routes })
    }

    /// Clears a suspect (`consumer:NAME`, `group:NAME` or a consumer name) on every route.
    fn clear_suspect(&self, id: &str) -> bool {
        let snapshot = self.reloader.snapshot.load();
        let mut found = false;
        for guard in snapshot.routes.iter().filter_map(|r| r.extraction.as_ref()) {
            found |= guard.detector.clear(id);
        }
        found
    }

    /// For the mutating endpoints: the token.
    fn authorize(&self, session: &ServerSession) -> Result<(), Denial> {
        self.audited(session, check_token(self.token.as_deref(), bearer(session)))
    }

    /// For the read-only `/admin/` endpoints: see [`read_access`].
    fn authorize_read(&self, session: &ServerSession) -> Result<(), Denial> {
        let access = read_access(self.token.as_deref(), self.loopback, bearer(session));
        self.audited(session, access)
    }

    /// Writes an audit record when a configured token was not presented.
    fn audited(&self, session: &ServerSession, access: Result<(), Denial>) -> Result<(), Denial> {
        if access.is_err() && self.token.is_some() {
            log::warn!(target: "audit", "{}", serde_json::json!({"event": "admin_auth_failure", "path": session.req_header().uri.path()}));
        }
        access
    }
}

/// Who may read `/admin/config` and `/admin/suspects`: the token's holder when a token is
/// configured; without one, anyone reaching a loopback listener, nobody otherwise.
fn read_access(expected: Option<&[u8]>, loopback: bool, presented: &str) -> Result<(), Denial> {
    if expected.is_none() && loopback {
        return Ok(());
    }
    check_token(expected, presented)
}

/// The `Authorization: Bearer` value, or "".
fn bearer(session: &ServerSession) -> &str {
    session
        .req_header()
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("")
}

/// `presented` against the configured token, in constant time: 403 when there is none,
/// 401 when it does not match.
fn check_token(expected: Option<&[u8]>, presented: &str) -> Result<(), Denial> {
    let Some(expected) = expected else {
        return Err(Denial::new(
            Code::Forbidden,
            "this admin endpoint needs an admin token: configure server.admin_token_env or admin_token_file",
        ));
    };
    if bool::from(presented.as_bytes().ct_eq(expected)) {
        Ok(())
    } else {
        Err(
            Denial::new(Code::InvalidCredentials, "the admin token is not valid")
                .with_header(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer")),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_token_guards_admin_endpoints() {
        let token = Some(&b"s3cret-token"[..]);
        assert!(check_token(token, "s3cret-token").is_ok());
        for wrong in ["", "s3cret-toke", "s3cret-token2", "S3CRET-TOKEN"] {
            assert_eq!(
                check_token(token, wrong).unwrap_err().status(),
                StatusCode::UNAUTHORIZED
            );
        }
        // Without a configured token, mutating endpoints are off, whatever is presented.
        assert_eq!(
            check_token(None, "").unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
    }

    #[test]
    fn reads_need_the_token_when_there_is_one_and_loopback_when_there_is_none() {
        let token = Some(&b"s3cret-token"[..]);
        for loopback in [true, false] {
            assert!(read_access(token, loopback, "s3cret-token").is_ok());
            assert!(read_access(token, loopback, "").is_err());
        }
        assert!(read_access(None, true, "").is_ok());
        assert_eq!(
            read_access(None, false, "anything").unwrap_err().status(),
            StatusCode::FORBIDDEN
        );
    }
}
