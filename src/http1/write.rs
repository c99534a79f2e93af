//! Writing an answer on the lean server: the head as hyper's server writes it (status line with
//! the canonical reason, the fields, `date` when absent, `content-length` when the body's size
//! is known and no length is set, else chunked; `connection: close` when the connection ends),
//! then the body, frame by frame, small frames gathered into one write.

use std::io;
use std::pin::Pin;
use std::sync::Mutex;
use std::task::Poll;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::BytesMut;
use http::header::{self, HeaderMap};
use http::{Response, StatusCode};
use http_body::Body as _;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt as _};

use crate::body::ProxyBody;
use crate::fields::{Kind, RawFields};
use crate::headers::{self, write_field};

/// Room made in the connection's read buffer before each read.
pub(super) const READ_CHUNK: usize = 8 * 1024;

/// Frames up to this size are copied into the write buffer to go out with what precedes them;
/// bigger ones are written as they are.
const GATHER: usize = 16 * 1024;

/// How the body goes on the wire.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Framing {
    /// None at all: a HEAD answer, 1xx, 204, 304.
    Nothing,
    /// Exactly this many bytes.
    Length(u64),
    /// Chunked.
    Chunked,
}

/// Why an answer could not be written whole; either way the connection closes.
#[derive(Debug)]
pub(super) enum WriteError {
    /// The client's socket failed or closed.
    Io(io::Error),
    /// The body failed (the upstream's broke off, timed out, or broke its length).
    Body,
}

impl From<io::Error> for WriteError {
    fn from(e: io::Error) -> Self {
        WriteError::Io(e)
    }
}

/// The buffers of one connection, reused from answer to answer.
pub(super) struct Buffers<'a> {
    /// What goes out next.
    pub(super) out: &'a mut Vec<u8>,
    /// What the client sent meanwhile (its next request), kept up to `max_inbound` bytes.
    pub(super) inbound: &'a mut BytesMut,
    pub(super) max_inbound: usize,
}

/// Writes `response` to `io`. `head_only`: the request was HEAD. `close`: the connection ends
/// after it; it also does when the answer says `Connection: close` (the proxy's answer to a
/// refused client does). Returns whether the connection ends. While the body waits on the
/// upstream, `io` is watched: bytes the client sends go into `buffers.inbound`; its close ends
/// the answer.
pub(super) async fn answer<S>(
    io: &mut S,
    response: Response<ProxyBody>,
    head_only: bool,
    close: bool,
    buffers: Buffers<'_>,
) -> Result<bool, WriteError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let (parts, mut body) = response.into_parts();
    let upstream = body.take_fields();
    let says_close = parts
        .headers
        .get_all(header::CONNECTION)
        .iter()
        .any(|v| v.as_bytes().eq_ignore_ascii_case(b"close"));
    buffers.out.clear();
    let add_close = close && !says_close;
    let fields = Fields {
        own: &parts.headers,
        upstream: upstream.as_ref(),
    };
    let framing = encode_head(
        buffers.out,
        parts.status,
        fields,
        &body,
        head_only,
        add_close,
    );
    let close = close || says_close;
    if framing != Framing::Nothing {
        send_body(io, body, framing, buffers).await?;
    } else {
        io.write_all(buffers.out).await?;
        io.flush().await?;
    }
    Ok(close)
}

/// Writes the head already in `buffers.out`, then the body, framed.
async fn send_body<S>(
    io: &mut S,
    mut body: ProxyBody,
    framing: Framing,
    buffers: Buffers<'_>,
) -> Result<(), WriteError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let Buffers {
        out,
        inbound,
        max_inbound,
    } = buffers;
    let mut left = match framing {
        Framing::Length(n) => n,
        _ => u64::MAX,
    };
    // Bytes written and maybe not yet flushed: TLS holds what the socket did not take until
    // asked to flush, so nothing waits on the upstream with bytes held back.
    let mut unflushed = false;
    while !body.is_end_stream() {
        let next = std::future::poll_fn(|cx| {
            if let Poll::Ready(frame) = Pin::new(&mut body).poll_frame(cx) {
                return Poll::Ready(Next::Frame(frame));
            }
            if !out.is_empty() || unflushed {
                return Poll::Ready(Next::Flush);
            }
            poll_watch(io, cx, inbound, max_inbound).map(|()| Next::ClientGone)
        })
        .await;
        let frame = match next {
            Next::Flush => {
                io.write_all(out).await?;
                out.clear();
                io.flush().await?;
                unflushed = false;
                continue;
            }
            Next::ClientGone => return Err(io::Error::from(io::ErrorKind::ConnectionReset).into()),
            Next::Frame(None) => break,
            Next::Frame(Some(Err(_))) => return Err(WriteError::Body),
            Next::Frame(Some(Ok(frame))) => frame,
        };
        // Trailers are not passed on (hyper's server sends them only to a client that asked).
        let Ok(data) = frame.into_data() else {
            continue;
        };
        if data.is_empty() {
            continue;
        }
        if let Some(big) = gather(out, data, framing, &mut left)? {
            io.write_all(out).await?;
            out.clear();
            io.write_all(&big).await?;
        }
        if framing == Framing::Chunked {
            out.extend_from_slice(b"\r\n");
        }
        // The gathered bytes are bounded: a body whose frames are always ready (a fast TLS
        // upstream, a slow client) must not pile up here.
        if out.len() >= GATHER {
            io.write_all(out).await?;
            out.clear();
        }
        unflushed = true;
    }
    match framing {
        Framing::Length(_) if left != 0 => return Err(WriteError::Body),
        Framing::Chunked => out.extend_from_slice(b"0\r\n\r\n"),
        _ => {}
    }
    if !out.is_empty() {
        io.write_all(out).await?;
    }
    io.flush().await?;
    Ok(())
}

