//! The readiness model: what `/readyz` says, as types. The admin listener fills it from the
//! running proxy and serialises it; anything else that shows the proxy's state (a page, a
//! command) renders the same model, so that the facts have one definition. Pure: no I/O.

use std::time::{Duration, SystemTime};

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// The whole readiness answer. Fields are in the order the JSON has always had (alphabetical).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Readiness {
    /// Each route's token state, in the order requests are matched (most segments first).
    pub routes: Vec<RouteReadiness>,
    /// Ready, not ready, or shutting down.
    pub status: ReadyState,
}

/// Whether the proxy can serve requests now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ReadyState {
    /// Every required route holds a token (or fetches on demand with a working STS).
    Ready,
    /// A required route has no usable token.
    NotReady,
    /// Draining in-flight requests after a shutdown signal.
    ShuttingDown,
}

impl Readiness {
    /// The state of a proxy whose routes are `routes`: ready once every route marked
    /// `required` is, unless it is shutting down.
    pub(crate) fn new(routes: Vec<RouteReadiness>, shutting_down: bool) -> Self {
        let ready = routes.iter().all(|r| !r.required || r.token.is_ready());
        let status = match (shutting_down, ready) {
            (true, _) => ReadyState::ShuttingDown,
            (false, true) => ReadyState::Ready,
            (false, false) => ReadyState::NotReady,
        };
        Readiness { routes, status }
    }

    /// The HTTP status of `/readyz`: 200 when ready, else 503.
    pub(crate) fn http_status(&self) -> StatusCode {
        match self.status {
            ReadyState::Ready => StatusCode::OK,
            ReadyState::NotReady | ReadyState::ShuttingDown => StatusCode::SERVICE_UNAVAILABLE,
        }
    }
}

/// One route's readiness. Optional fields are left out of the JSON when they do not apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct RouteReadiness {
    /// The route's credential.
    pub credential: String,
    /// The team a fixed route acts for.
    pub delegate: Option<String>,
    /// The teams a `{delegate}` route may act for.
    pub delegates: Option<Delegates>,
    /// `backing_off`: what failed (names the credential and delegate, never a secret).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// `valid`: when the proxy stops sending the token (RFC 3339, seconds).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<String>,
    /// `valid`: seconds until then.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_in_s: Option<u64>,
    /// The route's token mode (`interval`, `per_request`, `per_transaction`).
    pub mode: String,
    /// The route's prefix.
    pub prefix: String,
    /// Whether the route counts for readiness (the `/` route, or every route when there is none).
    pub required: bool,
    /// `backing_off`: whole seconds until the next attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_in_s: Option<u64>,
    /// The token's state.
    pub token: TokenReadiness,
}

/// The teams of a `{delegate}` route: `"*"` or a sorted list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(untagged)]
pub(crate) enum Delegates {
    /// `["*"]`, shown as `"*"`.
    Any(String),
    /// The listed teams, sorted.
    Listed(Vec<String>),
}

/// A route's token, as readiness sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum TokenReadiness {
    /// A usable token is cached.
    Valid,
    /// No usable token yet (start-up, or the last one ran out).
    Missing,
    /// Fetched when requests come (`per_request`, `per_transaction`, `{delegate}` routes).
    OnDemand,
    /// The STS failed; the proxy waits before it asks again.
    BackingOff,
}

impl TokenReadiness {
    /// As the status page and the `status` report write it.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            TokenReadiness::Valid => "valid",
            TokenReadiness::Missing => "missing",
            TokenReadiness::OnDemand => "on demand",
            TokenReadiness::BackingOff => "backing off",
        }
    }

    /// Whether a request could be served now without waiting for a failing STS.
    pub(crate) fn is_ready(self) -> bool {
        matches!(self, TokenReadiness::Valid | TokenReadiness::OnDemand)
    }
}

impl RouteReadiness {
    /// Sets the token fields for a valid token that ends at `expires_at`, seen at `now`.
    pub(crate) fn valid(&mut self, expires_at: SystemTime, now: SystemTime) {
        self.token = TokenReadiness::Valid;
        self.expires_at = Some(humantime::format_rfc3339_seconds(expires_at).to_string());
        self.expires_in_s = Some(expires_at.duration_since(now).unwrap_or_default().as_secs());
    }

    /// Sets the token fields for an STS failure: `error`, retried in `retry_in`.
    pub(crate) fn backing_off(&mut self, retry_in: Duration, error: String) {
        self.token = TokenReadiness::BackingOff;
        self.retry_in_s = Some(retry_in.as_secs_f64().ceil() as u64);
        self.error = Some(error);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(prefix: &str, required: bool, token: TokenReadiness) -> RouteReadiness {
        RouteReadiness {
            credential: "default".into(),
            delegate: None,
            delegates: None,
            error: None,
            expires_at: None,
            expires_in_s: None,
            mode: "interval".into(),
            prefix: prefix.into(),
            required,
            retry_in_s: None,
            token,
        }
    }

    #[test]
    fn only_required_routes_and_shutdown_decide_readiness() {
        let missing_extra = vec![
            route("/", true, TokenReadiness::Valid),
            route("/x", false, TokenReadiness::Missing),
        ];
        let ready = Readiness::new(missing_extra.clone(), false);
        assert_eq!(ready.status, ReadyState::Ready);
        assert_eq!(ready.http_status(), StatusCode::OK);
        let draining = Readiness::new(missing_extra, true);
        assert_eq!(draining.status, ReadyState::ShuttingDown);
        assert_eq!(draining.http_status(), StatusCode::SERVICE_UNAVAILABLE);
        let missing_root = Readiness::new(vec![route("/", true, TokenReadiness::Missing)], false);
        assert_eq!(missing_root.status, ReadyState::NotReady);
    }

    #[test]
    fn the_json_keeps_its_shape() {
        let mut r = route("/", true, TokenReadiness::Missing);
        r.delegates = Some(Delegates::Listed(vec!["A".into(), "B".into()]));
        r.backing_off(Duration::from_millis(1500), "the STS is down".into());
        let json = serde_json::to_string(&Readiness::new(vec![r], false)).unwrap();
        assert_eq!(
            json,
            "{\"routes\":[{\"credential\":\"default\",\"delegate\":null,\"delegates\":[\"A\",\"B\"],\
             \"error\":\"the STS is down\",\"mode\":\"interval\",\"prefix\":\"/\",\"required\":true,\
             \"retry_in_s\":2,\"token\":\"backing_off\"}],\"status\":\"not_ready\"}"
        );
        let back: Readiness = serde_json::from_str(&json).unwrap();
        assert_eq!(back.routes[0].token, TokenReadiness::BackingOff);
    }
}
