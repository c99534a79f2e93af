//! An upstream answer's header fields as they came on the wire: the head's bytes and where each
//! field lies, read by the lean upstream connection. Nothing is copied or hashed per field: the
//! lean server writes the forwarded ones straight from these bytes, and a map is built only for
//! whoever needs one (hyper's server, the STS client).
//!
//! The fields forwarded to the client follow `headers::rewrite_response`: no hop-by-hop field
//! (the fixed list, and every field `Connection` names), no `Set-Cookie`, and no `X-Request-Id`:
//! the request's own goes last ([`RawFields::set_request_id`]), as `rewrite_response` inserts it.
//! A rate limit's `Retry-After` may be replaced ([`RawFields::set_retry_after`]).

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

use crate::headers::{self, FieldSpan, XCache};

/// What a field is to the proxy, decided once per field when the head is read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Forwarded as it is.
    Other,
    /// `Date`: forwarded.
    Date,
    /// `Content-Length`: forwarded (the lean server writes its own from the framing).
    ContentLength,
    /// `Retry-After`: forwarded, unless the proxy replaced it.
    RetryAfter,
    /// `Transfer-Encoding`: hop-by-hop.
    TransferEncoding,
    /// `Connection`: hop-by-hop.
    Connection,
    /// Any other field the client does not get: hop-by-hop (`Keep-Alive`, `Proxy-Connection`,
    /// `TE`, `Trailer`, `Upgrade`, and every field `Connection` names), `Set-Cookie` (a
    /// browser would share it with every localhost app), `X-Request-Id` and `X-Cache` (the
    /// proxy sets its own).
    Dropped,
}

impl Kind {
    fn of(name: &[u8]) -> Kind {
        let is = |known: &[u8]| name.eq_ignore_ascii_case(known);
        match name.len() {
            2 if is(b"te") => Kind::Dropped,
            4 if is(b"date") => Kind::Date,
            7 if is(b"trailer") || is(b"upgrade") || is(b"x-cache") => Kind::Dropped,
            10 if is(b"connection") => Kind::Connection,
            10 if is(b"keep-alive") || is(b"set-cookie") => Kind::Dropped,
            11 if is(b"retry-after") => Kind::RetryAfter,
            12 if is(b"x-request-id") => Kind::Dropped,
            14 if is(b"content-length") => Kind::ContentLength,
            16 if is(b"proxy-connection") => Kind::Dropped,
            17 if is(b"transfer-encoding") => Kind::TransferEncoding,
            _ => Kind::Other,
        }
    }

    /// Whether the client gets a field of this kind.
    fn forwarded(self) -> bool {
        matches!(
            self,
            Kind::Other | Kind::Date | Kind::ContentLength | Kind::RetryAfter
        )
    }
}

/// A field of a head: where its name and value lie, and what it is.
pub(crate) type Field = (FieldSpan, Kind);

/// The header fields of one answer head.
#[derive(Debug, Clone)]
pub(crate) struct RawFields {
    head: Bytes,
    fields: Vec<Field>,
    /// The request's id, which the proxy adds after the upstream's fields.
    request_id: Option<HeaderValue>,
    /// The `Retry-After` the proxy sends in place of the upstream's. Boxed: rare, and every
    /// answer's body carries these fields.
    retry_after: Option<Box<HeaderValue>>,
    /// What `X-Cache` says.
    x_cache: Option<XCache>,
}

