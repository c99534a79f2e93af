//! The pooled HTTP client towards one origin (the Azure Costs API, or the STS): hyper's
//! connections over rustls (HTTP/2 by ALPN where the origin offers it), a pool of its own for the
//! one origin, connect and response timeouts. This file is the client (requests in, response
//! heads out); `egress.rs` says how the origin is reached, `connect.rs` opens the connections
//! (directly or through the outbound proxy), `pool.rs` holds them, `pooled_body.rs` is the
//! response body that gives its connection back.

mod connect;
mod egress;
mod error;
mod framing;
mod h1;
mod pool;
mod pooled_body;

use std::sync::Arc;
use std::time::Duration;

use http::header::{self, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Method, Request, Response, Uri, Version};
use http_body::Body as _;
use hyper_util::client::legacy::connect::HttpConnector;

pub(crate) use egress::{Egress, ProxyEndpoint};
pub(crate) use error::UpstreamError;
pub(crate) use pool::OutgoingBody;
pub(crate) use pooled_body::PooledBody;

use crate::cause::innermost;
use crate::host::default_port;
use h1::{ExchangeError, H1Conn, Head};
use pool::{Conn, Pool};

/// The timeouts and the connection budget of an [`Upstream`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// For each response head and each gap in a response body.
    pub timeout: Duration,
    /// For TCP and TLS (and the outbound proxy's tunnel); also the longest a request waits for
    /// a connection when all `max_connections` are busy.
    pub connect_timeout: Duration,
    /// Connections open at once, busy or idle (HTTP/2 multiplexes on one).
    pub max_connections: usize,
}

/// What an [`Upstream`] is built from: the origin, its limits and the way there.
#[derive(Debug, Clone, PartialEq)]
pub struct OriginConfig {
    /// Scheme and authority of the origin; its path is the base path of every request.
    pub url: Uri,
    /// Timeouts and the connection budget.
    pub limits: Limits,
    /// Direct, or through the outbound proxy.
    pub egress: Egress,
}

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

impl Upstream {
    /// A client for the origin of `config` (the API, or the STS), trusting the roots of `tls`.
    pub fn new(config: &OriginConfig, tls: &Arc<rustls::ClientConfig>) -> Result<Self, String> {
        let OriginConfig {
            url,
            limits,
            egress,
        } = config;
        let Limits {
            timeout,
            connect_timeout,
            max_connections,
        } = *limits;
        let scheme = url.scheme().cloned().ok_or("the URL has no scheme")?;
        let authority = url.authority().cloned().ok_or("the URL has no host")?;
        // Like a browser: the port only when it is not the scheme's default.
        let host = match authority.port_u16() {
            Some(port) if port != default_port(Some(&scheme)) => authority.as_str(),
            _ => authority.host(),
        };
        let host = HeaderValue::from_str(host)
            .map_err(|_| "upstream host cannot be sent as a Host header")?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let via = match egress {
            Egress::Direct(_) => None,
            Egress::Via(proxy) => Some(proxy.clone()),
        };
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(rustls::ClientConfig::clone(tls))
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(connect::Connector::new(http, via, connect_timeout));
        Ok(Upstream {
            pool: Arc::new(Pool::new(connector, max_connections, connect_timeout)),
            scheme,
            authority,
            host,
            base_path: url.path().trim_end_matches('/').to_string(),
            timeout,
        })
    }

    /// Path prefix of the upstream URL ("" for the root).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The upstream URI for a path-and-query built by [`crate::routes::upstream_path_and_query`].
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, UpstreamError> {
        let pq = PathAndQuery::try_from(path_and_query).map_err(|_| UpstreamError::InvalidPath)?;
        self.uri_with(pq)
    }

    /// The upstream URI for a path-and-query already parsed (the request's own, sent as it
    /// came).
    pub fn uri_with(&self, path_and_query: PathAndQuery) -> Result<Uri, UpstreamError> {
        let mut parts = http::uri::Parts::default();
        parts.scheme = Some(self.scheme.clone());
        parts.authority = Some(self.authority.clone());
        parts.path_and_query = Some(path_and_query);
        Uri::from_parts(parts).map_err(|_| UpstreamError::InvalidPath)
    }

    /// Time allowed for the response head and for each gap in the response body.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request (absolute URI from [`Self::uri`]) and waits for the response head, at most
    /// `upstream.timeout`, connecting included.
    pub async fn send(
        &self,
        request: Request<OutgoingBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        let mut response = self.send_raw(request).await?;
        if let Some(fields) = response.body_mut().take_fields() {
            *response.headers_mut() = fields.to_map(false);
        }
        Ok(response)
    }

