//! One request, as phases in order: inbound checks -> route -> client scopes and limits ->
//! cool-down -> coalescing -> route queue -> token -> rewrite -> forward -> retry on refusal ->
//! rate limit -> response. [`Proxy::handle`] reads as that list; each phase is a function
//! below it, in the same order.

use std::sync::Arc;
use std::time::Duration;

use http::header::{HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Request, Response, Uri, Version};
use http_body_util::{Either, Full};
use tokio_rustls::TlsAcceptor;
use tracing::{Instrument as _, Span};

use crate::access_log::AccessLog;
use crate::body::ProxyBody;
use crate::coalesce::{self, Boarding, Flights, Lead, Recorder, SharedAnswer};
use crate::cooldown::Cooldowns;
use crate::error::ProxyError;
use crate::headers::{self, RequestIds, XCache};
use crate::inbound::{Client, HostGuard, InboundPolicy, PeerNames};
use crate::metrics::Metrics;
use crate::replay::Replay;
use crate::request_body::{BodyWatch, ClientBody, InboundBody};
use crate::respond;
use crate::routes::{self, Route, RouteTable, TeamRefusal};
use crate::token::{Token, TokenKey, TokenSource};
use crate::transaction::Transactions;
use crate::upstream::{OutgoingBody, PooledBody, Upstream, UpstreamError};

impl Proxy {
    /// Handles one request; `peer`: the names of its connection's verified client certificate.
    /// Never fails: errors become JSON answers.
    pub async fn handle(
        &self,
        request: Request<InboundBody>,
        peer: Option<&PeerNames>,
    ) -> Response<ProxyBody> {
        let request_id = self.ids.for_request(request.headers());
        let mut log = AccessLog::new(&request, request_id.clone(), self.metrics.clone());
        // Lines logged inside the request carry its span (request id, method, route) without
        // passing them by hand. With debug logging on, the span covers the whole request, so the
        // token source's and hyper's lines carry it too; otherwise it is made only when a line
        // needs it (it is not free: see `AccessLog::span`).
        let span = if tracing::enabled!(tracing::Level::DEBUG) {
            log.span().clone()
        } else {
            Span::none()
        };
        async move {
            let answer = self.phases(request, peer, &request_id, &mut log).await;
            // The last step comes after this returns: the response body takes `log` and writes
            // the access line and the request metrics when it ends or is dropped.
            self.response(answer, &request_id, log)
        }
        .instrument(span)
        .await
    }

    /// The phases up to the upstream's answer, in order; the first that fails ends the request
    /// with its error.
    async fn phases(
        &self,
        request: Request<InboundBody>,
        peer: Option<&PeerNames>,
        request_id: &HeaderValue,
        log: &mut AccessLog,
    ) -> Result<Answer, ProxyError> {
        let (mut parts, body) = request.into_parts();
        let client = self.check_inbound(&parts, peer, log)?;
        let (route, key, upstream_uri) = self.route(&parts, client.as_deref(), Some(log))?;
        if let Some(client) = &client {
            Self::authorize(client, &key, log)?;
        }
        self.cooldowns.check(route, &key)?;
        let flight = coalesce::key_of(route, &key, &parts, body.is_empty(), &upstream_uri);
        let role = flight.map(|k| self.flights.join(k));
        let (cache, lead) = match coalesce::board(role, self.upstream.timeout()).await {
            Boarding::Shared(answer) => {
                route.count_cache(&self.metrics, XCache::Coalesced);
                return Ok(Answer::Shared(answer));
            }
            Boarding::Lead(lead) => (XCache::Miss, Some(lead)),
            Boarding::Alone => (XCache::Miss, None),
            Boarding::Bypass => (XCache::Bypass, None),
        };
        route.count_cache(&self.metrics, cache);
        if let Some(queue) = &route.queue {
            let place = queue
                .place(|| self.metrics.route_queue(&route.prefix))
                .await;
            log.hold_place(place.map_err(ProxyError::RouteBusy)?);
            // A rate limit may have begun while it waited.
            self.cooldowns.check(route, &key)?;
        }
        let (key, token) = self.token(route, key, &parts.headers, log).await?;
        Self::rewrite(&mut parts, upstream_uri, token.bearer(), request_id);
        // A request without a body is kept, to go again if the upstream refuses the token.
        let (body, watch) = ClientBody::new(body, self.body_timeout);
        let replay = Replay::of(&parts, &body);
        let body = match replay {
            Some(_) => Either::Right(Full::default()),
            None => Either::Left(body),
        };
        let response = self
            .forward(Request::from_parts(parts, body), &watch)
            .await?;
        let mut response = match replay {
            Some(replay) => {
                self.retry_on_refusal(response, replay, route, &key, &token, log)
                    .await?
            }
            None => response,
        };
        // In place and out of line: nearly every answer is neither.
        if matches!(response.status().as_u16(), 429 | 503) {
            (self.cooldowns).note(&mut response, route, &key, &self.metrics);
        }
        Ok(Answer::Upstream {
            response,
            cache,
            lead,
        })
    }

