//! The request-path error enum and the one place that maps it to a status and a JSON body
//! (SPEC "Errors the proxy itself returns").

use std::time::Duration;

use http::header::{self, HeaderValue};
use http::{Response, StatusCode};

use crate::body::{AccessLog, ProxyBody};
use crate::headers::X_REQUEST_ID;
use crate::token::{StsFailure, TokenError};

/// Marks a response to a refused request (see [`ProxyError::is_refusal`]): such a request does
/// not count as activity that keeps its connection open.
#[derive(Debug, Clone, Copy)]
pub struct Refused;

/// Everything that makes the proxy answer a request itself instead of the upstream.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// `api_keys` are set and the request holds no accepted key.
    #[error(
        "this proxy requires an API key: send `Authorization: Bearer KEY`, or Basic auth with the \
         key as password"
    )]
    Unauthorized,
    /// No route matches the path.
    #[error("no route matches this path")]
    NoRoute,
    /// CONNECT: the proxy is not a tunnel.
    #[error("CONNECT is not supported: this is a reverse proxy, not a tunnel")]
    MethodNotAllowed,
    /// An absolute-form request target naming another authority.
    #[error("the request target names another host; send origin-form requests (a path)")]
    ForbiddenTarget,
    /// The `Host` header is not an accepted name (DNS-rebinding guard).
    #[error("the Host header `{0}` is not accepted; add it to listen.allowed_hosts if it is yours")]
    ForbiddenHost(String),
    /// The request is malformed in a way the proxy refuses to forward.
    #[error("{0}")]
    BadRequest(&'static str),
    /// No token: the STS refused or could not be reached.
    #[error(transparent)]
    Token(#[from] TokenError),
    /// The upstream connection failed or was reset.
    #[error("the Azure Costs API is unreachable: {0}")]
    UpstreamUnavailable(String),
    /// The upstream did not answer in `upstream.timeout`.
    #[error("the Azure Costs API did not answer within {0:?}")]
    UpstreamTimeout(Duration),
}

impl ProxyError {
    /// HTTP status and the stable error code of the JSON body.
    pub fn status_and_code(&self) -> (StatusCode, &'static str) {
        match self {
            ProxyError::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ProxyError::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
            ProxyError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            ProxyError::ForbiddenTarget => (StatusCode::BAD_REQUEST, "forbidden_target"),
            ProxyError::ForbiddenHost(_) => (StatusCode::FORBIDDEN, "forbidden_host"),
            ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ProxyError::Token(e) => match e.failure {
                StsFailure::Rejected { .. } => (StatusCode::BAD_GATEWAY, "sts_rejected"),
                StsFailure::Unavailable { .. } => {
                    (StatusCode::SERVICE_UNAVAILABLE, "sts_unavailable")
                }
            },
            ProxyError::UpstreamUnavailable(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            ProxyError::UpstreamTimeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
        }
    }

    /// The response the client gets: status, JSON body `{error, message, request_id}`, the request
    /// id header, and `Retry-After` where waiting helps.
    pub fn into_response(
        self,
        request_id: &HeaderValue,
        log: Option<AccessLog>,
    ) -> Response<ProxyBody> {
        let (status, code) = self.status_and_code();
        let body = serde_json::json!({
            "error": code,
            "message": self.to_string(),
            "request_id": request_id.to_str().unwrap_or_default(),
        });
        let log = log.map(|mut l| {
            l.status = status;
            l.error = Some(code);
            l
        });
        let mut response = Response::new(ProxyBody::full(body.to_string(), log));
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(X_REQUEST_ID.clone(), request_id.clone());
        if let Some(retry) = self.retry_after() {
            headers.insert(header::RETRY_AFTER, HeaderValue::from(retry));
        }
        if let ProxyError::Unauthorized = self {
            for challenge in crate::inbound::CHALLENGES {
                headers.append(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static(challenge),
                );
            }
        }
        if let ProxyError::MethodNotAllowed = self {
            headers.insert(
                header::ALLOW,
                HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
            );
        }
        if self.is_refusal() {
            // A client the proxy refuses does not keep its connection: HTTP/1 closes after
            // this answer, and the idle timer ignores the request (see `Refused`).
            headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
            response.extensions_mut().insert(Refused);
        }
        response
    }

    /// The inbound guards' answers: no key, a foreign Host or target, CONNECT.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            ProxyError::Unauthorized
                | ProxyError::ForbiddenHost(_)
                | ProxyError::ForbiddenTarget
                | ProxyError::MethodNotAllowed
        )
    }

    /// Whole seconds for `Retry-After` (rounded up, at least 1), when the error has one.
    fn retry_after(&self) -> Option<u64> {
        match self {
            ProxyError::Token(e) if matches!(e.failure, StsFailure::Unavailable { .. }) => {
                let d = e.retry_after.unwrap_or(Duration::from_secs(1));
                Some(d.as_secs() + u64::from(d.subsec_nanos() > 0)).map(|s| s.max(1))
            }
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::token::Step;
    use std::sync::Arc;

    fn token_error(failure: StsFailure, retry: Option<Duration>) -> ProxyError {
        ProxyError::Token(TokenError {
            credential: Arc::from("default"),
            delegate: None,
            step: Step::Issue,
            failure,
            retry_after: retry,
        })
    }

    #[test]
    fn statuses_follow_the_spec_table() {
        let cases = [
            (ProxyError::Unauthorized, 401, "unauthorized"),
            (ProxyError::NoRoute, 404, "no_route"),
            (ProxyError::MethodNotAllowed, 405, "method_not_allowed"),
            (ProxyError::ForbiddenTarget, 400, "forbidden_target"),
            (ProxyError::ForbiddenHost("x".into()), 403, "forbidden_host"),
            (
                token_error(
                    StsFailure::Rejected {
                        status: 401,
                        code: None,
                    },
                    None,
                ),
                502,
                "sts_rejected",
            ),
            (
                token_error(
                    StsFailure::Unavailable {
                        reason: "down".into(),
                        retry_after: None,
                    },
                    None,
                ),
                503,
                "sts_unavailable",
            ),
            (
                ProxyError::UpstreamUnavailable("x".into()),
                502,
                "upstream_unavailable",
            ),
            (
                ProxyError::UpstreamTimeout(Duration::from_secs(1)),
                504,
                "upstream_timeout",
            ),
        ];
        for (e, status, code) in cases {
            let (s, c) = e.status_and_code();
            assert_eq!((s.as_u16(), c), (status, code));
        }
    }

    #[test]
    fn refusals_close_the_connection_and_are_marked() {
        let id = HeaderValue::from_static("r-1");
        for e in [
            ProxyError::Unauthorized,
            ProxyError::ForbiddenHost("evil".into()),
            ProxyError::ForbiddenTarget,
            ProxyError::MethodNotAllowed,
        ] {
            let r = e.into_response(&id, None);
            assert_eq!(r.headers()[header::CONNECTION], "close");
            assert!(r.extensions().get::<Refused>().is_some());
        }
        let unauthorized = ProxyError::Unauthorized.into_response(&id, None);
        assert_eq!(
            unauthorized
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .count(),
            2
        );
        // Other errors keep the connection: the client did nothing wrong.
        let r = ProxyError::NoRoute.into_response(&id, None);
        assert!(r.headers().get(header::CONNECTION).is_none());
        assert!(r.extensions().get::<Refused>().is_none());
    }

    #[test]
    fn retry_after_rounds_up_and_only_for_unavailable() {
        let e = token_error(
            StsFailure::Unavailable {
                reason: "x".into(),
                retry_after: None,
            },
            Some(Duration::from_millis(2100)),
        );
        assert_eq!(e.retry_after(), Some(3));
        let r = token_error(
            StsFailure::Rejected {
                status: 400,
                code: None,
            },
            None,
        );
        assert_eq!(r.retry_after(), None);
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
}
