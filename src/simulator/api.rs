//! The simulated Azure Costs API: JSON cost reports per team, a large streamed CSV export and an
//! echo endpoint for uploads; every request needs a valid Bearer token from the simulated STS.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use http::{HeaderValue, Method, Request, Response, header};
use http_body::{Body, Frame};
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use serde_json::json;
use tokio::sync::watch;

use super::data::{self, PARTNER, Team};
use super::state::{RecordedRequest, SimBody, State, json};
use crate::sync::lock;

/// Size of one export chunk.
const CHUNK: usize = 64 * 1024;
/// Default month of the reports.
const DEFAULT_MONTH: &str = "2026-10";

/// The simulator's own counters, for benchmarks that run it as a process: not an API request.
pub(super) const STATS_PATH: &str = "/_simulator/stats";

pub(super) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<SimBody> {
    if req.uri().path() == STATS_PATH {
        return json(
            200,
            &json!({
                "api_requests": state.api_requests.load(Ordering::SeqCst),
                "rate_limited": state.limiter.limited.load(Ordering::SeqCst),
            }),
        );
    }
    state.api_requests.fetch_add(1, Ordering::SeqCst);
    record(&state, &req);
    let delay = *lock(&state.api_delay);
    if !delay.is_zero() {
        tokio::time::sleep(delay).await;
    }

    let token = state.valid_token(req.headers());
    let Some(token) = token.filter(|_| !state.refuse_tokens.load(Ordering::SeqCst)) else {
        state.bad_tokens.fetch_add(1, Ordering::SeqCst);
        let mut r = json(
            state.refusal_status.load(Ordering::SeqCst),
            &json!({"error": "invalid_token", "message": "missing, unknown or expired bearer token"}),
        );
        r.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Bearer error=\"invalid_token\""),
        );
        return r;
    };
    // Each identity (the partner, or the team a token acts for) has its own share.
    if let Some(retry_after) = state
        .limiter
        .admit(token.delegate.as_deref().unwrap_or("partner"))
    {
        return rate_limited(retry_after);
    }
    let team = token
        .delegate
        .as_deref()
        .and_then(data::team)
        .unwrap_or(PARTNER);
    let query = Query(req.uri().query().unwrap_or_default().to_string());

    match (req.method(), req.uri().path()) {
        (&Method::GET, "/v1/teams") => teams(&team, token.delegate.is_some()),
        (&Method::GET, "/v1/costs/by-service") => by_service(&team, &query),
        (&Method::GET, "/v1/costs/by-month") => by_month(&team, &query),
        (&Method::GET, "/v1/costs/export") => export(&state, &team, &query),
        (&Method::POST | &Method::PUT, "/v1/echo") => echo(req.into_body()).await,
        (_, "/v1/redirect") => {
            // A redirect to wherever the query says: a proxy must hand it to its client and
            // never follow it with the token.
            let mut r = json(302, &json!({"moved": true}));
            if let Some(Ok(to)) = query.get("to").map(|t| HeaderValue::from_str(&t)) {
                r.headers_mut().insert(header::LOCATION, to);
            }
            r
        }
        (_, "/v1/echo") => echo_head(&req, &query),
        _ => json(
            404,
            &json!({"error": "not_found", "message": "no such API endpoint"}),
        ),
    }
}

/// 429 `rate_limited`, with `retry_after` as `Retry-After` if there is one.
fn rate_limited(retry_after: Option<String>) -> Response<SimBody> {
    let mut r = json(
        429,
        &json!({"error": "rate_limited", "message": "too many requests for this identity; slow down"}),
    );
    if let Some(value) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        r.headers_mut().insert(header::RETRY_AFTER, value);
    }
    r
}

