//! The simulated API's rate limit, as real APIs have one: at most so many requests per second
//! per token identity (the partner itself, or the team a token acts for); beyond it, 429 with
//! `Retry-After` in one of the forms real servers use (seconds, an HTTP date, or none at all), so
//! that the proxy's answers to a refresh storm can be shown and tested.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant, SystemTime};

use crate::sync::lock;

/// How a 429 says when to come back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryAfter {
    /// `Retry-After: 1`: whole seconds to the next window.
    Seconds,
    /// `Retry-After: Mon, 07 Dec 2026 20:00:01 GMT`: the start of the next window.
    HttpDate,
    /// No `Retry-After` at all.
    Absent,
}

impl std::str::FromStr for RetryAfter {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "seconds" => Ok(RetryAfter::Seconds),
            "http-date" => Ok(RetryAfter::HttpDate),
            "absent" => Ok(RetryAfter::Absent),
            _ => Err(format!(
                "{s:?} is not a Retry-After form: seconds, http-date or absent"
            )),
        }
    }
}

/// The API's rate limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApiRateLimit {
    /// Requests per token identity in each second (windows start at whole seconds since the
    /// simulator started).
    pub per_second: u32,
    /// What a 429 carries.
    pub retry_after: RetryAfter,
}

/// The limit in force and the count of each identity's current window.
#[derive(Debug)]
pub(super) struct Limiter {
    limit: Mutex<Option<ApiRateLimit>>,
    /// By identity: the window (whole seconds since `epoch`) and the requests in it.
    windows: Mutex<HashMap<String, (u64, u32)>>,
    /// 429s answered.
    pub(super) limited: AtomicUsize,
    epoch: Instant,
}

impl Default for Limiter {
    fn default() -> Self {
        Limiter {
            limit: Mutex::new(None),
            windows: Mutex::new(HashMap::new()),
            limited: AtomicUsize::new(0),
            epoch: Instant::now(),
        }
    }
}

impl Limiter {
    /// Sets (or with `None` lifts) the limit; counts start over.
    pub(super) fn set(&self, limit: Option<ApiRateLimit>) {
        *lock(&self.limit) = limit;
        lock(&self.windows).clear();
    }

    /// Counts a request of `identity`: `None` when it may go on, else the `Retry-After` value
    /// of its 429 (`Some(None)`: a 429 without one).
    pub(super) fn admit(&self, identity: &str) -> Option<Option<String>> {
        let limit = (*lock(&self.limit))?;
        let elapsed = self.epoch.elapsed();
        let window = elapsed.as_secs();
        let mut windows = lock(&self.windows);
        let entry = windows.entry(identity.to_string()).or_insert((window, 0));
        if entry.0 != window {
            *entry = (window, 0);
        }
        if entry.1 < limit.per_second {
            entry.1 += 1;
            return None;
        }
        drop(windows);
        self.limited.fetch_add(1, Ordering::SeqCst);
        let next = Duration::from_secs(window + 1).saturating_sub(elapsed);
        Some(match limit.retry_after {
            RetryAfter::Seconds => Some(next.as_secs_f64().ceil().max(1.0).to_string()),
            RetryAfter::HttpDate => Some(httpdate::fmt_http_date(SystemTime::now() + next)),
            RetryAfter::Absent => None,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_identity_gets_its_share_and_the_429_says_when_in_the_form_asked() {
        let limiter = Limiter::default();
        assert_eq!(limiter.admit("partner"), None, "no limit set");
        for (form, check) in [
            (
                RetryAfter::Seconds,
                (|v: &str| v == "1") as fn(&str) -> bool,
            ),
            (RetryAfter::HttpDate, |v: &str| {
                httpdate::parse_http_date(v).is_ok()
            }),
        ] {
            // The three requests must fall in one window (whole seconds): should a second
            // begin between them, the round is tried again.
            loop {
                let start = limiter.epoch.elapsed().as_secs();
                limiter.set(Some(ApiRateLimit {
                    per_second: 2,
                    retry_after: form,
                }));
                let answers: Vec<_> = (0..3).map(|_| limiter.admit("TEAM-A")).collect();
                let other = limiter.admit("TEAM-B");
                if limiter.epoch.elapsed().as_secs() != start {
                    continue;
                }
                assert_eq!(answers[..2], [None, None]);
                let value = answers[2].clone().flatten().unwrap_or_default();
                assert!(check(&value), "{form:?}: {value:?}");
                assert_eq!(other, None, "another identity has its own share");
                break;
            }
        }
        limiter.set(Some(ApiRateLimit {
            per_second: 0,
            retry_after: RetryAfter::Absent,
        }));
        assert_eq!(
            limiter.admit("partner"),
            Some(None),
            "a 429 without Retry-After"
        );
    }
}
