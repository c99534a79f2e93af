//! Coalescing: identical GET and HEAD requests without a body that arrive while the first is in
//! flight share its upstream request. A dashboard refresh asks the same endpoint from several
//! visuals and several gateway members at once; the API sees it once.
//!
//! The first request of a key leads: it goes upstream as any request does. Requests with the
//! same key that arrive before its answer's head follow: they wait for the leader's answer.
//! When the head arrives with followers waiting, the leader's body is recorded as it streams to
//! the leader's client (never buffered ahead of it); at its end the followers get the same
//! status, fields and body, each with its own request id. An answer larger than `max_entry`,
//! a body that fails, or a leader whose client leaves first sends the followers upstream on
//! their own: no follower is ever cancelled by another request, and memory stays bounded by
//! `max_entry` per flight whatever the answer's size. Requests arriving after the head start a
//! flight of their own.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::hash::{Hash, Hasher};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http::header::{self, HeaderName};
use http::header::{HeaderMap, HeaderValue};
use http::request::Parts;
use http::uri::PathAndQuery;
use http::{Method, StatusCode, Uri};
use tokio::sync::Notify;

use crate::fields::RawFields;
use crate::headers;
use crate::routes::Route;
use crate::token::TokenKey;

/// An answer's head as a follower gets it: status, the proxy's own fields, the upstream's.
pub(crate) type Head = (StatusCode, HeaderMap, Option<RawFields>);

/// The fields that choose a representation: requests differing in them differ.
static NEGOTIATION: [HeaderName; 3] = [
    header::ACCEPT,
    header::ACCEPT_ENCODING,
    header::ACCEPT_LANGUAGE,
];

/// Fields that make an answer this client's own: conditional requests and ranges.
static CONDITIONAL: [HeaderName; 6] = [
    header::RANGE,
    header::IF_RANGE,
    header::IF_NONE_MATCH,
    header::IF_MODIFIED_SINCE,
    header::IF_MATCH,
    header::IF_UNMODIFIED_SINCE,
];

/// The key of a request that may share its upstream request: a GET or HEAD without a body
/// (`body_empty`) on a route with `coalesce`, without `Cache-Control: no-cache` or `no-store`,
/// without a condition or a range ([`CONDITIONAL`]),
/// with at most one of each [`NEGOTIATION`] field; `None` for any other. `target` is its
/// upstream URI, `token` its token's key.
pub(crate) fn key_of(
    route: &Route,
    token: &TokenKey,
    parts: &Parts,
    body_empty: bool,
    target: &Uri,
) -> Option<FlightKey> {
    let head = parts.method == Method::HEAD;
    if !route.coalesce || !(head || parts.method == Method::GET) || !body_empty {
        return None;
    }
    // One pass over the fields (a BI tool sends a handful; standard names compare as numbers)
    // rather than four hashed lookups.
    let mut negotiation: [Option<HeaderValue>; 3] = [None, None, None];
    for (name, value) in &parts.headers {
        if name == header::CACHE_CONTROL {
            let opted_out = headers::list(value.as_bytes()).any(|d| {
                d.eq_ignore_ascii_case(b"no-cache") || d.eq_ignore_ascii_case(b"no-store")
            });
            if opted_out {
                return None;
            }
        } else if CONDITIONAL.contains(name) {
            // Its answer (304, 206) depends on what this client holds.
            return None;
        } else if let Some(i) = NEGOTIATION.iter().position(|n| n == name) {
            // Two of one: which would the API read? Not worth sharing.
            if negotiation[i].replace(value.clone()).is_some() {
                return None;
            }
        }
    }
    Some(FlightKey {
        route: route.prefix.clone(),
        credential: token.credential.clone(),
        delegate: token.delegate.clone(),
        head,
        target: target.path_and_query().cloned(),
        negotiation,
    })
}

/// What coalescing makes of a request.
pub(crate) enum Boarding {
    /// Not a request that can share: `X-Cache: BYPASS`.
    Bypass,
    /// The first of its key: goes upstream, the others follow.
    Lead(Lead),
    /// It followed a flight whose answer it gets.
    Shared(Arc<SharedAnswer>),
    /// It followed a flight that could not share (too big, failed, leader gone): it goes
    /// upstream on its own.
    Alone,
}

/// What a request's part in a flight (`None`: none, [`Boarding::Bypass`]) makes of it; a
/// follower waits for the leader's outcome (boxed: the wait is only a follower's), at most
/// `patience`: a leader whose client reads slowly holds its followers no longer than that,
/// then they go alone.
pub(crate) async fn board(role: Option<Role>, patience: Duration) -> Boarding {
    let Some(role) = role else {
        return Boarding::Bypass;
    };
    match role {
        Role::Leader(lead) => Boarding::Lead(lead),
        Role::Follower(flight) => {
            match Box::pin(tokio::time::timeout(patience, follow(flight))).await {
                Ok(Outcome::Shared(answer)) => Boarding::Shared(answer),
                Ok(Outcome::Alone) | Err(_) => Boarding::Alone,
            }
        }
    }
}

