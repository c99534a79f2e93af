//! What the status page says about each credential's and delegate's tokens beyond the cache:
//! the last token issued (when, its fingerprint, its expiry), the last STS error, whether the
//! key is failing now and whether a fetch is under way. Written by the fetch path only (never
//! per request of a cached token); read by the status page.
//!
//! A key that starts failing, and one that recovers, is logged once with an `event_id` (5 and 6),
//! which the Windows service copies to the Event Log: trouble, and its end, without a line per
//! failed attempt (the backoff logs those).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use super::key::TokenKey;
use super::token::Token;
use crate::sync::lock;

/// Keys remembered at most: those the config names (listed teams included) always; teams that
/// request paths name on `["*"]` routes while there is room, so that a client naming teams
/// cannot grow it.
const MAX_KEYS: usize = 1_000;

/// A credential and delegate, and whether the tokens are a transaction's (every transaction
/// shares one entry, apart from the token every request shares).
type Pair = (Arc<str>, Option<Arc<str>>, bool);

/// The token history of every key.
#[derive(Default)]
pub(super) struct History {
    entries: Mutex<HashMap<Pair, KeyHistory>>,
}

/// What happened to the tokens of one credential and delegate.
#[derive(Debug, Clone, Default)]
pub struct KeyHistory {
    /// When the STS last issued one.
    pub issued_at: Option<SystemTime>,
    /// The fingerprint of that token.
    pub fingerprint: Option<String>,
    /// Its expiry.
    pub expires_at: Option<SystemTime>,
    /// The last STS failure: when, and what (names the credential and delegate, never a secret).
    pub last_error: Option<(SystemTime, String)>,
    /// Whether the last attempt failed.
    pub failing: bool,
    /// Fetches under way.
    in_flight: Arc<AtomicU32>,
}

impl KeyHistory {
    /// Whether a fetch is under way now.
    pub fn refreshing(&self) -> bool {
        self.in_flight.load(Ordering::Relaxed) > 0
    }
}

/// A fetch under way: counted until dropped (done, failed or cancelled).
pub(super) struct Flight(Option<Arc<AtomicU32>>);

impl Drop for Flight {
    fn drop(&mut self) {
        if let Some(count) = &self.0 {
            count.fetch_sub(1, Ordering::Relaxed);
        }
    }
}

fn pair(key: &TokenKey) -> Pair {
    (
        key.credential.clone(),
        key.delegate.clone(),
        key.transaction.is_some(),
    )
}

impl History {
    /// The entry of `key`, made if there is room (always for a key the config names).
    fn with<R>(&self, key: &TokenKey, f: impl FnOnce(&mut KeyHistory) -> R) -> Option<R> {
        let mut entries = lock(&self.entries);
        let pair = pair(key);
        if !entries.contains_key(&pair) && entries.len() >= MAX_KEYS && key.any_team() {
            return None;
        }
        Some(f(entries.entry(pair).or_default()))
    }

    /// A fetch for `key` starts.
    pub(super) fn flight(&self, key: &TokenKey) -> Flight {
        Flight(self.with(key, |h| {
            h.in_flight.fetch_add(1, Ordering::Relaxed);
            h.in_flight.clone()
        }))
    }

    /// The STS issued `token` for `key`. Returns whether that ended the key's trouble.
    pub(super) fn issued(&self, key: &TokenKey, token: &Token) -> bool {
        let recovered = self.with(key, |h| {
            h.issued_at = Some(token.issued_at());
            h.fingerprint = Some(token.fingerprint());
            h.expires_at = Some(token.expires_at());
            std::mem::replace(&mut h.failing, false)
        });
        if recovered == Some(true) && !key.any_team() {
            tracing::info!(
                event_id = 6u32,
                credential = %key.credential,
                delegate = key.delegate.as_deref().unwrap_or("-"),
                "token recovered: the STS issues tokens again"
            );
        }
        recovered == Some(true)
    }

    /// A fetch for `key` failed with `error`. Returns whether that started the key's trouble.
    pub(super) fn failed(&self, key: &TokenKey, error: &str) -> bool {
        let started = self.with(key, |h| {
            h.last_error = Some((SystemTime::now(), error.to_string()));
            !std::mem::replace(&mut h.failing, true)
        });
        if started == Some(true) && !key.any_team() {
            tracing::warn!(
                event_id = 5u32,
                credential = %key.credential,
                delegate = key.delegate.as_deref().unwrap_or("-"),
                "token failing: {error}"
            );
        }
        started == Some(true)
    }

    /// The history of `key` (of its transactions, for a transaction's key), if any.
    pub(super) fn get(&self, key: &TokenKey) -> Option<KeyHistory> {
        lock(&self.entries).get(&pair(key)).cloned()
    }

    /// The teams of `credential` with a history of a token every request shares, the most
    /// recently issued first (never issued last).
    pub(super) fn teams(&self, credential: &str) -> Vec<Arc<str>> {
        let entries = lock(&self.entries);
        let mut teams: Vec<(Option<SystemTime>, Arc<str>)> = entries
            .iter()
            .filter(|((c, _, transaction), _)| &**c == credential && !transaction)
            .filter_map(|((_, d, _), h)| d.clone().map(|d| (h.issued_at, d)))
            .collect();
        teams.sort_unstable_by(|a, b| b.cmp(a));
        teams.into_iter().map(|(_, team)| team).collect()
    }

    /// Takes over the entries of the credentials `unchanged` accepts from `previous`.
    pub(super) fn adopt(&self, previous: &History, unchanged: &impl Fn(&str) -> bool) {
        let old = lock(&previous.entries);
        let mut entries = lock(&self.entries);
        for (pair, history) in old.iter() {
            if unchanged(&pair.0) {
                entries.insert(pair.clone(), history.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trouble_starts_once_ends_once_and_path_teams_stay_bounded() {
        let history = History::default();
        let key = TokenKey::new(Arc::from("default"), None);
        assert!(history.failed(&key, "the STS is down"), "the first failure");
        assert!(!history.failed(&key, "the STS is down"), "not again");
        let flight = history.flight(&key);
        assert!(history.get(&key).is_some_and(|h| h.refreshing()));
        drop(flight);
        assert!(
            history
                .get(&key)
                .is_some_and(|h| !h.refreshing() && h.failing)
        );
        let last = history.get(&key).and_then(|h| h.last_error).map(|e| e.1);
        assert_eq!(last.as_deref(), Some("the STS is down"));
        for i in 0..MAX_KEYS + 10 {
            let mut team = TokenKey::new(Arc::from("default"), Some(Arc::from(format!("T{i}"))));
            team.team_from = super::super::TeamFrom::Any;
            history.failed(&team, "rejected");
        }
        assert_eq!(
            lock(&history.entries).len(),
            MAX_KEYS,
            "teams named by paths are bounded"
        );
        let named = TokenKey::new(Arc::from("other"), None);
        history.failed(&named, "down");
        assert!(
            history.get(&named).is_some(),
            "a configured key always has room"
        );
    }
}
