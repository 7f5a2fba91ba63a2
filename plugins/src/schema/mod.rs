//! The validate stage's checks: nothing malformed, oversized or out of contract reaches a
//! backend, and every refusal says what to fix (`details`: JSON pointer + message).
//!
//! - [`JsonSchema`]: a route's JSON Schema (Draft 2020-12 or Draft 7), compiled once per config
//!   generation; no `$ref` is ever fetched over the network or from disk.
//! - [`validate_v2`], [`validate_v2_binary`], [`validate_predict`]: KServe v2 (JSON and the
//!   binary tensor extension) and TF-Serving `:predict` bodies checked against a
//!   [`ModelContract`], parsed once, straight into typed vectors ([`ValidatedRequest`]) that
//!   later stages (rate-limit cost, extraction detector, embedded backend) reuse.
//! - [`check_content_type`], [`decode_body`]: the media type and gzip rules.
//! - [`validate_infer`]: all of the above for one request, in order.
//!
//! Status codes: 400 `invalid_json` for a body that is not JSON (including duplicate object
//! keys, lone surrogates, numbers beyond f64, nesting deeper than the limit), 400 `bad_request`
//! for broken binary-extension framing, 413 `payload_too_large` for a hard limit (elements,
//! string length, decompressed size or ratio), 415 `unsupported_media_type`, and 422
//! `invalid_input` for anything out of contract, listing up to `max_errors` problems.
//!
//! Duplicate object keys are refused everywhere (400): parsers disagree on which copy wins,
//! so a gateway and a backend could read two different requests from one body.

mod binary;
mod contract;
mod encoding;
mod json_schema;
mod parse;
mod tf_serving;
mod v2;

#[cfg(test)]
mod tests;

pub use binary::{INFERENCE_HEADER_CONTENT_LENGTH, validate_v2_binary};
pub use contract::{ContractError, Datatype, MAX_RANK, ModelContract, TensorSpec};
pub use encoding::{check_content_type, decode_body};
pub use json_schema::{JsonSchema, SchemaDraft, SchemaError};
pub use tf_serving::validate_predict;
pub use v2::{TensorData, V2Response, ValidatedRequest, ValidatedTensor, validate_v2};

use std::borrow::Cow;

use http::{HeaderMap, header};
use serde_json::Value;

use crate::{Code, Denial};

/// Bounds on what a client controls in a body. `Default` gives the documented defaults.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ValidationLimits {
    /// Deepest nesting of arrays and objects (default 64); deeper is 400.
    pub max_depth: usize,
    /// Most array elements and object members in one body, all levels counted (default
    /// 1,000,000); more is 413. A shape declaring more elements is refused the same way.
    pub max_elements: usize,
    /// Longest string (and `BYTES` element) in bytes (default 64 KiB); longer is 413.
    pub max_string_bytes: usize,
    /// Most problems listed in a refusal's `details` (default 10).
    pub max_errors: usize,
    /// Whether `Content-Encoding: gzip` is accepted (default false: 415).
    pub allow_gzip: bool,
    /// Largest decompressed body (default 8 MiB); larger is 413.
    pub max_decoded_bytes: usize,
    /// Largest decompressed/compressed size ratio (default 100); larger is 413.
    pub max_ratio: usize,
    /// Whether a body without `Content-Type` is refused (default false: tritonclient sends
    /// none with the binary extension).
    pub require_content_type: bool,
}

impl Default for ValidationLimits {
    fn default() -> Self {
        ValidationLimits {
            max_depth: 64,
            max_elements: 1_000_000,
            max_string_bytes: 64 * 1024,
            max_errors: 10,
            allow_gzip: false,
            max_decoded_bytes: 8 * 1024 * 1024,
            max_ratio: 100,
            require_content_type: false,
        }
    }
}

/// The wire format an inference route speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InferFormat {
    /// Open Inference Protocol (KServe v2) `/infer`, JSON or the binary tensor extension.
    V2,
    /// TF-Serving `:predict` (`instances` or `inputs`).
    TfPredict,
}

