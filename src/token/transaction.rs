//! `per_transaction` mode: which transaction a request on a route belongs to.
//!
//! A transaction is a burst of requests on one route. The next one starts when the route has been
//! idle (nothing in flight) for `transaction_idle`, or when a request carries a new value of
//! `transaction_header`. Each transaction has its own id; the token source caches one token per id,
//! so requests of a transaction share a token and its concurrent first requests share one fetch.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};

/// Transaction ids are unique in the process, so that the token cache keys of two routes never
/// collide. 0 is never used: it means "no transaction".
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Transaction boundaries of one route.
#[derive(Debug)]
pub struct Transactions {
    header: HeaderName,
    state: Mutex<Boundary>,
}

/// A request entered a transaction.
#[derive(Debug)]
pub struct Entered {
    /// The transaction's id.
    pub id: u64,
    /// The transaction this request ended (its token is no longer needed), if it started a new one.
    pub ended: Option<u64>,
    /// Keeps the route busy until dropped (when the response has been sent).
    pub activity: Activity,
}

/// A request in flight on a per-transaction route. While any exists, the route is not idle.
#[derive(Debug)]
pub struct Activity {
    route: Arc<Transactions>,
}

impl Drop for Activity {
    fn drop(&mut self) {
        self.route.lock().leave(Instant::now());
    }
}

impl Transactions {
    /// Boundaries by `idle` gaps and new values of `header`.
    pub fn new(idle: Duration, header: HeaderName) -> Arc<Self> {
        Arc::new(Transactions {
            header,
            state: Mutex::new(Boundary::new(idle, Instant::now())),
        })
    }

    /// Places a request with `headers` in a transaction: the current one, or a new one.
    pub fn enter(self: &Arc<Self>, headers: &HeaderMap) -> Entered {
        let value = headers.get(&self.header);
        let (id, ended) = self.lock().enter(Instant::now(), value, next_id);
        Entered {
            id,
            ended,
            activity: Activity {
                route: self.clone(),
            },
        }
    }

    fn lock(&self) -> MutexGuard<'_, Boundary> {
        // Plain data, updated in one step: a panic elsewhere cannot leave it half-written.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The boundary rule, without clocks or ids of its own (so it can be tested step by step).
#[derive(Debug)]
struct Boundary {
    idle: Duration,
    /// Current transaction (0 before the first request).
    current: u64,
    /// The header value that named the current transaction, if any request of it carried one.
    value: Option<HeaderValue>,
    /// Requests whose response has not ended.
    in_flight: usize,
    /// When a request last started or ended.
    last_activity: Instant,
}

impl Boundary {
    fn new(idle: Duration, now: Instant) -> Self {
        Boundary {
            idle,
            current: 0,
            value: None,
            in_flight: 0,
            last_activity: now,
        }
    }

    /// A request arrives at `now` with `value` of the transaction header: returns the id of its
    /// transaction and the id of the transaction it ended, if it started a new one. A request
    /// without the header never starts one by that rule; one with a value different from the
    /// current transaction's does.
    fn enter(
        &mut self,
        now: Instant,
        value: Option<&HeaderValue>,
        new_id: impl FnOnce() -> u64,
    ) -> (u64, Option<u64>) {
        let idle =
            self.in_flight == 0 && now.saturating_duration_since(self.last_activity) >= self.idle;
        let renamed = value.is_some_and(|v| self.value.as_ref() != Some(v));
        let mut ended = None;
        if self.current == 0 || idle || renamed {
            ended = (self.current != 0).then_some(self.current);
            self.current = new_id();
            self.value = None;
        }
        if let Some(v) = value {
            self.value = Some(v.clone());
        }
        self.in_flight += 1;
        self.last_activity = now;
        (self.current, ended)
    }

