//! The lean HTTP/1.1 client connection: the request task writes its request head straight into
//! the connection and reads the answer's head and body from it, with no connection task and no
//! channel in between (hyper's client runs one task per connection and hands every request and
//! answer across). It carries requests without a body (what BI tools send: GET, HEAD) and their
//! replays; requests with a body go through hyper's client.
//!
//! The answer's head is parsed by httparse under hyper's client rules or stricter: at most
//! [`MAX_RESPONSE_HEADERS`] fields and [`MAX_RESPONSE_HEAD`] bytes, no obsolete line folding, 1xx
//! heads skipped, `101` refused (the proxy never asks to upgrade), `Transfer-Encoding` with
//! `Content-Length` refused (hyper lets the first win), differing or malformed `Content-Length`
//! refused; see `framing.rs` for the body.

use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::task::Context;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderValue};
use http::{Method, StatusCode, Version};
use hyper_rustls::MaybeHttpsStream;
use hyper_util::rt::TokioIo;
use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;

use super::framing::{Framing, Malformed};
use crate::fields::{self, Kind, RawFields};
use crate::headers;

/// Most header fields in an answer's head (hyper's client default).
const MAX_RESPONSE_HEADERS: usize = 100;
/// Largest answer head read.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Room made in the read buffer before each read.
pub(super) const READ_CHUNK: usize = 16 * 1024;

/// The byte stream of one upstream connection: TCP, maybe tunnelled, maybe TLS.
pub(super) type Stream = TokioIo<MaybeHttpsStream<TokioIo<TcpStream>>>;

/// One upstream HTTP/1.1 connection and its buffers, reused from request to request.
pub(super) struct H1Conn {
    pub(super) io: Stream,
    /// Bytes read and not yet used: the rest of a head, body bytes.
    pub(super) buf: BytesMut,
    out: Vec<u8>,
    /// It has carried an exchange before (it came from the idle stack, not a fresh connect).
    pub(super) reused: bool,
    /// The connection's place in the pool's budget, given back when it closes.
    _permit: OwnedSemaphorePermit,
}

/// Why an exchange failed.
#[derive(Debug)]
pub(super) enum ExchangeError {
    /// The connection was closed or reset before a byte of answer came: on a pooled connection
    /// that the upstream closed while it was idle, the request may go again on a new one.
    Closed(io::Error),
    /// Anything else: the message for the client's 502.
    Failed(String),
}

impl From<Malformed> for ExchangeError {
    fn from(e: Malformed) -> Self {
        ExchangeError::Failed(e.to_string())
    }
}

/// An answer's head and how its body is delimited.
pub(super) struct Head {
    pub(super) status: StatusCode,
    pub(super) version: Version,
    pub(super) fields: RawFields,
    pub(super) framing: Framing,
    /// Whether the connection may carry another request after this answer.
    pub(super) keep_alive: bool,
}

impl H1Conn {
    pub(super) fn new(io: Stream, permit: OwnedSemaphorePermit) -> Box<Self> {
        Box::new(H1Conn {
            io,
            buf: BytesMut::new(),
            out: Vec::new(),
            reused: false,
            _permit: permit,
        })
    }

    /// Whether an idle connection is still open: one read that never waits. A closed one, or
    /// one that sent bytes nobody asked for, is not.
    pub(super) fn is_open(&mut self) -> bool {
        if !self.buf.is_empty() {
            return false;
        }
        let mut cx = Context::from_waker(std::task::Waker::noop());
        self.buf.reserve(1);
        tokio_util::io::poll_read_buf(Pin::new(&mut self.io), &mut cx, &mut self.buf).is_pending()
    }

    /// Sends a request without a body and reads the answer's head.
    pub(super) async fn exchange(
        &mut self,
        method: &Method,
        path_and_query: &str,
        host: &HeaderValue,
        headers: &HeaderMap,
    ) -> Result<Head, ExchangeError> {
        encode_head(&mut self.out, method, path_and_query, host, headers);
        let written = async {
            self.io.write_all(&self.out).await?;
            self.io.flush().await
        };
        written.await.map_err(ExchangeError::Closed)?;
        self.read_head(method).await
    }

