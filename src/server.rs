//! The accept loop: HTTP/1.1 and HTTP/2 on one port (the lean HTTP/1.1 server of `http1/`
//! first, handing to hyper-util's auto builder what it does not serve: h2c in the clear, ALPN
//! over TLS, requests with a body), the optional TLS handshake, header limits and timeouts, a cap on
//! concurrent connections, idle connections closed, and a bounded graceful drain on shutdown.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytes::BytesMut;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::time::Instant;

use crate::http1::{self, Engine, Prefixed};
use crate::inbound::PeerNames;
use crate::live::Live;
use crate::metrics::Metrics;
use crate::respond::Refused;

/// Largest request head accepted: 64 KiB, answered with 431 above (README, "Errors the proxy
/// returns itself").
pub(crate) const MAX_HEADER_BYTES: usize = 64 * 1024;
/// Most header lines in a request head: as many as fit in [`MAX_HEADER_BYTES`] (the shortest
/// line, `a:` and CRLF, is 4 bytes), so that the byte limit is the one that binds. hyper's
/// default of 100 answered 431 to 101 small headers of about 1 KB.
const MAX_HEADERS: usize = MAX_HEADER_BYTES / 4;
/// Time a client has to send a complete request head (slowloris guard). It also bounds the wait
/// for the first request on a new connection, whatever protocol the client pretends to speak.
pub(crate) const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// A connection with no new request for this long is closed (requests in flight finish first).
/// HTTP/1 keep-alive connections are closed sooner, by [`HEADER_READ_TIMEOUT`].
pub(crate) const IDLE_TIMEOUT: Duration = Duration::from_secs(60);

/// Most concurrent streams an HTTP/2 client may open on one connection (README, "Data plane").
pub(crate) const MAX_CONCURRENT_STREAMS: u32 = 100;
/// An HTTP/2 connection quiet for this long gets a PING...
const H2_PING_INTERVAL: Duration = Duration::from_secs(8);
/// ...and is closed if the answer takes longer than this: a client that stops answering is gone
/// within 18 s (the contract says 20), not holding its slot.
const H2_PING_TIMEOUT: Duration = Duration::from_secs(10);

/// The connection builder with the proxy's limits.
fn builder() -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_HEADER_BYTES)
        .max_headers(MAX_HEADERS)
        .keep_alive(true);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_header_list_size(MAX_HEADER_BYTES as u32)
        .max_concurrent_streams(MAX_CONCURRENT_STREAMS)
        .keep_alive_interval(H2_PING_INTERVAL)
        .keep_alive_timeout(H2_PING_TIMEOUT);
    builder
}

/// Serves `listener` until `shutdown` resolves, then stops accepting and lets in-flight requests
/// finish for up to the config's `shutdown_grace`. Each request takes the proxy current when it
/// arrives, so a reload applies to new requests on open connections too.
pub(crate) async fn serve(
    listener: TcpListener,
    live: Arc<Live>,
    engine: Engine,
    shutdown: impl Future<Output = ()>,
) {
    let builder = (builder(), engine);
    // Connections beyond the cap wait in the kernel's listen backlog until one closes: those in
    // flight keep their memory and file descriptors.
    let max_connections = live.max_connections();
    let slots = Arc::new(Semaphore::new(max_connections));
    let (stop, stopping) = watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => match permit {
                Ok(p) => p,
                Err(_) => break,
            },
            () = &mut shutdown => break,
        };
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(conn) => conn,
                Err(e) => {
                    // Out of file descriptors and the like: keep serving those already open,
                    // and do not spin.
                    tracing::warn!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = &mut shutdown => break,
        };
        if let Err(e) = stream.set_nodelay(true) {
            tracing::debug!(error = %e, "set_nodelay failed");
        }
        let builder = builder.clone();
        let live = live.clone();
        let stopping = stopping.clone();
        let opened = Instant::now();
        match live.proxy().tls().cloned() {
            None => {
                tokio::spawn(serve_connection(
                    builder, stream, None, opened, live, stopping, permit,
                ));
            }
            Some(acceptor) => {
                tokio::spawn(async move {
                    // The handshake counts against the head timeout: a client that connects and
                    // says nothing holds its slot no longer than one that sends half a request.
                    match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                        Ok(Ok(tls)) => {
                            let names = client_certificate(&tls);
                            serve_connection(builder, tls, names, opened, live, stopping, permit)
                                .await;
                        }
                        Ok(Err(e)) => tracing::debug!(%peer, error = %e, "TLS handshake failed"),
                        Err(_) => tracing::debug!(%peer, "TLS handshake timed out"),
                    }
                });
            }
        }
        tracing::trace!(%peer, "connection accepted");
    }

    drop(listener);
    tracing::info!("no longer accepting connections; draining");
    let _ = stop.send(true);
    let grace = live.shutdown_grace();
    // Every connection holds a permit until it has closed: all permits back means all closed.
    let all = u32::try_from(max_connections).unwrap_or(u32::MAX);
    match tokio::time::timeout(grace, slots.acquire_many(all)).await {
        Ok(_) => tracing::info!("all connections closed"),
        Err(_) => tracing::warn!(
            grace_s = grace.as_secs_f64(),
            "shutdown grace period over; closing the remaining connections"
        ),
    }
}

