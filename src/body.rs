//! The response body the proxy sends: the upstream's body streamed through (with an idle timeout)
//! or a small body of the proxy's own; either way it writes the request's [`AccessLog`] when it
//! ends.

use std::error::Error as StdError;
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use http::header::HeaderValue;
use http_body::{Body, Frame, SizeHint};
use tokio::time::Sleep;

use crate::access_log::AccessLog;
use crate::coalesce::{Recorder, SharedAnswer};
use crate::fields::RawFields;
use crate::headers::{self, XCache};
use crate::upstream::PooledBody;

/// Error type of [`ProxyBody`]: hyper's error or the idle timeout.
pub(crate) type BoxError = Box<dyn StdError + Send + Sync>;

/// The upstream stopped sending body data for longer than `upstream.timeout`.
#[derive(Debug, thiserror::Error)]
#[error("the upstream sent no response data for {0:?}")]
pub(crate) struct BodyIdleTimeout(Duration);

enum Kind {
    Upstream {
        inner: PooledBody,
        idle: Duration,
        /// Made at the first wait: a body whose frames are ready when asked for (a small answer
        /// read with its head) never touches the timer wheel.
        timer: Option<Pin<Box<Sleep>>>,
        /// Whether the previous poll was left pending, i.e. the timer measures a wait on the
        /// upstream. A client that stops reading is not the upstream's fault: its pause must not
        /// count, so the timer restarts at the first poll after a frame.
        waiting: bool,
    },
    Full(Option<Bytes>),
}

/// A response body. Streams frame by frame; never buffers the upstream body.
pub struct ProxyBody {
    kind: Kind,
    log: Option<AccessLog>,
    /// The upstream's header fields as they came, when a lean connection read them: the
    /// response's header map then holds only the proxy's own fields (see [`with_fields`]).
    fields: Option<RawFields>,
    /// Records the body for the requests that follow this one's flight. Boxed: most answers
    /// lead no one.
    recorder: Option<Box<Recorder>>,
}

/// Puts the upstream's header fields that `response`'s body carries (those the client gets)
/// into its header map, ahead of the proxy's own. For hyper's server, which writes the map; the
/// lean server writes them from the body without building one.
pub(crate) fn with_fields(response: &mut Response<ProxyBody>) {
    if let Some(fields) = response.body_mut().fields.take() {
        let own = std::mem::replace(response.headers_mut(), fields.to_map(true));
        response.headers_mut().extend(own);
    }
}

impl ProxyBody {
    /// Streams an upstream body; fails it if no frame arrives within `idle`.
    pub fn upstream(mut inner: PooledBody, idle: Duration, log: Option<AccessLog>) -> Self {
        ProxyBody {
            fields: inner.take_fields(),
            kind: Kind::Upstream {
                inner,
                idle,
                timer: None,
                waiting: false,
            },
            log,
            recorder: None,
        }
    }

    /// The answer a flight's leader shares, for a request that followed it: its own request
    /// id, `X-Cache: COALESCED`.
    pub(crate) fn shared(
        answer: &SharedAnswer,
        request_id: &HeaderValue,
        log: AccessLog,
    ) -> Response<Self> {
        let mut headers = answer.headers.clone();
        let fields = answer.fields.clone().map(|mut fields| {
            fields.set_request_id(request_id.clone());
            fields.set_x_cache(XCache::Coalesced);
            fields
        });
        if fields.is_none() {
            headers.insert(headers::X_REQUEST_ID.clone(), request_id.clone());
            let coalesced = XCache::Coalesced.value().clone();
            headers.insert(headers::X_CACHE.clone(), coalesced);
        }
        let mut body = ProxyBody::full(answer.body.clone(), Some(log));
        body.fields = fields;
        let mut response = Response::new(body);
        *response.status_mut() = answer.status;
        *response.headers_mut() = headers;
        response
    }

    /// Records this body, as it streams, for the requests that follow its flight.
    pub(crate) fn record(&mut self, recorder: Recorder) {
        self.recorder = Some(Box::new(recorder));
    }

    /// A body of the proxy's own (an error document, a probe answer).
    pub fn full(bytes: impl Into<Bytes>, log: Option<AccessLog>) -> Self {
        let bytes = bytes.into();
        ProxyBody {
            kind: Kind::Full((!bytes.is_empty()).then_some(bytes)),
            log,
            fields: None,
            recorder: None,
        }
    }

    /// The upstream's header fields as they came, if a lean connection read them (once).
    pub(crate) fn take_fields(&mut self) -> Option<RawFields> {
        self.fields.take()
    }

    fn end(&mut self, outcome: &'static str) {
        if let Some(log) = self.log.take() {
            log.finish(outcome);
        }
    }
}

impl Drop for ProxyBody {
    fn drop(&mut self) {
        // A body that ended normally has logged already, except an empty one hyper never polled.
        // Anything else means the client went away mid-response.
        let outcome = if self.is_end_stream() {
            // An empty body the server never polled ended all the same.
            if let Some(recorder) = &mut self.recorder {
                recorder.end();
            }
            "complete"
        } else {
            "aborted"
        };
        self.end(outcome);
    }
}

impl Body for ProxyBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        let result = match &mut this.kind {
            Kind::Full(bytes) => Poll::Ready(bytes.take().map(|b| Ok(Frame::data(b)))),
            Kind::Upstream {
                inner,
                idle,
                timer,
                waiting,
            } => match Pin::new(inner).poll_frame(cx) {
                Poll::Ready(frame) => {
                    *waiting = false;
                    Poll::Ready(frame)
                }
                Poll::Pending => {
                    let timer = match timer {
                        Some(timer) => {
                            if !*waiting {
                                timer.as_mut().reset(tokio::time::Instant::now() + *idle);
                            }
                            timer
                        }
                        None => timer.insert(Box::pin(tokio::time::sleep(*idle))),
                    };
                    *waiting = true;
                    ready!(timer.as_mut().poll(cx));
                    Poll::Ready(Some(Err(BodyIdleTimeout(*idle).into())))
                }
            },
        };
        if let (Some(recorder), Poll::Ready(frame)) = (&mut this.recorder, &result) {
            match frame {
                Some(Ok(frame)) => match frame.data_ref() {
                    Some(data) => recorder.data(data),
                    None => recorder.give_up(),
                },
                Some(Err(_)) => recorder.give_up(),
                None => recorder.end(),
            }
        }
        match &result {
            Poll::Ready(Some(Ok(frame))) => {
                if let (Some(log), Some(data)) = (this.log.as_mut(), frame.data_ref()) {
                    log.sent(data.len() as u64);
                }
            }
            Poll::Ready(Some(Err(e))) => {
                {
                    // The body streams after `Proxy::handle` returned: enter the request's span.
                    let _request = this.log.as_ref().map(|log| log.span().enter());
                    tracing::warn!(error = %e, "response body failed; the client sees it cut off");
                }
                this.end("upstream_error");
            }
            Poll::Ready(None) => this.end("complete"),
            Poll::Pending => {}
        }
        result
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Full(bytes) => bytes.is_none(),
            Kind::Upstream { inner, .. } => inner.is_end_stream(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Full(bytes) => SizeHint::with_exact(bytes.as_ref().map_or(0, |b| b.len() as u64)),
            Kind::Upstream { inner, .. } => inner.size_hint(),
        }
    }
}
