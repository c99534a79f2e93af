//! `per_transaction` mode: which transaction a request on a route belongs to.
//!
//! A transaction is a burst of requests on one route. The next one starts when the transaction has
//! been idle (nothing in flight) for `transaction_idle`, or when a request carries a new value of
//! `transaction_header`: each value names a transaction of its own while it is active, so two
//! reloads whose requests interleave each keep theirs. Each transaction has its own id; the token
//! source caches one token per id, so requests of a transaction share a token and its concurrent
//! first requests share one fetch.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderName, HeaderValue};

use crate::sync::lock;

/// Transaction ids are unique in the process, so that the token cache keys of two routes never
/// collide.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// At most this many header-named transactions are tracked per route; beyond it the least
/// recently active one ends (a client inventing a value per request gets per-request tokens, not
/// unbounded memory).
const MAX_NAMED: usize = 64;

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
    /// Transactions that ended meanwhile (their tokens are no longer needed).
    pub ended: Vec<u64>,
    /// Keeps the transaction busy until dropped (when the response has been sent).
    pub activity: Activity,
}

/// A request in flight on a per-transaction route. While any exists, its transaction is not idle.
#[derive(Debug)]
pub struct Activity {
    route: Arc<Transactions>,
    name: Option<HeaderValue>,
    id: u64,
}

impl Drop for Activity {
    fn drop(&mut self) {
        let name = self.name.take();
        lock(&self.route.state).leave(Instant::now(), name, self.id);
    }
}

impl Transactions {
    /// Boundaries by `idle` gaps and new values of `header`.
    pub fn new(idle: Duration, header: HeaderName) -> Arc<Self> {
        Arc::new(Transactions {
            header,
            state: Mutex::new(Boundary::new(idle)),
        })
    }

    /// Places a request with `headers` in a transaction: an ongoing one, or a new one.
    pub fn enter(self: &Arc<Self>, headers: &HeaderMap) -> Entered {
        let name = headers.get(&self.header).cloned();
        let (id, ended) = lock(&self.state).enter(Instant::now(), name.as_ref(), next_id);
        Entered {
            id,
            ended,
            activity: Activity {
                route: self.clone(),
                name,
                id,
            },
        }
    }

    /// Whether transaction `id` is still ongoing (its token is worth keeping).
    pub fn is_ongoing(&self, id: u64) -> bool {
        lock(&self.state).is_ongoing(id)
    }
}

/// One ongoing transaction.
#[derive(Debug, Clone, Copy)]
struct Transaction {
    id: u64,
    /// Requests whose response has not ended.
    in_flight: usize,
    /// When a request last started or ended.
    last_activity: Instant,
}

impl Transaction {
    fn is_idle(&self, now: Instant, idle: Duration) -> bool {
        self.in_flight == 0 && now.saturating_duration_since(self.last_activity) >= idle
    }
}

/// The boundary rule, without clocks or ids of its own (so it can be tested step by step).
/// Requests without the header form one transaction by the idle rule; each header value names a
/// transaction of its own, which ends by the same rule (so two reloads interleaving their
/// requests each keep their token).
#[derive(Debug)]
struct Boundary {
    idle: Duration,
    unnamed: Option<Transaction>,
    named: HashMap<HeaderValue, Transaction>,
}

impl Boundary {
    fn new(idle: Duration) -> Self {
        Boundary {
            idle,
            unnamed: None,
            named: HashMap::new(),
        }
    }

