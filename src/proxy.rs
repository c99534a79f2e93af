//! One request, top to bottom: inbound checks -> route -> token -> rewrite -> forward -> response.

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::{Method, Request, Response, StatusCode, Version};
use http_body::Body as _;
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use tokio_rustls::TlsAcceptor;

use crate::access_log::AccessLog;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::headers::{self, RequestIds};
use crate::inbound::ApiKeys;
use crate::inbound::host::{host_of, normalize_host};
use crate::metrics::Metrics;
use crate::respond;
use crate::routes::{self, RouteTable};
use crate::token::TokenSource;
use crate::upstream::{PooledBody, Upstream};

/// Whether a request may be sent twice: a safe method and no body.
fn is_replayable(method: &Method, body: &Incoming) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && body.is_end_stream()
}

/// Names the `Host` header may carry (DNS-rebinding guard): a web page that resolves its own name
/// to 127.0.0.1 still sends its own name as `Host`, and is refused.
#[derive(Debug)]
pub struct HostGuard {
    any: bool,
    names: Vec<String>,
}

impl HostGuard {
    /// localhost, 127.0.0.1, [::1], the listen address and the configured extra names.
    pub fn new(listen: SocketAddr, allowed: &[String]) -> Self {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        names.push(listen.ip().to_string());
        names.extend(allowed.iter().map(|h| normalize_host(h)));
        HostGuard {
            any: allowed.iter().any(|h| h == "*"),
            names,
        }
    }

    /// [`Self::accepts`] for a raw header value: one that is not UTF-8 names no configured host.
    pub fn accepts_bytes(&self, authority: &[u8]) -> bool {
        self.any || std::str::from_utf8(authority).is_ok_and(|a| self.accepts(a))
    }

    /// Whether an authority (`host[:port]`, `[v6]:port`) names this proxy.
    pub fn accepts(&self, authority: &str) -> bool {
        if self.any {
            return true;
        }
        let host = host_of(authority);
        self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }
}

/// Who may talk to the proxy: the `Host` guard, the API keys and the TLS server side.
pub struct Inbound {
    /// The DNS-rebinding guard.
    pub hosts: HostGuard,
    /// `listen.api_keys`.
    pub keys: ApiKeys,
    /// `[listen.tls]`: new connections are TLS handshakes with this configuration.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for Inbound {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Inbound")
            .field("hosts", &self.hosts)
            .field("keys", &self.keys)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

/// Everything one request needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    routes: RouteTable,
    tokens: TokenSource,
    upstream: Upstream,
    inbound: Inbound,
    ids: RequestIds,
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// Assembles the request path from its parts.
    pub fn new(
        routes: RouteTable,
        tokens: TokenSource,
        upstream: Upstream,
        inbound: Inbound,
        metrics: Arc<Metrics>,
    ) -> Self {
        Proxy {
            routes,
            tokens,
            upstream,
            inbound,
            ids: RequestIds::default(),
            metrics,
        }
    }

    /// The metrics requests are counted in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The route table.
    pub fn routes(&self) -> &RouteTable {
        &self.routes
    }

    /// The token source.
    pub fn tokens(&self) -> &TokenSource {
        &self.tokens
    }

    /// The TLS acceptor new connections go through, when `[listen.tls]` is set.
    pub fn tls(&self) -> Option<&TlsAcceptor> {
        self.inbound.tls.as_ref()
    }

