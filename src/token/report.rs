//! What the status page asks of a token source: each key's [`TokenReport`] (state, expiry, next
//! refresh or attempt, and its history), without changing anything.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

use super::TokenMode;
use super::history::KeyHistory;
use super::key::TokenKey;
use super::source::TokenSource;

/// A token's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TokenPhase {
    /// A usable token is held and its last fetch succeeded.
    Valid,
    /// A fetch from the STS is under way.
    Refreshing,
    /// The last fetch failed; a usable token is still held and sent while the proxy waits to
    /// ask again.
    BackingOff,
    /// The last fetch failed and no usable token is held: requests that need it fail.
    Failing,
    /// No token yet, and no failure (start-up).
    Missing,
    /// Fetched when requests come (`per_request`, `per_transaction`).
    OnDemand,
}

impl TokenPhase {
    /// As the page and the report write it.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenPhase::Valid => "valid",
            TokenPhase::Refreshing => "refreshing",
            TokenPhase::BackingOff => "backing off",
            TokenPhase::Failing => "failing",
            TokenPhase::Missing => "missing",
            TokenPhase::OnDemand => "on demand",
        }
    }

    /// Whether an operator should look at it.
    pub fn is_trouble(self) -> bool {
        matches!(self, TokenPhase::BackingOff | TokenPhase::Failing)
    }
}

/// What the status page says about one key's token. Never the token: its fingerprint.
#[derive(Debug, Clone)]
pub struct TokenReport {
    /// The state.
    pub phase: TokenPhase,
    /// When the held token stops being sent.
    pub expires_at: Option<SystemTime>,
    /// Time until the next interval fetch.
    pub refresh_in: Option<Duration>,
    /// Time until the next attempt after a failure.
    pub retry_in: Option<Duration>,
    /// What the fetch path remembers.
    pub history: KeyHistory,
}

impl TokenSource {
    /// The report of `key`'s token under `mode`, for the status page; changes nothing. An
    /// interval token in hand speaks for itself (its fingerprint, issue time and expiry); the
    /// history adds the last error, and a fetch under way. Tokens fetched for requests
    /// (`per_request`, `per_transaction`) are on demand unless their STS calls fail.
    pub async fn report(&self, key: &TokenKey, mode: TokenMode) -> TokenReport {
        let held = match mode {
            TokenMode::Interval => self.inner.caches.of(key).get(key).await,
            TokenMode::PerRequest | TokenMode::PerTransaction => None,
        }
        .filter(|t| t.is_usable());
        let of_history = match mode {
            TokenMode::PerTransaction => key.for_transaction(0),
            TokenMode::Interval | TokenMode::PerRequest => key.clone(),
        };
        let mut history = self.inner.history.get(&of_history).unwrap_or_default();
        if let Some(token) = &held {
            history.fingerprint = Some(token.fingerprint());
            history.issued_at = Some(token.issued_at());
            history.expires_at = Some(token.expires_at());
        }
        let retry_in = self
            .inner
            .backoff
            .check(key)
            .err()
            .and_then(|e| e.retry_after);
        let failing = history.failing || retry_in.is_some();
        let phase = match (mode, &held) {
            (TokenMode::Interval, _) if history.refreshing() => TokenPhase::Refreshing,
            (TokenMode::Interval, Some(_)) if failing => TokenPhase::BackingOff,
            (TokenMode::Interval, Some(_)) => TokenPhase::Valid,
            (_, _) if failing => TokenPhase::Failing,
            (TokenMode::Interval, None) => TokenPhase::Missing,
            (TokenMode::PerRequest | TokenMode::PerTransaction, _) => TokenPhase::OnDemand,
        };
        TokenReport {
            phase,
            expires_at: held.as_ref().map(|t| t.expires_at()),
            refresh_in: held.as_ref().map(|t| t.until_refresh()),
            retry_in,
            history,
        }
    }

    /// The teams of `credential` whose shared tokens have a history, the most recently issued
    /// first: those a `["*"]` route fetched for the teams requests named.
    pub fn reported_teams(&self, credential: &str) -> Vec<Arc<str>> {
        self.inner.history.teams(credential)
    }
}