/// Puts a data frame into `out` after its chunk size (chunked) or counts it against the length
/// (`left`); a frame bigger than [`GATHER`] comes back, to be written as it is.
fn gather(
    out: &mut Vec<u8>,
    data: bytes::Bytes,
    framing: Framing,
    left: &mut u64,
) -> Result<Option<bytes::Bytes>, WriteError> {
    if framing == Framing::Chunked {
        let mut size = [0u8; 16];
        out.extend_from_slice(hex(data.len(), &mut size));
        out.extend_from_slice(b"\r\n");
    } else {
        *left = left
            .checked_sub(data.len() as u64)
            .ok_or(WriteError::Body)?;
    }
    if data.len() > GATHER {
        return Ok(Some(data));
    }
    out.extend_from_slice(&data);
    Ok(None)
}

/// Watches a client whose request is in flight: what it sends (its next request) goes into
/// `inbound` while that holds less than `max` bytes; ready when it closed or failed. A client
/// that sent more requests and then closed its side is not gone: those get their answers, as
/// hyper gives them.
pub(super) fn poll_watch<S>(
    io: &mut S,
    cx: &mut std::task::Context<'_>,
    inbound: &mut BytesMut,
    max: usize,
) -> Poll<()>
where
    S: AsyncRead + Unpin,
{
    loop {
        if inbound.len() >= max {
            return Poll::Pending;
        }
        inbound.reserve(READ_CHUNK);
        match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, inbound) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(Ok(0)) if !inbound.is_empty() => return Poll::Pending,
            Poll::Ready(Ok(0) | Err(_)) => return Poll::Ready(()),
            Poll::Ready(Ok(_)) => {}
        }
    }
}

enum Next {
    Frame(Option<Result<http_body::Frame<bytes::Bytes>, crate::body::BoxError>>),
    Flush,
    ClientGone,
}

/// `n` in lower-case hex, in `buf`.
fn hex(mut n: usize, buf: &mut [u8; 16]) -> &[u8] {
    let mut at = buf.len();
    loop {
        at -= 1;
        buf[at] = b"0123456789abcdef"[n & 15];
        n >>= 4;
        if n == 0 {
            return &buf[at..];
        }
    }
}

/// An answer's header fields: the proxy's own, and the upstream's as they came (those the client
/// gets) when a lean connection read them.
#[derive(Clone, Copy)]
struct Fields<'a> {
    own: &'a HeaderMap,
    upstream: Option<&'a RawFields>,
}

impl Fields<'_> {
    /// Writes every field but `Content-Length` (the framing writes that one).
    fn write(self, out: &mut Vec<u8>) {
        for (name, value, kind) in self.upstream.into_iter().flat_map(RawFields::forwarded) {
            if kind != Kind::ContentLength {
                write_field(out, name, value);
            }
        }
        headers::write_fields(out, self.own, &header::CONTENT_LENGTH);
    }

    fn has_date(self) -> bool {
        self.own.contains_key(header::DATE) || self.upstream.is_some_and(|f| f.has(Kind::Date))
    }

    /// The `Content-Length` the answer states, if it states a valid one (the lean upstream
    /// connection has checked that all the upstream's values agree).
    fn stated_length(self) -> Option<u64> {
        let value = match self.own.get(header::CONTENT_LENGTH) {
            Some(own) => own.as_bytes(),
            None => self.upstream?.values(Kind::ContentLength).next()?,
        };
        headers::decimal(headers::list(value).next()?)
    }
}

