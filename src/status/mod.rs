//! The status model: everything the status page (`GET /` on the admin listener), `/status.json`
//! and the `status` command show, as types. The admin listener fills it from the running proxy;
//! the page (`html.rs`) and the command's report (`text.rs`) render the same model, so the facts
//! have one definition. Pure: no I/O. Never holds a token, secret, key or proxy credential: the
//! fields below are names, states, times, counts and the messages clients were given.

use serde::{Deserialize, Serialize};

use crate::readiness::{Delegates, ReadyState, TokenReadiness};
pub(crate) use crate::token::TokenPhase;

pub(crate) mod html;
pub(crate) mod text;

/// The whole status.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Status {
    /// The proxy's version.
    pub version: String,
    /// Ready, not ready or shutting down, as `/readyz` says.
    pub status: ReadyState,
    /// When this status was taken (RFC 3339, UTC).
    pub now: String,
    /// When the process started.
    pub started_at: String,
    /// Seconds since then.
    pub uptime_s: u64,
    /// The config and its last reload.
    pub config: ConfigStatus,
    /// The data-plane and admin listeners.
    pub listeners: Vec<ListenerStatus>,
    /// How the API and the STS are reached, and the roots trusted.
    pub outbound: OutboundStatus,
    /// Each credential's and delegate's token.
    pub tokens: Vec<TokenStatus>,
    /// Token rows not listed (beyond the first 300: those in trouble are).
    #[serde(default)]
    pub tokens_omitted: u64,
    /// Each route, in the order requests are matched (most segments first).
    pub routes: Vec<RouteStatus>,
    /// Each client's requests and refusals; `None` when no clients are set.
    pub clients: Option<Vec<ClientStatus>>,
    /// Clients not listed (beyond the first 200: those refused most, then the busiest, are).
    #[serde(default)]
    pub clients_omitted: u64,
    /// Things that are allowed but unwise.
    pub warnings: Vec<String>,
}

/// Where the config came from and what its last reload did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ConfigStatus {
    /// The config file, or `environment`.
    pub origin: String,
    /// What reloads it (a signal, file changes).
    pub reload: String,
    /// The last reload since the start, if any.
    pub last_reload: Option<ReloadStatus>,
}

/// One reload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ReloadStatus {
    /// When it ended.
    pub at: String,
    /// What asked for it: `signal`, `file` or `service`.
    pub trigger: String,
    /// `ok`, or `rejected` (the running config stayed).
    pub result: String,
    /// Why it was rejected (the config file's line and key; never a value).
    pub error: Option<String>,
}

/// A listener.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ListenerStatus {
    /// `data` (BI tools) or `admin` (probes, metrics, this page).
    pub role: String,
    /// `http://address` or `https://address`.
    pub url: String,
    /// What it takes to be served (keys, client certificates, loopback only).
    pub access: String,
}

/// How the proxy reaches the outside.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OutboundStatus {
    /// The API's URL and the way to it.
    pub api: WayOut,
    /// The STS's URL and the way to it.
    pub sts: WayOut,
    /// The roots its certificates must chain to.
    pub trust: String,
}

/// A target and the way to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct WayOut {
    /// The URL (never with credentials).
    pub url: String,
    /// `direct (...)` or `via http://proxy:3128 (...)`, never the proxy's credentials.
    pub via: String,
}

/// The token of one credential and delegate.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TokenStatus {
    /// The credential.
    pub credential: String,
    /// The team it acts for, if any.
    pub delegate: Option<String>,
    /// `interval`, `per_request` or `per_transaction`.
    pub mode: String,
    /// Its state.
    pub state: TokenPhase,
    /// When the held token stops being sent (RFC 3339).
    pub expires_at: Option<String>,
    /// Seconds until then.
    pub expires_in_s: Option<u64>,
    /// Seconds until the proxy fetches the next one (interval tokens).
    pub refresh_in_s: Option<u64>,
    /// Seconds until the next attempt after a failure.
    pub retry_in_s: Option<u64>,
    /// When the STS last issued one.
    pub issued_at: Option<String>,
    /// The first 12 hex digits of that token's SHA-256: tells tokens apart, reveals nothing.
    pub fingerprint: Option<String>,
    /// The last STS error.
    pub last_error: Option<Incident>,
}

/// Something that went wrong, when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Incident {
    /// When (RFC 3339).
    pub at: String,
    /// What (never a secret).
    pub message: String,
}

/// One route.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct RouteStatus {
    /// Its prefix.
    pub prefix: String,
    /// Its credential.
    pub credential: String,
    /// The team a fixed route acts for.
    pub delegate: Option<String>,
    /// The teams a `{delegate}` route may act for.
    pub delegates: Option<Delegates>,
    /// Its token mode.
    pub mode: String,
    /// Whether it counts for readiness.
    pub required: bool,
    /// Its token, as `/readyz` says.
    pub token: TokenReadiness,
    /// Requests answered since the start, by status class.
    pub requests: StatusClasses,
    /// Requests in the last five minutes.
    pub recent_requests: u64,
    /// Their median latency (ms), to within 1/8.
    pub p50_ms: Option<f64>,
    /// Their 95th percentile (ms).
    pub p95_ms: Option<f64>,
    /// The last time the upstream failed (no answer, or a 5xx).
    pub last_upstream_error: Option<Incident>,
}

/// Requests by status class.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct StatusClasses {
    /// 1xx answers.
    #[serde(rename = "1xx")]
    pub c1: u64,
    /// 2xx answers.
    #[serde(rename = "2xx")]
    pub c2: u64,
    /// 3xx answers.
    #[serde(rename = "3xx")]
    pub c3: u64,
    /// 4xx answers.
    #[serde(rename = "4xx")]
    pub c4: u64,
    /// 5xx answers.
    #[serde(rename = "5xx")]
    pub c5: u64,
}

impl From<[u64; 5]> for StatusClasses {
    fn from([c1, c2, c3, c4, c5]: [u64; 5]) -> Self {
        StatusClasses { c1, c2, c3, c4, c5 }
    }
}

/// One client.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ClientStatus {
    /// Its name (`unknown`: requests no client was recognised for).
    pub name: String,
    /// Requests answered.
    pub requests: u64,
    /// Requests refused (401, 403, or beyond its limits).
    pub denials: u64,
}

/// Whole seconds, `1h 2m 3s` style, for people.
pub(crate) fn seconds(s: u64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(s)).to_string()
}