    /// A request arrives at `now` carrying `name` (the transaction header's value, if any):
    /// returns the id of its transaction and the ids of transactions that ended.
    fn enter(
        &mut self,
        now: Instant,
        name: Option<&HeaderValue>,
        new_id: impl FnOnce() -> u64,
    ) -> (u64, Vec<u64>) {
        let idle = self.idle;
        let mut ended = Vec::new();
        // Named transactions that went idle are over; so is the oldest when there are too many.
        self.named.retain(|_, t| {
            let over = t.is_idle(now, idle);
            if over {
                ended.push(t.id);
            }
            !over
        });
        let slot = match name {
            None => &mut self.unnamed,
            Some(v) => {
                if !self.named.contains_key(v) && self.named.len() >= MAX_NAMED {
                    let oldest = self
                        .named
                        .iter()
                        .min_by_key(|(_, t)| (t.in_flight > 0, t.last_activity))
                        .map(|(k, _)| k.clone());
                    if let Some(t) = oldest.and_then(|k| self.named.remove(&k)) {
                        ended.push(t.id);
                    }
                }
                let t = self.named.entry(v.clone()).or_insert_with(|| Transaction {
                    id: new_id(),
                    in_flight: 0,
                    last_activity: now,
                });
                t.in_flight += 1;
                t.last_activity = now;
                return (t.id, ended);
            }
        };
        match slot {
            Some(t) if !t.is_idle(now, idle) => {
                t.in_flight += 1;
                t.last_activity = now;
                (t.id, ended)
            }
            _ => {
                if let Some(old) = slot.take() {
                    ended.push(old.id);
                }
                let t = Transaction {
                    id: new_id(),
                    in_flight: 1,
                    last_activity: now,
                };
                *slot = Some(t);
                (t.id, ended)
            }
        }
    }

    /// A response of transaction `id` (named `name`) ended at `now`.
    fn leave(&mut self, now: Instant, name: Option<HeaderValue>, id: u64) {
        let t = match name {
            None => self.unnamed.as_mut(),
            Some(v) => self.named.get_mut(&v),
        };
        // A transaction pushed out meanwhile has nothing left to update.
        if let Some(t) = t.filter(|t| t.id == id) {
            t.in_flight = t.in_flight.saturating_sub(1);
            t.last_activity = now;
        }
    }

    fn is_ongoing(&self, id: u64) -> bool {
        self.unnamed.is_some_and(|t| t.id == id) || self.named.values().any(|t| t.id == id)
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
            Clock {
                boundary: Boundary::new(IDLE),
                start: Instant::now(),
                ids: 0,
            }
        }

        fn time(&self, secs: u64) -> Instant {
            self.start + Duration::from_secs(secs)
        }

        /// A request at `secs` after the start; returns (transaction, ended).
        fn at(&mut self, secs: u64, name: Option<&'static str>) -> (u64, Vec<u64>) {
            let name = name.map(HeaderValue::from_static);
            let now = self.time(secs);
            let ids = &mut self.ids;
            self.boundary.enter(now, name.as_ref(), || {
                *ids += 1;
                *ids
            })
        }

