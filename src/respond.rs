//! The one place that turns a [`ProxyError`] into the answer the client gets: a status, the
//! stable error code and message as a JSON body, and the headers that go with them (the table in
//! the README, "Errors the proxy returns itself").

use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderValue};
use http::{Response, StatusCode};
use http_body_util::Full;

use crate::access_log::AccessLog;
use crate::body::ProxyBody;
use crate::error::ProxyError;
use crate::headers::X_REQUEST_ID;
use crate::inbound::CHALLENGES;
use crate::request_body::BodyFault;
use crate::route_queue::RouteBusy;
use crate::token::StsFailure;
use crate::upstream::UpstreamError;

/// Marks a response to a refused request (see [`ProxyError::is_refusal`]): such a request does
/// not count as activity that keeps its connection open.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Refused;

/// HTTP status and the stable error code of the JSON body.
pub fn status_and_code(e: &ProxyError) -> (StatusCode, &'static str) {
    match e {
        ProxyError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
        ProxyError::NoRoute => (StatusCode::NOT_FOUND, "no_route"),
        ProxyError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        ProxyError::ForbiddenTarget => (StatusCode::BAD_REQUEST, "forbidden_target"),
        ProxyError::ForbiddenHost(_) => (StatusCode::FORBIDDEN, "forbidden_host"),
        ProxyError::ForbiddenDelegate(_) | ProxyError::ClientDelegate(_) => {
            (StatusCode::FORBIDDEN, "forbidden_delegate")
        }
        ProxyError::ForbiddenRoute => (StatusCode::FORBIDDEN, "forbidden_route"),
        ProxyError::ClientRateLimited(_) => (StatusCode::TOO_MANY_REQUESTS, "client_rate_limited"),
        ProxyError::RouteBusy(_) => (StatusCode::SERVICE_UNAVAILABLE, "route_busy"),
        ProxyError::UpstreamRateLimited(_) => {
            (StatusCode::TOO_MANY_REQUESTS, "upstream_rate_limited")
        }
        ProxyError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        ProxyError::RequestBody(BodyFault::Stalled(_)) => {
            (StatusCode::REQUEST_TIMEOUT, "request_timeout")
        }
        ProxyError::RequestBody(_) => (StatusCode::BAD_REQUEST, "bad_request"),
        ProxyError::Token(e) => match e.failure {
            StsFailure::Rejected { .. } => (StatusCode::BAD_GATEWAY, "sts_rejected"),
            StsFailure::Unavailable { .. } => (StatusCode::SERVICE_UNAVAILABLE, "sts_unavailable"),
        },
        ProxyError::Upstream(e) => match e {
            UpstreamError::Unavailable(_) => (StatusCode::BAD_GATEWAY, "upstream_unavailable"),
            UpstreamError::Timeout(_) => (StatusCode::GATEWAY_TIMEOUT, "upstream_timeout"),
            UpstreamError::Busy { .. } => (StatusCode::SERVICE_UNAVAILABLE, "upstream_busy"),
            // A path the upstream's URI cannot hold is the client's to fix.
            UpstreamError::InvalidPath => (StatusCode::BAD_REQUEST, "bad_request"),
        },
    }
}

