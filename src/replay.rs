//! A request kept so that it can go again with a fresh token when the upstream refuses the
//! one it carried (`Proxy::retry_on_refusal`).

use http::header::{self, HeaderMap, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Uri};
use http_body::Body as _;
use http_body_util::{Either, Full};

use crate::request_body::ClientBody;
use crate::upstream::OutgoingBody;

/// A request kept so that it can be sent again with a fresh token.
pub(crate) struct Replay {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Replay {
    /// A copy of a rewritten request that may be sent twice: a safe method and no body.
    /// Requests with a body are never sent twice.
    pub(crate) fn of(parts: &Parts, body: &ClientBody) -> Option<Self> {
        let safe = matches!(parts.method, Method::GET | Method::HEAD | Method::OPTIONS);
        (safe && body.is_end_stream()).then(|| Replay {
            method: parts.method.clone(),
            uri: parts.uri.clone(),
            headers: parts.headers.clone(),
        })
    }

    /// The same request with `bearer` in place of the refused token.
    pub(crate) fn with_bearer(self, bearer: &HeaderValue) -> Request<OutgoingBody> {
        let mut headers = self.headers;
        headers.insert(header::AUTHORIZATION, bearer.clone());
        let mut again = Request::new(Either::Right(Full::default()));
        *again.method_mut() = self.method;
        *again.uri_mut() = self.uri;
        *again.headers_mut() = headers;
        again
    }
}