    /// Handles one request. Never fails: errors become JSON answers.
    pub async fn handle(&self, request: Request<Incoming>) -> Response<ProxyBody> {
        let request_id = self.ids.for_request(request.headers());
        let mut log = AccessLog::new(&request, request_id.clone(), self.metrics.clone());
        match self.forward(request, &request_id, &mut log).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                headers::rewrite_response(&mut parts.headers, &request_id);
                // hyper writes the version of the client's connection, whatever the upstream spoke.
                parts.version = Version::default();
                log.answered(parts.status);
                let body = ProxyBody::upstream(body, self.upstream.timeout(), Some(log));
                Response::from_parts(parts, body)
            }
            Err(e) => {
                let (status, code) = respond::status_and_code(&e);
                if status.is_server_error() && !matches!(e, ProxyError::Token(_)) {
                    // Token failures are logged once per STS call by the token source.
                    tracing::warn!(request_id = request_id.to_str().unwrap_or("-"), code, "{e}");
                }
                respond::error_response(e, &request_id, Some(log))
            }
        }
    }

    async fn forward(
        &self,
        request: Request<Incoming>,
        request_id: &HeaderValue,
        log: &mut AccessLog,
    ) -> Result<Response<PooledBody>, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let (route, upstream_uri) = self.plan(&parts)?;
        log.route(route.prefix.clone());

        let mut key = route.token_key();
        if let Some(transactions) = &route.transactions {
            let entered = transactions.enter(&parts.headers);
            for ended in entered.ended {
                self.tokens.forget(&key.for_transaction(ended)).await;
            }
            key = key.for_transaction(entered.id);
            log.hold(entered.activity);
        }
        let token = self.tokens.get(&key, route.token_mode).await?;
        if let Some(transactions) = &route.transactions
            && let Some(id) = key.transaction
            && !transactions.is_ongoing(id)
        {
            // The transaction ended while its token was fetched: this request still uses the
            // token, but the cache must not keep it.
            self.tokens.forget(&key).await;
        }

        parts.uri = upstream_uri;
        headers::rewrite_request(&mut parts.headers, token.bearer(), request_id);
        if !is_replayable(&parts.method, &body) {
            return Ok(self
                .upstream
                .send(Request::from_parts(parts, Either::Left(body)))
                .await?);
        }

        // A request without a body can be sent again if the upstream refuses the token (revoked,
        // or permissions changed since it was issued).
        let replay = (
            parts.method.clone(),
            parts.uri.clone(),
            parts.headers.clone(),
        );
        let response = self
            .upstream
            .send(Request::from_parts(parts, Either::Right(Empty::new())))
            .await?;
        if response.status() != StatusCode::UNAUTHORIZED || !self.tokens.refused(&key, &token).await
        {
            return Ok(response);
        }
        drop(response);
        tracing::info!(
            request_id = request_id.to_str().unwrap_or("-"),
            route = %route.prefix,
            credential = %key.credential,
            delegate = key.delegate.as_deref().unwrap_or("-"),
            "the upstream refused the token (401); retrying once with a fresh one"
        );
        log.retried();
        self.metrics.token_retry(&route.prefix);
        let fresh = self.tokens.get(&key, route.token_mode).await?;
        let (method, uri, mut headers) = replay;
        headers.insert(header::AUTHORIZATION, fresh.bearer().clone());
        let mut again = Request::new(Either::Right(Empty::new()));
        *again.method_mut() = method;
        *again.uri_mut() = uri;
        *again.headers_mut() = headers;
        Ok(self.upstream.send(again).await?)
    }

    /// The synchronous half of a request: every inbound check (CONNECT, target and `Host`, API
    /// key, dot segments), then the route and the upstream URI the request goes to. Nothing here
    /// waits or allocates a token; the fuzz target `request` drives it.
    pub fn plan(
        &self,
        parts: &http::request::Parts,
    ) -> Result<(&Arc<routes::Route>, http::Uri), ProxyError> {
        if parts.method == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
        self.check_target(parts)?;
        if !self.inbound.keys.admit(&parts.headers) {
            return Err(ProxyError::Unauthorized);
        }
        let path = parts.uri.path();
        if routes::has_dot_segment(path) {
            return Err(ProxyError::BadRequest(
                "the path holds a `.` or `..` segment; send a normalised path",
            ));
        }
        let (route, rest) = self.routes.find(path).ok_or(ProxyError::NoRoute)?;
        let upstream_pq = routes::upstream_path_and_query(
            self.upstream.base_path(),
            &route.upstream_path,
            rest,
            parts.uri.query(),
        );
        Ok((route, self.upstream.uri(&upstream_pq)?))
    }

    /// The DNS-rebinding guard and the absolute-form rule: the token goes only to the configured
    /// upstream, whatever the request names.
    fn check_target(&self, request: &http::request::Parts) -> Result<(), ProxyError> {
        let uri_authority = request.uri.authority().map(|a| a.as_str());
        if request.version < Version::HTTP_2
            && let Some(authority) = uri_authority
            && !self.inbound.hosts.accepts(authority)
        {
            return Err(ProxyError::ForbiddenTarget);
        }
        // HTTP/2 carries the host in :authority; HTTP/1 in Host.
        let host = match uri_authority {
            Some(a) if request.version >= Version::HTTP_2 => Some(a.as_bytes()),
            _ => request.headers.get(header::HOST).map(HeaderValue::as_bytes),
        };
        match host {
            Some(h) if !self.inbound.hosts.accepts_bytes(h) => {
                let shown: String = String::from_utf8_lossy(h).chars().take(100).collect();
                Err(ProxyError::ForbiddenHost(shown))
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_guard_accepts_loopback_names_and_configured_ones() {
        let g = HostGuard::new("127.0.0.1:8080".parse().unwrap(), &["bi.internal".into()]);
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:1",
            "127.0.0.1:8080",
            "[::1]:8080",
            "bi.internal",
            "bi.internal.:80",
        ] {
            assert!(g.accepts(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.2",
        ] {
            assert!(!g.accepts(bad), "{bad}");
        }
        let any = HostGuard::new("127.0.0.1:8080".parse().unwrap(), &["*".into()]);
        assert!(any.accepts("evil.example"));
        // Raw header values: not UTF-8 names nothing, unless any name is allowed.
        assert!(g.accepts_bytes(b"LOCALHOST:8080"));
        assert!(!g.accepts_bytes(b"local\xffhost"));
        assert!(any.accepts_bytes(b"local\xffhost"));
    }
}
