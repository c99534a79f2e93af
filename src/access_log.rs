//! The access line of one request and its request metrics: started when the request arrives,
//! filled in as the request goes through the proxy, written once when the response body ends or
//! is dropped (see `ProxyBody` in `body.rs`).

use std::cell::OnceCell;
use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method, Request, StatusCode};
use tokio::sync::OwnedSemaphorePermit;
use tracing::Span;

use crate::metrics::Metrics;
use crate::routes::Route;
use crate::tally::ClientTally;
use crate::transaction::Activity;

/// The target of the access line, the one `RUST_LOG` names (`access=off` silences it).
pub(crate) const TARGET: &str = "access";

/// What the access line says about one request. A client that disconnects mid-stream is logged
/// as `aborted`.
#[derive(Debug)]
pub struct AccessLog {
    method: Method,
    /// Without the query string, which may carry customer data; control and bidirectional
    /// characters escaped (`escape.rs`), as in every value a log line takes from a request.
    path: String,
    /// The matched route, if any (its prefix, and where its figures are counted).
    route: Option<Arc<Route>>,
    /// The client's name (`unknown` before one is recognised); `None` where no clients are set.
    client: Option<Arc<str>>,
    /// Where the client's requests and refusals are counted.
    client_tally: Option<Arc<ClientTally>>,
    /// The client's place within its `max_in_flight`, held until the response ends.
    slot: Option<OwnedSemaphorePermit>,
    /// The request's place within its route's `max_in_flight`, held until the response ends.
    place: Option<OwnedSemaphorePermit>,
    status: StatusCode,
    /// When the request arrived.
    start: Instant,
    request_id: HeaderValue,
    /// Body bytes sent so far.
    bytes: u64,
    /// The proxy's error code, if the proxy answered itself.
    error: Option<&'static str>,
    /// Whether the request was sent again with a fresh token after the upstream refused one.
    retried: bool,
    /// `per_transaction` routes: keeps the route's transaction busy until the response ends.
    activity: Option<Activity>,
    /// Where the request is counted when it ends.
    metrics: Arc<Metrics>,
    /// The request's span (request id, method, route), made on first use: see [`Self::span`].
    span: OnceCell<Span>,
}

impl AccessLog {
    /// Starts the record of `request` as it arrives.
    pub fn new<B>(request: &Request<B>, request_id: HeaderValue, metrics: Arc<Metrics>) -> Self {
        AccessLog {
            method: request.method().clone(),
            // The path is copied only for an access line that will be written.
            path: if tracing::enabled!(target: TARGET, tracing::Level::INFO) {
                crate::escape::for_log(request.uri().path()).into_owned()
            } else {
                String::new()
            },
            route: None,
            client: None,
            client_tally: None,
            slot: None,
            place: None,
            status: StatusCode::OK,
            start: Instant::now(),
            request_id,
            bytes: 0,
            error: None,
            retried: false,
            activity: None,
            metrics,
            span: OnceCell::new(),
        }
    }

    /// The request's span: its request id, method and route (once matched). Lines logged inside
    /// the request enter it instead of repeating those fields. It is made when first asked for:
    /// a span costs about 7,000 instructions per request with the fmt subscriber (13 % of a
    /// proxied 1 KB GET, measured with callgrind), so a request that logs nothing makes none
    /// unless debug logging is on (see `Proxy::handle`). Its level is ERROR so that it exists
    /// whenever a line inside the request is logged at all: at `RUST_LOG=warn` an info span
    /// would be filtered out and the warning would lose the request id.
    pub fn span(&self) -> &Span {
        self.span.get_or_init(|| {
            tracing::error_span!(
                "request",
                request_id = %self.request_id.to_str().unwrap_or("-"),
                method = %self.method,
                route = self.route.as_ref().map(|r| tracing::field::display(&r.prefix)),
            )
        })
    }

    /// The request matched `route`.
    pub fn route(&mut self, route: &Arc<Route>) {
        if let Some(span) = self.span.get() {
            span.record("route", tracing::field::display(&route.prefix));
        }
        self.route = Some(route.clone());
    }

    /// The request comes from the client `name`, counted in `tally`.
    pub fn client(&mut self, name: Arc<str>, tally: &Arc<ClientTally>) {
        self.client = Some(name);
        self.client_tally = Some(tally.clone());
    }

    /// The request was refused (401, 403, or the client's 429) with the error code `code`:
    /// counted for its client.
    pub fn denied(&self, code: &'static str) {
        self.metrics.denial(self.client_label(), code);
        if let Some(tally) = &self.client_tally {
            tally.denial();
        }
    }

    /// The upstream failed this request (no answer, or a 5xx): the route's last upstream error.
    pub fn upstream_error(&self, message: impl FnOnce() -> String) {
        if let Some(route) = &self.route {
            route.tally.upstream_error(message());
        }
    }

    /// The client's name as the access line and the metrics give it: `-` where no clients are
    /// set.
    pub fn client_label(&self) -> &Arc<str> {
        self.client.as_ref().unwrap_or(self.metrics.no_client())
    }

    /// Where the request is counted.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The client's place within its `max_in_flight`: given back when the record is written.
    pub fn hold_slot(&mut self, slot: OwnedSemaphorePermit) {
        self.slot = Some(slot);
    }

    /// The request's place within its route's `max_in_flight`, held until the response ends.
    pub fn hold_place(&mut self, place: OwnedSemaphorePermit) {
        self.place = Some(place);
    }

    /// The request belongs to a transaction, which stays busy until the record is written.
    pub fn hold(&mut self, activity: Activity) {
        self.activity = Some(activity);
    }

    /// The request was sent again with a fresh token.
    pub fn retried(&mut self) {
        self.retried = true;
    }

    /// The upstream answered with `status`.
    pub fn answered(&mut self, status: StatusCode) {
        self.status = status;
    }

    /// The proxy answered itself, with `status` and the error code `code`.
    pub fn failed(&mut self, status: StatusCode, code: &'static str) {
        self.status = status;
        self.error = Some(code);
    }

    /// `n` more body bytes went to the client.
    pub fn sent(&mut self, n: u64) {
        self.bytes += n;
    }

    /// Counts the request and writes the access line; `outcome` says how the body ended. The
    /// line is written outside the request's span: it carries its own fields (method, route,
    /// request id...), as documented in docs/operations.md, and stays the same line it always was.
    pub fn finish(self, outcome: &'static str) {
        let now = Instant::now();
        let elapsed = now.saturating_duration_since(self.start);
        let client = self.client_label();
        let prefix = self.route.as_ref().map(|r| &r.prefix);
        self.metrics
            .request(prefix, client, self.status.as_u16(), elapsed);
        if let Some(route) = &self.route {
            route.tally.request(self.status.as_u16(), elapsed, now);
        }
        if let Some(tally) = &self.client_tally {
            tally.request();
        }
        tracing::info!(
            target: TARGET,
            method = %self.method,
            path = %self.path,
            route = prefix.map_or("-", |p| &**p),
            client = &**client,
            status = self.status.as_u16(),
            duration_ms = (elapsed.as_secs_f64() * 1e6).round() / 1e3,
            bytes = self.bytes,
            request_id = self.request_id.to_str().unwrap_or("-"),
            error = self.error.unwrap_or("-"),
            retried = self.retried,
            outcome,
        );
    }
}
