//! The upstream's response body: read through to the client, it gives its HTTP/1.1 connection
//! back to the pool when it ends. A body read by hyper's client, or one the request task reads
//! itself from a lean connection (`h1.rs`), framed by `framing.rs`.

use std::error::Error as StdError;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use super::framing::{Decoded, Decoder, Framing};
use super::h1::{H1Conn, READ_CHUNK};
use super::pool::{Lease, Pool};
use crate::fields::RawFields;

/// Error type of a [`PooledBody`]: hyper's, an I/O error or broken framing.
pub(crate) type BodyError = Box<dyn StdError + Send + Sync>;

/// Most bytes asked of the socket at once when the body's length is known.
const MAX_READ: usize = 64 * 1024;

/// An upstream response body. Its connection goes back to the pool when it has been read to the
/// end, and is closed when it is dropped before.
pub struct PooledBody {
    kind: Kind,
    /// The answer's header fields as they came, when a lean connection read them.
    fields: Option<RawFields>,
}

enum Kind {
    Hyper {
        inner: Incoming,
        lease: Option<Lease>,
    },
    Lean {
        /// `None` once the body has ended (or failed) and the connection is gone.
        conn: Option<Box<H1Conn>>,
        decoder: Decoder,
        /// The answer let the connection carry another request.
        keep_alive: bool,
        pool: Arc<Pool>,
    },
}

impl PooledBody {
    /// A body read by hyper, whose HTTP/1.1 connection, if `lease` holds one, goes back to the
    /// pool at its end.
    pub(super) fn new(inner: Incoming, lease: Option<Lease>) -> Self {
        PooledBody {
            kind: Kind::Hyper { inner, lease },
            fields: None,
        }
    }

    /// The answer's header fields as they came, if a lean connection read them (once).
    pub(crate) fn take_fields(&mut self) -> Option<RawFields> {
        self.fields.take()
    }

    /// The answer's header fields as they came, if a lean connection read them.
    pub(crate) fn fields(&self) -> Option<&RawFields> {
        self.fields.as_ref()
    }

    /// The answer's header fields as they came, if a lean connection read them.
    pub(crate) fn fields_mut(&mut self) -> Option<&mut RawFields> {
        self.fields.as_mut()
    }

    /// The body of an answer read from the lean connection `conn`, framed by `framing`; it
    /// keeps the head's `fields`.
    pub(super) fn lean(
        conn: Box<H1Conn>,
        (framing, keep_alive): (Framing, bool),
        fields: RawFields,
        pool: Arc<Pool>,
    ) -> Self {
        let mut body = PooledBody {
            kind: Kind::Lean {
                conn: Some(conn),
                decoder: Decoder::new(framing),
                keep_alive,
                pool,
            },
            fields: Some(fields),
        };
        // No body (HEAD, 204, 304, a length of 0): the connection is free at once.
        if body.is_end_stream() {
            body.release();
        }
        body
    }

    fn release(&mut self) {
        match &mut self.kind {
            Kind::Hyper { lease, .. } => {
                if let Some(lease) = lease.take() {
                    lease.release();
                }
            }
            Kind::Lean {
                conn,
                decoder,
                keep_alive,
                pool,
            } => {
                // Bytes after the end of the body are nothing the proxy asked for: the
                // connection closes rather than hand them to the next request.
                if let Some(conn) = conn.take()
                    && *keep_alive
                    && decoder.reusable()
                    && conn.buf.is_empty()
                {
                    pool.checkin_lean(conn);
                }
            }
        }
    }
}

impl Drop for PooledBody {
    fn drop(&mut self) {
        if self.is_end_stream() {
            self.release();
        }
    }
}

/// The next frame of a lean body: decoded from what the buffer holds, else read.
fn poll_lean(
    conn: &mut Option<Box<H1Conn>>,
    decoder: &mut Decoder,
    cx: &mut Context<'_>,
) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
    loop {
        let Some(c) = conn.as_mut() else {
            return Poll::Ready(None);
        };
        match decoder.decode(&mut c.buf) {
            Ok(Decoded::Data(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
            Ok(Decoded::End) => return Poll::Ready(None),
            Err(e) => {
                *conn = None;
                return Poll::Ready(Some(Err(e.into())));
            }
            Ok(Decoded::NeedMore) => {}
        }
        let want = decoder.remaining().map_or(READ_CHUNK, |n| {
            usize::try_from(n).unwrap_or(MAX_READ).min(MAX_READ)
        });
        c.buf.reserve(want);
        match tokio_util::io::poll_read_buf(Pin::new(&mut c.io), cx, &mut c.buf) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) => {
                *conn = None;
                return Poll::Ready(decoder.eof().err().map(|e| Err(e.into())));
            }
            Poll::Ready(Ok(_)) => {}
            Poll::Ready(Err(e)) => {
                *conn = None;
                return Poll::Ready(Some(Err(e.into())));
            }
        }
    }
}

impl Body for PooledBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        let polled = match &mut this.kind {
            Kind::Hyper { inner, .. } => Pin::new(inner)
                .poll_frame(cx)
                .map(|frame| frame.map(|f| f.map_err(BodyError::from))),
            Kind::Lean { conn, decoder, .. } => poll_lean(conn, decoder, cx),
        };
        // The connection goes back as soon as the body is complete: with the last frame.
        if matches!(polled, Poll::Ready(None)) || this.is_end_stream() {
            this.release();
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        match &self.kind {
            Kind::Hyper { inner, .. } => inner.is_end_stream(),
            Kind::Lean { decoder, .. } => decoder.is_done(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        match &self.kind {
            Kind::Hyper { inner, .. } => inner.size_hint(),
            Kind::Lean { decoder, .. } => match decoder.remaining() {
                Some(n) => SizeHint::with_exact(n),
                None => SizeHint::default(),
            },
        }
    }
}
