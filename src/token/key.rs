//! The cache key of a token: which credential, acting for which delegate, in which transaction.

use std::sync::Arc;

/// Cache key: tokens are shared per credential and delegate (and transaction, in that mode).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct TokenKey {
    /// Credential name.
    pub credential: Arc<str>,
    /// CSP delegate team, if the token acts for one.
    pub delegate: Option<Arc<str>>,
    /// `per_transaction`: the transaction the token is for; `None` for a token shared by every
    /// request.
    pub transaction: Option<u64>,
}

impl TokenKey {
    /// The key of the shared token of a credential and delegate.
    pub fn new(credential: Arc<str>, delegate: Option<Arc<str>>) -> Self {
        TokenKey {
            credential,
            delegate,
            transaction: None,
        }
    }

    /// This key for one transaction.
    pub fn for_transaction(&self, transaction: u64) -> Self {
        TokenKey {
            transaction: Some(transaction),
            ..self.clone()
        }
    }

    /// The key backoff is kept under: failures of the STS are failures for every transaction.
    pub(super) fn shared(&self) -> Self {
        TokenKey {
            transaction: None,
            ..self.clone()
        }
    }

    /// The key of the credential's own client-credentials token, the base a delegate token is
    /// updated from.
    pub(super) fn base(&self) -> Self {
        TokenKey::new(self.credential.clone(), None)
    }
}