    /// Inbound checks: CONNECT, the target and `Host` (DNS rebinding), the client (by its key
    /// or `peer`, its connection's certificate), whose name the access record takes.
    fn check_inbound(
        &self,
        parts: &Parts,
        peer: Option<&PeerNames>,
        log: &mut AccessLog,
    ) -> Result<Option<Arc<Client>>, ProxyError> {
        let clients = &self.inbound.clients;
        if clients.required() {
            log.client(
                self.metrics.unknown_client().clone(),
                clients.unknown_tally(),
            );
        }
        let client = self.inbound.check(parts, peer)?;
        if let Some(client) = &client {
            log.client(client.name.clone(), &client.tally);
        }
        Ok(client)
    }

    /// Route: no refused path segment, the longest matching prefix, the key of the token it needs (on a
    /// `{delegate}` route, for the team the path names, if the route may act for it), and the
    /// upstream URI the request goes to (base path, the route's upstream path, the rest of the
    /// path, the query as sent). A `client` learns nothing of routes outside its `routes` (a
    /// client with listed routes gets `forbidden_route` where no route matches too) nor of the
    /// teams a route lists beyond its own `delegates`. The access record `log` takes the route
    /// as soon as it is found, refused or not: the operator's records name it.
    fn route(
        &self,
        parts: &Parts,
        client: Option<&Client>,
        log: Option<&mut AccessLog>,
    ) -> Result<(&Arc<Route>, TokenKey, Uri), ProxyError> {
        let path = parts.uri.path();
        if routes::has_refused_segment(path) {
            return Err(ProxyError::BadRequest(
                "the path holds a `.` or `..` segment (also percent-encoded), an encoded `/` or \
                 `\\`, a raw `\\`, or a segment starting with `..;`; send a normalised path",
            ));
        }
        let Some(found) = self.routes.find(path) else {
            return Err(match client {
                Some(client) if client.routes_listed() => ProxyError::ForbiddenRoute,
                _ => ProxyError::NoRoute,
            });
        };
        let route = found.route;
        if let Some(log) = log {
            log.route(route);
        }
        if let Some(client) = client
            && !client.may_use(&route.prefix)
        {
            return Err(ProxyError::ForbiddenRoute);
        }
        let key = match found.team {
            None => route.token_key(),
            Some(team) => route.team_key(team).map_err(|refusal| match refusal {
                TeamRefusal::Implausible => ProxyError::BadRequest(
                    "the team segment is not a team id (1 to 64 letters, digits, '-', '_' or \
                     '.'; nothing percent-encoded)",
                ),
                TeamRefusal::NotListed => match client {
                    Some(client) if !client.may_act_for(team) => {
                        ProxyError::ClientDelegate(team.to_string())
                    }
                    _ => ProxyError::ForbiddenDelegate(team.to_string()),
                },
            })?,
        };
        let base_path = self.upstream.base_path();
        let uri = match parts.uri.path_and_query() {
            Some(pq) if routes::keeps_path(base_path, &route.upstream_path, found.rest, path) => {
                self.upstream.uri_with(pq.clone())?
            }
            _ => self.upstream.uri(&routes::upstream_path_and_query(
                base_path,
                &route.upstream_path,
                found.rest,
                parts.uri.query(),
            ))?,
        };
        Ok((route, key, uri))
    }

