//! Cool-downs after the API's rate limit. An upstream 429 (or a 503 that says when to come back)
//! reaches the client with `Retry-After` as whole seconds from 1 to 120, the only form every BI
//! tool honours (Power BI reads whole seconds between 0.5 and 120 and retries at once
//! otherwise). Until that time has passed, requests of the same route and token identity
//! (credential and delegate) are answered 429 `upstream_rate_limited` by the proxy, without
//! spending the API's quota on answers already known.
//!
//! Checking costs one atomic load while nothing cools down, which is nearly always.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::error::ProxyError;
use crate::fields::Kind;
use crate::headers;
use crate::metrics::Metrics;
use crate::routes::Route;
use crate::token::TokenKey;
use crate::upstream::PooledBody;

/// The longest `Retry-After` passed on, in seconds (Power BI's own upper bound).
pub(crate) const MAX_RETRY_AFTER: u64 = 120;

/// Past this many identities cooling down at once, those whose time has passed are dropped
/// before another is added (a route that accepts any team has as many identities as clients
/// name teams).
const PRUNE_ABOVE: usize = 1024;

/// A route and a token identity: the route's prefix, the credential and the delegate.
type Identity = (Arc<str>, Arc<str>, Option<Arc<str>>);

/// The identities cooling down and until when. Shared by every config generation: a reload
/// does not forget what the API said.
#[derive(Debug, Default)]
pub(crate) struct Cooldowns {
    /// Whether `until` may hold an entry: false means nothing to look up.
    any: AtomicBool,
    until: Mutex<HashMap<Identity, Instant>>,
}

impl Cooldowns {
    /// How long `route`'s requests for this identity still wait, if they do (at `now`).
    pub(crate) fn remaining(
        &self,
        route: &Arc<str>,
        credential: &Arc<str>,
        delegate: Option<&Arc<str>>,
        now: Instant,
    ) -> Option<Duration> {
        if !self.any.load(Ordering::Acquire) {
            return None;
        }
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (route.clone(), credential.clone(), delegate.cloned());
        let end = *until.get(&key)?;
        if end > now {
            return Some(end - now);
        }
        until.remove(&key);
        if until.is_empty() {
            self.any.store(false, Ordering::Release);
        }
        None
    }

    /// Starts (or lengthens) a cool-down of `route` for this identity, until `end`.
    pub(crate) fn start(
        &self,
        route: &Arc<str>,
        credential: &Arc<str>,
        delegate: Option<&Arc<str>>,
        end: Instant,
        now: Instant,
    ) {
        let mut until = self.until.lock().unwrap_or_else(PoisonError::into_inner);
        if until.len() >= PRUNE_ABOVE {
            until.retain(|_, e| *e > now);
        }
        let entry = until
            .entry((route.clone(), credential.clone(), delegate.cloned()))
            .or_insert(end);
        *entry = (*entry).max(end);
        self.any.store(true, Ordering::Release);
    }

    /// The cool-down phase of a request: while the API's last rate limit for this route and
    /// token identity asks to wait, 429 `upstream_rate_limited` with the wait that is left.
    pub(crate) fn check(&self, route: &Route, key: &TokenKey) -> Result<(), ProxyError> {
        let delegate = key.delegate.as_ref();
        match self.remaining(&route.prefix, &key.credential, delegate, Instant::now()) {
            Some(wait) => Err(ProxyError::UpstreamRateLimited(wait)),
            None => Ok(()),
        }
    }

    /// The rate-limit phase: an upstream 429 (or a 503 that says when to come back) goes to
    /// the client with `Retry-After` as whole seconds from 1 to 120 ([`rewrite_answer`]), and
    /// starts the route's cool-down for the token identity, counted in `metrics`.
    #[cold]
    pub(crate) fn note(
        &self,
        response: &mut Response<PooledBody>,
        route: &Route,
        key: &TokenKey,
        metrics: &Metrics,
    ) {
        let Some(seconds) = rewrite_answer(response, SystemTime::now()) else {
            return;
        };
        let now = Instant::now();
        let delegate = key.delegate.as_ref();
        let end = now + Duration::from_secs(seconds);
        self.start(&route.prefix, &key.credential, delegate, end, now);
        metrics.cooldown(&route.prefix);
        let (route, delegate) = (&*route.prefix, delegate.map_or("-", |d| &**d));
        let credential = &*key.credential;
        tracing::info!(
            route,
            credential,
            delegate,
            seconds,
            "the API is rate-limiting"
        );
    }
}

/// If `response` is the API's rate limit (see [`wait_seconds`]), sets its `Retry-After` to the
/// whole seconds to wait and returns them; else leaves it as it is.
pub(crate) fn rewrite_answer(response: &mut Response<PooledBody>, now: SystemTime) -> Option<u64> {
    let status = response.status();
    if status != StatusCode::TOO_MANY_REQUESTS && status != StatusCode::SERVICE_UNAVAILABLE {
        return None;
    }
    let asked = match response.body().fields() {
        Some(fields) => fields.values(Kind::RetryAfter).next(),
        None => response
            .headers()
            .get(header::RETRY_AFTER)
            .map(HeaderValue::as_bytes),
    };
    let seconds = wait_seconds(status, asked, now)?;
    let value = HeaderValue::from(seconds);
    match response.body_mut().fields_mut() {
        Some(fields) => fields.set_retry_after(value),
        None => {
            response.headers_mut().insert(header::RETRY_AFTER, value);
        }
    }
    Some(seconds)
}