/// `/v1/echo` without a body: the method and query back, with the headers the query asks for
/// (`hop`: hop-by-hop headers; `cookie`: a session cookie; `close`: `Connection: close`).
fn echo_head(req: &Request<Incoming>, query: &Query) -> Response<SimBody> {
    let q = req.uri().query().unwrap_or_default();
    let mut r = json(200, &json!({"method": req.method().as_str(), "query": q}));
    if query.get("hop").is_some() {
        // Hop-by-hop headers a proxy must not pass on to its client.
        let h = r.headers_mut();
        h.insert(header::CONNECTION, HeaderValue::from_static("x-sim-hop"));
        h.insert("x-sim-hop", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("proxy-connection", HeaderValue::from_static("keep-alive"));
        h.insert("x-sim-end-to-end", HeaderValue::from_static("1"));
    }
    if query.get("cookie").is_some() {
        // A session cookie a proxy on localhost must not hand to the browser.
        r.headers_mut().insert(
            header::SET_COOKIE,
            HeaderValue::from_static("sim=1; Path=/"),
        );
    }
    if query.get("close").is_some() {
        // The upstream ends its side of the connection after this answer.
        r.headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    r
}

/// Keeps the request's head for the tests (`Simulator::recorded`), the oldest dropped past the
/// limit.
fn record(state: &State, req: &Request<Incoming>) {
    if state.record_limit > 0 {
        let mut recorded = lock(&state.recorded);
        if recorded.len() >= state.record_limit {
            recorded.pop_front();
        }
        recorded.push_back(RecordedRequest {
            method: req.method().clone(),
            path_and_query: req
                .uri()
                .path_and_query()
                .map_or_else(String::new, |pq| pq.as_str().to_string()),
            headers: req.headers().clone(),
            version: req.version(),
        });
    }
}

/// Query string access by key (first value wins).
struct Query(String);

impl Query {
    fn get(&self, key: &str) -> Option<String> {
        form_urlencoded::parse(self.0.as_bytes())
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.into_owned())
    }
}

fn teams(team: &Team, delegated: bool) -> Response<SimBody> {
    let list: Vec<_> = if delegated {
        vec![json!({"id": team.id, "name": team.name})]
    } else {
        std::iter::once(&PARTNER)
            .chain(data::CUSTOMERS.iter())
            .map(|t| json!({"id": t.id, "name": t.name, "customer": t.id != PARTNER.id}))
            .collect()
    };
    json(200, &json!({ "teams": list }))
}

fn by_service(team: &Team, query: &Query) -> Response<SimBody> {
    let month = query.get("month").unwrap_or_else(|| DEFAULT_MONTH.into());
    if data::months(&month, &month).is_none() {
        return json(
            400,
            &json!({"error": "invalid_month", "message": "month must be YYYY-MM"}),
        );
    }
    let items: Vec<_> = data::SERVICES
        .iter()
        .map(|s| json!({"service": s, "cost": data::cost(team, s, &month)}))
        .collect();
    let total: f64 = data::SERVICES
        .iter()
        .map(|s| data::cost(team, s, &month))
        .sum();
    json(
        200,
        &json!({
            "team": {"id": team.id, "name": team.name},
            "month": month,
            "currency": "USD",
            "items": items,
            "total": (total * 100.0).round() / 100.0,
        }),
    )
}

fn by_month(team: &Team, query: &Query) -> Response<SimBody> {
    let from = query.get("from").unwrap_or_else(|| "2026-01".into());
    let to = query.get("to").unwrap_or_else(|| DEFAULT_MONTH.into());
    let Some(months) = data::months(&from, &to) else {
        return json(
            400,
            &json!({"error": "invalid_month", "message": "from and to must be YYYY-MM"}),
        );
    };
    let rows: Vec<_> = months
        .iter()
        .map(|m| {
            let total: f64 = data::SERVICES.iter().map(|s| data::cost(team, s, m)).sum();
            json!({"month": m, "cost": (total * 100.0).round() / 100.0})
        })
        .collect();
    json(
        200,
        &json!({"team": {"id": team.id, "name": team.name}, "currency": "USD", "months": rows}),
    )
}

/// `GET /v1/costs/export?bytes=N` (exactly N bytes, sized) or `?rows=N` (default 1000, chunked):
/// a CSV of daily cost lines, generated chunk by chunk as the reader consumes it. `reset_after=N`
/// breaks the answer off after N bytes.
fn export(state: &Arc<State>, team: &Team, query: &Query) -> Response<SimBody> {
    let bytes = query.get("bytes").and_then(|b| b.parse::<u64>().ok());
    let rows = query.get("rows").and_then(|r| r.parse::<u64>().ok());
    let limit = match (bytes, rows) {
        (Some(b), _) => Limit::Bytes(b),
        (None, Some(r)) => Limit::Rows(r),
        (None, None) => Limit::Rows(1000),
    };
    state.exports_streaming.send_modify(|n| *n += 1);
    let body = ExportBody {
        team: *team,
        limit,
        reset_after: query.get("reset_after").and_then(|b| b.parse::<u64>().ok()),
        reset_armed: false,
        row: 0,
        sent: 0,
        header_sent: false,
        gate: None,
        gate_rx: state.exports_open.subscribe(),
        state: state.clone(),
        done: false,
    };
    let mut r = Response::new(BoxBody::new(body));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/csv; charset=utf-8"),
    );
    r
}

#[derive(Debug, Clone, Copy)]
enum Limit {
    Bytes(u64),
    Rows(u64),
}

type Gate = Pin<Box<dyn Future<Output = ()> + Send + Sync>>;