/// The length a body without a stated one implies: its exact size; to HEAD, only a non-zero
/// one (the empty body of a HEAD answer says nothing about the resource's size).
fn implied_length(body: &ProxyBody, head_only: bool) -> Option<u64> {
    body.size_hint().exact().filter(|&n| !head_only || n > 0)
}

/// Writes the answer's head into `out` and says how its body goes.
fn encode_head(
    out: &mut Vec<u8>,
    status: StatusCode,
    fields: Fields<'_>,
    body: &ProxyBody,
    head_only: bool,
    close: bool,
) -> Framing {
    out.extend_from_slice(b"HTTP/1.1 ");
    out.extend_from_slice(status.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(status.canonical_reason().unwrap_or("<none>").as_bytes());
    out.extend_from_slice(b"\r\n");
    // The length is written below, once, from the one value it can have.
    fields.write(out);
    if !fields.has_date() {
        with_date(|date| write_field(out, b"date", date));
    }
    if close {
        write_field(out, b"connection", b"close");
    }
    if status.is_informational() || status == StatusCode::NO_CONTENT {
        out.extend_from_slice(b"\r\n");
        return Framing::Nothing;
    }
    // A 304 states the representation's length, if the upstream said; it has no body either way.
    let not_modified = status == StatusCode::NOT_MODIFIED;
    let stated = fields.stated_length();
    let length = match not_modified {
        true => stated,
        false => stated.or_else(|| implied_length(body, head_only)),
    };
    if let Some(length) = length {
        write_field(
            out,
            b"content-length",
            itoa::Buffer::new().format(length).as_bytes(),
        );
    }
    let framing = match length {
        _ if head_only || not_modified => Framing::Nothing,
        Some(length) => Framing::Length(length),
        None => {
            write_field(out, b"transfer-encoding", b"chunked");
            Framing::Chunked
        }
    };
    out.extend_from_slice(b"\r\n");
    framing
}

/// The `date` value and the second it is for: formatted once a second.
static DATE: Mutex<(u64, [u8; 29])> = Mutex::new((u64::MAX, [0; 29]));

/// Calls `f` with the current time as an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`).
fn with_date(f: impl FnOnce(&[u8])) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut cached = crate::sync::lock(&DATE);
    if cached.0 != now {
        let text = httpdate::fmt_http_date(UNIX_EPOCH + Duration::from_secs(now));
        if text.len() == 29 {
            cached.1.copy_from_slice(text.as_bytes());
        }
        cached.0 = now;
    }
    f(&cached.1);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(
        status: u16,
        headers: &[(&str, &str)],
        body: ProxyBody,
        head_only: bool,
    ) -> (String, bool) {
        let mut map = HeaderMap::new();
        for (k, v) in headers {
            map.append(
                http::header::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                http::HeaderValue::from_str(v).unwrap(),
            );
        }
        let mut out = Vec::new();
        let status = StatusCode::from_u16(status).unwrap();
        let fields = Fields {
            own: &map,
            upstream: None,
        };
        let framing = encode_head(&mut out, status, fields, &body, head_only, false);
        (String::from_utf8(out).unwrap(), framing == Framing::Chunked)
    }

    #[test]
    fn heads_say_the_length_or_chunk() {
        let (text, chunked) = head(404, &[("x-a", "1")], ProxyBody::full("{}", None), false);
        assert!(
            text.starts_with("HTTP/1.1 404 Not Found\r\nx-a: 1\r\ndate: "),
            "{text}"
        );
        assert!(text.ends_with("GMT\r\ncontent-length: 2\r\n\r\n"), "{text}");
        assert!(!chunked);
        let (text, _) = head(
            200,
            &[("content-length", "7"), ("date", "x")],
            ProxyBody::full("", None),
            true,
        );
        assert_eq!(
            text,
            "HTTP/1.1 200 OK\r\ndate: x\r\ncontent-length: 7\r\n\r\n"
        );
        let (text, _) = head(204, &[("date", "x")], ProxyBody::full("", None), false);
        assert_eq!(text, "HTTP/1.1 204 No Content\r\ndate: x\r\n\r\n");
    }

    #[test]
    fn hex_sizes() {
        let mut buf = [0u8; 16];
        assert_eq!(hex(0, &mut buf), b"0");
        assert_eq!(hex(255, &mut buf), b"ff");
        assert_eq!(hex(0x10000, &mut buf), b"10000");
    }

    #[test]
    fn dates_are_imf_fixdates() {
        let mut date = Vec::new();
        with_date(|d| date.extend_from_slice(d));
        let text = String::from_utf8(date).unwrap();
        assert!(httpdate::parse_http_date(&text).is_ok(), "{text}");
    }
}
