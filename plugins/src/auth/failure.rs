//! Why authentication failed. The client sees only a generic code; the audit log sees
//! the reason.

use crate::{Code, Denial};

/// A reason for refusing a credential; [`reason`](AuthFailure::reason) goes to the audit log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthFailure {
    /// No credential was sent.
    Missing,
    /// The credential does not have the expected form.
    Malformed(&'static str),
    /// No API key with this id.
    UnknownKey,
    /// The key id exists but the secret does not match.
    WrongSecret,
    Revoked,
    Expired,
    /// A JWT was refused; the text names the check (never the token).
    Jwt(String),
}

impl AuthFailure {
    /// Short machine-readable reason for audit records and metric labels.
    pub fn reason(&self) -> &str {
        match self {
            AuthFailure::Missing => "missing",
            AuthFailure::Malformed(why) => why,
            AuthFailure::UnknownKey => "unknown_key",
            AuthFailure::WrongSecret => "wrong_secret",
            AuthFailure::Revoked => "revoked",
            AuthFailure::Expired => "expired",
            AuthFailure::Jwt(why) => why,
        }
    }

    /// The 401 the client gets: `missing_credentials` or a generic `invalid_credentials`.
    pub fn denial(&self) -> Denial {
        let (code, message) = match self {
            AuthFailure::Missing => (Code::MissingCredentials, "credentials are required"),
            _ => (Code::InvalidCredentials, "the credentials are not valid"),
        };
        Denial::new(code, message).with_header(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        )
    }
}