struct ExportBody {
    team: Team,
    limit: Limit,
    /// `reset_after=N`: fail the body (hyper aborts the connection or the HTTP/2 stream) once N
    /// bytes are out.
    reset_after: Option<u64>,
    reset_armed: bool,
    row: u64,
    sent: u64,
    header_sent: bool,
    gate: Option<Gate>,
    gate_rx: watch::Receiver<bool>,
    state: Arc<State>,
    done: bool,
}

impl ExportBody {
    fn next_chunk(&mut self) -> Bytes {
        let mut buf = BytesMut::with_capacity(CHUNK + 256);
        if !self.header_sent {
            buf.put_slice(b"date,team,service,meter,quantity,cost_usd\n");
            self.header_sent = true;
        }
        while buf.len() < CHUNK {
            if let Limit::Rows(n) = self.limit
                && self.row >= n
            {
                break;
            }
            let day = self.row % 28 + 1;
            let month = (self.row / 28) % 12 + 1;
            let service = data::SERVICES[(self.row % data::SERVICES.len() as u64) as usize];
            let month_s = format!("2026-{month:02}");
            let cost = data::cost(&self.team, service, &month_s) / 28.0;
            let line = format!(
                "{month_s}-{day:02},{},{service},standard,{},{cost:.4}\n",
                self.team.id,
                self.row % 97 + 1
            );
            buf.put_slice(line.as_bytes());
            self.row += 1;
        }
        let mut chunk = buf.freeze();
        if let Limit::Bytes(n) = self.limit {
            let left = n.saturating_sub(self.sent);
            if (chunk.len() as u64) > left {
                chunk.truncate(left as usize);
            }
        }
        self.sent += chunk.len() as u64;
        chunk
    }

    fn finished(&self) -> bool {
        match self.limit {
            Limit::Bytes(n) => self.sent >= n,
            Limit::Rows(n) => self.header_sent && self.row >= n,
        }
    }
}

impl Body for ExportBody {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        // After the first chunk, a held export waits until the test releases it.
        if this.sent > 0 && this.gate.is_none() && !*this.gate_rx.borrow() {
            let mut rx = this.gate_rx.clone();
            this.gate = Some(Box::pin(async move {
                let _ = rx.wait_for(|open| *open).await;
            }));
        }
        if let Some(gate) = this.gate.as_mut() {
            if gate.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
            this.gate = None;
        }
        if this.reset_after.is_some_and(|n| this.sent >= n) {
            if !this.reset_armed {
                // Pause first, so that hyper flushes what it has (the head included) and the
                // reset lands mid-answer, as a peer's crash would.
                this.reset_armed = true;
                this.gate = Some(Box::pin(tokio::time::sleep(Duration::from_millis(20))));
                cx.waker().wake_by_ref();
                return Poll::Pending;
            }
            this.done = true;
            return Poll::Ready(Some(Err(std::io::Error::new(
                std::io::ErrorKind::ConnectionReset,
                "simulated reset mid-answer",
            ))));
        }
        if this.finished() {
            this.done = true;
            this.state.exports_finished.fetch_add(1, Ordering::SeqCst);
            return Poll::Ready(None);
        }
        let chunk = this.next_chunk();
        if this.finished() {
            // A sized answer is not polled again after its last byte.
            this.done = true;
            this.state.exports_finished.fetch_add(1, Ordering::SeqCst);
        }
        Poll::Ready(Some(Ok(Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.done
    }

    /// `bytes=N` answers are sized (`Content-Length`), `rows=N` ones chunked.
    fn size_hint(&self) -> http_body::SizeHint {
        match self.limit {
            Limit::Bytes(n) => http_body::SizeHint::with_exact(n.saturating_sub(self.sent)),
            Limit::Rows(_) => http_body::SizeHint::default(),
        }
    }
}

impl Drop for ExportBody {
    fn drop(&mut self) {
        self.state
            .exports_streaming
            .send_modify(|n| *n = n.saturating_sub(1));
    }
}

/// Reads an upload chunk by chunk and answers its length and FNV-1a hash.
async fn echo(mut body: Incoming) -> Response<SimBody> {
    let mut len = 0u64;
    let mut hash = data::FNV1A_START;
    while let Some(frame) = body.frame().await {
        let Ok(frame) = frame else {
            return json(400, &json!({"error": "body_error"}));
        };
        if let Some(chunk) = frame.data_ref() {
            len += chunk.len() as u64;
            hash = data::fnv1a_extend(hash, chunk);
        }
    }
    json(200, &json!({"bytes": len, "fnv1a": format!("{hash:016x}")}))
}
