//! API keys (`listen.api_keys`): who may spend the proxy's credential when the port is not
//! private to one machine. A key is accepted as `Authorization: Bearer KEY` or as the password of
//! Basic auth (what Power BI, Tableau and Qlik offer as "username and password"). The check runs
//! before anything else that reveals the proxy's routes, and the client's `Authorization` header is
//! removed before forwarding (see `crate::headers::rewrite_request`).

use aws_lc_rs::digest;
use base64::Engine as _;
use http::header::{self, HeaderMap, HeaderValue};
use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::secret::Secret;

/// The `WWW-Authenticate` challenges of a 401: both schemes a key is accepted in.
pub(crate) const CHALLENGES: [&str; 2] = [
    "Bearer realm=\"azure-costs-proxy\"",
    "Basic realm=\"azure-costs-proxy\", charset=\"UTF-8\"",
];

/// The accepted keys, as SHA-256 digests: every comparison takes the same time whatever the
/// length or content of the presented key, and the keys themselves are not kept here.
pub struct ApiKeys {
    digests: Vec<[u8; 32]>,
}

impl std::fmt::Debug for ApiKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ApiKeys({} keys)", self.digests.len())
    }
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

impl ApiKeys {
    /// The keys of `listen.api_keys`; none means every request is let in.
    pub fn new(keys: &[Secret]) -> Self {
        ApiKeys {
            digests: keys.iter().map(|k| sha256(k.expose().as_bytes())).collect(),
        }
    }

    /// Whether keys are required at all.
    pub fn required(&self) -> bool {
        !self.digests.is_empty()
    }

    /// Whether the request carries one accepted key, in exactly one `Authorization` header.
    pub fn admit(&self, headers: &HeaderMap) -> bool {
        if !self.required() {
            return true;
        }
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let (Some(value), None) = (values.next(), values.next()) else {
            return false;
        };
        match presented_key(value) {
            Some(key) => self.matches(&key),
            None => false,
        }
    }

    /// Compares against every key, without stopping at the first match.
    fn matches(&self, key: &[u8]) -> bool {
        let presented = sha256(key);
        self.digests
            .iter()
            .fold(subtle::Choice::from(0), |found, d| {
                found | d.ct_eq(&presented)
            })
            .into()
    }
}

/// The key an `Authorization` value presents: the Bearer token, or the Basic password.
fn presented_key(value: &HeaderValue) -> Option<Zeroizing<Vec<u8>>> {
    let bytes = value.as_bytes();
    let space = bytes.iter().position(|b| *b == b' ')?;
    let (scheme, rest) = bytes.split_at(space);
    let credentials = rest.trim_ascii();
    if credentials.is_empty() {
        return None;
    }
    if scheme.eq_ignore_ascii_case(b"bearer") {
        return Some(Zeroizing::new(credentials.to_vec()));
    }
    if scheme.eq_ignore_ascii_case(b"basic") {
        let decoded = Zeroizing::new(
            base64::engine::general_purpose::STANDARD
                .decode(credentials)
                .ok()?,
        );
        // user-id ":" password; the user name is free (tools insist on one).
        let colon = decoded.iter().position(|b| *b == b':')?;
        let password = &decoded[colon + 1..];
        if password.is_empty() {
            return None;
        }
        return Some(Zeroizing::new(password.to_vec()));
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            h.append(header::AUTHORIZATION, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    #[test]
    fn no_keys_admits_everyone() {
        let keys = ApiKeys::new(&[]);
        assert!(!keys.required());
        assert!(keys.admit(&HeaderMap::new()));
    }

    #[test]
    fn bearer_and_basic_password_are_accepted() {
        let keys = ApiKeys::new(&[Secret::new("k-one"), Secret::new("k:two")]);
        for ok in [
            "Bearer k-one".to_string(),
            "bearer   k:two ".to_string(),
            basic("powerbi:k-one"),
            basic(":k:two"),
            basic("user:k:two").replace("Basic", "BASIC"),
        ] {
            assert!(keys.admit(&headers(&[&ok])), "{ok}");
        }
        for bad in [
            "Bearer k-on".to_string(),
            "Bearer k-one2".to_string(),
            "Bearerk-one".to_string(),
            "Bearer ".to_string(),
            "Token k-one".to_string(),
            basic("k-one"),
            basic("k-one:"),
            basic("user:wrong"),
            "Basic !!!notbase64".to_string(),
        ] {
            assert!(!keys.admit(&headers(&[&bad])), "{bad}");
        }
        assert!(!keys.admit(&HeaderMap::new()));
        // Two Authorization headers: ambiguous, refused even if one is right.
        assert!(!keys.admit(&headers(&["Bearer k-one", "Bearer nope"])));
    }

    #[test]
    fn debug_shows_no_key_material() {
        let keys = ApiKeys::new(&[Secret::new("k-one")]);
        assert_eq!(format!("{keys:?}"), "ApiKeys(1 keys)");
    }
}
