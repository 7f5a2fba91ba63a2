//! Who is calling: the identity every later stage keys its decisions and state on.

use std::sync::OnceLock;

use http::HeaderValue;

/// Which models a credential may use.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Scopes {
    /// Every model (`"*"`).
    All,
    /// Only these model names.
    Models(Vec<String>),
}

impl Scopes {
    /// Builds scopes from model names; `"*"` anywhere means all models.
    pub fn from_names<I, S>(names: I) -> Scopes
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.iter().any(|n| n == "*") {
            Scopes::All
        } else {
            Scopes::Models(names)
        }
    }

    /// Whether `model` is allowed.
    pub fn allows(&self, model: &str) -> bool {
        match self {
            Scopes::All => true,
            Scopes::Models(models) => models.iter().any(|m| m == model),
        }
    }
}

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CredentialKind {
    /// An issued API key, by its public id.
    ApiKey { key_id: String },
    /// A JWT from this issuer.
    Jwt { issuer: String },
}

/// An authenticated caller. Only authentication creates one.
#[derive(Debug, Clone)]
pub struct Caller {
    /// Stable consumer name (API key's consumer, or a JWT claim).
    pub consumer: String,
    /// Plan name (rate limits, quotas).
    pub plan: String,
    pub scopes: Scopes,
    /// A group of consumers (an org, a JWT tenant claim), if known.
    pub group: Option<String>,
    pub credential: CredentialKind,
    /// [`Caller::header_values`], rendered on first use: a key's caller is shared by all
    /// of its requests, so they pay for it once.
    header_values: OnceLock<HeaderValues>,
}

/// The caller as values for the identity headers sent upstream. `None` where a value is not
/// a valid header value (e.g. a control character in a JWT claim): that header is left out.
#[derive(Debug, Clone, Default)]
pub struct HeaderValues {
    pub consumer: Option<HeaderValue>,
    pub plan: Option<HeaderValue>,
    /// `api_key:<key id>` or `jwt:<issuer>`.
    pub credential: Option<HeaderValue>,
}

impl Caller {
    pub fn new(
        consumer: String,
        plan: String,
        scopes: Scopes,
        group: Option<String>,
        credential: CredentialKind,
    ) -> Caller {
        Caller {
            consumer,
            plan,
            scopes,
            group,
            credential,
            header_values: OnceLock::new(),
        }
    }

    /// The identity header values, rendered once per caller.
    pub fn header_values(&self) -> &HeaderValues {
        self.header_values.get_or_init(|| {
            let value = |text: String| HeaderValue::try_from(text).ok();
            HeaderValues {
                consumer: value(self.consumer.clone()),
                plan: value(self.plan.clone()),
                credential: value(match &self.credential {
                    CredentialKind::ApiKey { key_id } => format!("api_key:{key_id}"),
                    CredentialKind::Jwt { issuer } => format!("jwt:{issuer}"),
                }),
            }
        })
    }
}

/// Callers are equal when they are the same identity (the rendered header cache aside).
impl PartialEq for Caller {
    fn eq(&self, other: &Caller) -> bool {
        self.consumer == other.consumer
            && self.plan == other.plan
            && self.scopes == other.scopes
            && self.group == other.group
            && self.credential == other.credential
    }
}

impl Eq for Caller {}

#[cfg(test)]
mod tests {
    use super::*;

    fn caller(consumer: &str, credential: CredentialKind) -> Caller {
        Caller::new(consumer.into(), "pro".into(), Scopes::All, None, credential)
    }

    #[test]
    fn header_values_name_the_caller_and_its_credential() {
        let key = caller(
            "acme",
            CredentialKind::ApiKey {
                key_id: "0123abcd".into(),
            },
        );
        let values = key.header_values();
        assert_eq!(values.consumer.as_ref().unwrap(), "acme");
        assert_eq!(values.plan.as_ref().unwrap(), "pro");
        assert_eq!(values.credential.as_ref().unwrap(), "api_key:0123abcd");
        let jwt = caller(
            "bob",
            CredentialKind::Jwt {
                issuer: "https://idp".into(),
            },
        );
        assert_eq!(
            jwt.header_values().credential.as_ref().unwrap(),
            "jwt:https://idp"
        );
    }

    #[test]
    fn a_value_that_is_not_a_header_value_is_left_out() {
        let odd = caller("line\nbreak", CredentialKind::Jwt { issuer: "i".into() });
        assert!(odd.header_values().consumer.is_none());
        assert_eq!(odd.header_values().plan.as_ref().unwrap(), "pro");
    }

    #[test]
    fn equality_ignores_whether_header_values_were_rendered() {
        let a = caller("acme", CredentialKind::ApiKey { key_id: "k".into() });
        let b = a.clone();
        a.header_values();
        assert_eq!(a, b);
        assert_ne!(
            a,
            caller("other", CredentialKind::ApiKey { key_id: "k".into() })
        );
    }
}