    async fn read_head(&mut self, method: &Method) -> Result<Head, ExchangeError> {
        let mut received = false;
        loop {
            if !self.buf.is_empty() {
                received = true;
                if let Some(head) = parse_head(&mut self.buf, method)? {
                    return Ok(head);
                }
                if self.buf.len() >= MAX_RESPONSE_HEAD {
                    return Err(ExchangeError::Failed(format!(
                        "the API's answer head is larger than {} KiB",
                        MAX_RESPONSE_HEAD / 1024
                    )));
                }
            }
            self.buf.reserve(READ_CHUNK);
            let read = std::future::poll_fn(|cx| {
                tokio_util::io::poll_read_buf(Pin::new(&mut self.io), cx, &mut self.buf)
            })
            .await;
            match read {
                Ok(0) if !received => {
                    return Err(ExchangeError::Closed(io::ErrorKind::UnexpectedEof.into()));
                }
                Ok(0) => {
                    return Err(ExchangeError::Failed(
                        "the API closed the connection in the middle of an answer head".into(),
                    ));
                }
                Ok(_) => {}
                Err(e) if !received => return Err(ExchangeError::Closed(e)),
                Err(e) => return Err(ExchangeError::Failed(e.to_string())),
            }
        }
    }
}

/// Writes the request head into `out`: the request line in origin form, `Host`, the headers
/// (the request path has removed the client's `Host` and every hop-by-hop field).
fn encode_head(
    out: &mut Vec<u8>,
    method: &Method,
    path_and_query: &str,
    host: &HeaderValue,
    headers: &HeaderMap,
) {
    out.clear();
    out.extend_from_slice(method.as_str().as_bytes());
    out.push(b' ');
    out.extend_from_slice(path_and_query.as_bytes());
    out.extend_from_slice(b" HTTP/1.1\r\nhost: ");
    out.extend_from_slice(host.as_bytes());
    out.extend_from_slice(b"\r\n");
    headers::write_fields(out, headers, &header::HOST);
    out.extend_from_slice(b"\r\n");
}

/// Parses an answer head at the start of `buf` and takes it out: `None` while it is incomplete.
/// Informational (1xx) heads are dropped on the way, as hyper does.
fn parse_head(buf: &mut BytesMut, method: &Method) -> Result<Option<Head>, ExchangeError> {
    loop {
        let mut fields =
            [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_RESPONSE_HEADERS];
        let mut response = httparse::Response::new(&mut []);
        let base = buf.as_ptr() as usize;
        let mut spans = Vec::new();
        let (len, code, version) = match httparse::ParserConfig::default()
            .parse_response_with_uninit_headers(&mut response, buf, &mut fields)
        {
            Ok(httparse::Status::Partial) => return Ok(None),
            Ok(httparse::Status::Complete(len)) => {
                spans.reserve_exact(response.headers.len());
                fields::classify(base, response.headers, &mut spans);
                (
                    len,
                    response.code.unwrap_or(0),
                    response.version.unwrap_or(1),
                )
            }
            Err(e) => {
                return Err(ExchangeError::Failed(format!(
                    "the API's answer head is malformed ({e})"
                )));
            }
        };
        let head = buf.split_to(len).freeze();
        let status = StatusCode::from_u16(code)
            .map_err(|_| ExchangeError::Failed("the API answered an invalid status".into()))?;
        match code {
            101 => {
                return Err(ExchangeError::Failed(
                    "the API switched protocols, which the proxy never asks for".into(),
                ));
            }
            100..=199 => continue,
            _ => {}
        }
        let version = if version == 0 {
            Version::HTTP_10
        } else {
            Version::HTTP_11
        };
        let fields = RawFields::new(head, spans);
        let framing = framing(status, method, version, &fields)?;
        let keep_alive = framing != Framing::Close && keep_alive(version, &fields);
        return Ok(Some(Head {
            status,
            version,
            fields,
            framing,
            keep_alive,
        }));
    }
}

/// How the body is delimited (RFC 9112 section 6.3).
fn framing(
    status: StatusCode,
    method: &Method,
    version: Version,
    fields: &RawFields,
) -> Result<Framing, Malformed> {
    if matches!(status.as_u16(), 204 | 304) || method == Method::HEAD {
        return Ok(Framing::Length(0));
    }
    if let Some(last) = fields.values(Kind::TransferEncoding).last() {
        if version == Version::HTTP_10 {
            return Err(Malformed("an HTTP/1.0 answer has a Transfer-Encoding"));
        }
        if fields.has(Kind::ContentLength) {
            return Err(Malformed(
                "the answer has both Transfer-Encoding and Content-Length",
            ));
        }
        let chunked = headers::list(last)
            .next_back()
            .is_some_and(|coding| coding.eq_ignore_ascii_case(b"chunked"));
        return Ok(if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        });
    }
    let mut length = None;
    for value in fields.values(Kind::ContentLength) {
        for part in headers::list(value) {
            let n = headers::decimal(part)
                .ok_or(Malformed("the answer's Content-Length is not a number"))?;
            if length.is_some_and(|l| l != n) {
                return Err(Malformed("the answer has differing Content-Length values"));
            }
            length = Some(n);
        }
    }
    Ok(length.map_or(Framing::Close, Framing::Length))
}

