//! What a stage decides: continue, or deny with a stable code. A denial is not an error.

use std::fmt;
use std::time::Duration;

use http::{HeaderName, HeaderValue, StatusCode};

/// The closed set of error codes clients see in `{"error":{"code":...}}`.
/// Stable for clients and bounded for metric labels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    RouteNotFound,
    ModelNotFound,
    MethodNotAllowed,
    LengthRequired,
    PayloadTooLarge,
    HeadersTooLarge,
    RequestTimeout,
    UnsupportedMediaType,
    InvalidJson,
    InvalidInput,
    BadRequest,
    Overloaded,
    MissingCredentials,
    InvalidCredentials,
    ModelNotAllowed,
    Forbidden,
    TooManyAuthFailures,
    RateLimited,
    QuotaExhausted,
    TooManyConcurrent,
    CostExceedsBurst,
    ExtractionSuspected,
    UpstreamUnavailable,
    UpstreamTimeout,
    /// The upstream answered with something the gateway must inspect but cannot read
    /// (not a KServe v2 response, or over the route's response cap).
    UpstreamInvalidResponse,
    Internal,
}

impl Code {
    /// Every code, for metrics and documentation.
    pub const ALL: [Code; 26] = [
        Code::RouteNotFound,
        Code::ModelNotFound,
        Code::MethodNotAllowed,
        Code::LengthRequired,
        Code::PayloadTooLarge,
        Code::HeadersTooLarge,
        Code::RequestTimeout,
        Code::UnsupportedMediaType,
        Code::InvalidJson,
        Code::InvalidInput,
        Code::BadRequest,
        Code::Overloaded,
        Code::MissingCredentials,
        Code::InvalidCredentials,
        Code::ModelNotAllowed,
        Code::Forbidden,
        Code::TooManyAuthFailures,
        Code::RateLimited,
        Code::QuotaExhausted,
        Code::TooManyConcurrent,
        Code::CostExceedsBurst,
        Code::ExtractionSuspected,
        Code::UpstreamUnavailable,
        Code::UpstreamTimeout,
        Code::UpstreamInvalidResponse,
        Code::Internal,
    ];

    /// The snake_case wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::RouteNotFound => "route_not_found",
            Code::ModelNotFound => "model_not_found",
            Code::MethodNotAllowed => "method_not_allowed",
            Code::LengthRequired => "length_required",
            Code::PayloadTooLarge => "payload_too_large",
            Code::HeadersTooLarge => "headers_too_large",
            Code::RequestTimeout => "request_timeout",
            Code::UnsupportedMediaType => "unsupported_media_type",
            Code::InvalidJson => "invalid_json",
            Code::InvalidInput => "invalid_input",
            Code::BadRequest => "bad_request",
            Code::Overloaded => "overloaded",
            Code::MissingCredentials => "missing_credentials",
            Code::InvalidCredentials => "invalid_credentials",
            Code::ModelNotAllowed => "model_not_allowed",
            Code::Forbidden => "forbidden",
            Code::TooManyAuthFailures => "too_many_auth_failures",
            Code::RateLimited => "rate_limited",
            Code::QuotaExhausted => "quota_exhausted",
            Code::TooManyConcurrent => "too_many_concurrent",
            Code::CostExceedsBurst => "cost_exceeds_burst",
            Code::ExtractionSuspected => "extraction_suspected",
            Code::UpstreamUnavailable => "upstream_unavailable",
            Code::UpstreamTimeout => "upstream_timeout",
            Code::UpstreamInvalidResponse => "upstream_invalid_response",
            Code::Internal => "internal_error",
        }
    }

    /// The HTTP status this code is sent with.
    pub fn status(self) -> StatusCode {
        match self {
            Code::RouteNotFound | Code::ModelNotFound => StatusCode::NOT_FOUND,
            Code::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
            Code::LengthRequired => StatusCode::LENGTH_REQUIRED,
            Code::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            Code::HeadersTooLarge => StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            Code::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Code::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            Code::InvalidJson | Code::BadRequest => StatusCode::BAD_REQUEST,
            Code::InvalidInput => StatusCode::UNPROCESSABLE_ENTITY,
            Code::Overloaded => StatusCode::SERVICE_UNAVAILABLE,
            Code::MissingCredentials | Code::InvalidCredentials => StatusCode::UNAUTHORIZED,
            Code::ModelNotAllowed | Code::Forbidden | Code::ExtractionSuspected => {
                StatusCode::FORBIDDEN
            }
            Code::TooManyAuthFailures
            | Code::RateLimited
            | Code::QuotaExhausted
            | Code::TooManyConcurrent
            | Code::CostExceedsBurst => StatusCode::TOO_MANY_REQUESTS,
            Code::UpstreamUnavailable | Code::UpstreamInvalidResponse => StatusCode::BAD_GATEWAY,
            Code::UpstreamTimeout => StatusCode::GATEWAY_TIMEOUT,
            Code::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl Code {
    /// The pipeline stage that refuses with this code, for the denials metric.
    pub fn stage(self) -> &'static str {
        match self {
            Code::RouteNotFound | Code::ModelNotFound => "route",
            Code::MethodNotAllowed => "method",
            Code::HeadersTooLarge => "headers",
            Code::MissingCredentials
            | Code::InvalidCredentials
            | Code::ModelNotAllowed
            | Code::Forbidden
            | Code::TooManyAuthFailures => "auth",
            Code::LengthRequired | Code::PayloadTooLarge | Code::RequestTimeout => "body",
            Code::UnsupportedMediaType
            | Code::InvalidJson
            | Code::InvalidInput
            | Code::BadRequest => "validate",
            Code::RateLimited
            | Code::QuotaExhausted
            | Code::TooManyConcurrent
            | Code::CostExceedsBurst => "rate_limit",
            Code::ExtractionSuspected => "extraction",
            Code::Overloaded
            | Code::UpstreamUnavailable
            | Code::UpstreamTimeout
            | Code::UpstreamInvalidResponse
            | Code::Internal => "backend",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refusal, turned into a response in one place by the gateway.
/// `message` is shown to the client: it must never hold a secret or an internal cause.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denial {
    pub code: Code,
    pub message: String,
    pub retry_after: Option<Duration>,
    /// Extra response headers (e.g. `Allow` on a 405).
    pub headers: Vec<(HeaderName, HeaderValue)>,
    /// Per-field problems (JSON pointer + message), sent as `error.details`.
    pub details: Vec<ErrorDetail>,
}

/// One problem in a request body, located by a JSON pointer (`/inputs/0/shape`).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ErrorDetail {
    pub path: String,
    pub message: String,
}

impl Denial {
    /// A denial with the code's status and a client-facing message.
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Denial {
            code,
            message: message.into(),
            retry_after: None,
            headers: Vec::new(),
            details: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: HeaderName, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    /// Adds per-field details.
    pub fn with_details(mut self, details: Vec<ErrorDetail>) -> Self {
        self.details = details;
        self
    }

    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        self.code.status()
    }
}

/// A stage's decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Deny(Denial),
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn codes_are_unique_and_client_errors_are_4xx() {
        let names: HashSet<_> = Code::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), Code::ALL.len());
        for c in [
            Code::RouteNotFound,
            Code::PayloadTooLarge,
            Code::InvalidJson,
            Code::InvalidInput,
        ] {
            assert!(c.status().is_client_error(), "{c}");
        }
        assert_eq!(Code::UpstreamTimeout.status(), StatusCode::GATEWAY_TIMEOUT);
    }
}