    /// Client scopes and limits (its `routes` were checked with the route): the team its token
    /// acts for (fixed on the route, or named in the path) among its `delegates`, and the
    /// request within its `rate` and `max_in_flight` (the place is held until the response
    /// ends). All decided before any STS call or upstream request.
    fn authorize(client: &Client, key: &TokenKey, log: &mut AccessLog) -> Result<(), ProxyError> {
        if let Some(team) = &key.delegate
            && !client.may_act_for(team)
        {
            return Err(ProxyError::ClientDelegate(team.to_string()));
        }
        let slot = client.admit().map_err(ProxyError::ClientRateLimited)?;
        if let Some(slot) = slot {
            log.hold_slot(slot);
        }
        Ok(())
    }

    /// Token: the route's token, from the cache or the STS. A `per_transaction` route first
    /// places the request in its transaction.
    async fn token(
        &self,
        route: &Route,
        key: TokenKey,
        headers: &HeaderMap,
        log: &mut AccessLog,
    ) -> Result<(TokenKey, Arc<Token>), ProxyError> {
        let key = match &route.transactions {
            Some(transactions) => {
                self.enter_transaction(key, transactions, headers, log)
                    .await
            }
            None => key,
        };
        let token = self.tokens.get(&key, route.token_mode).await?;
        if let Some(transactions) = &route.transactions
            && let Some(id) = key.transaction
            && !transactions.is_ongoing(id)
        {
            // The transaction ended while its token was fetched: this request still uses the
            // token, but the cache must not keep it.
            self.tokens.forget(&key).await;
        }
        Ok((key, token))
    }

    /// Transaction bookkeeping: the request joins an ongoing transaction or opens one, the
    /// tokens of transactions that ended meanwhile are dropped, and the access record keeps the
    /// transaction busy until the response ends. Returns the key of the transaction's token.
    async fn enter_transaction(
        &self,
        key: TokenKey,
        transactions: &Arc<Transactions>,
        headers: &HeaderMap,
        log: &mut AccessLog,
    ) -> TokenKey {
        let entered = transactions.enter(headers);
        for ended in entered.ended {
            self.tokens.forget_transaction(&key, ended).await;
        }
        log.hold(entered.activity);
        key.for_transaction(entered.id)
    }

    /// Rewrite: the request goes to the upstream URI, without hop-by-hop headers or the client's
    /// credentials, with the route's bearer token and the request id.
    fn rewrite(
        parts: &mut Parts,
        upstream_uri: Uri,
        bearer: &HeaderValue,
        request_id: &HeaderValue,
    ) {
        parts.uri = upstream_uri;
        headers::rewrite_request(&mut parts.headers, bearer, request_id);
    }

    /// Forward: sends the request upstream and waits for the response head. A send that failed
    /// because the client's body did (malformed, cut off, stalled: `watch` says) is the
    /// client's fault, not the upstream's.
    async fn forward(
        &self,
        request: Request<OutgoingBody>,
        watch: &BodyWatch,
    ) -> Result<Response<PooledBody>, ProxyError> {
        match self.upstream.send_raw(request).await {
            Ok(response) => Ok(response),
            Err(e) => Err(match watch.fault() {
                Some(fault) => ProxyError::RequestBody(fault),
                None => e.into(),
            }),
        }
    }