/// Checks one inference request end to end: `Content-Type`, `Content-Encoding` (gzip only
/// when allowed), the binary extension header (v2 only), then the body against `contract`.
/// Returns the parsed request, ready for the later stages, or the refusal to send.
pub fn validate_infer(
    format: InferFormat,
    headers: &HeaderMap,
    body: &[u8],
    contract: &ModelContract,
    limits: &ValidationLimits,
) -> Result<ValidatedRequest, Denial> {
    let binary = headers.get(INFERENCE_HEADER_CONTENT_LENGTH);
    if binary.is_some() && format == InferFormat::TfPredict {
        return Err(Denial::new(
            Code::BadRequest,
            "the binary tensor extension is not available on :predict",
        ));
    }
    let content_type = single_header(headers, header::CONTENT_TYPE, Code::UnsupportedMediaType)?;
    if content_type.is_none() && limits.require_content_type {
        return Err(Denial::new(
            Code::UnsupportedMediaType,
            "Content-Type is required",
        ));
    }
    check_content_type(content_type, binary.is_some())?;
    let body = decode_request_body(headers, body, limits)?;
    match (format, binary) {
        (InferFormat::V2, Some(len)) => {
            let len = len.to_str().map_err(|_| {
                Denial::new(
                    Code::BadRequest,
                    "Inference-Header-Content-Length is not a number",
                )
            })?;
            validate_v2_binary(&body, len, contract, limits)
        }
        (InferFormat::V2, None) => validate_v2(&body, contract, limits),
        (InferFormat::TfPredict, _) => validate_predict(&body, contract, limits),
    }
}

/// Checks a JSON body against a route's schema end to end (`Content-Type`, gzip when allowed,
/// parse under the limits, schema) and returns the parsed document.
pub fn validate_json(
    headers: &HeaderMap,
    body: &[u8],
    schema: &JsonSchema,
    limits: &ValidationLimits,
) -> Result<Value, Denial> {
    let content_type = single_header(headers, header::CONTENT_TYPE, Code::UnsupportedMediaType)?;
    if content_type.is_none() && limits.require_content_type {
        return Err(Denial::new(
            Code::UnsupportedMediaType,
            "Content-Type is required",
        ));
    }
    check_content_type(content_type, false)?;
    let body = decode_request_body(headers, body, limits)?;
    schema.check_body(&body, limits)
}

/// Parses a JSON body under `limits` (depth, elements, string length, duplicate keys refused)
/// without any schema. 400 for invalid JSON, 413 past a limit.
pub fn parse_json(body: &[u8], limits: &ValidationLimits) -> Result<Value, Denial> {
    parse::parse_value(body, limits)
}

fn decode_request_body<'a>(
    headers: &HeaderMap,
    body: &'a [u8],
    limits: &ValidationLimits,
) -> Result<Cow<'a, [u8]>, Denial> {
    let encoding = single_header(
        headers,
        header::CONTENT_ENCODING,
        Code::UnsupportedMediaType,
    )?;
    let identity = encoding.is_none_or(|e| e.trim().eq_ignore_ascii_case("identity"));
    if !identity && !limits.allow_gzip {
        return Err(Denial::new(
            Code::UnsupportedMediaType,
            "this route does not accept compressed bodies",
        ));
    }
    decode_body(encoding, body, limits.max_decoded_bytes, limits.max_ratio)
}

/// The header's value when it appears at most once and is visible ASCII.
fn single_header(
    headers: &HeaderMap,
    name: header::HeaderName,
    code: Code,
) -> Result<Option<&str>, Denial> {
    let mut values = headers.get_all(&name).iter();
    match (values.next(), values.next()) {
        (None, _) => Ok(None),
        (Some(v), None) => v
            .to_str()
            .map(Some)
            .map_err(|_| Denial::new(code, format!("{name} is not readable"))),
        (Some(_), Some(_)) => Err(Denial::new(code, format!("more than one {name} header"))),
    }
}
