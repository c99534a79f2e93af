//! The simulated STS: `POST /sts/issue/oauth/token` with a client-credentials form, or with a JSON
//! `update_token` body and a Bearer token to act for a customer team.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytes::Bytes;
use http::{Method, Request, Response, header};
use http_body_util::BodyExt as _;
use http_body_util::combinators::BoxBody;
use hyper::body::Incoming;
use serde_json::json;

use super::data;
use super::state::{IssuedToken, SimBody, State, StsFault, TOKEN_PATH, json};
use crate::sync::lock;

/// Largest request body the simulated STS reads.
const MAX_BODY: usize = 16 * 1024;

pub(super) async fn handle(state: Arc<State>, req: Request<Incoming>) -> Response<SimBody> {
    if req.uri().path() != TOKEN_PATH {
        return json(404, &json!({"error": "not_found"}));
    }
    if req.method() != Method::POST {
        return json(405, &json!({"error": "method_not_allowed"}));
    }
    let is_json = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        state.update_calls.fetch_add(1, Ordering::SeqCst);
    } else {
        state.issue_calls.fetch_add(1, Ordering::SeqCst);
    }
    state.sts_seen.send_modify(|calls| *calls += 1);
    let mut open = state.sts_open.subscribe();
    let _ = open.wait_for(|open| *open).await;

    let fault = lock(&state.sts_fault).clone();
    let req = match fault {
        Some(fault) => match fault_answer(fault, req).await {
            Ok(answer) => return answer,
            Err(req) => req,
        },
        None => req,
    };
    let bearer = state.valid_token(req.headers());
    let Ok(body) = http_body_util::Limited::new(req.into_body(), MAX_BODY)
        .collect()
        .await
    else {
        return json(
            400,
            &json!({"error": "invalid_request", "error_description": "body too large or cut off"}),
        );
    };
    let body = body.to_bytes();
    if is_json {
        update(&state, bearer, &body)
    } else {
        issue(&state, &body)
    }
}