    /// Retry on refusal: a status of the route's `refresh_on` (401 by default) to a request that
    /// can be sent again, for a token the token source agrees was refused (revoked, or
    /// permissions changed since it was issued), sends the request once more with a fresh token.
    /// Any other answer goes to the client as it is.
    async fn retry_on_refusal(
        &self,
        response: Response<PooledBody>,
        replay: Replay,
        route: &Route,
        key: &TokenKey,
        token: &Arc<Token>,
        log: &mut AccessLog,
    ) -> Result<Response<PooledBody>, ProxyError> {
        let status = response.status();
        if !route.refresh_on.contains(status) || !self.tokens.refused(key, token).await {
            return Ok(response);
        }
        drop(response);
        log.span().in_scope(|| {
            tracing::info!(
                credential = %key.credential,
                delegate = key.delegate.as_deref().unwrap_or("-"),
                status = status.as_u16(),
                "the upstream refused the token; retrying once with a fresh one"
            )
        });
        log.retried();
        self.metrics.token_retry(&route.prefix);
        let fresh = self.tokens.get(key, route.token_mode).await?;
        self.forward(replay.with_bearer(fresh.bearer()), &BodyWatch::default())
            .await
    }

    /// Response: the upstream's answer with its headers rewritten, or the proxy's own JSON answer
    /// to an error. Either way the body holds the access record `log`.
    fn response(
        &self,
        answer: Result<Answer, ProxyError>,
        request_id: &HeaderValue,
        mut log: AccessLog,
    ) -> Response<ProxyBody> {
        match answer {
            Ok(Answer::Shared(answer)) => {
                log.answered(answer.status);
                ProxyBody::shared(&answer, request_id, log)
            }
            Ok(Answer::Upstream {
                response,
                cache,
                lead,
            }) => {
                let (mut parts, mut body) = response.into_parts();
                // A lean connection's answer keeps its fields as they came (the client gets
                // only those `rewrite_response` would keep); the request id goes with them.
                match body.fields_mut() {
                    Some(fields) => {
                        fields.set_request_id(request_id.clone());
                        fields.set_x_cache(cache);
                    }
                    None => {
                        headers::rewrite_response(&mut parts.headers, request_id);
                        let cache = cache.value().clone();
                        parts.headers.insert(headers::X_CACHE.clone(), cache);
                    }
                }
                // hyper writes the version of the client's connection, whatever the upstream spoke.
                parts.version = Version::default();
                log.answered(parts.status);
                if parts.status.is_server_error() {
                    log.upstream_error(|| format!("the API answered {}", parts.status));
                }
                // A leader with followers records its answer for them as it streams.
                let recorder = lead.filter(Lead::followed).map(|lead| {
                    let head = (parts.status, parts.headers.clone(), body.fields().cloned());
                    Recorder::new(lead, head, self.max_entry)
                });
                let mut body = ProxyBody::upstream(body, self.upstream.timeout(), Some(log));
                if let Some(recorder) = recorder {
                    body.record(recorder);
                }
                Response::from_parts(parts, body)
            }
            Err(e) => {
                let (status, code) = respond::status_and_code(&e);
                // Waiting out the API's limit is no refusal of the client.
                if matches!(status.as_u16(), 401 | 403 | 429)
                    && !matches!(e, ProxyError::UpstreamRateLimited(_))
                {
                    Self::denied(&e, code, &log);
                }
                // Token failures are logged once per STS call by the token source. A spent
                // upstream budget is a load condition, not a fault: one warning per refused
                // request would let any client flood the log; the access line and
                // requests_total{status="503"} carry it.
                let quiet = matches!(
                    e,
                    ProxyError::Token(_)
                        | ProxyError::Upstream(UpstreamError::Busy { .. })
                        | ProxyError::RouteBusy(_)
                );
                if status.is_server_error() && !quiet {
                    log.span().in_scope(|| tracing::warn!(code, "{e}"));
                }
                // No answer from the API (refused, reset, timed out): the route's last upstream
                // error, as the client was told it.
                if matches!(e, ProxyError::Upstream(_)) && matches!(status.as_u16(), 502 | 504) {
                    log.upstream_error(|| e.to_string());
                }
                respond::error_response(e, request_id, Some(log))
            }
        }
    }