    /// [`Self::send`], but an answer read on a lean connection keeps its header fields as they
    /// came, in its body ([`PooledBody::take_fields`]), and its header map is empty: the request
    /// path forwards them without building a map.
    pub async fn send_raw(
        &self,
        request: Request<OutgoingBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        match tokio::time::timeout(self.timeout, self.exchange(request)).await {
            Ok(result) => result,
            Err(_) => Err(UpstreamError::Timeout(self.timeout)),
        }
    }

    async fn exchange(
        &self,
        mut request: Request<OutgoingBody>,
    ) -> Result<Response<PooledBody>, UpstreamError> {
        // A pooled connection the upstream has just closed gives the request back unsent; it
        // then goes on a new connection. A request that was sent is never sent twice here, but
        // one without a body and of an idempotent method, whose pooled lean connection closed
        // before a byte of answer came (closed by the upstream while idle, just before the
        // request), goes once more on a new connection, as nginx and browsers do.
        let lean = request.body().is_end_stream();
        let mut fresh = false;
        let mut retried = false;
        loop {
            let pooled = if fresh {
                None
            } else {
                self.pool.checkout(lean)
            };
            let conn = match pooled {
                Some(conn) => conn,
                None => {
                    fresh = true;
                    // Boxed: connecting (TCP, a tunnel, TLS) is a large state that most
                    // requests never enter; inline, every request's future would carry it.
                    Box::pin(self.pool.connect(request.uri(), lean)).await?
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
                Conn::Lean(conn) => match (conn.reused, self.send_lean(conn, &request).await) {
                    (true, Err(ExchangeError::Closed(_)))
                        if idempotent(request.method()) && !retried =>
                    {
                        retried = true;
                        fresh = true;
                        continue;
                    }
                    (_, Err(ExchangeError::Closed(e))) => {
                        return Err(UpstreamError::Unavailable(format!(
                            "request failed ({})",
                            innermost(&e)
                        )));
                    }
                    (_, Err(ExchangeError::Failed(message))) => {
                        return Err(UpstreamError::Unavailable(message));
                    }
                    (_, Ok(response)) => return Ok(response),
                },
                Conn::H1(sender) => self.send_h1(sender, request).await,
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
                        return Err(UpstreamError::Unavailable(format!(
                            "request failed ({})",
                            innermost(e.error())
                        )));
                    }
                },
            }
        }
    }

    /// Sends a request on a connection of hyper's HTTP/1.1 client; the connection goes with
    /// the answer's body.
    async fn send_h1(
        &self,
        mut sender: hyper::client::conn::http1::SendRequest<OutgoingBody>,
        mut request: Request<OutgoingBody>,
    ) -> Result<Response<PooledBody>, hyper::client::conn::TrySendError<Request<OutgoingBody>>>
    {
        request
            .headers_mut()
            .insert(header::HOST, self.host.clone());
        *request.version_mut() = Version::HTTP_11;
        origin_form(request.uri_mut());
        let response = sender.try_send_request(request).await?;
        let lease = self.pool.lease(sender);
        Ok(response.map(|b| PooledBody::new(b, Some(lease))))
    }

    /// Sends a request without a body on a lean connection; the connection goes with the
    /// answer's body.
    async fn send_lean(
        &self,
        mut conn: Box<H1Conn>,
        request: &Request<OutgoingBody>,
    ) -> Result<Response<PooledBody>, ExchangeError> {
        let pq = request
            .uri()
            .path_and_query()
            .map_or("/", PathAndQuery::as_str);
        let head = conn
            .exchange(request.method(), pq, &self.host, request.headers())
            .await?;
        Ok(self.lean_response(conn, head))
    }

    /// The answer read from a lean connection; the connection goes with its body.
    fn lean_response(&self, conn: Box<H1Conn>, head: Head) -> Response<PooledBody> {
        let Head {
            status,
            version,
            fields,
            framing,
            keep_alive,
        } = head;
        let body = PooledBody::lean(conn, (framing, keep_alive), fields, self.pool.clone());
        let mut response = Response::new(body);
        *response.status_mut() = status;
        *response.version_mut() = version;
        response
    }

    fn absolute(&self, uri: &Uri) -> Result<Uri, UpstreamError> {
        self.uri(uri.path_and_query().map_or("/", PathAndQuery::as_str))
    }
}

/// Whether a request may be sent twice (RFC 9110 section 9.2.2).
fn idempotent(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// HTTP/1.1 sends the origin form (`/path?query`); `Host` names the authority.
fn origin_form(uri: &mut Uri) {
    let pq = uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    *uri = Uri::from(pq);
}
