//! Pure timing rules for tokens: when to refresh, when to stop using one, how long to back off.

use std::time::Duration;

/// Lifetime assumed when the STS answer has no `expires_in` (the vendor's documented 60 minutes).
pub const DEFAULT_EXPIRES_IN: Duration = Duration::from_secs(3600);

/// Safety margin before the end of a token's life: a request sent just before the end could reach
/// the API after it. A tenth of the lifetime, at most 10 s.
const MAX_EXPIRY_MARGIN: Duration = Duration::from_secs(10);

/// When a token is refreshed and when it stops being used, both relative to the moment its STS
/// request was sent (so network time only ever shortens the token's use).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// From this age on, interval mode fetches the next token in the background.
    pub refresh_after: Duration,
    /// From this age on, the token is never sent.
    pub usable_for: Duration,
}

/// Computes a token's [`Schedule`]: it lives `min(expires_in, max_age)`, is not sent in the last
/// margin of that, and is refreshed `refresh_before` earlier still, but never before half its
/// usable life (so a short-lived token is not refreshed on every request).
pub fn schedule(expires_in: Duration, max_age: Duration, refresh_before: Duration) -> Schedule {
    let lifetime = expires_in.min(max_age);
    let margin = (lifetime / 10).min(MAX_EXPIRY_MARGIN);
    let usable_for = lifetime - margin;
    let refresh_after = usable_for
        .saturating_sub(refresh_before)
        .max(usable_for / 2);
    Schedule {
        refresh_after,
        usable_for,
    }
}

/// First delay after an STS failure.
pub const BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Longest delay between STS attempts for one cache key.
pub const BACKOFF_MAX: Duration = Duration::from_secs(60);

/// Longest `Retry-After` of the STS that is honoured.
pub const STS_RETRY_AFTER_MAX: Duration = Duration::from_secs(300);

/// Delay before the next STS attempt after `failures` consecutive failures (1 or more):
/// exponential from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], with "equal jitter" (half fixed, half
/// random, from `jitter` in 0.0..1.0) so that many proxies do not retry in lockstep.
pub fn backoff(failures: u32, jitter: f64) -> Duration {
    let exp = failures.saturating_sub(1).min(16);
    let ceiling = BACKOFF_MIN.saturating_mul(1u32 << exp).min(BACKOFF_MAX);
    let jitter = jitter.clamp(0.0, 1.0);
    (ceiling / 2 + ceiling.mul_f64(jitter / 2.0)).max(BACKOFF_MIN)
}

/// Delay after the STS rejected a credential or a delegate (4xx): a configuration error that an
/// early retry will not fix. It is retried at the slowest pace, 30-60 s, so that a fix on the STS
/// side is noticed within a minute while the STS is not hammered meanwhile.
pub fn rejected_backoff(jitter: f64) -> Duration {
    backoff(u32::MAX, jitter)
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: fn(u64) -> Duration = Duration::from_secs;

    #[test]
    fn vendor_hour_with_defaults() {
        let s = schedule(S(3600), S(55 * 60), S(5 * 60));
        assert_eq!(s.usable_for, S(55 * 60 - 10));
        assert_eq!(s.refresh_after, S(50 * 60 - 10));
    }

    #[test]
    fn short_sts_lifetime_wins_over_max_age() {
        let s = schedule(S(4), S(55 * 60), S(5 * 60));
        assert_eq!(s.usable_for, Duration::from_millis(3600));
        // refresh_before is longer than the token: refresh at half its usable life.
        assert_eq!(s.refresh_after, Duration::from_millis(1800));
        assert!(s.refresh_after < s.usable_for);
    }

    #[test]
    fn refresh_always_comes_before_end_of_use() {
        for secs in [1, 2, 5, 30, 300, 3600, 7200] {
            for before in [1, 60, 300, 3000] {
                let s = schedule(S(secs), S(3600), S(before));
                assert!(s.refresh_after <= s.usable_for, "{secs} {before}");
                assert!(s.usable_for <= S(secs).min(S(3600)));
            }
        }
    }

    #[test]
    fn zero_lifetime_is_never_usable() {
        assert_eq!(schedule(S(0), S(3600), S(300)).usable_for, Duration::ZERO);
    }

    #[test]
    fn backoff_doubles_to_a_ceiling_with_bounded_jitter() {
        assert_eq!(backoff(1, 0.0), S(1));
        assert_eq!(backoff(1, 1.0), S(1));
        assert_eq!(backoff(2, 0.0), S(1));
        assert_eq!(backoff(2, 1.0), S(2));
        assert_eq!(backoff(4, 0.0), S(4));
        assert_eq!(backoff(4, 1.0), S(8));
        assert_eq!(backoff(7, 1.0), S(60));
        assert_eq!(backoff(u32::MAX, 0.5), S(45));
        for f in 1..20 {
            let d = backoff(f, 0.37);
            assert!((S(1)..=S(60)).contains(&d), "{f}: {d:?}");
        }
    }

    #[test]
    fn rejections_wait_at_the_slowest_pace_from_the_first() {
        assert_eq!(rejected_backoff(0.0), S(30));
        assert_eq!(rejected_backoff(1.0), S(60));
        assert!(rejected_backoff(0.5) > backoff(1, 1.0));
    }
}