/// What makes two requests the same request (the route, the token identity, the method, the
/// upstream path and query, and the fields that choose the representation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FlightKey {
    pub(crate) route: Arc<str>,
    pub(crate) credential: Arc<str>,
    pub(crate) delegate: Option<Arc<str>>,
    pub(crate) head: bool,
    pub(crate) target: Option<PathAndQuery>,
    /// `Accept`, `Accept-Encoding`, `Accept-Language`, as sent.
    pub(crate) negotiation: [Option<HeaderValue>; 3],
}

impl Hash for FlightKey {
    /// Each part once, as bytes (a derived hash writes lengths, tags and sensitivity flags one
    /// call each); equal keys hash equally.
    fn hash<H: Hasher>(&self, state: &mut H) {
        state.write(self.route.as_bytes());
        state.write(self.credential.as_bytes());
        state.write(self.delegate.as_deref().unwrap_or("").as_bytes());
        state.write_u8(u8::from(self.head));
        state.write(
            self.target
                .as_ref()
                .map_or("", PathAndQuery::as_str)
                .as_bytes(),
        );
        for value in &self.negotiation {
            state.write(value.as_ref().map_or(&b""[..], HeaderValue::as_bytes));
        }
    }
}

/// The answer a leader shares: head and whole body.
#[derive(Debug)]
pub(crate) struct SharedAnswer {
    pub(crate) status: StatusCode,
    /// The proxy's own fields of the leader's answer (its request id is replaced).
    pub(crate) headers: HeaderMap,
    /// The upstream's fields as they came, when a lean connection read them.
    pub(crate) fields: Option<RawFields>,
    pub(crate) body: Bytes,
}

/// How a flight ended for its followers.
#[derive(Debug, Clone)]
pub(crate) enum Outcome {
    /// The leader's answer, whole.
    Shared(Arc<SharedAnswer>),
    /// Go upstream on your own.
    Alone,
}

/// One flight: its key (to land it), its outcome once there is one, and who waits for it.
#[derive(Debug)]
pub(crate) struct Flight {
    key: FlightKey,
    outcome: OnceLock<Outcome>,
    landed: Notify,
    followers: AtomicUsize,
}

/// The flights in the air. Hashed with foldhash's per-process seed: clients choose the keys
/// (paths, queries), so a fixed hash could be flooded; SipHash cost a fifth of a request here.
#[derive(Debug, Default)]
pub(crate) struct Flights {
    flights: Mutex<HashMap<FlightKey, Arc<Flight>, foldhash::fast::RandomState>>,
}

/// A request's part in a flight.
pub(crate) enum Role {
    /// The first: goes upstream; the followers wait on what it leaves behind.
    Leader(Lead),
    /// Waits for the leader's outcome ([`follow`]).
    Follower(Arc<Flight>),
}

/// The leader's hold on its flight. Dropped without [`Lead::finish`], it sends its followers
/// upstream on their own.
pub(crate) struct Lead {
    flights: Arc<Flights>,
    flight: Arc<Flight>,
}

impl Flights {
    /// Joins the flight of `key`, or starts it.
    pub(crate) fn join(self: &Arc<Self>, key: FlightKey) -> Role {
        let mut flights = self.flights.lock().unwrap_or_else(PoisonError::into_inner);
        // One hash per lookup: the entry both finds and makes the flight.
        match flights.entry(key) {
            Entry::Occupied(entry) => {
                let flight = entry.get();
                flight.followers.fetch_add(1, Ordering::AcqRel);
                Role::Follower(flight.clone())
            }
            Entry::Vacant(entry) => {
                let flight = Arc::new(Flight {
                    key: entry.key().clone(),
                    outcome: OnceLock::new(),
                    landed: Notify::new(),
                    followers: AtomicUsize::new(0),
                });
                entry.insert(flight.clone());
                Role::Leader(Lead {
                    flights: self.clone(),
                    flight,
                })
            }
        }
    }

    /// Flights in the air now.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.flights
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .len()
    }
}

impl Lead {
    /// Whether any request waits on this flight.
    pub(crate) fn followed(&self) -> bool {
        self.flight.followers.load(Ordering::Acquire) > 0
    }

    /// Ends the flight: later requests start one of their own, and the followers get
    /// `outcome`.
    pub(crate) fn finish(self, outcome: Outcome) {
        self.land(outcome);
    }

