//! Why a token could not be obtained: which STS call failed ([`Step`]), how ([`StsFailure`]),
//! and the error a request or `/readyz` reports ([`TokenError`]), which names the credential and
//! delegate but never a secret.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use super::key::TokenKey;

/// Why an STS call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StsFailure {
    /// The STS answered 4xx: the request itself is wrong (credential, delegate, rights).
    Rejected {
        /// HTTP status.
        status: u16,
        /// The OAuth2 `error` code, when the answer had a sane one (`invalid_client`, ...).
        code: Option<String>,
    },
    /// The STS could not be reached, timed out, answered 5xx, 408 or 429, or something that is
    /// not a usable token.
    Unavailable {
        /// What happened, for logs and the error message (never holds the secret).
        reason: String,
        /// How long the STS asked us to wait (its `Retry-After`), if it said.
        retry_after: Option<Duration>,
    },
}

impl StsFailure {
    /// The `outcome` label of the STS call in the metrics (`ok` is a call that did not fail).
    pub fn metric_label(&self) -> &'static str {
        match self {
            StsFailure::Rejected { .. } => "rejected",
            StsFailure::Unavailable { .. } => "unavailable",
        }
    }
}

/// Which STS call failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// The client-credentials grant.
    Issue,
    /// The CSP `update_token` call.
    Update,
}

impl Step {
    /// The `kind` label of the STS call in the metrics.
    pub fn metric_label(self) -> &'static str {
        match self {
            Step::Issue => "issue",
            Step::Update => "update",
        }
    }
}

/// A token could not be obtained. Names the credential and delegate, never a secret.
#[derive(Debug, Clone, thiserror::Error)]
pub struct TokenError {
    /// Credential name.
    pub credential: Arc<str>,
    /// Delegate, when the failing call was for one.
    pub delegate: Option<Arc<str>>,
    /// Which call failed.
    pub step: Step,
    /// What went wrong.
    pub failure: StsFailure,
    /// How long until the next STS attempt for this key.
    pub retry_after: Option<Duration>,
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let who = match (&self.delegate, self.step) {
            (Some(d), Step::Update) => {
                format!("credential `{}` acting for delegate `{d}`", self.credential)
            }
            _ => format!("credential `{}`", self.credential),
        };
        match &self.failure {
            StsFailure::Rejected { status, code } => {
                let code = code
                    .as_deref()
                    .map(|c| format!("{c}, "))
                    .unwrap_or_default();
                let fix = match self.step {
                    Step::Issue => "check its client_id and client_secret",
                    Step::Update => "check the delegate team id and the credential's CSP rights",
                };
                write!(
                    f,
                    "the token service rejected {who} ({code}HTTP {status}): {fix}"
                )
            }
            StsFailure::Unavailable { reason, .. } => {
                write!(f, "the token service is unavailable for {who}: {reason}")
            }
        }
    }
}

impl TokenError {
    /// A failure of `step` for `key`, not yet backed off.
    pub(super) fn new(key: &TokenKey, step: Step, failure: StsFailure) -> Self {
        TokenError {
            credential: key.credential.clone(),
            delegate: key.delegate.clone(),
            step,
            failure,
            retry_after: None,
        }
    }

    /// The token could not be obtained for a reason of our own (not an STS answer).
    pub(super) fn unavailable(key: &TokenKey, step: Step, reason: String) -> Self {
        let failure = StsFailure::Unavailable {
            reason,
            retry_after: None,
        };
        TokenError::new(key, step, failure)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn metric_labels_are_the_ones_operators_query() {
        assert_eq!(Step::Issue.metric_label(), "issue");
        assert_eq!(Step::Update.metric_label(), "update");
        let rejected = StsFailure::Rejected {
            status: 401,
            code: None,
        };
        assert_eq!(rejected.metric_label(), "rejected");
        let unavailable = StsFailure::Unavailable {
            reason: "down".into(),
            retry_after: None,
        };
        assert_eq!(unavailable.metric_label(), "unavailable");
    }

    #[test]
    fn token_error_names_credential_and_delegate_for_updates() {
        let e = TokenError {
            credential: Arc::from("csp"),
            delegate: Some(Arc::from("TEAM-X")),
            step: Step::Update,
            failure: StsFailure::Rejected {
                status: 403,
                code: Some("invalid_delegate".into()),
            },
            retry_after: None,
        };
        let m = e.to_string();
        assert!(
            m.contains("`csp`") && m.contains("`TEAM-X`") && m.contains("403"),
            "{m}"
        );
    }
}
