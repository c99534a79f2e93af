//! What the simulated STS and API share: the state both servers read and count into, the tokens
//! issued, the requests recorded, the faults a test can set, and the JSON answer helper.

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderMap, Method, Response, Version};
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use tokio::sync::watch;

use crate::sync::lock;

/// Path of the token endpoint, as the vendor's.
pub const TOKEN_PATH: &str = "/sts/issue/oauth/token";

/// Body type of the simulator's answers.
pub(super) type SimBody = BoxBody<Bytes, std::io::Error>;

/// A way for the STS to misbehave.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StsFault {
    /// Answer 503 with an HTML page, like a load balancer with no healthy backend.
    Unavailable,
    /// Wait this long before answering normally.
    Slow(Duration),
    /// Refuse every client: 401 `invalid_client`.
    Reject,
    /// Answer 200 with something that is not JSON.
    NotJson,
    /// Answer 429 with this `Retry-After`.
    RateLimited(Duration),
    /// Answer 400 with the request body (client secret included) echoed in `error_description`,
    /// like a careless STS; the proxy must not repeat it anywhere.
    EchoRequest,
    /// Answer 200 with a 1 MiB JSON token (a broken or hostile STS).
    Huge,
    /// Promise a 200-byte JSON token, send its first 40 bytes and close the connection.
    Truncated,
    /// Answer 307 (repeat the request, body included) with this `Location`.
    Redirect(String),
}

/// A token the STS issued.
#[derive(Debug, Clone)]
pub struct IssuedToken {
    /// The token text (tests scan logs for it).
    pub token: String,
    /// The customer team it acts for (`None` for a client-credentials token).
    pub delegate: Option<String>,
    /// For an updated token: the token that was sent as Bearer to update it.
    pub updated_from: Option<String>,
    /// When it was issued.
    pub issued_at: Instant,
    /// When the API stops accepting it.
    pub expires_at: Instant,
}

/// A request the API received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    /// Method.
    pub method: Method,
    /// Path and query exactly as received.
    pub path_and_query: String,
    /// Headers as received.
    pub headers: HeaderMap,
    /// HTTP version of the proxy's connection.
    pub version: Version,
}

/// Shared state of both servers.
#[derive(Debug)]
pub(super) struct State {
    pub(super) client_id: String,
    pub(super) client_secret: Mutex<String>,
    pub(super) token_ttl: Mutex<Duration>,
    pub(super) tokens: Mutex<HashMap<String, IssuedToken>>,
    pub(super) issued: Mutex<Vec<IssuedToken>>,
    pub(super) issue_calls: AtomicUsize,
    pub(super) update_calls: AtomicUsize,
    pub(super) sts_fault: Mutex<Option<StsFault>>,
    pub(super) api_delay: Mutex<Duration>,
    pub(super) api_requests: AtomicUsize,
    /// Connections the API has accepted.
    pub(super) api_connections: Arc<AtomicUsize>,
    pub(super) recorded: Mutex<VecDeque<RecordedRequest>>,
    pub(super) record_limit: usize,
    pub(super) bad_tokens: AtomicUsize,
    pub(super) refuse_tokens: AtomicBool,
    /// The status of the API's answer to a bad token (401, or 403 as some APIs answer).
    pub(super) refusal_status: std::sync::atomic::AtomicU16,
    /// The STS updates tokens for any team id, not only the sample teams.
    pub(super) any_team: AtomicBool,
    /// The API's rate limit per token identity, if set.
    pub(super) limiter: super::limit::Limiter,
    pub(super) exports_open: watch::Sender<bool>,
    pub(super) sts_open: watch::Sender<bool>,
    pub(super) sts_seen: watch::Sender<usize>,
    pub(super) exports_finished: AtomicUsize,
    /// Export bodies that exist (being produced or waiting to be read).
    pub(super) exports_streaming: watch::Sender<usize>,
    pub(super) random: (RandomState, AtomicU64),
}

impl State {
    pub(super) fn random_hex(&self) -> String {
        let (state, counter) = &self.random;
        let a = state.hash_one(counter.fetch_add(1, Ordering::Relaxed));
        let b = state.hash_one(counter.fetch_add(1, Ordering::Relaxed));
        format!("{a:016x}{b:016x}")
    }

    pub(super) fn issue(
        &self,
        delegate: Option<String>,
        updated_from: Option<String>,
    ) -> IssuedToken {
        let ttl = *lock(&self.token_ttl);
        let now = Instant::now();
        let token = IssuedToken {
            token: format!("sim_{}", self.random_hex()),
            delegate,
            updated_from,
            issued_at: now,
            expires_at: now + ttl,
        };
        lock(&self.tokens).insert(token.token.clone(), token.clone());
        lock(&self.issued).push(token.clone());
        token
    }

    /// The token behind an `Authorization: Bearer` header, if known, unexpired and not revoked.
    pub(super) fn valid_token(&self, headers: &HeaderMap) -> Option<IssuedToken> {
        let value = headers.get(http::header::AUTHORIZATION)?.to_str().ok()?;
        let token = value.strip_prefix("Bearer ")?;
        let found = lock(&self.tokens).get(token).cloned()?;
        (Instant::now() < found.expires_at).then_some(found)
    }
}

/// A JSON answer.
pub(super) fn json(status: u16, value: &serde_json::Value) -> Response<SimBody> {
    let body =
        http_body_util::Full::new(Bytes::from(value.to_string())).map_err(|never| match never {});
    let mut response = Response::new(BoxBody::new(body));
    *response.status_mut() = http::StatusCode::from_u16(status).unwrap_or_default();
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    response
}
