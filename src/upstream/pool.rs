//! The connection pool of the upstream client: stacks of idle HTTP/1.1 connections (the most
//! recently used first, warm in every cache), lean ones for requests without a body (`h1.rs`)
//! and hyper's for the others, or one shared HTTP/2 connection when ALPN chose h2 (hyper's
//! connections are driven by a task of their own), and the reaper that closes idle ones. Every open
//! connection, busy or idle, holds a permit of the pool's budget (`upstream.max_connections`);
//! a request that finds none free waits for a permit or an idle connection, up to a deadline.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::Uri;
use http_body_util::{Either, Full};
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::Connection;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tower_service::Service;

use super::error::UpstreamError;
use super::h1::H1Conn;
use crate::cause::innermost;
use crate::request_body::ClientBody;

/// A request body sent upstream: the client's, streamed, or one held whole (empty for a request
/// the proxy may replay; the form or JSON of an STS call).
pub(crate) type OutgoingBody = Either<ClientBody, Full<Bytes>>;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle HTTP/1.1 connections kept at most; more are closed when their response ends.
const POOL_MAX_IDLE: usize = 1024;

/// TCP (directly or through the outbound proxy's tunnel), then TLS where the URL is https.
pub(super) type Connector = HttpsConnector<super::connect::Connector>;

/// The connections to the one upstream.
pub(super) struct Pool {
    connector: Connector,
    idle: Mutex<VecDeque<Idle<http1::SendRequest<OutgoingBody>>>>,
    /// Idle lean connections.
    lean_idle: Mutex<VecDeque<Idle<Box<H1Conn>>>>,
    h2: Mutex<Option<Shared>>,
    /// The upstream has spoken HTTP/2: connections are then opened one at a time, so that
    /// requests arriving together share one instead of each opening its own.
    h2_seen: AtomicBool,
    h2_connect: tokio::sync::Mutex<()>,
    /// The task that closes connections idle for [`POOL_IDLE_TIMEOUT`] runs.
    reaper: AtomicBool,
    /// One permit per open connection, held by the connection's task until it ends.
    budget: Arc<Semaphore>,
    /// The size of `budget`, for the error message.
    max_connections: usize,
    /// How long a request waits for a permit or an idle connection.
    wait: Duration,
    /// Woken when a connection goes back on the idle stack, for requests waiting on the budget.
    returned: Notify,
}

/// The HTTP/2 connection every request shares.
struct Shared {
    sender: http2::SendRequest<OutgoingBody>,
    last_used: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

/// An idle connection and the time it went idle.
struct Idle<C> {
    conn: C,
    since: Instant,
}

impl Idle<http1::SendRequest<OutgoingBody>> {
    fn stale(&self, now: Instant) -> bool {
        expired(self.conn.is_closed(), self.since, now)
    }
}

/// A connection ready for one request.
pub(super) enum Conn {
    H1(http1::SendRequest<OutgoingBody>),
    H2(http2::SendRequest<OutgoingBody>),
    /// For a request without a body.
    Lean(Box<H1Conn>),
}

/// An HTTP/1.1 connection lent to one response: it goes back to the pool when the response body
/// has been read to the end (see `PooledBody` in `pooled_body.rs`).
pub(super) struct Lease {
    sender: http1::SendRequest<OutgoingBody>,
    pool: Arc<Pool>,
}

impl Lease {
    /// Gives the connection back to the pool.
    pub(super) fn release(self) {
        self.pool.checkin(self.sender);
    }
}

/// What a request waiting on the budget got.
enum Admission {
    /// A permit to open a connection of its own.
    Open(OwnedSemaphorePermit),
    /// A connection another request gave back meanwhile.
    Reuse(Conn),
}

impl Pool {
    /// An empty pool that opens connections through `connector`, at most `max_connections` at
    /// once; a request waits `wait` at most for one to free up.
    pub(super) fn new(connector: Connector, max_connections: usize, wait: Duration) -> Self {
        let max_connections = max_connections.clamp(1, Semaphore::MAX_PERMITS);
        Pool {
            connector,
            idle: Mutex::new(VecDeque::new()),
            lean_idle: Mutex::new(VecDeque::new()),
            h2: Mutex::new(None),
            h2_seen: AtomicBool::new(false),
            h2_connect: tokio::sync::Mutex::new(()),
            reaper: AtomicBool::new(false),
            budget: Arc::new(Semaphore::new(max_connections)),
            max_connections,
            wait,
            returned: Notify::new(),
        }
    }

