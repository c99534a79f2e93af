//! What a [`super::TokenSource`] is built from: its own small config ([`TokenConfig`]), made by
//! `config/` from the file, so that the token source never reads the whole configuration.

use std::collections::BTreeMap;
use std::time::Duration;

use crate::secret::Secret;

/// How a route obtains its tokens (README: "Choosing a token mode").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// Cached per (credential, delegate), refreshed ahead of expiry in the background.
    Interval,
    /// A token issued for every proxied request alone.
    PerRequest,
    /// A token per burst of requests on a route.
    PerTransaction,
}

impl TokenMode {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenMode::Interval => "interval",
            TokenMode::PerRequest => "per_request",
            TokenMode::PerTransaction => "per_transaction",
        }
    }
}

/// One client-credentials pair, as the STS is sent it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The OAuth2 client id.
    pub client_id: String,
    /// The OAuth2 client secret.
    pub client_secret: Secret,
}

/// The credentials and token lifetimes of a token source (`[credentials.*]`, `[token]`).
#[derive(Debug, Clone, PartialEq)]
pub struct TokenConfig {
    /// Credentials by name.
    pub credentials: BTreeMap<String, Credential>,
    /// A token is never used past this age.
    pub max_age: Duration,
    /// Interval mode refreshes this long before a token's end.
    pub refresh_before_expiry: Duration,
    /// The STS calls clients can cause at will, per credential (see `budget.rs`).
    pub sts_budget: StsBudgetLimits,
}

/// A token bucket: `rate` fetches a second, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct StsBudgetLimits {
    /// Fetches a second.
    pub rate: f64,
    /// Fetches at once.
    pub burst: f64,
}

impl Default for StsBudgetLimits {
    /// 10 a second, bursts of 20.
    fn default() -> Self {
        StsBudgetLimits {
            rate: 10.0,
            burst: 20.0,
        }
    }
}
