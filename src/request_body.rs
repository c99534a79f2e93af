//! The client's request body on its way upstream: streamed frame by frame, failed when the
//! client stalls longer than `listen.body_timeout`, and every failure recorded as the client's
//! (malformed, cut off, stalled), so that the request path can tell it from an upstream failure.
//! The upstream client polls this body; when its send fails, the [`BodyWatch`] says whose fault
//! it was.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::cause::innermost;

/// Why a client's request body failed. The client's fault, never the upstream's.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BodyFault {
    /// The framing was broken (a bad chunk size or chunk end).
    #[error("the request body is malformed ({0}); check the client's chunked encoding")]
    Malformed(String),
    /// The client closed the connection before the body was complete.
    #[error("the request body ended before its announced length; the client closed early")]
    CutOff,
    /// No body data arrived for `listen.body_timeout`.
    #[error("the request body stalled: no data for {0:?} (listen.body_timeout)")]
    Stalled(Duration),
}

/// The request path's view of one body's fate: set once, by the body, when it fails.
#[derive(Debug, Clone, Default)]
pub struct BodyWatch(Arc<OnceLock<BodyFault>>);

impl BodyWatch {
    /// The body's failure, if it failed.
    pub fn fault(&self) -> Option<BodyFault> {
        self.0.get().cloned()
    }
}

/// A request's body as the server read it: hyper's, or none (a request the proxy's own HTTP/1.1
/// server read, which carries no body).
#[derive(Debug)]
pub enum InboundBody {
    /// Read by hyper's server.
    Hyper(Incoming),
    /// No body at all.
    Empty,
}

impl InboundBody {
    /// Whether the request has no body (hyper's knows when its framing says none).
    pub fn is_empty(&self) -> bool {
        match self {
            InboundBody::Hyper(body) => http_body::Body::is_end_stream(body),
            InboundBody::Empty => true,
        }
    }
}

impl From<Incoming> for InboundBody {
    fn from(body: Incoming) -> Self {
        InboundBody::Hyper(body)
    }
}

/// A client's request body, streamed upstream with a stall timeout.
pub struct ClientBody {
    inner: InboundBody,
    stall: Duration,
    /// Made at the first wait: a body whose frames are ready when asked for never touches the
    /// timer wheel.
    timer: Option<Pin<Box<Sleep>>>,
    /// Whether the previous poll was left pending, i.e. the timer measures a wait on the client.
    /// An upstream that reads slowly is not the client's fault: its pause must not count, so
    /// the timer restarts at the first poll after a frame.
    waiting: bool,
    watch: BodyWatch,
}

impl ClientBody {
    /// Wraps `inner`; it fails if the client sends nothing for `stall` while the upstream waits.
    pub fn new(inner: InboundBody, stall: Duration) -> (Self, BodyWatch) {
        let watch = BodyWatch::default();
        let body = ClientBody {
            inner,
            stall,
            timer: None,
            waiting: false,
            watch: watch.clone(),
        };
        (body, watch)
    }

    fn fail(&self, fault: BodyFault) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        let _ = self.watch.0.set(fault.clone());
        Poll::Ready(Some(Err(fault)))
    }
}

impl std::fmt::Debug for ClientBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBody")
            .field("stall", &self.stall)
            .finish_non_exhaustive()
    }
}

/// What a failed read of the client's body means: the client closed early (hyper reports an
/// unexpected end of file, or a closed or reset connection), or its framing was broken.
fn classify(e: &hyper::Error) -> BodyFault {
    let mut cause: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cause {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            use std::io::ErrorKind::{ConnectionAborted, ConnectionReset, UnexpectedEof};
            if matches!(
                io.kind(),
                UnexpectedEof | ConnectionReset | ConnectionAborted
            ) {
                return BodyFault::CutOff;
            }
        }
        cause = c.source();
    }
    if e.is_incomplete_message() || e.is_closed() || e.is_canceled() {
        BodyFault::CutOff
    } else {
        BodyFault::Malformed(innermost(e))
    }
}

impl Body for ClientBody {
    type Data = Bytes;
    type Error = BodyFault;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyFault>>> {
        let this = &mut *self;
        let inner = match &mut this.inner {
            InboundBody::Hyper(inner) => inner,
            InboundBody::Empty => return Poll::Ready(None),
        };
        match Pin::new(inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.waiting = false;
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => this.fail(classify(&e)),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let stall = this.stall;
                let timer = match &mut this.timer {
                    Some(timer) => {
                        if !this.waiting {
                            timer.as_mut().reset(tokio::time::Instant::now() + stall);
                        }
                        timer
                    }
                    None => this.timer.insert(Box::pin(tokio::time::sleep(stall))),
                };
                this.waiting = true;
                ready!(timer.as_mut().poll(cx));
                this.fail(BodyFault::Stalled(stall))
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.inner {
            InboundBody::Hyper(inner) => inner.is_end_stream(),
            InboundBody::Empty => true,
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.inner {
            InboundBody::Hyper(inner) => inner.size_hint(),
            InboundBody::Empty => SizeHint::with_exact(0),
        }
    }
}