    /// A permit to open a connection, or an idle connection given back while waiting for one;
    /// [`UpstreamError::Busy`] when neither comes within the pool's wait.
    async fn admit(&self, lean: bool) -> Result<Admission, UpstreamError> {
        let deadline = tokio::time::Instant::now() + self.wait;
        loop {
            // Registered before looking at the stack, so that a connection given back between
            // the look and the wait still wakes this request.
            let returned = self.returned.notified();
            tokio::pin!(returned);
            returned.as_mut().enable();
            if let Some(conn) = self.checkout(lean) {
                return Ok(Admission::Reuse(conn));
            }
            if self.budget.available_permits() == 0 {
                // An idle connection of the other kind would hold its permit while this
                // request waits out the deadline: it closes, and its permit comes back.
                self.close_one_idle(!lean);
            }
            tokio::select! {
                permit = self.budget.clone().acquire_owned() => {
                    // The semaphore is never closed.
                    return permit.map(Admission::Open).map_err(|_| self.busy());
                }
                () = &mut returned => continue,
                () = tokio::time::sleep_until(deadline) => return Err(self.busy()),
            }
        }
    }

    fn busy(&self) -> UpstreamError {
        UpstreamError::Busy {
            max: self.max_connections,
            waited: self.wait,
        }
    }

    /// The shared HTTP/2 connection if one is open, else an idle HTTP/1.1 connection that is
    /// ready, lean for a request without a body (closed and expired ones are dropped on the way).
    pub(super) fn checkout(&self, lean: bool) -> Option<Conn> {
        if let Some(h2) = self.shared_h2() {
            return Some(Conn::H2(h2));
        }
        let now = Instant::now();
        if lean {
            loop {
                let Idle { mut conn, since } = crate::sync::lock(&self.lean_idle).pop_back()?;
                if !expired(false, since, now) && conn.is_open() {
                    return Some(Conn::Lean(conn));
                }
            }
        }
        loop {
            let idle = crate::sync::lock(&self.idle).pop_back()?;
            // Only ready connections are put back, so one that is not ready has closed since.
            if !idle.stale(now) && idle.conn.is_ready() {
                return Some(Conn::H1(idle.conn));
            }
        }
    }

    /// Closes the most recently used idle connection of one kind, if there is one.
    fn close_one_idle(&self, lean: bool) {
        if lean {
            drop(crate::sync::lock(&self.lean_idle).pop_back());
        } else {
            drop(crate::sync::lock(&self.idle).pop_back());
        }
    }

    /// A lean connection whose answer has been read to the end: back on its stack, unless the
    /// pool is full.
    pub(super) fn checkin_lean(&self, mut conn: Box<H1Conn>) {
        conn.reused = true;
        self.push_idle(&self.lean_idle, conn);
    }

    /// Lends an HTTP/1.1 connection to the response it has just received.
    pub(super) fn lease(self: &Arc<Self>, sender: http1::SendRequest<OutgoingBody>) -> Lease {
        Lease {
            sender,
            pool: self.clone(),
        }
    }

    /// The shared HTTP/2 connection, if one is open.
    fn shared_h2(&self) -> Option<http2::SendRequest<OutgoingBody>> {
        let mut slot = crate::sync::lock(&self.h2);
        match slot.as_mut() {
            Some(shared) if !shared.sender.is_closed() => {
                shared.last_used = Instant::now();
                Some(shared.sender.clone())
            }
            Some(_) => {
                *slot = None;
                None
            }
            None => None,
        }
    }

