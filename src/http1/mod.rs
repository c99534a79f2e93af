//! The lean HTTP/1.1 server: the connection's own task reads each request head into a reused
//! buffer, runs the request path and writes the answer, with no dispatcher, channel or second
//! buffer in between. It serves what BI tools send: HTTP/1.1 requests without a body, kept
//! alive. Anything else (HTTP/2, a body, an upgrade, any head hyper would refuse; see `head.rs`)
//! hands the connection, with the bytes already read, to hyper's server for the rest of its
//! life, so the rules for those are hyper's.
//!
//! The limits are the same as on hyper's path: a head must arrive within the header timeout
//! (counted from the connection's start, then from the end of each answer); the byte limit is
//! enforced by hyper, to which a head that reaches it is handed; a client that closes while its
//! request waits on the upstream cancels it; a graceful shutdown lets the answer in flight finish
//! and then closes the connection.

mod head;
mod prefixed;
mod write;

use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use http::request::Parts;
use http::{Method, Request};
use tokio::io::{AsyncRead, AsyncReadExt as _, AsyncWrite, AsyncWriteExt as _};
use tokio::sync::watch;
use tokio::time::Instant;

pub use head::{Field, MAX_FIELDS, Parsed, parse};
pub(crate) use prefixed::Prefixed;

use crate::inbound::PeerNames;
use crate::live::Live;
use crate::request_body::InboundBody;
use write::READ_CHUNK;

/// Which server reads HTTP/1.1 requests.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Engine {
    /// The lean server, handing to hyper what it does not serve itself.
    #[default]
    Lean,
    /// hyper's for everything (the tests run the hardening rules on both).
    Hyper,
}

/// One connection's context.
pub(crate) struct Connection<'a> {
    pub(crate) live: &'a Arc<Live>,
    /// The names of its verified client certificate.
    pub(crate) peer: Option<&'a PeerNames>,
    /// When it was accepted.
    pub(crate) opened: Instant,
    pub(crate) stopping: &'a mut watch::Receiver<bool>,
    /// How long a client has to send a whole head, from the connection's start, then from the
    /// end of each answer.
    pub(crate) head_timeout: Duration,
    /// The largest head: one that reaches it goes to hyper, which refuses it.
    pub(crate) max_head: usize,
}

/// How the lean server left a connection.
pub(crate) enum Ended {
    /// Closed (by either side, a timeout, an error or shutdown).
    Closed,
    /// For hyper: `read` holds the bytes read and not used; `served`: whether the lean server
    /// answered requests before.
    HandOff { read: BytesMut, served: bool },
}

/// What waiting for a head came to.
#[expect(
    clippy::large_enum_variant,
    reason = "made and moved once per request; a Box would cost an allocation per request"
)]
enum Next {
    Request(Parts, bool),
    HandOff,
    Closed,
}

/// Serves requests on `io` until it closes or a request needs hyper.
pub(crate) async fn serve<S>(io: &mut S, conn: Connection<'_>) -> Ended
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut buf = BytesMut::with_capacity(READ_CHUNK);
    let mut out = Vec::with_capacity(READ_CHUNK);
    let mut fields = Vec::with_capacity(MAX_FIELDS);
    let mut served = false;
    let Connection {
        live,
        peer,
        opened,
        stopping,
        head_timeout,
        max_head,
    } = conn;
    loop {
        let since = if served { Instant::now() } else { opened };
        let deadline = since + head_timeout;
        let next = read_head(
            io,
            &mut buf,
            &mut fields,
            deadline,
            max_head,
            live,
            stopping,
        )
        .await;
        let (parts, asks_close) = match next {
            Next::Request(parts, close) => (parts, close),
            Next::HandOff => return Ended::HandOff { read: buf, served },
            Next::Closed => return Ended::Closed,
        };
        served = true;
        let head_only = parts.method == Method::HEAD;
        // The proxy current when the request arrives: a reload applies to the next request.
        let proxy = live.proxy();
        let handled = proxy.handle(Request::from_parts(parts, InboundBody::Empty), peer);
        tokio::pin!(handled);
        let response = tokio::select! {
            biased;
            response = &mut handled => response,
            // The client left: its request is dropped, upstream call and all.
            () = std::future::poll_fn(|cx| write::poll_watch(io, cx, &mut buf, max_head)) => {
                return Ended::Closed;
            }
        };
        let close = asks_close || *stopping.borrow();
        let buffers = write::Buffers {
            out: &mut out,
            inbound: &mut buf,
            max_inbound: max_head,
        };
        let closing = write::answer(io, response, head_only, close, buffers).await;
        let closing = match closing {
            Ok(closing) => closing,
            Err(write::WriteError::Io(e)) => {
                tracing::debug!(error = %e, "the client's connection failed; closing");
                true
            }
            Err(write::WriteError::Body) => {
                tracing::debug!("the answer's body failed; closing the connection");
                true
            }
        };
        if closing {
            let _ = io.shutdown().await;
            return Ended::Closed;
        }
    }
}

/// Reads until `buf` starts with a complete head of at most `max_head` bytes, until `deadline`.
async fn read_head<S>(
    io: &mut S,
    buf: &mut BytesMut,
    fields: &mut Vec<Field>,
    deadline: Instant,
    max_head: usize,
    live: &Live,
    stopping: &mut watch::Receiver<bool>,
) -> Next
where
    S: AsyncRead + Unpin,
{
    let timer = tokio::time::sleep_until(deadline);
    tokio::pin!(timer);
    loop {
        if !buf.is_empty() {
            match parse(buf, max_head, fields) {
                Parsed::Partial => {}
                Parsed::HandOff => return Next::HandOff,
                Parsed::Request { parts, close } => return Next::Request(parts, close),
            }
        }
        buf.reserve(READ_CHUNK);
        tokio::select! {
            read = io.read_buf(buf) => match read {
                Ok(0) | Err(_) => return Next::Closed,
                Ok(_) => {}
            },
            () = &mut timer => {
                live.metrics().rejected_head("timeout");
                return Next::Closed;
            }
            // Shutdown: a connection between requests closes at once.
            _ = stopping.wait_for(|stop| *stop) => return Next::Closed,
        }
    }
}