/// Whether the upstream keeps the connection open after this answer.
fn keep_alive(version: Version, fields: &RawFields) -> bool {
    let mut keep = version == Version::HTTP_11;
    for value in fields.values(Kind::Connection) {
        for token in headers::list(value) {
            if token.eq_ignore_ascii_case(b"close") {
                return false;
            }
            if token.eq_ignore_ascii_case(b"keep-alive") {
                keep = true;
            }
        }
    }
    keep
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(raw: &str, method: &Method) -> Result<Option<Head>, String> {
        let mut buf = BytesMut::from(raw);
        parse_head(&mut buf, method).map_err(|e| match e {
            ExchangeError::Failed(m) => m,
            ExchangeError::Closed(e) => e.to_string(),
        })
    }

    fn framed(raw: &str) -> Result<(Framing, bool), String> {
        parse(raw, &Method::GET).map(|h| {
            h.map(|h| (h.framing, h.keep_alive))
                .unwrap_or((Framing::Close, false))
        })
    }

    #[test]
    fn heads_parse_with_their_framing() {
        let ok = "HTTP/1.1 200 OK\r\nContent-Length: 12\r\nX-A: 1\r\nx-a: 2\r\n\r\nbody";
        let head = parse(ok, &Method::GET).unwrap().unwrap();
        assert_eq!(head.status, 200);
        assert_eq!(head.framing, Framing::Length(12));
        assert!(head.keep_alive);
        let x_a = head
            .fields
            .all()
            .filter(|(n, _)| n.eq_ignore_ascii_case(b"x-a"));
        assert_eq!(x_a.count(), 2);
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, chunked\r\n\r\n"),
            Ok((Framing::Chunked, true))
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\n\r\n"),
            Ok((Framing::Close, false))
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\n\r\n"),
            Ok((Framing::Close, false))
        );
        assert_eq!(
            framed("HTTP/1.1 200 OK\r\nContent-Length: 3, 3\r\nConnection: close\r\n\r\n"),
            Ok((Framing::Length(3), false))
        );
        assert_eq!(
            framed("HTTP/1.0 200 OK\r\nContent-Length: 3\r\n\r\n"),
            Ok((Framing::Length(3), false))
        );
        assert_eq!(
            framed("HTTP/1.0 200 OK\r\nContent-Length: 3\r\nConnection: keep-alive\r\n\r\n"),
            Ok((Framing::Length(3), true))
        );
        assert_eq!(
            framed("HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n"),
            Ok((Framing::Length(0), true))
        );
        let head = parse(
            "HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n",
            &Method::HEAD,
        );
        assert_eq!(head.unwrap().unwrap().framing, Framing::Length(0));
    }

    #[test]
    fn informational_heads_are_skipped_and_partial_heads_wait() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 103 Early Hints\r\nLink: x\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n";
        let head = parse(raw, &Method::GET).unwrap().unwrap();
        assert_eq!(head.status, 201);
        assert!(
            parse("HTTP/1.1 200 OK\r\nContent-Le", &Method::GET)
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn ambiguous_or_broken_heads_are_refused() {
        for bad in [
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nContent-Length: 4\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -3\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 3x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.0 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: a\r\n\r\n",
            "HTTP/2 200 OK\r\n\r\n",
        ] {
            assert!(parse(bad, &Method::GET).is_err(), "{bad:?}");
        }
        let many: String = (0..=MAX_RESPONSE_HEADERS)
            .map(|i| format!("x-{i}: 1\r\n"))
            .collect();
        assert!(parse(&format!("HTTP/1.1 200 OK\r\n{many}\r\n"), &Method::GET).is_err());
    }

    #[test]
    fn request_heads_carry_host_and_the_headers_once() {
        let mut headers = HeaderMap::new();
        headers.insert(header::HOST, HeaderValue::from_static("localhost:8080"));
        headers.insert(header::ACCEPT, HeaderValue::from_static("*/*"));
        let mut out = Vec::new();
        let host = HeaderValue::from_static("api.example");
        encode_head(&mut out, &Method::GET, "/v1/a?b=1", &host, &headers);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "GET /v1/a?b=1 HTTP/1.1\r\nhost: api.example\r\naccept: */*\r\n\r\n"
        );
    }
}
