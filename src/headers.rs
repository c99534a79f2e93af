//! Pure header rules: hop-by-hop stripping, bearer injection, request ids.

use std::collections::hash_map::RandomState;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// The request id header, added when absent and echoed in the response.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// `X-Cache`, on every answer the upstream gave: what became of the request.
pub(crate) static X_CACHE: HeaderName = HeaderName::from_static("x-cache");

/// What became of a proxied request, as `X-Cache` says it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum XCache {
    /// It went upstream (and may have led a flight of identical requests).
    Miss,
    /// It shared the upstream request of an identical one in flight.
    Coalesced,
    /// It could share nothing: not a GET or HEAD without a body, the client's
    /// `Cache-Control: no-cache`/`no-store`, or a route with `coalesce = false`.
    Bypass,
}

impl XCache {
    /// The header value.
    pub(crate) fn value(self) -> &'static HeaderValue {
        static MISS: HeaderValue = HeaderValue::from_static("MISS");
        static COALESCED: HeaderValue = HeaderValue::from_static("COALESCED");
        static BYPASS: HeaderValue = HeaderValue::from_static("BYPASS");
        match self {
            XCache::Miss => &MISS,
            XCache::Coalesced => &COALESCED,
            XCache::Bypass => &BYPASS,
        }
    }
}

/// Hop-by-hop headers that are never forwarded, whatever `Connection` says (RFC 9110 section 7.6.1;
/// `Proxy-Connection` and `Keep-Alive` are the legacy names RFC 9110 asks proxies to drop as well).
static HOP_BY_HOP: [HeaderName; 7] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
    header::UPGRADE,
];

/// Removes hop-by-hop headers: those listed above and every header that `Connection` names
/// (RFC 9110 section 7.6.1). Applied to requests and to responses.
///
/// It runs twice per request, and most HTTP/1.1 peers send `Connection: keep-alive`: one pass
/// over the names (compared, not hashed) finds which fixed names are present, and only those are
/// removed. A `Connection` token outside the fixed set (rare) is the only thing that allocates.
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let mut present = 0u8;
    for name in headers.keys() {
        if let Some(i) = HOP_BY_HOP.iter().position(|h| h == name) {
            present |= 1 << i;
        }
    }
    if present == 0 {
        return;
    }
    // HOP_BY_HOP[0] is Connection.
    if present & 1 != 0 {
        // Bytes, not str: no UTF-8 check and no char searcher for the usual `keep-alive`.
        let named: Vec<HeaderName> = headers
            .get_all(header::CONNECTION)
            .iter()
            .flat_map(|v| list(v.as_bytes()))
            .filter(|token| {
                !HOP_BY_HOP
                    .iter()
                    .any(|h| h.as_str().as_bytes().eq_ignore_ascii_case(token))
            })
            .filter_map(|token| HeaderName::from_bytes(token).ok())
            .collect();
        for name in named {
            headers.remove(name);
        }
    }
    for (i, name) in HOP_BY_HOP.iter().enumerate() {
        if present & (1 << i) != 0 {
            headers.remove(name);
        }
    }
}

/// Rewrites a client's request headers for the upstream: hop-by-hop headers, `Proxy-Authorization`,
/// the client's own `Authorization`, `Cookie` (cookies are not scoped by port: a browser would
/// hand the API the cookies of every other localhost app) and `Host` go (the HTTP client sets
/// `Host` from the upstream URI), the route's bearer token and the request id go in.
pub fn rewrite_request(headers: &mut HeaderMap, bearer: &HeaderValue, request_id: &HeaderValue) {
    strip_hop_by_hop(headers);
    headers.remove(header::PROXY_AUTHORIZATION);
    headers.remove(header::COOKIE);
    headers.remove(header::HOST);
    headers.insert(header::AUTHORIZATION, bearer.clone());
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
}

