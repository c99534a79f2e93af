//! `client-key`: a key for a new client of a shared proxy, and the `[[clients]]` lines that
//! recognise it by its SHA-256 alone, so that the config never holds the key.

use std::fmt::Write as _;

use base64::Engine as _;

use crate::inbound::{MAX_CLIENT_NAME, key_digest, valid_client_name};

/// Random bytes in a key: 256 bits, beyond guessing.
const KEY_BYTES: usize = 32;

/// The text `client-key --name NAME` prints: the new key, then the lines to paste.
pub fn new_client(name: &str) -> Result<String, String> {
    if !valid_client_name(name) {
        return Err(format!(
            "`{}` cannot be a client name: use 1 to {MAX_CLIENT_NAME} letters, digits, '.', '_' \
             or '-' (not `api_keys` or `unknown`)",
            name.escape_debug()
        ));
    }
    let mut bytes = zeroize::Zeroizing::new([0u8; KEY_BYTES]);
    aws_lc_rs::rand::fill(&mut bytes[..])
        .map_err(|_| "the operating system gave no random bytes".to_string())?;
    let key = zeroize::Zeroizing::new(
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(&bytes[..]),
    );
    Ok(render(name, &key))
}

/// The key and the `[[clients]]` lines for `name`.
fn render(name: &str, key: &str) -> String {
    let digest: String =
        key_digest(key.as_bytes())
            .iter()
            .fold(String::with_capacity(64), |mut hex, b| {
                let _ = write!(hex, "{b:02x}");
                hex
            });
    format!(
        "# The key of client `{name}`: give it to that client (Bearer token, or the password of\n\
         # Basic auth with any user name). It is shown once and stored nowhere.\n\
         {key}\n\
         \n\
         # Paste into proxy.toml; the proxy reloads by itself. Only the key's digest is kept there.\n\
         [[clients]]\n\
         name = \"{name}\"\n\
         key_sha256 = \"{digest}\"\n\
         # routes = [\"/teams/{{delegate}}\"]  # the route prefixes it may use (default: all)\n\
         # delegates = [\"TEAM-ID\"]         # the teams it may act for (default: all)\n\
         # rate = \"20/s\"                   # requests per second, burst twice that\n\
         # max_in_flight = 32               # requests at once\n"
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prints_a_fresh_random_key_and_its_digest() {
        let first = new_client("contoso-dashboards").unwrap();
        let second = new_client("contoso-dashboards").unwrap();
        let key = |text: &str| text.lines().nth(2).unwrap().to_string();
        let (a, b) = (key(&first), key(&second));
        assert_ne!(a, b, "two keys alike");
        // 32 bytes in unpadded base64url.
        assert_eq!(a.len(), 43);
        assert!(
            a.bytes()
                .all(|c| c.is_ascii_alphanumeric() || c == b'-' || c == b'_')
        );
        let digest = first
            .lines()
            .find_map(|l| l.strip_prefix("key_sha256 = \""))
            .and_then(|l| l.strip_suffix('"'))
            .unwrap();
        let expected: String = key_digest(a.as_bytes())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(digest, expected);
        assert!(first.contains("name = \"contoso-dashboards\""));
    }

    #[test]
    fn the_lines_are_a_valid_client() {
        let text = render("c1", "k-0123456789abcdef");
        let config = format!(
            "[credentials.default]\nclient_id = \"a\"\nclient_secret = \"s\"\n{}",
            text.split_once("\n\n").unwrap().1
        );
        let parsed = crate::config::from_toml(&config, "proxy.toml", &|_| None).unwrap();
        assert_eq!(parsed.clients.len(), 1);
        assert_eq!(parsed.clients[0].name, "c1");
    }

    #[test]
    fn bad_names_are_refused() {
        for bad in ["", "two words", "api_keys", "unknown", &"x".repeat(65)] {
            assert!(new_client(bad).is_err(), "{bad}");
        }
    }
}