/// The names of the client certificate the handshake verified: they name the client for every
/// request of the connection.
fn client_certificate<S>(tls: &tokio_rustls::server::TlsStream<S>) -> Option<Arc<PeerNames>> {
    PeerNames::of_chain(tls.get_ref().1.peer_certificates()).map(Arc::new)
}

/// Why hyper refused a request head itself, if that is how the connection ended: it answered
/// 400 (`malformed`) or 431 (`too_large`) without asking the proxy, or closed a head that did
/// not arrive in time (`timeout`). hyper-util's auto builder hands back hyper's own error.
fn rejected_head(e: &(dyn std::error::Error + 'static)) -> Option<&'static str> {
    let e = e.downcast_ref::<hyper::Error>()?;
    if e.is_parse_too_large() {
        Some("too_large")
    } else if e.is_parse() {
        Some("malformed")
    } else if e.is_timeout() {
        Some("timeout")
    } else {
        None
    }
}

/// Serves a connection on the lean HTTP/1.1 server first (unless `engine` says hyper's alone):
/// `None` when that closed it, else what hyper needs to go on: the bytes read and not used, and
/// whether requests were served.
async fn lean_first<S>(
    engine: Engine,
    stream: &mut S,
    (live, peer, opened): (&Arc<Live>, Option<&PeerNames>, Instant),
    stopping: &mut watch::Receiver<bool>,
) -> Option<(BytesMut, bool)>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let conn = http1::Connection {
        live,
        peer,
        opened,
        stopping,
        head_timeout: HEADER_READ_TIMEOUT,
        max_head: MAX_HEADER_BYTES,
    };
    match engine {
        Engine::Hyper => Some((BytesMut::new(), false)),
        Engine::Lean => match http1::serve(stream, conn).await {
            http1::Ended::HandOff { read, served } => Some((read, served)),
            http1::Ended::Closed => None,
        },
    }
}

/// Counts a connection in the `connections_open` gauge while it lives.
struct OpenConnection(Arc<Metrics>);

impl OpenConnection {
    fn new(metrics: Arc<Metrics>) -> Self {
        metrics.connections(1);
        OpenConnection(metrics)
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.connections(-1);
    }
}

/// Serves one connection until it ends, goes idle, or shutdown asks it to finish what is in
/// flight and close. `peer`: the names of its verified client certificate. `opened`: when it
/// was accepted (before any TLS handshake). `_permit` is its connection slot.
async fn serve_connection<S>(
    (builder, engine): (auto::Builder<TokioExecutor>, Engine),
    mut stream: S,
    peer: Option<Arc<PeerNames>>,
    opened: Instant,
    live: Arc<Live>,
    mut stopping: watch::Receiver<bool>,
    _permit: OwnedSemaphorePermit,
) where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let metrics = live.metrics().clone();
    let _open = OpenConnection::new(metrics.clone());
    let lean = (&live, peer.as_deref(), opened);
    let Some((read, served)) = lean_first(engine, &mut stream, lean, &mut stopping).await else {
        return;
    };
    // Milliseconds after `opened` at which the last admitted request arrived; u64::MAX: none yet.
    let last_request = Arc::new(AtomicU64::new(if served {
        opened.elapsed().as_millis() as u64
    } else {
        u64::MAX
    }));
    let seen = last_request.clone();
    let service = service_fn(move |request: hyper::Request<Incoming>| {
        let now = opened.elapsed().as_millis() as u64;
        let before = seen.swap(now, Ordering::Relaxed);
        let proxy = live.proxy();
        let seen = seen.clone();
        let peer = peer.clone();
        async move {
            let mut response = proxy.handle(request.map(Into::into), peer.as_deref()).await;
            crate::body::with_fields(&mut response);
            if response.extensions().get::<Refused>().is_some() {
                // A refused client (no key, foreign Host) cannot keep a slot by asking again.
                let _ = seen.compare_exchange(now, before, Ordering::Relaxed, Ordering::Relaxed);
            }
            Ok::<_, Infallible>(response)
        }
    });
    let connection = builder.serve_connection(TokioIo::new(Prefixed::new(read, stream)), service);
    tokio::pin!(connection);

    // Until the first request: HEADER_READ_TIMEOUT from the connection's start; afterwards
    // IDLE_TIMEOUT after the latest request.
    let idle_deadline = |last: u64| match last {
        u64::MAX => opened + HEADER_READ_TIMEOUT,
        ms => opened + Duration::from_millis(ms) + IDLE_TIMEOUT,
    };
    let timer = tokio::time::sleep_until(idle_deadline(u64::MAX));
    tokio::pin!(timer);
    let mut closing = false;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    if let Some(reason) = rejected_head(&*e) {
                        metrics.rejected_head(reason);
                    }
                    tracing::debug!(error = %e, "connection ended with an error");
                }
                return;
            }
            _ = stopping.wait_for(|s| *s), if !closing => {
                connection.as_mut().graceful_shutdown();
                closing = true;
            }
            () = &mut timer, if !closing => {
                let deadline = idle_deadline(last_request.load(Ordering::Relaxed));
                if Instant::now() >= deadline {
                    tracing::debug!("closing an idle connection");
                    connection.as_mut().graceful_shutdown();
                    closing = true;
                } else {
                    timer.as_mut().reset(deadline);
                }
            }
        }
    }
}