/// The answer of a fault the test set (`Ok`), or the request back for a normal answer (`Err`:
/// no fault that answers, or a delay that has passed).
async fn fault_answer(
    fault: StsFault,
    req: Request<Incoming>,
) -> Result<Response<SimBody>, Request<Incoming>> {
    match fault {
        StsFault::Unavailable => {
            let body = http_body_util::Full::new(Bytes::from_static(
                b"<html><body><h1>503 Service Unavailable</h1></body></html>",
            ))
            .map_err(|never| match never {});
            let mut r = Response::new(BoxBody::new(body));
            *r.status_mut() = http::StatusCode::SERVICE_UNAVAILABLE;
            Ok(r)
        }
        StsFault::Slow(delay) => {
            tokio::time::sleep(delay).await;
            Err(req)
        }
        StsFault::Reject => Ok(json(
            401,
            &json!({"error": "invalid_client", "error_description": "client authentication failed"}),
        )),
        StsFault::NotJson => {
            let body = http_body_util::Full::new(Bytes::from_static(b"<html>maintenance</html>"))
                .map_err(|never| match never {});
            Ok(Response::new(BoxBody::new(body)))
        }
        StsFault::RateLimited(wait) => {
            let mut r = json(429, &json!({"error": "rate_limited"}));
            r.headers_mut()
                .insert(header::RETRY_AFTER, wait.as_secs().into());
            Ok(r)
        }
        StsFault::EchoRequest => {
            let body = http_body_util::Limited::new(req.into_body(), MAX_BODY)
                .collect()
                .await
                .map(|b| String::from_utf8_lossy(&b.to_bytes()).into_owned())
                .unwrap_or_default();
            Ok(json(
                400,
                &json!({"error": "invalid_request", "error_description": format!("cannot parse {body}")}),
            ))
        }
        StsFault::Redirect(to) => {
            let mut r = json(307, &json!({"moved": true}));
            if let Ok(to) = http::HeaderValue::from_str(&to) {
                r.headers_mut().insert(header::LOCATION, to);
            }
            Ok(r)
        }
        StsFault::Huge => {
            let token = "x".repeat(1024 * 1024);
            Ok(json(
                200,
                &json!({"access_token": token, "expires_in": 3600}),
            ))
        }
        StsFault::Truncated => {
            let whole = format!(
                "{{\"access_token\":\"sim_truncated_{}\",\"expires_in\":3600}}",
                "0".repeat(150)
            );
            // hyper writes the promised Content-Length, then closes the connection when the
            // body ends short.
            let cut = Bytes::from(whole.as_bytes()[..40].to_vec());
            let pause = Box::pin(tokio::time::sleep(std::time::Duration::from_millis(50)));
            let mut r = Response::new(BoxBody::new(CutOff(Some(cut), pause)));
            r.headers_mut()
                .insert(header::CONTENT_LENGTH, whole.len().into());
            r.headers_mut().insert(
                header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            Ok(r)
        }
    }
}

fn token_answer(token: &IssuedToken) -> Response<SimBody> {
    let ttl = token.expires_at.saturating_duration_since(token.issued_at);
    json(
        200,
        &json!({
            "access_token": token.token,
            "token_type": "Bearer",
            "expires_in": ttl.as_secs(),
        }),
    )
}

fn issue(state: &State, body: &[u8]) -> Response<SimBody> {
    let mut client_id = None;
    let mut client_secret = None;
    let mut grant_type = None;
    for (k, v) in form_urlencoded::parse(body) {
        match &*k {
            "client_id" => client_id = Some(v.into_owned()),
            "client_secret" => client_secret = Some(v.into_owned()),
            "grant_type" => grant_type = Some(v.into_owned()),
            _ => {}
        }
    }
    if grant_type.as_deref() != Some("client_credentials") {
        return json(
            400,
            &json!({"error": "unsupported_grant_type", "error_description": "grant_type must be client_credentials"}),
        );
    }
    if client_id.as_deref() != Some(state.client_id.as_str())
        || client_secret.as_deref() != Some(lock(&state.client_secret).as_str())
    {
        return json(
            401,
            &json!({"error": "invalid_client", "error_description": "client authentication failed"}),
        );
    }
    let token = state.issue(None, None);
    token_answer(&token)
}

fn update(state: &State, bearer: Option<IssuedToken>, body: &[u8]) -> Response<SimBody> {
    let Some(base) = bearer else {
        return json(
            401,
            &json!({"error": "invalid_token", "error_description": "update_token needs a valid Bearer token"}),
        );
    };
    let request: serde_json::Value = serde_json::from_slice(body).unwrap_or_default();
    if request["grant_type"] != "update_token" {
        return json(
            400,
            &json!({"error": "unsupported_grant_type", "error_description": "grant_type must be update_token"}),
        );
    }
    if base.delegate.is_some() {
        return json(
            400,
            &json!({"error": "invalid_grant", "error_description": "an updated token cannot be updated again"}),
        );
    }
    let Some(delegate) = request["delegate"].as_str() else {
        return json(
            400,
            &json!({"error": "invalid_request", "error_description": "delegate is missing"}),
        );
    };
    if data::team(delegate).is_none() && !state.any_team.load(Ordering::SeqCst) {
        return json(
            403,
            &json!({"error": "invalid_delegate", "error_description": "unknown customer team"}),
        );
    }
    let token = state.issue(Some(delegate.to_string()), Some(base.token));
    token_answer(&token)
}

/// A body of one chunk and no size hint, so hyper trusts the `Content-Length` header set beside
/// it: the client is promised more than it gets. The pause after the chunk lets hyper flush the
/// head and the chunk before the body ends and the connection is closed.
struct CutOff(Option<Bytes>, std::pin::Pin<Box<tokio::time::Sleep>>);

impl http_body::Body for CutOff {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, std::io::Error>>> {
        if let Some(chunk) = self.0.take() {
            return std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))));
        }
        self.1.as_mut().poll(cx).map(|()| None)
    }
}
