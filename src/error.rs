//! The request-path error enum: everything that makes the proxy answer a request itself. Pure
//! data and messages; `respond.rs` turns it into a status and a JSON body (the table in the
//! README, "Errors the proxy returns itself").

use crate::request_body::BodyFault;
use crate::token::TokenError;
use crate::upstream::UpstreamError;

/// Everything that makes the proxy answer a request itself instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// Clients (`[[clients]]` or `api_keys`) are set and the request names none: the reason,
    /// for the log (the client is told only what to send).
    #[error(
        "this proxy requires a client key: send `Authorization: Bearer KEY`, or Basic auth with \
         the key as password (or connect with a client certificate it knows)"
    )]
    Unauthorized(&'static str),
    /// No route matches the path.
    #[error("no route matches this path")]
    NoRoute,
    /// CONNECT (the proxy is not a tunnel) or TRACE (an API that implements it would echo the
    /// injected token back).
    #[error(
        "CONNECT and TRACE are not forwarded: this is a reverse proxy, not a tunnel, and TRACE \
         would echo the proxy's token back"
    )]
    MethodNotAllowed,
    /// An absolute-form request target naming another authority.
    #[error("the request target names another host; send origin-form requests (a path)")]
    ForbiddenTarget,
    /// The `Host` header is not an accepted name (DNS-rebinding guard).
    #[error("the Host header `{0}` is not accepted; add it to listen.allowed_hosts if it is yours")]
    ForbiddenHost(String),
    /// A `{delegate}` route does not act for the team the path names.
    #[error(
        "this route does not act for team `{0}`: it is not in the route's delegates (team ids \
         are matched exactly, case included)"
    )]
    ForbiddenDelegate(String),
    /// The client may not use the route of this path (its `routes`), or, with listed routes,
    /// no route matches: the message names no route, so that a client learns none beyond its own.
    #[error(
        "this client may not use this path: it is outside the client's routes; ask the proxy's \
         operator to add the route"
    )]
    ForbiddenRoute,
    /// The client may not act for this team (its `delegates`).
    #[error(
        "this client may not act for team `{0}`; ask the proxy's operator to add it to its \
         delegates (team ids are matched exactly, case included)"
    )]
    ClientDelegate(String),
    /// The client is beyond its `rate` or `max_in_flight`; it may ask again after this long.
    #[error("this client sends more requests than its limits allow; retry after the Retry-After")]
    ClientRateLimited(std::time::Duration),
    /// The API answered 429 for this route and token identity a moment ago and asked to wait:
    /// the wait that is left.
    #[error(
        "the API limits this route's requests for this identity; the proxy holds them back \
         until the Retry-After has passed"
    )]
    UpstreamRateLimited(std::time::Duration),
    /// The route's `max_in_flight` places and its `queue` are taken, or the wait for a place
    /// passed `queue_timeout`.
    #[error("{}", route_busy_message(*.0))]
    RouteBusy(crate::route_queue::RouteBusy),
    /// The request is malformed in a way the proxy refuses to forward.
    #[error("{0}")]
    BadRequest(&'static str),
    /// The client's request body failed: malformed, cut off, or stalled. Never the upstream's
    /// fault, whatever the upstream client saw.
    #[error(transparent)]
    RequestBody(#[from] BodyFault),
    /// No token: the STS refused or could not be reached.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The upstream could not be reached, did not answer in time, or cannot take the path.
    #[error(transparent)]
    Upstream(#[from] UpstreamError),
}

/// What a client is told of a busy route.
fn route_busy_message(busy: crate::route_queue::RouteBusy) -> String {
    use crate::route_queue::RouteBusy;
    match busy {
        RouteBusy::QueueFull => "this route has as many requests waiting for the API as it \
                                 allows (its max_in_flight and queue); retry after the Retry-After"
            .to_string(),
        RouteBusy::TimedOut(wait) => format!(
            "no place to the API came free for this route within {}; retry after the Retry-After",
            humantime::format_duration(wait)
        ),
    }
}

impl ProxyError {
    /// The inbound guards' answers: no key, a foreign Host or target, CONNECT. The client is
    /// refused rather than failed, so its connection is not kept (see `respond.rs`).
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ProxyError::Unauthorized(_)
                | ProxyError::ForbiddenHost(_)
                | ProxyError::ForbiddenTarget
                | ProxyError::MethodNotAllowed
        )
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::token::Step;
    use crate::token::StsFailure;
    use std::sync::Arc;
    use std::time::Duration;

    /// A token failure of the `default` credential, as the token source reports it.
    pub(crate) fn token_error(failure: StsFailure, retry: Option<Duration>) -> ProxyError {
        ProxyError::Token(TokenError {
            credential: Arc::from("default"),
            delegate: None,
            step: Step::Issue,
            failure,
            retry_after: retry,
        })
    }

    #[test]
    fn rejected_message_names_credential_and_fix() {
        let e = token_error(
            StsFailure::Rejected {
                status: 401,
                code: Some("invalid_client".into()),
            },
            None,
        );
        let m = e.to_string();
        assert!(
            m.contains("`default`") && m.contains("invalid_client"),
            "{m}"
        );
        assert!(m.contains("client_secret"), "{m}");
    }

    #[test]
    fn refusals_are_the_inbound_guards_answers() {
        for e in [
            ProxyError::Unauthorized("unknown key"),
            ProxyError::ForbiddenHost("evil".into()),
            ProxyError::ForbiddenTarget,
            ProxyError::MethodNotAllowed,
        ] {
            assert!(e.is_refusal(), "{e:?}");
        }
        assert!(!ProxyError::NoRoute.is_refusal());
        assert!(!ProxyError::ForbiddenDelegate("T".into()).is_refusal());
        assert!(!ProxyError::ForbiddenRoute.is_refusal());
        assert!(!ProxyError::ClientRateLimited(Duration::from_secs(1)).is_refusal());
    }
}
