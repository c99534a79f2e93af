//! The STS call budget of each credential: what clients can make the proxy fetch at will (a
//! token for a team a `{delegate}` path names and the cache does not hold, a new transaction's
//! token) draws on a token bucket per credential ([`StsBudgetLimits`]: 10 a second with bursts
//! of 20). Beyond it the
//! request gets 503 `sts_unavailable` with `Retry-After` and no STS call is made, so a client
//! looping over made-up team ids or transaction ids cannot hammer the STS. Refusals are logged
//! once per interval with a count, never once per request.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::config::StsBudgetLimits;
use super::error::{StsFailure, TokenError};
use super::key::TokenKey;
use crate::bucket::TokenBucket;
use crate::sync::lock;

/// At most one log line per credential in this long says that the budget refused requests.
pub(super) const LOG_INTERVAL: Duration = Duration::from_secs(10);

/// The budget of every credential.
pub(super) struct StsBudget {
    limits: StsBudgetLimits,
    credentials: HashMap<Arc<str>, Mutex<Bucket>>,
}

/// One credential's bucket, and what its log line will say.
struct Bucket {
    tokens: TokenBucket,
    /// Requests refused since the last log line.
    refused: u64,
    /// When the last log line was written (`None`: never).
    logged: Option<Instant>,
}

impl StsBudget {
    /// A full bucket for each of `credentials`.
    pub(super) fn new<'a>(
        credentials: impl Iterator<Item = &'a Arc<str>>,
        limits: StsBudgetLimits,
    ) -> Self {
        StsBudget {
            limits,
            credentials: credentials
                .map(|name| {
                    let bucket = Bucket {
                        tokens: TokenBucket::new(limits.rate, limits.burst),
                        refused: 0,
                        logged: None,
                    };
                    (name.clone(), Mutex::new(bucket))
                })
                .collect(),
        }
    }

    /// Whether a fetch for `key` is something a client causes at will.
    pub(super) fn applies(key: &TokenKey) -> bool {
        key.transaction.is_some() || key.team_from_path()
    }

    /// Takes one fetch from the budget of `key`'s credential, or returns the error the request
    /// gets: `sts_unavailable`, with the wait until the next fetch is allowed.
    pub(super) fn take(&self, key: &TokenKey) -> Result<(), TokenError> {
        let Some(bucket) = self.credentials.get(&key.credential) else {
            return Ok(());
        };
        let StsBudgetLimits { rate, burst } = self.limits;
        let now = Instant::now();
        let mut b = lock(bucket);
        let Err(wait) = b.tokens.take(now) else {
            return Ok(());
        };
        b.refused += 1;
        if b.logged
            .is_none_or(|at| now.duration_since(at) >= LOG_INTERVAL)
        {
            tracing::warn!(
                credential = %key.credential,
                refused = b.refused,
                "the STS call budget of this credential is spent: requests for teams not yet \
                 held or for new transactions get 503 sts_unavailable without an STS call \
                 ({rate} a second, bursts of {burst}); a client may be looping over team or \
                 transaction ids"
            );
            b.refused = 0;
            b.logged = Some(now);
        }
        drop(b);
        let mut error = TokenError::new(
            key,
            super::error::Step::Update,
            StsFailure::Unavailable {
                reason: "the STS call budget of this credential is spent (too many teams not \
                         yet held or new transactions at once)"
                    .to_string(),
                retry_after: None,
            },
        );
        error.retry_after = Some(wait);
        Err(error)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::key::TeamFrom;

    #[test]
    fn a_burst_passes_then_the_rate_holds() {
        let credential: Arc<str> = Arc::from("c");
        let budget = StsBudget::new([credential.clone()].iter(), StsBudgetLimits::default());
        let key = TokenKey::for_team(credential, Arc::from("T"), TeamFrom::Any);
        assert!(StsBudget::applies(&key));
        let mut passed = 0;
        while budget.take(&key).is_ok() {
            passed += 1;
            assert!(passed <= 25, "the budget never ran out");
        }
        // The burst, and at most a refill while the loop ran.
        assert!((20..=21).contains(&passed), "{passed}");
        let e = budget.take(&key).unwrap_err();
        let wait = e.retry_after.unwrap();
        assert!(wait <= Duration::from_millis(100), "{wait:?}");
        assert!(matches!(e.failure, StsFailure::Unavailable { .. }));
        let fixed = TokenKey::new(Arc::from("c"), Some(Arc::from("T")));
        assert!(!StsBudget::applies(&fixed));
    }
}