    /// A refused request (401, 403, or the client's 429): counted per client and reason; the
    /// 401s and 403s are logged once at info with the client (`unknown` before one is known)
    /// and the reason, never the key. A client beyond its limits is not logged per request:
    /// the access line and the counter carry it.
    fn denied(e: &ProxyError, code: &'static str, log: &AccessLog) {
        let client = log.client_label();
        log.denied(code);
        if let ProxyError::ClientRateLimited(_) = e {
            return;
        }
        let reason = match e {
            ProxyError::Unauthorized(why) => (*why).to_string(),
            _ => e.to_string(),
        };
        log.span().in_scope(|| {
            tracing::info!(client = &**client, code, reason, "request refused");
        });
    }

    /// The synchronous half of a request: the inbound checks and the route, as [`Self::handle`]
    /// runs them. Nothing here waits or allocates a token; the fuzz target `request` drives it.
    pub fn plan(&self, parts: &Parts) -> Result<(&Arc<Route>, TokenKey, Uri), ProxyError> {
        let client = self.inbound.check(parts, None)?;
        self.route(parts, client.as_deref(), None)
    }
}

/// The request path's settings from the config.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `listen.body_timeout`.
    pub body_timeout: Duration,
    /// `[cache] max_entry`.
    pub max_entry: usize,
}

/// What the phases end with.
#[expect(
    clippy::large_enum_variant,
    reason = "made and moved once per request; a Box would cost an allocation per request"
)]
enum Answer {
    /// The upstream's answer; `cache`: what `X-Cache` says of it; `lead`: the flight it leads.
    Upstream {
        response: Response<PooledBody>,
        cache: XCache,
        lead: Option<Lead>,
    },
    /// The answer of an identical request's flight.
    Shared(Arc<SharedAnswer>),
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
    /// `listen.body_timeout`: the longest a client's request body may stall.
    body_timeout: Duration,
    /// The API's rate limits being waited out; kept across reloads.
    cooldowns: Arc<Cooldowns>,
    /// Identical requests in flight.
    flights: Arc<Flights>,
    /// `[cache] max_entry`: the largest answer a flight shares.
    max_entry: usize,
}

impl Proxy {
    /// Assembles the request path from its parts.
    pub fn new(
        routes: RouteTable,
        tokens: TokenSource,
        upstream: Upstream,
        inbound: InboundPolicy,
        metrics: Arc<Metrics>,
        settings: Settings,
        previous: Option<&Proxy>,
    ) -> Self {
        // The API's rate limits outlive a reload.
        let cooldowns = previous.map_or_else(Arc::default, |p| p.cooldowns.clone());
        // A queue's gauge is there (at 0) from the start, so that `increase()` sees it.
        for route in routes.routes().iter().filter(|r| r.queue.is_some()) {
            drop(metrics.route_queue(&route.prefix));
        }
        Proxy {
            routes,
            tokens,
            upstream,
            inbound,
            ids: RequestIds::default(),
            metrics,
            body_timeout: settings.body_timeout,
            cooldowns,
            flights: Arc::default(),
            max_entry: settings.max_entry,
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

    /// Who may talk to the proxy: the guards, the clients, TLS.
    pub fn inbound(&self) -> &InboundPolicy {
        &self.inbound
    }

    /// The DNS-rebinding guard, which the admin listener applies too.
    pub fn hosts(&self) -> &HostGuard {
        &self.inbound.hosts
    }

    /// The TLS acceptor new connections go through, when `[listen.tls]` is set.
    pub fn tls(&self) -> Option<&TlsAcceptor> {
        self.inbound.tls.as_ref()
    }
}