        /// The response of a request of transaction `id` named `name` ends at `secs`.
        fn done(&mut self, secs: u64, name: Option<&'static str>, id: u64) {
            let now = self.time(secs);
            self.boundary
                .leave(now, name.map(HeaderValue::from_static), id);
        }
    }

    #[test]
    fn the_first_request_starts_a_transaction() {
        let mut c = Clock::new();
        assert_eq!(c.at(0, None), (1, vec![]));
    }

    #[test]
    fn requests_closer_than_the_idle_gap_share_a_transaction() {
        let mut c = Clock::new();
        c.at(0, None);
        c.done(1, None, 1);
        assert_eq!(c.at(20, None), (1, vec![]));
        c.done(21, None, 1);
        assert_eq!(c.at(50, None), (1, vec![]), "29 s after the last activity");
    }

    #[test]
    fn an_idle_gap_starts_the_next_transaction_and_ends_the_last() {
        let mut c = Clock::new();
        c.at(0, None);
        c.done(1, None, 1);
        assert_eq!(c.at(31, None), (2, vec![1]), "exactly 30 s idle");
        c.done(31, None, 2);
        assert_eq!(c.at(100, None), (3, vec![2]));
    }

    #[test]
    fn a_request_in_flight_keeps_the_transaction_going() {
        // A 10-minute export is a busy transaction, not idle time: requests after it has run for
        // longer than the gap still belong to it.
        let mut c = Clock::new();
        c.at(0, None);
        assert_eq!(c.at(600, None), (1, vec![]));
        c.done(601, None, 1);
        c.done(602, None, 1);
        assert_eq!(
            c.at(620, None),
            (1, vec![]),
            "idle is counted from the last response's end"
        );
        c.done(620, None, 1);
        assert_eq!(c.at(651, None), (2, vec![1]));
    }

    #[test]
    fn a_new_header_value_starts_a_transaction_at_once() {
        let mut c = Clock::new();
        assert_eq!(c.at(0, Some("reload-1")), (1, vec![]));
        assert_eq!(c.at(1, Some("reload-1")), (1, vec![]));
        assert_eq!(
            c.at(2, Some("reload-2")),
            (2, vec![]),
            "even with requests in flight"
        );
        assert_eq!(c.at(3, Some("reload-2")), (2, vec![]));
    }

    #[test]
    fn interleaved_values_each_keep_their_transaction() {
        // Two reloads at once: their requests alternate, each keeps its own token.
        let mut c = Clock::new();
        for t in 0..10 {
            assert_eq!(c.at(t, Some("a")).0, 1);
            assert_eq!(c.at(t, Some("b")).0, 2);
        }
        assert_eq!(c.ids, 2);
    }

    #[test]
    fn requests_without_the_header_form_a_transaction_of_their_own() {
        let mut c = Clock::new();
        c.at(0, Some("reload-1"));
        assert_eq!(c.at(1, None), (2, vec![]));
        assert_eq!(c.at(2, Some("reload-1")), (1, vec![]));
        assert_eq!(c.at(3, None), (2, vec![]));
    }

    #[test]
    fn a_named_transaction_ends_when_idle_and_its_value_then_starts_a_new_one() {
        let mut c = Clock::new();
        c.at(0, Some("reload-1"));
        c.done(0, Some("reload-1"), 1);
        assert_eq!(c.at(40, Some("reload-1")), (2, vec![1]));
        assert!(!c.boundary.is_ongoing(1));
        assert!(c.boundary.is_ongoing(2));
    }

    #[test]
    fn named_transactions_are_bounded() {
        // A client inventing a value per request: the oldest idle-most transactions end.
        let mut c = Clock::new();
        let values: Vec<&'static str> = (0..200)
            .map(|i| &*Box::leak(format!("v{i}").into_boxed_str()))
            .collect();
        let mut ended = Vec::new();
        for (i, v) in values.iter().enumerate() {
            let (id, gone) = c.at(1, Some(v));
            c.done(1, Some(v), id);
            assert_eq!(id, i as u64 + 1);
            ended.extend(gone);
        }
        assert_eq!(c.boundary.named.len(), MAX_NAMED);
        assert_eq!(ended.len(), 200 - MAX_NAMED);
    }

    #[test]
    fn activity_guards_end_requests_when_dropped() {
        let tx = Transactions::new(Duration::ZERO, HeaderName::from_static("x-transaction-id"));
        let headers = HeaderMap::new();
        let first = tx.enter(&headers);
        // Still in flight: even a zero idle gap does not end the transaction.
        let second = tx.enter(&headers);
        assert_eq!(first.id, second.id);
        assert!(second.ended.is_empty());
        let id = first.id;
        drop(first);
        drop(second);
        let third = tx.enter(&headers);
        assert_ne!(third.id, id);
        assert_eq!(third.ended, vec![id]);
        assert!(tx.is_ongoing(third.id));
        assert!(!tx.is_ongoing(id));
    }

    #[test]
    fn the_header_is_read_from_the_request() {
        let tx = Transactions::new(IDLE, HeaderName::from_static("x-transaction-id"));
        let mut headers = HeaderMap::new();
        headers.insert("x-transaction-id", HeaderValue::from_static("a"));
        let a = tx.enter(&headers);
        headers.insert("x-transaction-id", HeaderValue::from_static("b"));
        let b = tx.enter(&headers);
        assert_ne!(a.id, b.id);
        headers.insert("x-transaction-id", HeaderValue::from_static("a"));
        assert_eq!(tx.enter(&headers).id, a.id);
    }
}
