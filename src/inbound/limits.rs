//! A client's `rate` (a token bucket, burst twice the rate) and `max_in_flight` (a concurrency
//! bound). Each client has its own, behind its own lock, so one client's storm never waits on
//! another client's limits.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::bucket::{TokenBucket, burst_of};

/// A client's limits as configured; both off by default.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct ClientLimits {
    /// Requests per second (`rate = "20/s"`); the bucket holds twice that.
    pub rate: Option<f64>,
    /// Requests at once, until their response bodies end.
    pub max_in_flight: Option<usize>,
}

impl ClientLimits {
    /// Whether any limit is set.
    pub fn is_set(&self) -> bool {
        self.rate.is_some() || self.max_in_flight.is_some()
    }
}

/// The state of one client's limits.
#[derive(Debug)]
pub(super) struct Limiter {
    limits: ClientLimits,
    bucket: Option<Mutex<TokenBucket>>,
    in_flight: Option<Arc<Semaphore>>,
}

impl Limiter {
    pub(super) fn new(limits: ClientLimits) -> Self {
        let bucket = limits
            .rate
            .map(|rate| Mutex::new(TokenBucket::new(rate, burst_of(rate))));
        Limiter {
            limits,
            bucket,
            in_flight: limits.max_in_flight.map(|n| Arc::new(Semaphore::new(n))),
        }
    }

    pub(super) fn limits(&self) -> ClientLimits {
        self.limits
    }

    /// A place within both limits: the permit is held while the request lasts. A request
    /// refused for concurrency spends no token of the rate. `Err`: the wait before asking again,
    /// in whole seconds, at least one.
    pub(super) fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, Duration> {
        let permit = match &self.in_flight {
            None => None,
            Some(slots) => Some(
                slots
                    .clone()
                    .try_acquire_owned()
                    .map_err(|_| Duration::from_secs(1))?,
            ),
        };
        if let Some(bucket) = &self.bucket {
            crate::sync::lock(bucket)
                .take(Instant::now())
                .map_err(|wait| Duration::from_secs(wait.as_secs_f64().ceil().max(1.0) as u64))?;
        }
        Ok(permit)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn in_flight_is_bounded_until_the_permit_is_dropped() {
        let limiter = Limiter::new(ClientLimits {
            rate: None,
            max_in_flight: Some(2),
        });
        let a = limiter.admit().unwrap();
        let b = limiter.admit().unwrap();
        assert_eq!(limiter.admit().unwrap_err(), Duration::from_secs(1));
        drop(a);
        assert!(limiter.admit().is_ok());
        drop(b);
    }

    #[test]
    fn retry_after_is_whole_seconds() {
        let limiter = Limiter::new(ClientLimits {
            rate: Some(0.1),
            max_in_flight: Some(5),
        });
        // Burst of one (twice 0.1, at least one); then ten seconds to the next token.
        assert!(limiter.admit().is_ok());
        assert_eq!(limiter.admit().unwrap_err(), Duration::from_secs(10));
    }
}