/// Rewrites the upstream's response headers for the client: hop-by-hop headers and `Set-Cookie`
/// go (a cookie set for the proxy's host would reach every other localhost app), the request id
/// is echoed.
pub fn rewrite_response(headers: &mut HeaderMap, request_id: &HeaderValue) {
    strip_hop_by_hop(headers);
    headers.remove(header::SET_COOKIE);
    headers.insert(X_REQUEST_ID.clone(), request_id.clone());
}

/// Where a header field's name and value lie in a parsed head: start and end of each, as
/// offsets into the head.
pub(crate) type FieldSpan = [usize; 4];

/// Where `field` (parsed by httparse from a head starting at the address `base`) lies in that
/// head.
pub(crate) fn field_span(base: usize, field: &httparse::Header<'_>) -> FieldSpan {
    let name = field.name.as_ptr() as usize - base;
    let value = field.value.as_ptr() as usize - base;
    [
        name,
        name + field.name.len(),
        value,
        value + field.value.len(),
    ]
}

/// Appends to `spans` where each of `fields` (parsed by httparse from a head starting at the
/// address `base`) lies in that head.
pub(crate) fn field_spans(
    base: usize,
    fields: &[httparse::Header<'_>],
    spans: &mut Vec<FieldSpan>,
) {
    spans.extend(fields.iter().map(|field| field_span(base, field)));
}

/// The elements of a comma-separated field value (RFC 9110 section 5.6.1), trimmed; empty ones
/// are kept.
pub(crate) fn list(value: &[u8]) -> impl DoubleEndedIterator<Item = &[u8]> {
    value.split(|&b| b == b',').map(<[u8]>::trim_ascii)
}

/// A decimal length: 1 to 19 ASCII digits (so that it fits a u64), nothing else.
pub(crate) fn decimal(digits: &[u8]) -> Option<u64> {
    (!digits.is_empty() && digits.len() <= 19 && digits.iter().all(u8::is_ascii_digit))
        .then(|| digits.iter().fold(0, |n, &d| n * 10 + u64::from(d - b'0')))
}

/// Writes one HTTP/1.1 field line into `out`.
pub(crate) fn write_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes `headers` as HTTP/1.1 field lines into `out`, all but those named `skip`.
pub(crate) fn write_fields(out: &mut Vec<u8>, headers: &HeaderMap, skip: &HeaderName) {
    for (name, value) in headers {
        if name != skip {
            write_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
}

/// Builds the `Authorization` value for a token, marked sensitive so that HTTP/2 HPACK never
/// indexes it and `Debug` output hides it. `None` if the token holds bytes a header cannot carry.
pub fn bearer_value(token: &str) -> Option<HeaderValue> {
    if token.is_empty() || !token.bytes().all(|b| b.is_ascii_graphic()) {
        return None;
    }
    let mut value = HeaderValue::from_str(&format!("Bearer {token}")).ok()?;
    value.set_sensitive(true);
    Some(value)
}

/// Longest client-supplied request id we pass on; longer or odd ones are replaced.
const MAX_REQUEST_ID: usize = 128;

/// Whether a client-supplied request id is safe to forward and log: 1-128 characters of letters,
/// digits and `-_.:`.
pub fn valid_request_id(value: &HeaderValue) -> bool {
    let bytes = value.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= MAX_REQUEST_ID
        && bytes
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// Generates request ids that are unique within a process and unlikely to repeat across restarts:
/// a random 64-bit key mixed with a counter through a bijection, so no two ids of one process match.
#[derive(Debug)]
pub struct RequestIds {
    key: u64,
    counter: AtomicU64,
}

impl Default for RequestIds {
    fn default() -> Self {
        RequestIds {
            key: RandomState::new().hash_one(0x5eed_u64),
            counter: AtomicU64::new(0),
        }
    }
}

impl RequestIds {
    /// The request id to use: the client's when valid, else a fresh one.
    pub fn for_request(&self, headers: &HeaderMap) -> HeaderValue {
        match headers.get(&X_REQUEST_ID) {
            Some(v) if valid_request_id(v) => v.clone(),
            _ => self.next(),
        }
    }

    /// A fresh id: 16 lower-case hex digits.
    pub fn next(&self) -> HeaderValue {
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        // Multiplying by an odd constant and xoring a key are both bijections on u64.
        let id = n.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ self.key;
        // Digit by digit: `format!` cost about 1,100 instructions per request here.
        let mut hex = [0u8; 16];
        for (i, digit) in hex.iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[((id >> (60 - 4 * i)) & 15) as usize];
        }
        HeaderValue::from_bytes(&hex).unwrap_or(HeaderValue::from_static("0"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn strips_fixed_hop_by_hop_and_connection_named_headers() {
        let mut h = map(&[
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "x-other"),
            ("x-secret-hop", "1"),
            ("x-other", "2"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x-sum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("accept", "application/json"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["accept"]);
    }

    #[test]
    fn strips_only_what_is_there_and_names_in_any_case() {
        // The usual upstream answer: Connection: keep-alive and nothing else hop-by-hop.
        let mut h = map(&[
            ("content-type", "application/json"),
            ("connection", "keep-alive"),
            ("content-length", "2"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["content-type", "content-length"]);
        // Names in Connection in any case, the fixed ones included; junk tokens are ignored.
        let mut h = map(&[
            ("connection", "Keep-Alive, X-Mixed-Case, , TE, not a name"),
            ("x-mixed-case", "1"),
            ("te", "trailers"),
            ("x-kept", "1"),
        ]);
        strip_hop_by_hop(&mut h);
        let left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        assert_eq!(left, ["x-kept"]);
        // Nothing hop-by-hop: untouched.
        let mut h = map(&[("accept", "*/*"), ("x-a", "1")]);
        strip_hop_by_hop(&mut h);
        assert_eq!(h.len(), 2);
    }

    #[test]
    fn rewrite_request_replaces_credentials_and_host() {
        let mut h = map(&[
            ("host", "localhost:8080"),
            ("authorization", "Basic dXNlcjpwYXNz"),
            ("proxy-authorization", "Basic eA=="),
            ("cookie", "session=other-localhost-app"),
            ("cookie", "b=2"),
            ("accept", "*/*"),
        ]);
        let bearer = bearer_value("tok123").unwrap();
        rewrite_request(&mut h, &bearer, &HeaderValue::from_static("rid"));
        assert_eq!(h.get_all(header::AUTHORIZATION).iter().count(), 1);
        assert_eq!(h[header::AUTHORIZATION], "Bearer tok123");
        assert!(h[header::AUTHORIZATION].is_sensitive());
        assert!(!h.contains_key(header::PROXY_AUTHORIZATION));
        assert!(!h.contains_key(header::HOST));
        assert!(!h.contains_key(header::COOKIE));
        assert_eq!(h[&X_REQUEST_ID], "rid");
        assert_eq!(h["accept"], "*/*");
    }

    #[test]
    fn rewrite_response_drops_set_cookie() {
        let mut h = map(&[("set-cookie", "a=1"), ("set-cookie", "b=2"), ("x-a", "1")]);
        rewrite_response(&mut h, &HeaderValue::from_static("rid"));
        assert!(!h.contains_key(header::SET_COOKIE));
        assert_eq!(h["x-a"], "1");
    }

    #[test]
    fn bearer_value_refuses_header_breaking_tokens() {
        assert!(bearer_value("a b").is_none());
        assert!(bearer_value("a\r\nX: y").is_none());
        assert!(bearer_value("").is_none());
        assert!(format!("{:?}", bearer_value("abc").unwrap()).contains("Sensitive"));
    }

    #[test]
    fn request_ids_are_kept_when_sane_and_unique_when_generated() {
        let ids = RequestIds::default();
        let kept = ids.for_request(&map(&[("x-request-id", "abc-123")]));
        assert_eq!(kept, "abc-123");
        let replaced = ids.for_request(&map(&[("x-request-id", "bad id with spaces")]));
        assert_eq!(replaced.len(), 16);
        let many: std::collections::HashSet<_> = (0..10_000).map(|_| ids.next()).collect();
        assert_eq!(many.len(), 10_000);
    }
}