/// Appends the fields httparse parsed from a head starting at the address `base` to `fields`,
/// each with its kind.
pub(crate) fn classify(base: usize, parsed: &[httparse::Header<'_>], fields: &mut Vec<Field>) {
    fields.extend(parsed.iter().map(|field| {
        (
            headers::field_span(base, field),
            Kind::of(field.name.as_bytes()),
        )
    }));
}

impl RawFields {
    /// The `fields` of `head`, as [`classify`] found them (valid names and values). Fields a
    /// `Connection` field names become [`Kind::Dropped`].
    pub(crate) fn new(head: Bytes, mut fields: Vec<Field>) -> Self {
        let connection = fields.iter().any(|&(_, kind)| kind == Kind::Connection);
        if connection {
            let named: Vec<&[u8]> = fields
                .iter()
                .filter(|&&(_, kind)| kind == Kind::Connection)
                .flat_map(|&([.., vs, ve], _)| headers::list(&head[vs..ve]))
                .filter(|token| !token.is_empty())
                .collect();
            // Only fields of no meaning to the framing: a `Content-Length` still frames the
            // body (hyper's client framed it whatever `Connection` says; only the lean server
            // writes its own), and `Date` is written anew when dropped.
            for ([ns, ne, ..], kind) in &mut fields {
                let name = &head[*ns..*ne];
                if matches!(kind, Kind::Other | Kind::Date)
                    && named.iter().any(|n| n.eq_ignore_ascii_case(name))
                {
                    *kind = Kind::Dropped;
                }
            }
        }
        RawFields {
            head,
            fields,
            request_id: None,
            retry_after: None,
            x_cache: None,
        }
    }

    /// Adds `X-Cache` after the upstream's fields.
    pub(crate) fn set_x_cache(&mut self, x_cache: XCache) {
        self.x_cache = Some(x_cache);
    }

    /// Adds the request's `X-Request-Id` after the upstream's fields (whose own is dropped):
    /// no map is built for the one field the proxy adds to an answer.
    pub(crate) fn set_request_id(&mut self, id: HeaderValue) {
        self.request_id = Some(id);
    }

    /// Sends `value` as the answer's `Retry-After`, in place of any the upstream sent.
    pub(crate) fn set_retry_after(&mut self, value: HeaderValue) {
        self.retry_after = Some(Box::new(value));
    }

    /// The fields the proxy adds or replaces, after the upstream's.
    fn added(&self) -> impl Iterator<Item = (&HeaderName, &HeaderValue)> {
        let retry_after = self
            .retry_after
            .iter()
            .map(|v| (&header::RETRY_AFTER, &**v));
        let x_cache = self.x_cache.map(|x| (&headers::X_CACHE, x.value()));
        let request_id = self
            .request_id
            .iter()
            .map(|id| (&headers::X_REQUEST_ID, id));
        retry_after.chain(x_cache).chain(request_id)
    }

    /// Whether the client gets a field of this kind as the upstream sent it.
    fn passes(&self, kind: Kind) -> bool {
        kind.forwarded() && !(kind == Kind::RetryAfter && self.retry_after.is_some())
    }

    fn pair(&self, &([ns, ne, vs, ve], _): &Field) -> (&[u8], &[u8]) {
        (&self.head[ns..ne], &self.head[vs..ve])
    }

    /// Every field, in order: name and value.
    #[cfg(test)]
    pub(crate) fn all(&self) -> impl Iterator<Item = (&[u8], &[u8])> {
        self.fields.iter().map(|field| self.pair(field))
    }

    /// The values of the fields of a kind, in order.
    pub(crate) fn values(&self, kind: Kind) -> impl Iterator<Item = &[u8]> {
        self.fields
            .iter()
            .filter(move |(_, k)| *k == kind)
            .map(|field| self.pair(field).1)
    }

    /// Whether a field of this kind is there.
    pub(crate) fn has(&self, kind: Kind) -> bool {
        self.fields.iter().any(|(_, k)| *k == kind)
    }

    /// The fields the client gets, in order, with their kinds; the request id last.
    pub(crate) fn forwarded(&self) -> impl Iterator<Item = (&[u8], &[u8], Kind)> {
        let added = self
            .added()
            .map(|(name, id)| (name.as_str().as_bytes(), id.as_bytes(), Kind::Other));
        self.fields
            .iter()
            .filter(|(_, kind)| self.passes(*kind))
            .map(|field| {
                let (name, value) = self.pair(field);
                (name, value, field.1)
            })
            .chain(added)
    }

    /// The fields as a map: every one (`forwarded_only` false), or those the client gets; the
    /// request id last either way.
    pub(crate) fn to_map(&self, forwarded_only: bool) -> HeaderMap {
        let mut map = HeaderMap::with_capacity(self.fields.len() + 1);
        for field in &self.fields {
            if forwarded_only && !self.passes(field.1) {
                continue;
            }
            let (name, value) = self.pair(field);
            // httparse and `http` accept the same names and values; a field one of them
            // refused could only be dropped.
            if let (Ok(name), Ok(value)) = (
                HeaderName::from_bytes(name),
                HeaderValue::from_maybe_shared(self.head.slice_ref(value)),
            ) {
                map.append(name, value);
            }
        }
        for (name, id) in self.added() {
            map.insert(name.clone(), id.clone());
        }
        map
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(head: &'static str) -> RawFields {
        let mut slots = [httparse::EMPTY_HEADER; 32];
        let mut response = httparse::Response::new(&mut slots);
        response.parse(head.as_bytes()).unwrap();
        let mut fields = Vec::new();
        classify(head.as_ptr() as usize, response.headers, &mut fields);
        RawFields::new(Bytes::from_static(head.as_bytes()), fields)
    }

    #[test]
    fn forwarded_fields_drop_hop_by_hop_cookies_and_the_request_id() {
        let raw = fields(
            "HTTP/1.1 200 OK\r\nContent-Type: a/b\r\nConnection: keep-alive, X-Hop\r\n\
             X-Hop: 1\r\nKeep-Alive: timeout=5\r\nSet-Cookie: a=1\r\nX-Request-Id: theirs\r\n\
             Transfer-Encoding: chunked\r\nETag: \"x\"\r\nX-Cache: HIT from cdn\r\n\r\n",
        );
        let kept: Vec<_> = raw.forwarded().map(|(n, ..)| n.to_vec()).collect();
        assert_eq!(kept, [b"Content-Type".to_vec(), b"ETag".to_vec()]);
        let map = raw.to_map(true);
        assert_eq!(map.len(), 2);
        assert_eq!(map["content-type"], "a/b");
        assert_eq!(raw.to_map(false).len(), 9);
        assert_eq!(raw.values(Kind::Connection).count(), 1);
        assert!(raw.has(Kind::TransferEncoding) && !raw.has(Kind::Date));
    }

    #[test]
    fn the_same_rules_as_the_header_map_path() {
        let raw = fields(
            "HTTP/1.1 200 OK\r\nconnection: Keep-Alive, X-Mixed, , TE, not a name\r\n\
             x-mixed: 1\r\nte: trailers\r\nx-kept: 1\r\nset-cookie: b=2\r\n\r\n",
        );
        let mut map = raw.to_map(false);
        let id = HeaderValue::from_static("rid");
        crate::headers::rewrite_response(&mut map, &id);
        let mut raw = raw;
        raw.set_request_id(id);
        let forwarded = raw.to_map(true);
        assert_eq!(map, forwarded);
        let written: Vec<_> = raw.forwarded().map(|(n, v, _)| (n, v)).collect();
        assert_eq!(written.last(), Some(&(&b"x-request-id"[..], &b"rid"[..])));
    }
}
