//! Client keys (`listen.api_keys` and `[[clients]]`): how a request presents one. A key is
//! accepted as `Authorization: Bearer KEY` or as the password of Basic auth (what Power BI,
//! Tableau and Qlik offer as "username and password"), and kept only as its SHA-256. The check
//! runs before anything else that reveals the proxy's routes, and the client's `Authorization`
//! header is removed before forwarding (see `crate::headers::rewrite_request`).

use aws_lc_rs::digest;
use base64::Engine as _;
use http::header::HeaderValue;
use zeroize::Zeroizing;

/// The `WWW-Authenticate` challenges of a 401: both schemes a key is accepted in.
pub(crate) const CHALLENGES: [&str; 2] = [
    "Bearer realm=\"azure-costs-proxy\"",
    "Basic realm=\"azure-costs-proxy\", charset=\"UTF-8\"",
];

/// The SHA-256 of a key: what is kept of it and compared.
pub(crate) fn sha256(bytes: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
    out
}

/// The key an `Authorization` value presents: the Bearer token, or the Basic password.
pub(super) fn presented_key(value: &HeaderValue) -> Option<Zeroizing<Vec<u8>>> {
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

    fn basic(user_pass: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(user_pass)
        )
    }

    fn key(value: &str) -> Option<Vec<u8>> {
        presented_key(&HeaderValue::from_str(value).unwrap()).map(|k| k.to_vec())
    }

    #[test]
    fn bearer_and_basic_password_are_presented_keys() {
        for (value, expected) in [
            ("Bearer k-one".to_string(), "k-one"),
            ("bearer   k:two ".to_string(), "k:two"),
            (basic("powerbi:k-one"), "k-one"),
            (basic(":k:two"), "k:two"),
            (basic("user:k:two").replace("Basic", "BASIC"), "k:two"),
        ] {
            assert_eq!(key(&value), Some(expected.as_bytes().to_vec()), "{value}");
        }
        for bad in [
            "Bearerk-one".to_string(),
            "Bearer ".to_string(),
            "Token k-one".to_string(),
            basic("k-one"),
            basic("k-one:"),
            "Basic !!!notbase64".to_string(),
        ] {
            assert_eq!(key(&bad), None, "{bad}");
        }
    }
}