/// The response the client gets: status, JSON body `{error, message, request_id}`, the request
/// id header, and `Retry-After` where waiting helps. `log`, when given, records the status and
/// code and is written when the body ends.
pub fn error_response(
    e: ProxyError,
    request_id: &HeaderValue,
    log: Option<AccessLog>,
) -> Response<ProxyBody> {
    let (status, code) = status_and_code(&e);
    let body = serde_json::json!({
        "error": code,
        "message": e.to_string(),
        "request_id": request_id.to_str().unwrap_or_default(),
    });
    let log = log.map(|mut l| {
        l.failed(status, code);
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
    if let Some(retry) = retry_after(&e) {
        headers.insert(header::RETRY_AFTER, HeaderValue::from(retry));
    }
    if let ProxyError::Unauthorized(_) = e {
        for challenge in CHALLENGES {
            headers.append(
                header::WWW_AUTHENTICATE,
                HeaderValue::from_static(challenge),
            );
        }
    }
    if let ProxyError::MethodNotAllowed = e {
        headers.insert(
            header::ALLOW,
            HeaderValue::from_static("GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
        );
    }
    if e.is_refusal() {
        // A client the proxy refuses does not keep its connection: HTTP/1 closes after this
        // answer, and the idle timer ignores the request (see `Refused`).
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
        response.extensions_mut().insert(Refused);
    } else if let ProxyError::RequestBody(_) = e {
        // The rest of the body cannot be trusted to frame the next request.
        headers.insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// An answer of the admin listener's own: a refused request, or one it does not serve.
#[derive(Debug)]
pub(crate) enum AdminError {
    /// The admin `Host` guard (or the `Host` rules) refused it.
    Refused(ProxyError),
    /// Not GET or HEAD.
    MethodNotAllowed,
    /// None of the admin paths.
    NotFound,
}

/// The admin listener's error answer: status and JSON body `{error, message}` (no request id:
/// the admin listener does not number its requests); a refused client's connection is closed.
pub(crate) fn admin_error(e: AdminError) -> Response<Full<Bytes>> {
    let (status, code, message) = match &e {
        AdminError::Refused(refused) => {
            let (status, code) = status_and_code(refused);
            (status, code, refused.to_string())
        }
        AdminError::MethodNotAllowed => (
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "the admin endpoints answer GET and HEAD".to_string(),
        ),
        AdminError::NotFound => (
            StatusCode::NOT_FOUND,
            "not_found",
            "try /healthz, /readyz or /metrics".to_string(),
        ),
    };
    let body = serde_json::json!({"error": code, "message": message});
    let mut response = admin_answer(status, "application/json", body.to_string());
    if let AdminError::Refused(_) = e {
        response
            .headers_mut()
            .insert(header::CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

/// An answer of the admin listener: `body` of `content_type`, never cached.
pub(crate) fn admin_answer(
    status: StatusCode,
    content_type: &'static str,
    body: String,
) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    response
}

/// Whole seconds for `Retry-After` (rounded up, at least 1), when the error has one.
fn retry_after(e: &ProxyError) -> Option<u64> {
    match e {
        ProxyError::Token(e) if matches!(e.failure, StsFailure::Unavailable { .. }) => {
            let d = e.retry_after.unwrap_or(Duration::from_secs(1));
            Some(d.as_secs() + u64::from(d.subsec_nanos() > 0)).map(|s| s.max(1))
        }
        // A connection or a place frees up when a response ends: usually within a second.
        ProxyError::Upstream(UpstreamError::Busy { .. })
        | ProxyError::RouteBusy(RouteBusy::QueueFull) => Some(1),
        // It waited `queue_timeout` in vain: as long again, within what BI tools honour.
        ProxyError::RouteBusy(RouteBusy::TimedOut(wait)) => {
            Some((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).clamp(1, 120))
        }
        ProxyError::ClientRateLimited(wait) | ProxyError::UpstreamRateLimited(wait) => {
            Some((wait.as_secs() + u64::from(wait.subsec_nanos() > 0)).max(1))
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::tests::token_error;

    #[tokio::test]
    async fn admin_errors_follow_the_readme_table() {
        use http_body_util::BodyExt as _;
        let cases = [
            (
                AdminError::NotFound,
                404,
                r#"{"error":"not_found","message":"try /healthz, /readyz or /metrics"}"#,
            ),
            (
                AdminError::MethodNotAllowed,
                405,
                r#"{"error":"method_not_allowed","message":"the admin endpoints answer GET and HEAD"}"#,
            ),
            (
                AdminError::Refused(ProxyError::ForbiddenHost("evil.example".into())),
                403,
                r#"{"error":"forbidden_host","message":"the Host header `evil.example` is not accepted; add it to listen.allowed_hosts if it is yours"}"#,
            ),
        ];
        for (error, status, body) in cases {
            let refused = matches!(error, AdminError::Refused(_));
            let response = admin_error(error);
            assert_eq!(response.status(), status);
            let headers = response.headers();
            assert_eq!(headers[header::CONTENT_TYPE], "application/json");
            assert_eq!(headers[header::CACHE_CONTROL], "no-store");
            // Only a refused client loses its connection.
            assert_eq!(
                headers.get(header::CONNECTION).is_some(),
                refused,
                "{status}"
            );
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            assert_eq!(std::str::from_utf8(&bytes).unwrap(), body);
        }
    }

    #[test]
    fn statuses_follow_the_readme_table() {
        let cases = [
            (ProxyError::Unauthorized("x"), 401, "unauthorized"),
            (ProxyError::NoRoute, 404, "no_route"),
            (ProxyError::MethodNotAllowed, 405, "method_not_allowed"),
            (ProxyError::ForbiddenTarget, 400, "forbidden_target"),
            (ProxyError::ForbiddenHost("x".into()), 403, "forbidden_host"),
            (
                ProxyError::ForbiddenDelegate("T".into()),
                403,
                "forbidden_delegate",
            ),
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
                UpstreamError::Unavailable("x".into()).into(),
                502,
                "upstream_unavailable",
            ),
            (
                UpstreamError::Timeout(Duration::from_secs(1)).into(),
                504,
                "upstream_timeout",
            ),
            (UpstreamError::InvalidPath.into(), 400, "bad_request"),
            (
                UpstreamError::Busy {
                    max: 2,
                    waited: Duration::from_secs(1),
                }
                .into(),
                503,
                "upstream_busy",
            ),
            (BodyFault::CutOff.into(), 400, "bad_request"),
            (BodyFault::Malformed("x".into()).into(), 400, "bad_request"),
            (
                BodyFault::Stalled(Duration::from_secs(1)).into(),
                408,
                "request_timeout",
            ),
        ];
        for (e, status, code) in cases {
            let (s, c) = status_and_code(&e);
            assert_eq!((s.as_u16(), c), (status, code));
        }
    }

    #[test]
    fn client_errors_follow_the_readme_table() {
        for (e, status, code) in [
            (ProxyError::ForbiddenRoute, 403, "forbidden_route"),
            (
                ProxyError::ClientDelegate("T".into()),
                403,
                "forbidden_delegate",
            ),
            (
                ProxyError::ClientRateLimited(Duration::from_secs(2)),
                429,
                "client_rate_limited",
            ),
        ] {
            let (s, c) = status_and_code(&e);
            assert_eq!((s.as_u16(), c), (status, code));
        }
    }

    #[test]
    fn refusals_close_the_connection_and_are_marked() {
        let id = HeaderValue::from_static("r-1");
        for e in [
            ProxyError::Unauthorized("unknown key"),
            ProxyError::ForbiddenHost("evil".into()),
            ProxyError::ForbiddenTarget,
            ProxyError::MethodNotAllowed,
        ] {
            let r = error_response(e, &id, None);
            assert_eq!(r.headers()[header::CONNECTION], "close");
            assert!(r.extensions().get::<Refused>().is_some());
        }
        let unauthorized = error_response(ProxyError::Unauthorized("unknown key"), &id, None);
        assert_eq!(
            unauthorized
                .headers()
                .get_all(header::WWW_AUTHENTICATE)
                .iter()
                .count(),
            2
        );
        // Other errors keep the connection: the client did nothing wrong.
        let r = error_response(ProxyError::NoRoute, &id, None);
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
        assert_eq!(retry_after(&e), Some(3));
        let r = token_error(
            StsFailure::Rejected {
                status: 400,
                code: None,
            },
            None,
        );
        assert_eq!(retry_after(&r), None);
        let limited = ProxyError::ClientRateLimited(Duration::from_millis(1200));
        assert_eq!(retry_after(&limited), Some(2));
    }
}