/// The whole seconds an answer of `status` with the `Retry-After` value `value` asks the client
/// to wait, between 1 and [`MAX_RETRY_AFTER`]: delay-seconds, or an HTTP date counted from
/// `now` (RFC 9110 section 10.2.3). A value it cannot read waits 1 s; a 429 without one too,
/// while a 503 without one is not a rate limit (`None`), nor is any other status.
pub(crate) fn wait_seconds(
    status: StatusCode,
    value: Option<&[u8]>,
    now: SystemTime,
) -> Option<u64> {
    let asked = value.map(|v| parse_retry_after(v, now).unwrap_or(1));
    let seconds = match status {
        StatusCode::TOO_MANY_REQUESTS => asked.unwrap_or(1),
        StatusCode::SERVICE_UNAVAILABLE => asked?,
        _ => return None,
    };
    Some(seconds.clamp(1, MAX_RETRY_AFTER))
}

/// Seconds from `now` that a `Retry-After` value names: delay-seconds, or an HTTP date (rounded
/// up; a date already past is 0).
fn parse_retry_after(value: &[u8], now: SystemTime) -> Option<u64> {
    let value = value.trim_ascii();
    if !value.is_empty() && value.iter().all(u8::is_ascii_digit) {
        // More digits than a u64 holds is a very long wait all the same.
        return Some(headers::decimal(value).unwrap_or(u64::MAX));
    }
    let date = httpdate::parse_http_date(std::str::from_utf8(value).ok()?).ok()?;
    let ahead = date.duration_since(now).unwrap_or_default();
    Some(ahead.as_secs() + u64::from(ahead.subsec_nanos() > 0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_becomes_whole_seconds_from_1_to_120() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000);
        let date = |ahead: u64| httpdate::fmt_http_date(now + Duration::from_secs(ahead));
        let limited = StatusCode::TOO_MANY_REQUESTS;
        let unavailable = StatusCode::SERVICE_UNAVAILABLE;
        for (status, value, want) in [
            (limited, Some("7".to_string()), Some(7)),
            (limited, Some(" 7 ".to_string()), Some(7)),
            (limited, Some("0".to_string()), Some(1)),
            (limited, Some("3600".to_string()), Some(120)),
            (
                limited,
                Some("99999999999999999999999".to_string()),
                Some(120),
            ),
            (limited, Some("-3".to_string()), Some(1)),
            (limited, Some("1.5".to_string()), Some(1)),
            (limited, Some(date(30)), Some(30)),
            (limited, Some(date(1000)), Some(120)),
            (
                limited,
                Some(httpdate::fmt_http_date(now - Duration::from_secs(5))),
                Some(1),
            ),
            (limited, None, Some(1)),
            (unavailable, Some("4".to_string()), Some(4)),
            (unavailable, Some(date(2)), Some(2)),
            (unavailable, None, None),
            (unavailable, Some("soon".to_string()), Some(1)),
            (unavailable, Some("1.5".to_string()), Some(1)),
            (StatusCode::OK, Some("4".to_string()), None),
            (StatusCode::BAD_GATEWAY, Some("4".to_string()), None),
        ] {
            let got = wait_seconds(status, value.as_deref().map(str::as_bytes), now);
            assert_eq!(got, want, "{status} {value:?}");
        }
    }

    #[test]
    fn a_cool_down_holds_its_identity_until_it_ends() {
        let c = Cooldowns::default();
        let (route, other_route): (Arc<str>, Arc<str>) = (Arc::from("/a"), Arc::from("/b"));
        let cred: Arc<str> = Arc::from("default");
        let team: Arc<str> = Arc::from("TEAM-A");
        let t0 = Instant::now();
        assert_eq!(c.remaining(&route, &cred, None, t0), None);
        c.start(&route, &cred, Some(&team), t0 + Duration::from_secs(5), t0);
        assert_eq!(
            c.remaining(&route, &cred, Some(&team), t0 + Duration::from_secs(2)),
            Some(Duration::from_secs(3))
        );
        // Another route, or the credential without the team, is another identity.
        assert_eq!(c.remaining(&other_route, &cred, Some(&team), t0), None);
        assert_eq!(c.remaining(&route, &cred, None, t0), None);
        // A shorter one never shortens it.
        c.start(&route, &cred, Some(&team), t0 + Duration::from_secs(1), t0);
        assert_eq!(
            c.remaining(&route, &cred, Some(&team), t0 + Duration::from_secs(5)),
            None
        );
        assert!(!c.any.load(Ordering::Acquire), "nothing left to look up");
    }
}