    /// An HTTP/1.1 connection whose response ended: back on the stack once it is ready for the
    /// next request, unless the pool is full. It is ready at once unless its request body is
    /// still being sent (an upstream that answered an upload early) or its task has not yet
    /// seen the end of the exchange: then a small task waits for that, so that no request ever
    /// queues behind someone else's upload.
    fn checkin(self: &Arc<Self>, mut sender: http1::SendRequest<OutgoingBody>) {
        if sender.is_ready() {
            self.push_idle(&self.idle, sender);
        } else if !sender.is_closed() {
            let pool = self.clone();
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.push_idle(&pool.idle, sender);
                }
            });
        }
    }

    /// Puts `conn` on the idle stack `stack` unless it is full, and wakes a request waiting for
    /// a connection.
    fn push_idle<C>(&self, stack: &Mutex<VecDeque<Idle<C>>>, conn: C) {
        let mut idle = crate::sync::lock(stack);
        if idle.len() < POOL_MAX_IDLE {
            idle.push_back(Idle {
                conn,
                since: Instant::now(),
            });
            drop(idle);
            self.returned.notify_one();
        }
    }

    /// Opens a connection: TCP, TLS where the URL is https, HTTP/2 if ALPN chose it, else a lean
    /// HTTP/1.1 one for a request without a body (`lean`) or hyper's. Once the
    /// upstream has spoken HTTP/2, one request at a time opens a connection and those waiting
    /// behind it share the result.
    pub(super) async fn connect(
        self: &Arc<Self>,
        uri: &Uri,
        lean: bool,
    ) -> Result<Conn, UpstreamError> {
        // The first connection, of either kind, starts the task that closes idle ones.
        if !self.reaper.swap(true, Ordering::Relaxed) {
            tokio::spawn(reap(Arc::downgrade(self)));
        }
        let _one_at_a_time = if self.h2_seen.load(Ordering::Relaxed) {
            let gate = self.h2_connect.lock().await;
            if let Some(h2) = self.shared_h2() {
                return Ok(Conn::H2(h2));
            }
            Some(gate)
        } else {
            None
        };
        let permit = match self.admit(lean).await? {
            Admission::Open(permit) => permit,
            Admission::Reuse(conn) => return Ok(conn),
        };
        let connect_failed = |e: &(dyn std::error::Error + 'static)| {
            UpstreamError::Unavailable(format!("connection failed ({})", innermost(e)))
        };
        let io = self
            .connector
            .clone()
            .call(uri.clone())
            .await
            .map_err(|e| connect_failed(&*e))?;
        if io.connected().is_negotiated_h2() {
            let (sender, connection) = http2::Builder::new(TokioExecutor::new())
                .timer(TokioTimer::new())
                .handshake(io)
                .await
                .map_err(|e| connect_failed(&e))?;
            run_connection(connection, permit);
            *crate::sync::lock(&self.h2) = Some(Shared {
                sender: sender.clone(),
                last_used: Instant::now(),
            });
            self.h2_seen.store(true, Ordering::Relaxed);
            Ok(Conn::H2(sender))
        } else if lean {
            Ok(Conn::Lean(H1Conn::new(TokioIo::new(io), permit)))
        } else {
            let (sender, connection) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|e| connect_failed(&e))?;
            run_connection(connection, permit);
            Ok(Conn::H1(sender))
        }
    }
}

/// Whether a pooled connection is done with: closed, or idle since `since` for
/// [`POOL_IDLE_TIMEOUT`] or more.
fn expired(closed: bool, since: Instant, now: Instant) -> bool {
    closed || now.duration_since(since) >= POOL_IDLE_TIMEOUT
}

/// A connection's own task: it reads answers and writes requests until the connection closes,
/// then gives its `permit` back to the budget.
fn run_connection<F>(connection: F, permit: OwnedSemaphorePermit)
where
    F: Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
        drop(permit);
    });
}

/// Every 30 s, closes the connections idle for [`POOL_IDLE_TIMEOUT`] or more; ends with the pool.
async fn reap(pool: std::sync::Weak<Pool>) {
    let mut every = tokio::time::interval(POOL_IDLE_TIMEOUT / 3);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let Some(pool) = pool.upgrade() else { return };
        let now = Instant::now();
        crate::sync::lock(&pool.idle).retain(|idle| !idle.stale(now));
        crate::sync::lock(&pool.lean_idle).retain(|idle| !expired(false, idle.since, now));
        let mut h2 = crate::sync::lock(&pool.h2);
        if h2
            .as_ref()
            .is_some_and(|shared| expired(shared.sender.is_closed(), shared.last_used, now))
        {
            // Requests in flight keep their clones; the connection closes after them.
            *h2 = None;
        }
    }
}
