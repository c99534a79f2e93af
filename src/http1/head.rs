//! Which request heads the lean server serves itself, parsed into the same request hyper's server
//! would make of them; everything else is handed to hyper with the connection.
//!
//! The head is parsed by httparse with hyper's server settings, so both read the same bytes the
//! same way; the lean path then takes only the plain case and hands off the rest, whatever it is
//! (a malformed head hyper answers 400 or 431, HTTP/1.0 and HTTP/2, a body of any framing,
//! `Expect`, `Upgrade`, `CONNECT`, a target that is not a path, an unusual method, more than
//! [`MAX_FIELDS`] fields). Hand-off is always safe: the rules applied are then exactly hyper's.
//! The fuzz target `http1_head` holds the lean path to that: whatever it accepts, hyper accepts
//! as the same request.

use std::mem::MaybeUninit;

use bytes::BytesMut;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::request::Parts;
use http::{Method, Request, Uri, Version};

use crate::headers;

/// Most header fields in a head served by the lean path; a longer head goes to hyper, which
/// allows as many as fit in the head's byte limit.
pub const MAX_FIELDS: usize = 100;

/// What the start of the read buffer holds.
#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "made and moved once per request; a Box would cost an allocation per request"
)]
pub enum Parsed {
    /// Not a complete head yet (and still under the byte limit).
    Partial,
    /// A request the lean path serves, without a body; its head is taken out of the buffer.
    Request {
        /// Method, target, version and fields, as hyper would have made them.
        parts: Parts,
        /// The client asked to close the connection after the answer.
        close: bool,
    },
    /// Anything else: the connection goes to hyper, the buffer with it.
    HandOff,
}

/// Where a field's name and value lie in the head: start and end of each.
pub type Field = headers::FieldSpan;

/// Parses a request head at the start of `buf`, at most `max_head` bytes. `fields` is scratch
/// space, reused from request to request.
pub fn parse(buf: &mut BytesMut, max_head: usize, fields: &mut Vec<Field>) -> Parsed {
    let mut slots = [const { MaybeUninit::<httparse::Header<'_>>::uninit() }; MAX_FIELDS];
    let mut request = httparse::Request::new(&mut []);
    let base = buf.as_ptr() as usize;
    fields.clear();
    let (len, method, target) = match httparse::ParserConfig::default()
        .parse_request_with_uninit_headers(&mut request, buf, &mut slots)
    {
        Ok(httparse::Status::Complete(len)) if len <= max_head => {
            if request.version != Some(1) {
                return Parsed::HandOff;
            }
            let (Some(method), Some(path)) = (request.method, request.path) else {
                return Parsed::HandOff;
            };
            let Some(method) = plain_method(method) else {
                return Parsed::HandOff;
            };
            headers::field_spans(base, request.headers, fields);
            let target = path.as_ptr() as usize - base;
            (len, method, target..target + path.len())
        }
        Ok(httparse::Status::Partial) if buf.len() < max_head => return Parsed::Partial,
        _ => return Parsed::HandOff,
    };
    if !buf[target.clone()].starts_with(b"/") {
        return Parsed::HandOff;
    }
    // Only now is the head taken: a hand-off above leaves the buffer whole.
    let head = buf.split_to(len).freeze();
    let Ok(uri) = Uri::from_maybe_shared(head.slice(target)) else {
        return hand_back(buf, head);
    };
    // Room for the two fields the request path adds (the bearer and the request id): growing
    // the map would rehash it.
    let mut headers = HeaderMap::with_capacity(fields.len() + 2);
    let mut close = false;
    for &[name_start, name_end, value_start, value_end] in fields.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&head[name_start..name_end]),
            HeaderValue::from_maybe_shared(head.slice(value_start..value_end)),
        ) else {
            return hand_back(buf, head);
        };
        match plain_field(&name, &value) {
            Some(asks_close) => close |= asks_close,
            None => return hand_back(buf, head),
        }
        headers.append(name, value);
    }
    if headers.get_all(header::CONTENT_LENGTH).iter().count() > 1 {
        return hand_back(buf, head);
    }
    let (mut parts, ()) = Request::new(()).into_parts();
    parts.method = method;
    parts.uri = uri;
    parts.version = Version::HTTP_11;
    parts.headers = headers;
    Parsed::Request { parts, close }
}

/// Puts a head taken out of the buffer back in front of what follows it, for hyper. Rare: a
/// head httparse accepted whose target or a field `http` refuses, or a field the lean path
/// leaves to hyper.
fn hand_back(buf: &mut BytesMut, head: bytes::Bytes) -> Parsed {
    let mut whole = BytesMut::with_capacity(head.len() + buf.len());
    whole.extend_from_slice(&head);
    whole.extend_from_slice(buf);
    *buf = whole;
    Parsed::HandOff
}

