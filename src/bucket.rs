//! A token bucket: what a client's `rate` and a credential's STS budget both are. `rate` tokens
//! a second, at most `burst` kept; each take spends one or says how long until one is there.

use std::time::{Duration, Instant};

/// The burst of a configured rate: twice the rate, and at least one.
pub(crate) fn burst_of(rate: f64) -> f64 {
    (2.0 * rate).max(1.0)
}

/// A bucket's state. Callers keep it behind their own lock.
#[derive(Debug)]
pub(crate) struct TokenBucket {
    tokens: f64,
    last: Instant,
    rate: f64,
    burst: f64,
}

impl TokenBucket {
    /// A full bucket.
    pub(crate) fn new(rate: f64, burst: f64) -> Self {
        TokenBucket {
            tokens: burst,
            last: Instant::now(),
            rate,
            burst,
        }
    }

    /// Takes one token at `now`, or says how long until one is there.
    pub(crate) fn take(&mut self, now: Instant) -> Result<(), Duration> {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate).min(self.burst);
        self.last = now;
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64((1.0 - self.tokens) / self.rate))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_bucket_holds_its_burst_and_refills_at_its_rate() {
        let mut bucket = TokenBucket::new(2.0, burst_of(2.0));
        let start = bucket.last;
        for _ in 0..4 {
            assert!(bucket.take(start).is_ok());
        }
        let wait = bucket.take(start).unwrap_err();
        assert_eq!(wait, Duration::from_millis(500));
        assert!(bucket.take(start + Duration::from_millis(500)).is_ok());
        // A long pause refills to the burst, not beyond.
        let later = start + Duration::from_secs(60);
        for _ in 0..4 {
            assert!(bucket.take(later).is_ok());
        }
        assert!(bucket.take(later).is_err());
        assert_eq!(burst_of(0.1), 1.0);
    }
}
