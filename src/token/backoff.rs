//! Backoff after STS failures and the memory of 401 refusals, both kept per (credential,
//! delegate) whatever the transaction: when the next STS attempt for a key may be made, and
//! whether a token the upstream refused may be replaced.

use std::collections::HashMap;
use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::Arc;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::error::{StsFailure, TokenError};
use super::key::TokenKey;
use super::schedule;
use crate::sync::lock;

/// After a 401 made a key fetch a new token, a refusal of that new token within this window goes
/// to the client instead of causing another fetch.
pub const REFUSAL_WINDOW: Duration = Duration::from_secs(30);

/// Keys remembered at most in each of the two maps: teams named by request paths can be many.
/// When full, records that no longer hold anything back go first, then the oldest.
const MAX_RECORDS: usize = 4 * 1024;

/// Remembered STS failures of one cache key, for backoff.
#[derive(Debug, Clone)]
struct Failures {
    count: u32,
    retry_at: Instant,
    error: TokenError,
}

/// The STS failures and 401 refusals of every key.
pub(super) struct Backoff {
    failures: Mutex<HashMap<TokenKey, Failures>>,
    /// When a 401 last made a key drop its token (per credential and delegate).
    refusals: Mutex<HashMap<TokenKey, Instant>>,
    /// Failures of teams that request paths name: logged once per credential and outcome per
    /// interval, with a count, so that a client naming thousands of bad teams cannot fill the
    /// disk. By (credential, outcome): when last logged, and how many were not since.
    team_lines: Mutex<HashMap<TeamOutcome, LineState>>,
    jitter: (RandomState, AtomicU64),
}

/// A credential and an outcome of its path teams' STS calls (`rejected 400 invalid_team`).
type TeamOutcome = (Arc<str>, String);
/// When the last line about a [`TeamOutcome`] was logged, and how many were not since.
type LineState = (Option<Instant>, u64);

/// Outcomes of path teams remembered for their log lines; beyond it the memory starts over.
const MAX_TEAM_LINES: usize = 64;

impl Backoff {
    /// No failures and no refusals yet.
    pub(super) fn new() -> Self {
        Backoff {
            failures: Mutex::new(HashMap::new()),
            refusals: Mutex::new(HashMap::new()),
            team_lines: Mutex::new(HashMap::new()),
            jitter: (RandomState::new(), AtomicU64::new(0)),
        }
    }

    /// Takes over the failures and refusals of the credentials `unchanged` accepts from
    /// `previous` (the backoff of the config before a reload).
    pub(super) fn adopt(&self, previous: &Backoff, unchanged: &impl Fn(&str) -> bool) {
        copy_unchanged(&previous.failures, &self.failures, unchanged);
        copy_unchanged(&previous.refusals, &self.refusals, unchanged);
    }