/// The methods the lean path serves; any other goes to hyper (`CONNECT` among them).
fn plain_method(method: &str) -> Option<Method> {
    Some(match method {
        "GET" => Method::GET,
        "HEAD" => Method::HEAD,
        "POST" => Method::POST,
        "PUT" => Method::PUT,
        "DELETE" => Method::DELETE,
        "OPTIONS" => Method::OPTIONS,
        "PATCH" => Method::PATCH,
        "TRACE" => Method::TRACE,
        _ => return None,
    })
}

/// Whether the lean path serves a request with this field: `None` for a body (any
/// `Transfer-Encoding`, a `Content-Length` other than `0`), `Expect`, `Upgrade` or a
/// `Connection: upgrade`; else whether it asks to close the connection.
fn plain_field(name: &HeaderName, value: &HeaderValue) -> Option<bool> {
    if name == header::CONTENT_LENGTH {
        return (value.as_bytes() == b"0").then_some(false);
    }
    if name == header::TRANSFER_ENCODING || name == header::EXPECT || name == header::UPGRADE {
        return None;
    }
    if name != header::CONNECTION {
        return Some(false);
    }
    let mut close = false;
    for token in headers::list(value.as_bytes()) {
        if token.eq_ignore_ascii_case(b"upgrade") {
            return None;
        }
        close |= token.eq_ignore_ascii_case(b"close");
    }
    Some(close)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(raw: &str) -> (Parsed, usize) {
        let mut buf = BytesMut::from(raw);
        let parsed = parse(&mut buf, 64 * 1024, &mut Vec::new());
        (parsed, buf.len())
    }

    #[test]
    fn a_plain_get_is_served_and_its_head_taken() {
        let (parsed, left) =
            parse_str("GET /v1/a?b=1 HTTP/1.1\r\nHost: x\r\nX-A: 1\r\nx-a: 2\r\n\r\nGET /next");
        let Parsed::Request { parts, close } = parsed else {
            panic!("{parsed:?}")
        };
        assert_eq!(parts.method, Method::GET);
        assert_eq!(parts.uri, "/v1/a?b=1");
        assert_eq!(parts.headers.get_all("x-a").iter().count(), 2);
        assert!(!close);
        assert_eq!(left, "GET /next".len());
        let (parsed, _) = parse_str("HEAD / HTTP/1.1\r\nConnection: keep-alive, Close\r\n\r\n");
        assert!(
            matches!(parsed, Parsed::Request { close: true, .. }),
            "{parsed:?}"
        );
        let (parsed, _) = parse_str("DELETE / HTTP/1.1\r\nContent-Length: 0\r\n\r\n");
        assert!(matches!(parsed, Parsed::Request { .. }), "{parsed:?}");
    }

    #[test]
    fn partial_heads_wait_until_the_limit() {
        assert!(matches!(
            parse_str("GET / HTTP/1.1\r\nHost: x\r\n").0,
            Parsed::Partial
        ));
        let mut buf = BytesMut::from(&b"GET / HTTP/1.1\r\nX: aaaaaaaaaaaaaaaaaaaaaaaaa"[..]);
        assert!(matches!(
            parse(&mut buf, 32, &mut Vec::new()),
            Parsed::HandOff
        ));
    }

    #[test]
    fn everything_unusual_goes_to_hyper_with_the_buffer_whole() {
        for raw in [
            "POST / HTTP/1.1\r\nContent-Length: 5\r\n\r\nhello",
            "POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 0\r\nContent-Length: 0\r\n\r\n",
            "GET / HTTP/1.1\r\nContent-Length: 00\r\n\r\n",
            "GET / HTTP/1.1\r\nExpect: 100-continue\r\n\r\n",
            "GET / HTTP/1.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
            "GET / HTTP/1.1\r\nConnection: upgrade\r\n\r\n",
            "GET / HTTP/1.0\r\n\r\n",
            "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n",
            "CONNECT x:443 HTTP/1.1\r\n\r\n",
            "GET http://x/ HTTP/1.1\r\n\r\n",
            "OPTIONS * HTTP/1.1\r\n\r\n",
            "BREW / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nHost x\r\n\r\n",
            "GET / HTTP/1.1\r\nX: a\r\n b\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\n\r\n",
            "GET  / HTTP/1.1\r\n\r\n",
        ] {
            let (parsed, left) = parse_str(raw);
            assert!(matches!(parsed, Parsed::HandOff), "{raw:?}: {parsed:?}");
            assert_eq!(left, raw.len(), "{raw:?}: the buffer goes whole");
        }
        let many: String = (0..=MAX_FIELDS).map(|i| format!("x-{i}: 1\r\n")).collect();
        let raw = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert!(matches!(parse_str(&raw).0, Parsed::HandOff));
    }
}
