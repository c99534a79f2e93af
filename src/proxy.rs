//! One request, top to bottom: inbound checks -> route -> token -> rewrite -> forward -> response.

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
use crate::inbound::InboundPolicy;
use crate::metrics::Metrics;
use crate::respond;
use crate::routes::{self, RouteTable};
use crate::token::TokenSource;
use crate::upstream::{PooledBody, Upstream};

/// Whether a request may be sent twice: a safe method and no body.
fn is_replayable(method: &Method, body: &Incoming) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) && body.is_end_stream()
}

/// Everything one request needs, shared by all connections.
#[derive(Debug)]
pub struct Proxy {
    routes: RouteTable,
    tokens: TokenSource,
    upstream: Upstream,
    inbound: InboundPolicy,
    ids: RequestIds,
    metrics: Arc<Metrics>,
}

impl Proxy {
    /// Assembles the request path from its parts.
    pub fn new(
        routes: RouteTable,
        tokens: TokenSource,
        upstream: Upstream,
        inbound: InboundPolicy,
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
        self.inbound.check(parts)?;
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
}