    /// Fails fast while `key` is backing off after STS failures.
    pub(super) fn check(&self, key: &TokenKey) -> Result<(), TokenError> {
        let failures = lock(&self.failures);
        if failures.is_empty() {
            return Ok(());
        }
        match failures.get(&key.shared()) {
            Some(f) => {
                let now = Instant::now();
                if now < f.retry_at {
                    let mut e = f.error.clone();
                    e.retry_after = Some(f.retry_at - now);
                    Err(e)
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    /// Counts a failure of `key`: returns the delay before its next STS attempt (longer with each
    /// failure, slowest from the first for a rejection) and logs the error once.
    pub(super) fn record_failure(&self, key: &TokenKey, error: &TokenError) -> Duration {
        let (state, counter) = &self.jitter;
        let random = state.hash_one(counter.fetch_add(1, Ordering::Relaxed));
        let jitter = (random >> 11) as f64 / (1u64 << 53) as f64;
        let key = &key.shared();
        let mut failures = lock(&self.failures);
        let count = failures.get(key).map_or(0, |f| f.count).saturating_add(1);
        let mut delay = match error.failure {
            StsFailure::Rejected { .. } => schedule::rejected_backoff(jitter),
            StsFailure::Unavailable { .. } => schedule::backoff(count, jitter),
        };
        if let StsFailure::Unavailable {
            retry_after: Some(asked),
            ..
        } = &error.failure
        {
            // The STS said when to come back; believe it, within reason.
            delay = delay.max((*asked).min(schedule::STS_RETRY_AFTER_MAX));
        }
        if !failures.contains_key(key) {
            let now = Instant::now();
            make_room(&mut failures, |f| f.retry_at <= now, |f| f.retry_at);
        }
        failures.insert(
            key.clone(),
            Failures {
                count,
                retry_at: Instant::now() + delay,
                error: error.clone(),
            },
        );
        drop(failures);
        let Some(like_it) = self.log_line_due(key, &error.failure) else {
            return delay;
        };
        match &error.failure {
            StsFailure::Rejected { .. } => tracing::error!(
                credential = %key.credential,
                delegate = key.delegate.as_deref().unwrap_or("-"),
                retry_in_s = delay.as_secs_f64(),
                more_like_it = like_it,
                "configuration error: {error}"
            ),
            StsFailure::Unavailable { .. } => tracing::warn!(
                credential = %key.credential,
                delegate = key.delegate.as_deref().unwrap_or("-"),
                retry_in_s = delay.as_secs_f64(),
                failures = count,
                more_like_it = like_it,
                "{error}"
            ),
        }
        delay
    }

    /// Whether the failure of `key` gets a log line now: always for a key the config names;
    /// for a team a request path names, once per credential and outcome per
    /// [`LOG_INTERVAL`](super::budget::LOG_INTERVAL). `Some(n)`: log, saying that `n` more like
    /// it were not logged since the last line.
    fn log_line_due(&self, key: &TokenKey, failure: &StsFailure) -> Option<u64> {
        if !key.team_from_path() {
            return Some(0);
        }
        let outcome = match failure {
            StsFailure::Rejected { status, code } => {
                format!("rejected {status} {}", code.as_deref().unwrap_or("-"))
            }
            StsFailure::Unavailable { .. } => "unavailable".to_string(),
        };
        let mut lines = lock(&self.team_lines);
        if lines.len() >= MAX_TEAM_LINES {
            lines.clear();
        }
        let now = Instant::now();
        let entry = lines
            .entry((key.credential.clone(), outcome))
            .or_insert((None, 0));
        if entry
            .0
            .is_none_or(|at| now.duration_since(at) >= super::budget::LOG_INTERVAL)
        {
            let suppressed = entry.1;
            *entry = (Some(now), 0);
            Some(suppressed)
        } else {
            entry.1 += 1;
            None
        }
    }

    /// `key` got a token: its next failure starts the backoff from the shortest delay.
    pub(super) fn clear_failures(&self, key: &TokenKey) {
        let mut failures = lock(&self.failures);
        if !failures.is_empty() {
            failures.remove(&key.shared());
        }
    }

    /// The upstream refused (401) a token of `key` sent at `sent_at`: what that means (see
    /// [`Refusal`]). Only a [`Refusal::New`] is remembered: a late refusal of a token already
    /// replaced must not move the window, or the replacement, refused in turn, would be replaced
    /// too, and requests the API refuses would turn into a stream of STS calls.
    pub(super) fn note_refusal(&self, key: &TokenKey, sent_at: Instant) -> Refusal {
        let mut refusals = lock(&self.refusals);
        let shared = key.shared();
        if let Some(at) = refusals.get(&shared)
            && at.elapsed() < REFUSAL_WINDOW
        {
            return if sent_at >= *at {
                Refusal::Again
            } else {
                Refusal::Replaced
            };
        }
        if !refusals.contains_key(&shared) {
            make_room(&mut refusals, |at| at.elapsed() >= REFUSAL_WINDOW, |at| *at);
        }
        refusals.insert(shared, Instant::now());
        Refusal::New
    }
}

/// What an upstream refusal of a token means.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Refusal {
    /// The first refusal of this key in the window: drop the token and fetch a new one.
    New,
    /// The token was fetched before the latest refusal: its replacement is there (or on its
    /// way); retry with it, drop nothing.
    Replaced,
    /// The token was fetched after the latest refusal, within the window: the API refuses the
    /// request, not the token. No retry.
    Again,
}

/// Makes room for one more record when `map` holds [`MAX_RECORDS`]: drops the `done` ones, and if
/// that frees nothing, the one with the earliest `time`.
fn make_room<V>(
    map: &mut HashMap<TokenKey, V>,
    done: impl Fn(&V) -> bool,
    time: impl Fn(&V) -> Instant,
) {
    if map.len() < MAX_RECORDS {
        return;
    }
    map.retain(|_, v| !done(v));
    if map.len() >= MAX_RECORDS
        && let Some(oldest) = map
            .iter()
            .min_by_key(|(_, v)| time(v))
            .map(|(k, _)| k.clone())
    {
        map.remove(&oldest);
    }
}

/// Copies the entries of the credentials `unchanged` accepts from one per-key map to another
/// (one lock at a time).
fn copy_unchanged<V: Clone>(
    from: &Mutex<HashMap<TokenKey, V>>,
    to: &Mutex<HashMap<TokenKey, V>>,
    unchanged: &impl Fn(&str) -> bool,
) {
    let entries: Vec<(TokenKey, V)> = lock(from)
        .iter()
        .filter(|(key, _)| unchanged(&key.credential))
        .map(|(key, value)| (key.clone(), value.clone()))
        .collect();
    lock(to).extend(entries);
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::token::key::TeamFrom;

    fn team(i: usize) -> TokenKey {
        TokenKey::for_team(Arc::from("c"), Arc::from(format!("T-{i}")), TeamFrom::Any)
    }

    #[test]
    fn records_stay_bounded_however_many_teams_fail() {
        let backoff = Backoff::new();
        let refused =
            TokenError::unavailable(&team(0), super::super::Step::Update, "refused".into());
        for i in 0..MAX_RECORDS + 100 {
            backoff.record_failure(&team(i), &refused);
            assert_eq!(backoff.note_refusal(&team(i), Instant::now()), Refusal::New);
        }
        assert_eq!(lock(&backoff.failures).len(), MAX_RECORDS);
        assert_eq!(lock(&backoff.refusals).len(), MAX_RECORDS);
        // The newest are kept: the team that failed last still backs off.
        assert!(backoff.check(&team(MAX_RECORDS + 99)).is_err());
    }

    #[test]
    fn late_refusals_of_a_replaced_token_do_not_move_the_window() {
        let backoff = Backoff::new();
        let key = team(0);
        let old = Instant::now() - std::time::Duration::from_millis(5);
        assert_eq!(backoff.note_refusal(&key, old), Refusal::New);
        let replacement = Instant::now();
        // Requests that were in flight with the old token come back refused, later.
        for _ in 0..10 {
            assert_eq!(backoff.note_refusal(&key, old), Refusal::Replaced);
        }
        // The replacement refused in turn: the API refuses the requests, not the token.
        assert_eq!(backoff.note_refusal(&key, replacement), Refusal::Again);
    }
}