    fn land(&self, outcome: Outcome) {
        {
            let mut flights = self
                .flights
                .flights
                .lock()
                .unwrap_or_else(PoisonError::into_inner);
            // Only this lead removes its flight, and no other flight of the key is made while
            // it is there: the entry is this one.
            let removed = flights.remove(&self.flight.key);
            debug_assert!(removed.is_some_and(|f| Arc::ptr_eq(&f, &self.flight)));
        }
        // Set once: a lead lands once (finish consumes it; drop lands only if unset).
        let _ = self.flight.outcome.set(outcome);
        // Exact: the flight left the map above, so no follower joins any more.
        if self.flight.followers.load(Ordering::Acquire) > 0 {
            self.flight.landed.notify_waiters();
        }
    }
}

impl Drop for Lead {
    fn drop(&mut self) {
        if self.flight.outcome.get().is_none() {
            self.land(Outcome::Alone);
        }
    }
}

/// Waits for the leader's outcome; a leader gone without one sends the follower alone.
pub(crate) async fn follow(flight: Arc<Flight>) -> Outcome {
    loop {
        let landed = flight.landed.notified();
        tokio::pin!(landed);
        // Registered before the check: a landing in between still wakes this wait.
        landed.as_mut().enable();
        if let Some(outcome) = flight.outcome.get() {
            return outcome.clone();
        }
        landed.await;
    }
}

/// Records a leader's body as it streams to the leader's client, for its followers.
pub(crate) struct Recorder {
    lead: Option<Lead>,
    head: Option<Head>,
    body: BytesMut,
    max_entry: usize,
}

impl Recorder {
    /// Records for `lead` an answer with this head, up to `max_entry` bytes of body.
    pub(crate) fn new(lead: Lead, head: Head, max_entry: usize) -> Self {
        Recorder {
            lead: Some(lead),
            head: Some(head),
            body: BytesMut::new(),
            max_entry,
        }
    }

    /// A data frame went to the leader's client. Past `max_entry`, the followers go alone.
    pub(crate) fn data(&mut self, data: &Bytes) {
        if self.lead.is_none() {
            return;
        }
        if self.body.len() + data.len() > self.max_entry {
            self.give_up();
            return;
        }
        self.body.extend_from_slice(data);
    }

    /// Something other than data (trailers), or a failed body: the followers go alone.
    pub(crate) fn give_up(&mut self) {
        if let Some(lead) = self.lead.take() {
            lead.finish(Outcome::Alone);
        }
        self.body = BytesMut::new();
    }

    /// The body ended whole: the followers get the answer.
    pub(crate) fn end(&mut self) {
        let (Some(lead), Some((status, headers, fields))) = (self.lead.take(), self.head.take())
        else {
            return;
        };
        let body = std::mem::take(&mut self.body).freeze();
        lead.finish(Outcome::Shared(Arc::new(SharedAnswer {
            status,
            headers,
            fields,
            body,
        })));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(target: &str) -> FlightKey {
        FlightKey {
            route: Arc::from("/"),
            credential: Arc::from("default"),
            delegate: None,
            head: false,
            target: Some(PathAndQuery::try_from(target).unwrap()),
            negotiation: [None, None, None],
        }
    }

    fn head() -> Head {
        (StatusCode::OK, HeaderMap::new(), None)
    }

    #[tokio::test]
    async fn followers_get_the_whole_answer_and_later_requests_fly_alone() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(lead) = flights.join(key("/a")) else {
            panic!("the first leads")
        };
        let Role::Follower(follower) = flights.join(key("/a")) else {
            panic!("the second follows")
        };
        assert!(matches!(flights.join(key("/b")), Role::Leader(_)));
        assert!(lead.followed());
        let mut recorder = Recorder::new(lead, head(), 10);
        recorder.data(&Bytes::from_static(b"hello "));
        recorder.data(&Bytes::from_static(b"you"));
        recorder.end();
        let Outcome::Shared(answer) = follow(follower).await else {
            panic!("shared")
        };
        assert_eq!(&answer.body[..], b"hello you");
        assert_eq!(flights.len(), 0, "landed flights are gone");
        assert!(matches!(flights.join(key("/a")), Role::Leader(_)));
    }

    #[tokio::test]
    async fn too_big_a_body_or_a_leader_gone_sends_followers_alone() {
        let flights = Arc::new(Flights::default());
        let Role::Leader(lead) = flights.join(key("/a")) else {
            panic!()
        };
        let Role::Follower(follower) = flights.join(key("/a")) else {
            panic!()
        };
        let mut recorder = Recorder::new(lead, head(), 4);
        recorder.data(&Bytes::from_static(b"hello"));
        assert!(matches!(follow(follower).await, Outcome::Alone));
        // The flight landed at once: a newcomer leads again while the big body streams on.
        let Role::Leader(lead) = flights.join(key("/a")) else {
            panic!()
        };
        let Role::Follower(follower) = flights.join(key("/a")) else {
            panic!()
        };
        drop(lead);
        assert!(matches!(follow(follower).await, Outcome::Alone));
        drop(recorder);
        assert_eq!(flights.len(), 0);
    }
}
