//! The pooled HTTP client towards the Azure Costs API: hyper's connections over rustls (HTTP/2 by
//! ALPN where the upstream offers it), a pool of its own for the one upstream, connect and
//! response timeouts.

use std::collections::VecDeque;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::connect::{Connection, HttpConnector};
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tower_service::Service;

use crate::config;
use crate::error::ProxyError;

/// A request body sent upstream: the client's, streamed, or none (a request the proxy may replay).
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);
/// Idle HTTP/1.1 connections kept at most; more are closed when their response ends.
const POOL_MAX_IDLE: usize = 1024;

type Connector = HttpsConnector<HttpConnector>;

/// The upstream API client. Cheap to share; connections are pooled.
///
/// One upstream, one pool: a stack of idle HTTP/1.1 connections (the most recently used first,
/// warm in every cache) or one shared HTTP/2 connection when ALPN chose h2. Each connection is
/// driven by a task of its own. An HTTP/1.1 connection goes back to the pool when its response
/// body has been read to the end; a response dropped half-read closes it.
#[derive(Debug, Clone)]
pub struct Upstream {
    pool: Arc<Pool>,
    scheme: Scheme,
    authority: Authority,
    /// `Host` for HTTP/1.1 requests (HTTP/2 carries the authority in the URI).
    host: HeaderValue,
    base_path: String,
    timeout: Duration,
}

struct Pool {
    connector: Connector,
    idle: Mutex<VecDeque<Idle>>,
    h2: Mutex<Option<Shared>>,
    /// The upstream has spoken HTTP/2: connections are then opened one at a time, so that
    /// requests arriving together share one instead of each opening its own.
    h2_seen: AtomicBool,
    h2_connect: tokio::sync::Mutex<()>,
    /// The task that closes connections idle for [`POOL_IDLE_TIMEOUT`] runs.
    reaper: AtomicBool,
}

/// The HTTP/2 connection every request shares.
struct Shared {
    sender: http2::SendRequest<UpstreamBody>,
    last_used: Instant,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool").finish_non_exhaustive()
    }
}

struct Idle {
    sender: http1::SendRequest<UpstreamBody>,
    since: Instant,
}

impl Idle {
    fn stale(&self, now: Instant) -> bool {
        expired(self.sender.is_closed(), self.since, now)
    }
}

/// A connection ready for one request.
enum Conn {
    H1(http1::SendRequest<UpstreamBody>),
    H2(http2::SendRequest<UpstreamBody>),
}

impl Pool {
    /// The shared HTTP/2 connection if one is open, else an idle HTTP/1.1 connection that is
    /// ready (closed and expired ones are dropped on the way).
    fn checkout(&self) -> Option<Conn> {
        if let Some(h2) = self.shared_h2() {
            return Some(Conn::H2(h2));
        }
        let now = Instant::now();
        loop {
            let idle = crate::lock(&self.idle).pop_back()?;
            // Only ready connections are put back, so one that is not ready has closed since.
            if !idle.stale(now) && idle.sender.is_ready() {
                return Some(Conn::H1(idle.sender));
            }
        }
    }

    /// The shared HTTP/2 connection, if one is open.
    fn shared_h2(&self) -> Option<http2::SendRequest<UpstreamBody>> {
        let mut slot = crate::lock(&self.h2);
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
    fn checkin(self: &Arc<Self>, mut sender: http1::SendRequest<UpstreamBody>) {
        if sender.is_ready() {
            self.push_idle(sender);
        } else if !sender.is_closed() {
            let pool = self.clone();
            tokio::spawn(async move {
                if sender.ready().await.is_ok() {
                    pool.push_idle(sender);
                }
            });
        }
    }

    fn push_idle(&self, sender: http1::SendRequest<UpstreamBody>) {
        let mut idle = crate::lock(&self.idle);
        if idle.len() < POOL_MAX_IDLE {
            idle.push_back(Idle {
                sender,
                since: Instant::now(),
            });
        }
    }

    /// Opens a connection: TCP, TLS where the URL is https, HTTP/2 if ALPN chose it. Once the
    /// upstream has spoken HTTP/2, one request at a time opens a connection and those waiting
    /// behind it share the result.
    async fn connect(self: &Arc<Self>, uri: &Uri) -> Result<Conn, ProxyError> {
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
        let connect_failed = |e: &(dyn std::error::Error + 'static)| {
            ProxyError::UpstreamUnavailable(format!("connection failed ({})", innermost(e)))
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
            run_connection(connection);
            *crate::lock(&self.h2) = Some(Shared {
                sender: sender.clone(),
                last_used: Instant::now(),
            });
            self.h2_seen.store(true, Ordering::Relaxed);
            Ok(Conn::H2(sender))
        } else {
            let (sender, connection) = http1::Builder::new()
                .handshake(io)
                .await
                .map_err(|e| connect_failed(&e))?;
            run_connection(connection);
            Ok(Conn::H1(sender))
        }
    }
}

/// Whether a pooled connection is done with: closed, or idle since `since` for
/// [`POOL_IDLE_TIMEOUT`] or more.
fn expired(closed: bool, since: Instant, now: Instant) -> bool {
    closed || now.duration_since(since) >= POOL_IDLE_TIMEOUT
}

/// A connection's own task: it reads answers and writes requests until the connection closes.
fn run_connection<F>(connection: F)
where
    F: Future<Output = Result<(), hyper::Error>> + Send + 'static,
{
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended");
        }
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
        crate::lock(&pool.idle).retain(|idle| !idle.stale(now));
        let mut h2 = crate::lock(&pool.h2);
        if h2
            .as_ref()
            .is_some_and(|shared| expired(shared.sender.is_closed(), shared.last_used, now))
        {
            // Requests in flight keep their clones; the connection closes after them.
            *h2 = None;
        }
    }
}

