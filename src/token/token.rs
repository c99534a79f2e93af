//! A token ready to send: its precomputed `Authorization` value, its age by two clocks, when it
//! is due for refresh and when it may no longer be sent.

use std::fmt;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant, SystemTime};

use http::HeaderValue;

use super::schedule::{self, Schedule};
use super::sts::Issued;
use crate::secret::Secret;

/// A token ready to send: the precomputed `Authorization` value and its timing.
pub struct Token {
    bearer: HeaderValue,
    access_token: Secret,
    token_type: String,
    /// When the STS request was sent (monotonic clock): the token's age counts from then.
    pub(super) sent_at: Instant,
    sent_wall: SystemTime,
    /// When to refresh it and when to stop using it.
    pub(super) schedule: Schedule,
    /// Set while a refresh ahead of expiry runs, so that only one starts.
    pub(super) refreshing: AtomicBool,
}

impl fmt::Debug for Token {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Token")
            .field("token", &"[redacted]")
            .field("schedule", &self.schedule)
            .finish()
    }
}

impl Token {
    /// The token the STS issued in answer to a request sent at `sent_at` / `sent_wall`, living at
    /// most `max_age` and refreshed `refresh_before` its end; `None` if it cannot be sent in a
    /// header.
    pub(super) fn new(
        issued: Issued,
        sent_at: Instant,
        sent_wall: SystemTime,
        max_age: Duration,
        refresh_before: Duration,
    ) -> Option<Self> {
        let bearer = crate::headers::bearer_value(issued.access_token.expose())?;
        Some(Token {
            bearer,
            access_token: issued.access_token,
            token_type: issued.token_type,
            sent_at,
            sent_wall,
            schedule: schedule::schedule(issued.expires_in, max_age, refresh_before),
            refreshing: AtomicBool::new(false),
        })
    }

    /// The `Authorization: Bearer ...` value (marked sensitive).
    pub fn bearer(&self) -> &HeaderValue {
        &self.bearer
    }

    /// Age by both clocks: the monotonic one, and the wall clock, which also counts time the
    /// machine slept (a suspended VM's monotonic clock stands still).
    fn age(&self) -> Duration {
        let mono = self.sent_at.elapsed();
        let wall = SystemTime::now()
            .duration_since(self.sent_wall)
            .unwrap_or(Duration::ZERO);
        mono.max(wall)
    }

    /// Whether the token may still be sent.
    pub fn is_usable(&self) -> bool {
        self.age() < self.schedule.usable_for
    }

    /// Whether interval mode should fetch the next token now.
    pub fn refresh_due(&self) -> bool {
        self.until_refresh().is_zero()
    }

    /// Time until interval mode should fetch the next token (zero when due).
    pub(super) fn until_refresh(&self) -> Duration {
        self.schedule.refresh_after.saturating_sub(self.age())
    }

    /// The token type the STS named (`Bearer`).
    pub fn token_type(&self) -> &str {
        &self.token_type
    }

    /// The token itself, for `azure-costs-proxy token --print` only.
    pub fn secret(&self) -> &Secret {
        &self.access_token
    }

    /// A short fingerprint that tells tokens apart without revealing them: the first 12 hex
    /// digits of the token's SHA-256 (48 bits of a hash of a random token say nothing about it).
    pub fn fingerprint(&self) -> String {
        let digest = aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            self.access_token.expose().as_bytes(),
        );
        let hex: String = digest.as_ref()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        format!("sha256:{hex}")
    }

    /// Wall-clock time its request to the STS was sent (its life counts from then).
    pub(super) fn issued_at(&self) -> SystemTime {
        self.sent_wall
    }

    /// Wall-clock time after which the token is no longer sent.
    pub fn expires_at(&self) -> SystemTime {
        self.sent_wall + self.schedule.usable_for
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn token(sent_at: Instant, sent_wall: SystemTime) -> Token {
        token_living(Duration::from_secs(3600), sent_at, sent_wall)
    }

    fn token_living(lifetime: Duration, sent_at: Instant, sent_wall: SystemTime) -> Token {
        Token {
            bearer: HeaderValue::from_static("Bearer t"),
            access_token: Secret::new("t"),
            token_type: "Bearer".into(),
            sent_at,
            sent_wall,
            schedule: schedule::schedule(
                lifetime,
                Duration::from_secs(55 * 60),
                Duration::from_secs(5 * 60),
            ),
            refreshing: AtomicBool::new(false),
        }
    }

    #[test]
    fn fresh_token_is_usable_and_not_yet_due() {
        let t = token(Instant::now(), SystemTime::now());
        assert!(t.is_usable());
        assert!(!t.refresh_due());
    }

    #[test]
    fn wall_clock_expiry_counts_time_the_machine_slept() {
        // The monotonic clock says "just issued"; the wall clock says two hours went by (a VM
        // that was suspended). The token must not be sent.
        let slept = SystemTime::now() - Duration::from_secs(2 * 3600);
        let t = token(Instant::now(), slept);
        assert!(!t.is_usable());
        assert!(t.refresh_due());
    }

    #[test]
    fn wall_clock_going_backwards_does_not_extend_a_token() {
        // A wall clock set back makes the token look younger; the monotonic age still counts.
        // A 4 s token sent 5 s ago by the monotonic clock, "in the future" by the wall clock.
        let five_ago = Instant::now() - Duration::from_secs(5);
        let t = token_living(
            Duration::from_secs(4),
            five_ago,
            SystemTime::now() + Duration::from_secs(600),
        );
        assert!(!t.is_usable());
        assert!(t.refresh_due());
    }

    #[test]
    fn debug_output_redacts_the_token() {
        let t = token(Instant::now(), SystemTime::now());
        let shown = format!("{t:?}");
        assert!(shown.contains("[redacted]"));
        assert!(!shown.contains("Bearer t"));
    }
}
