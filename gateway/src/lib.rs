//! modelgate: a hardened model-serving gateway on Pingora.
//!
//! Requests walk one pipeline ([`pipeline`]): route → method → auth → body (read and
//! capped before any upstream is chosen) → validate → rate limit → extraction ([`guard`]) →
//! backend (embedded ONNX, or HTTP upstreams: [`forward`], speaking [`upstream_http1`] over
//! [`upstream_pool`] connections).
//! Refusals become JSON errors in one place ([`respond`]); each request is traced
//! ([`telemetry`]).

pub mod admin;
pub mod authn;
pub mod body;
pub mod calibrate_cli;
pub mod data_plane;
pub mod embedded;
pub mod forward;
pub mod guard;
pub mod health;
pub mod http_get;
pub mod http_service;
pub mod keys_cli;
pub mod limits;
pub mod logging;
pub mod metrics;
pub mod pipeline;
pub mod reload;
pub mod respond;
pub mod routes;
pub mod secrets;
pub mod server;
pub mod snapshot;
pub mod telemetry;
pub mod upstream_http1;
pub mod upstream_pool;
pub mod validation;