    /// A request's response ended at `now`.
    fn leave(&mut self, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.last_activity = now;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const IDLE: Duration = Duration::from_secs(30);

    struct Clock {
        boundary: Boundary,
        start: Instant,
        ids: u64,
    }

    impl Clock {
        fn new() -> Self {
            let start = Instant::now();
            Clock {
                boundary: Boundary::new(IDLE, start),
                start,
                ids: 0,
            }
        }

        /// A request at `secs` after the start; returns (transaction, ended).
        fn at(&mut self, secs: u64, value: Option<&'static str>) -> (u64, Option<u64>) {
            let value = value.map(HeaderValue::from_static);
            let ids = &mut self.ids;
            self.boundary.enter(
                self.start + Duration::from_secs(secs),
                value.as_ref(),
                || {
                    *ids += 1;
                    *ids
                },
            )
        }

        fn done(&mut self, secs: u64) {
            self.boundary.leave(self.start + Duration::from_secs(secs));
        }
    }

    #[test]
    fn the_first_request_starts_a_transaction() {
        let mut c = Clock::new();
        assert_eq!(c.at(0, None), (1, None));
    }

    #[test]
    fn requests_closer_than_the_idle_gap_share_a_transaction() {
        let mut c = Clock::new();
        c.at(0, None);
        c.done(1);
        assert_eq!(c.at(20, None), (1, None));
        c.done(21);
        assert_eq!(c.at(50, None), (1, None), "29 s after the last activity");
    }

    #[test]
    fn an_idle_gap_starts_the_next_transaction_and_ends_the_last() {
        let mut c = Clock::new();
        c.at(0, None);
        c.done(1);
        assert_eq!(c.at(31, None), (2, Some(1)), "exactly 30 s idle");
        c.done(31);
        assert_eq!(c.at(100, None), (3, Some(2)));
    }

    #[test]
    fn a_request_in_flight_keeps_the_route_busy() {
        // A 10-minute export is one busy route, not idle time: requests after it has run for
        // longer than the gap still belong to its transaction.
        let mut c = Clock::new();
        c.at(0, None);
        assert_eq!(c.at(600, None), (1, None));
        c.done(601);
        c.done(602);
        assert_eq!(
            c.at(620, None),
            (1, None),
            "idle is counted from the last response's end"
        );
        c.done(620);
        assert_eq!(c.at(651, None), (2, Some(1)));
    }

    #[test]
    fn a_new_header_value_starts_the_next_transaction_at_once() {
        let mut c = Clock::new();
        assert_eq!(c.at(0, Some("refresh-1")), (1, None));
        assert_eq!(c.at(1, Some("refresh-1")), (1, None));
        assert_eq!(
            c.at(2, Some("refresh-2")),
            (2, Some(1)),
            "even with requests in flight"
        );
        assert_eq!(c.at(3, Some("refresh-2")), (2, None));
    }

    #[test]
    fn a_request_without_the_header_stays_in_the_current_transaction() {
        let mut c = Clock::new();
        c.at(0, Some("refresh-1"));
        assert_eq!(c.at(1, None), (1, None));
        assert_eq!(c.at(2, Some("refresh-1")), (1, None));
    }

    #[test]
    fn a_first_header_value_names_a_transaction_that_had_none() {
        let mut c = Clock::new();
        c.at(0, None);
        assert_eq!(c.at(1, Some("refresh-1")), (2, Some(1)));
        assert_eq!(c.at(2, Some("refresh-1")), (2, None));
    }

    #[test]
    fn the_idle_rule_applies_to_named_transactions_too() {
        let mut c = Clock::new();
        c.at(0, Some("refresh-1"));
        c.done(0);
        assert_eq!(c.at(40, Some("refresh-1")), (2, Some(1)));
    }

    #[test]
    fn activity_guards_end_requests_when_dropped() {
        let tx = Transactions::new(Duration::ZERO, HeaderName::from_static("x-transaction-id"));
        let headers = HeaderMap::new();
        let first = tx.enter(&headers);
        // Still in flight: even a zero idle gap does not end the transaction.
        let second = tx.enter(&headers);
        assert_eq!(first.id, second.id);
        assert_eq!(second.ended, None);
        let id = first.id;
        drop(first);
        drop(second);
        let third = tx.enter(&headers);
        assert_ne!(third.id, id);
        assert_eq!(third.ended, Some(id));
    }

    #[test]
    fn the_header_is_read_from_the_request() {
        let tx = Transactions::new(IDLE, HeaderName::from_static("x-transaction-id"));
        let mut headers = HeaderMap::new();
        headers.insert("x-transaction-id", HeaderValue::from_static("a"));
        let a = tx.enter(&headers);
        headers.insert("x-transaction-id", HeaderValue::from_static("b"));
        let b = tx.enter(&headers);
        assert_eq!(b.ended, Some(a.id));
    }
}
