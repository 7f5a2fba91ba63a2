//! The `Stage` trait every pipeline step implements.

use bytes::Bytes;
use http::request::Parts;
use std::net::IpAddr;

use crate::Verdict;

/// What a stage may look at: the request head, the peer, and (after the body stage) the
/// whole buffered body.
#[derive(Debug, Clone, Copy)]
pub struct RequestView<'a> {
    pub head: &'a Parts,
    pub peer: Option<IpAddr>,
    pub body: Option<&'a Bytes>,
}

/// A stage broke (not a denial): e.g. its state store is unreachable.
#[derive(Debug, thiserror::Error)]
#[error("{stage} stage failed: {reason}")]
pub struct StageError {
    pub stage: &'static str,
    pub reason: String,
}

/// One pipeline step. Stages are built once per config snapshot and shared by requests.
pub trait Stage: Send + Sync {
    /// Short stable name, used in logs, metrics and spans.
    fn name(&self) -> &'static str;

    /// Decides on one request. Must not block: it runs on the proxy's async threads.
    fn check(&self, request: &RequestView<'_>) -> Result<Verdict, StageError>;
}
