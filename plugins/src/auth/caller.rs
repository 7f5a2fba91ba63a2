//! Who is calling: the identity every later stage keys its decisions and state on.

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
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// Stable consumer name (API key's consumer, or a JWT claim).
    pub consumer: String,
    /// Plan name (rate limits, quotas).
    pub plan: String,
    pub scopes: Scopes,
    /// A group of consumers (an org, a JWT tenant claim), if known.
    pub group: Option<String>,
    pub credential: CredentialKind,
}