impl Upstream {
    /// A client for the configured upstream.
    pub fn new(cfg: &config::UpstreamConfig, tls: rustls::ClientConfig) -> Result<Self, String> {
        let scheme = cfg
            .url
            .scheme()
            .cloned()
            .ok_or("upstream URL has no scheme")?;
        let authority = cfg
            .url
            .authority()
            .cloned()
            .ok_or("upstream URL has no host")?;
        // Like a browser: the port only when it is not the scheme's default.
        let default_port = if scheme == Scheme::HTTPS { 443 } else { 80 };
        let host = match authority.port_u16() {
            Some(port) if port != default_port => authority.as_str(),
            _ => authority.host(),
        };
        let host = HeaderValue::from_str(host)
            .map_err(|_| "upstream host cannot be sent as a Host header")?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        Ok(Upstream {
            pool: Arc::new(Pool {
                connector,
                idle: Mutex::new(VecDeque::new()),
                h2: Mutex::new(None),
                h2_seen: AtomicBool::new(false),
                h2_connect: tokio::sync::Mutex::new(()),
                reaper: AtomicBool::new(false),
            }),
            scheme,
            authority,
            host,
            base_path: cfg.base_path.clone(),
            timeout: cfg.timeout,
        })
    }

    /// Path prefix of the upstream URL ("" for the root).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The upstream URI for a path-and-query built by [`crate::routes::upstream_path_and_query`].
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        let pq = PathAndQuery::try_from(path_and_query)
            .map_err(|_| ProxyError::BadRequest("the request path cannot be forwarded"))?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| ProxyError::BadRequest("the request path cannot be forwarded"))
    }

    /// Time allowed for the response head and for each gap in the response body.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request (absolute URI from [`Self::uri`]) and waits for the response head, at most
    /// `upstream.timeout`, connecting included.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, ProxyError> {
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(ProxyError::UpstreamTimeout(self.timeout)),
        }
    }

    async fn exchange(
        &self,
        mut request: Request<UpstreamBody>,
    ) -> Result<Response<PooledBody>, ProxyError> {
        // A pooled connection the upstream has just closed gives the request back unsent; it
        // then goes on a new connection. A request that was sent is never sent twice here.
        let mut fresh = false;
        loop {
            let conn = match self.pool.checkout() {
                Some(conn) => conn,
                None => {
                    fresh = true;
                    self.pool.connect(request.uri()).await?
                }
            };
            let result = match conn {
                Conn::H2(mut sender) => {
                    request.headers_mut().remove(header::HOST);
                    *request.version_mut() = Version::HTTP_2;
                    sender
                        .try_send_request(request)
                        .await
                        .map(|r| r.map(|b| PooledBody::new(b, None)))
                }
                Conn::H1(mut sender) => {
                    request
                        .headers_mut()
                        .insert(header::HOST, self.host.clone());
                    *request.version_mut() = Version::HTTP_11;
                    origin_form(request.uri_mut());
                    match sender.try_send_request(request).await {
                        Ok(r) => {
                            let lease = Lease {
                                sender,
                                pool: self.pool.clone(),
                            };
                            Ok(r.map(|b| PooledBody::new(b, Some(lease))))
                        }
                        Err(e) => Err(e),
                    }
                }
            };
            match result {
                Ok(response) => return Ok(response),
                Err(mut e) => match e.take_message() {
                    Some(mut unsent) if !fresh => {
                        // Back to the absolute form for the next connection, whichever it is.
                        *unsent.uri_mut() = self.absolute(unsent.uri())?;
                        request = unsent;
                    }
                    _ => {
                        return Err(ProxyError::UpstreamUnavailable(format!(
                            "request failed ({})",
                            innermost(e.error())
                        )));
                    }
                },
            }
        }
    }

    fn absolute(&self, uri: &Uri) -> Result<Uri, ProxyError> {
        self.uri(uri.path_and_query().map_or("/", PathAndQuery::as_str))
    }
}

/// HTTP/1.1 sends the origin form (`/path?query`); `Host` names the authority.
fn origin_form(uri: &mut Uri) {
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *uri = Uri::from(pq);
}

/// Returns an HTTP/1.1 connection to the pool when the response body has been read to the end.
struct Lease {
    sender: http1::SendRequest<UpstreamBody>,
    pool: Arc<Pool>,
}

/// An upstream response body. Its connection goes back to the pool when it has been read to the
/// end, and is closed when it is dropped before.
pub struct PooledBody {
    inner: Incoming,
    lease: Option<Lease>,
}

impl PooledBody {
    fn new(inner: Incoming, lease: Option<Lease>) -> Self {
        PooledBody { inner, lease }
    }

    fn release(&mut self) {
        if let Some(lease) = self.lease.take() {
            lease.pool.checkin(lease.sender);
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.inner.is_end_stream() {
            self.release();
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        if let Poll::Ready(None) = polled {
            this.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The innermost cause of an error: short and secret-free ("Connection refused", "invalid peer
/// certificate: UnknownIssuer").
fn innermost(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}
