//! Host names and ports: the one strict parser of a `Host` header or `:authority`
//! (`host[:port]`), shared by the data plane and the admin listener; the normalised form of
//! configured names; whether a host is on this machine; a scheme's default port. Pure functions,
//! and a leaf: nothing here imports from the crate.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use http::uri::Scheme;

/// The port a URI means when it writes none: 443 for `https`, 80 for `http` and for a URI
/// without a scheme (RFC 9110 section 4.2: an authority alone, as in a `Host` header, is HTTP's).
/// The proxy only builds URIs with a scheme; the rule for none is for completeness.
pub(crate) fn default_port(scheme: Option<&Scheme>) -> u16 {
    match scheme {
        Some(s) if *s == Scheme::HTTPS => 443,
        _ => 80,
    }
}

/// A well-formed `Host` value or authority, split (RFC 9110 section 7.2, RFC 3986 section 3.2).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HostPort<'a> {
    /// The host as written, without IPv6 brackets or a trailing dot; case kept.
    pub host: &'a str,
    /// The port, when one is written.
    pub port: Option<u16>,
    /// Whether the host is an IP literal (IPv4 dotted quad or bracketed IPv6).
    pub ip: bool,
}

/// Parses a `Host` header value or an authority strictly: `name[:port]`, `a.b.c.d[:port]` or
/// `[v6][:port]`, where a name is dot-separated non-empty labels of letters, digits, `-` and `_`
/// (one trailing dot allowed), and a port is 1-5 digits up to 65535. Anything else (`[::1]evil`,
/// `[::1`, `a b`, `host:`, `user@host`, a zone id, percent-encoding) is `None`: it names no host
/// the guard could accept. Allocates nothing: it runs on every request.
pub fn parse_host(value: &[u8]) -> Option<HostPort<'_>> {
    let text = std::str::from_utf8(value).ok()?;
    let (host, port, bracketed) = match text.strip_prefix('[') {
        Some(rest) => {
            let (inner, after) = rest.split_once(']')?;
            let port = match after {
                "" => None,
                p => Some(p.strip_prefix(':')?),
            };
            (inner, port, true)
        }
        None => match text.split_once(':') {
            Some((host, port)) => (host, Some(port), false),
            None => (text, None, false),
        },
    };
    let port = match port {
        None => None,
        Some(p) => Some(parse_port(p)?),
    };
    if bracketed {
        host.parse::<Ipv6Addr>().ok()?;
        return Some(HostPort {
            host,
            port,
            ip: true,
        });
    }
    let name = host.strip_suffix('.').unwrap_or(host);
    // Split as bytes: a `char` pattern's searcher costs about 100 instructions a label.
    let well_formed = !name.is_empty()
        && name.as_bytes().split(|&b| b == b'.').all(|label| {
            !label.is_empty()
                && label
                    .iter()
                    .all(|&b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        });
    well_formed.then(|| HostPort {
        host: name,
        port,
        ip: name.parse::<Ipv4Addr>().is_ok(),
    })
}

/// 1-5 ASCII digits, at most 65535.
fn parse_port(text: &str) -> Option<u16> {
    if text.is_empty() || text.len() > 5 || !text.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    text.parse().ok()
}

/// The host of a configured name or authority, as the `Host` guard compares it: lower case,
/// without port, IPv6 brackets or a trailing dot (`[::1]:8080` -> `::1`, `BI.internal.:80` ->
/// `bi.internal`). Lenient, for config values; requests go through [`parse_host`].
pub(crate) fn normalize_host(authority: &str) -> String {
    let host = if let Some(rest) = authority.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        match authority.rsplit_once(':') {
            Some((host, port))
                if !host.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) =>
            {
                host
            }
            _ => authority,
        }
    };
    host.trim_end_matches('.').to_ascii_lowercase()
}

/// Whether a host name or address is on this machine's loopback interface.
pub(crate) fn is_loopback_host(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    host.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ports_follow_the_scheme() {
        let port = |uri: &str| default_port(uri.parse::<http::Uri>().unwrap().scheme());
        assert_eq!(port("https://api.example/x"), 443);
        assert_eq!(port("HTTPS://api.example/x"), 443);
        assert_eq!(port("http://api.example/x"), 80);
        assert_eq!(port("api.example:8080"), 80);
        assert_eq!(port("/only/a/path"), 80);
    }

    #[test]
    fn hosts_are_normalised() {
        assert_eq!(normalize_host("[::1]:8080"), "::1");
        assert_eq!(normalize_host("::1"), "::1");
        assert_eq!(normalize_host("LocalHost"), "localhost");
    }

    #[test]
    fn well_formed_hosts_are_split() {
        fn p(s: &str) -> Option<HostPort<'_>> {
            parse_host(s.as_bytes())
        }
        let hp = |host, port, ip| Some(HostPort { host, port, ip });
        assert_eq!(p("localhost"), hp("localhost", None, false));
        assert_eq!(p("LocalHost:8080"), hp("LocalHost", Some(8080), false));
        assert_eq!(p("bi.internal.:80"), hp("bi.internal", Some(80), false));
        assert_eq!(p("127.0.0.1:8080"), hp("127.0.0.1", Some(8080), true));
        assert_eq!(p("[::1]"), hp("::1", None, true));
        assert_eq!(p("[::1]:65535"), hp("::1", Some(65535), true));
        assert_eq!(p("my_host-1.corp"), hp("my_host-1.corp", None, false));
        // A dotted name that is not a valid IPv4 address is a name, not an IP literal.
        assert_eq!(p("1.2.3.400"), hp("1.2.3.400", None, false));
    }

    #[test]
    fn malformed_hosts_are_refused() {
        for bad in [
            "",
            "[::1]evil.example",
            "[::1",
            "::1",
            "[::1]:",
            "[::1]:x",
            "[fe80::1%25eth0]",
            "[v1.x]",
            "[127.0.0.1]",
            "localhost:",
            "localhost:65536",
            "localhost:123456",
            "localhost:+80",
            "local host",
            "user@localhost",
            "localhost/x",
            "a..b",
            ".",
            "..",
            ".localhost",
            "localhost..",
            "local%68ost",
            "a:1:2",
            "localhost\u{0}",
        ] {
            assert_eq!(parse_host(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse_host(b"local\xffhost"), None);
    }
}

/// [`parse_host`] against a reference model written for plainness, not speed: on structured
/// hosts it must give back exactly the parts they were made from, and on arbitrary strings it
/// must accept exactly what the model accepts.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// The grammar as the README states it, one rule per line, allocating freely.
    fn model(s: &str) -> Option<(String, Option<u16>, bool)> {
        let port_ok = |p: &str| {
            (1..=5).contains(&p.len())
                && p.chars().all(|c| c.is_ascii_digit())
                && p.parse::<u32>().unwrap() <= 65535
        };
        if let Some(rest) = s.strip_prefix('[') {
            let close = rest.find(']')?;
            let inner = &rest[..close];
            let after = &rest[close + 1..];
            let port = match after {
                "" => None,
                _ if after.starts_with(':') && port_ok(&after[1..]) => {
                    Some(after[1..].parse().unwrap())
                }
                _ => return None,
            };
            inner.parse::<Ipv6Addr>().ok()?;
            return Some((inner.to_string(), port, true));
        }
        let (host, port) = match s.rsplit_once(':') {
            Some((h, p)) if port_ok(p) => (h, Some(p.parse().unwrap())),
            Some(_) => return None,
            None => (s, None),
        };
        let host = host.strip_suffix('.').unwrap_or(host);
        let labels: Vec<&str> = host.split('.').collect();
        let ok = labels.iter().all(|l| {
            !l.is_empty()
                && l.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        });
        ok.then(|| (host.to_string(), port, host.parse::<Ipv4Addr>().is_ok()))
    }

    fn hosts() -> impl Strategy<Value = (String, String, bool)> {
        prop_oneof![
            "[a-zA-Z0-9_-]{1,8}(\\.[a-zA-Z0-9_-]{1,8}){0,3}".prop_map(|n| (n.clone(), n, false)),
            "[a-z0-9]{1,8}(\\.[a-z0-9]{1,8}){0,2}\\.".prop_map(|n| (
                n.clone(),
                n.trim_end_matches('.').to_string(),
                false
            )),
            any::<[u8; 4]>().prop_map(|o| {
                let ip = Ipv4Addr::from(o).to_string();
                (ip.clone(), ip, true)
            }),
            any::<[u16; 8]>().prop_map(|s| {
                let ip = Ipv6Addr::from(s).to_string();
                (format!("[{ip}]"), ip, true)
            }),
        ]
    }

    proptest! {
        #[test]
        fn structured_hosts_parse_back((written, host, ip) in hosts(), port in any::<Option<u16>>()) {
            let text = match port {
                Some(p) => format!("{written}:{p}"),
                None => written,
            };
            let parsed = parse_host(text.as_bytes());
            prop_assert_eq!(parsed, Some(HostPort { host: &host, port, ip }));
        }

        #[test]
        fn arbitrary_strings_agree_with_the_model(s in "[a-z0-9.:\\[\\]_%@ /-]{0,24}") {
            let parsed = parse_host(s.as_bytes()).map(|h| (h.host.to_string(), h.port, h.ip));
            prop_assert_eq!(parsed, model(&s));
        }

        #[test]
        fn mangled_hosts_agree_with_the_model(
            (written, _, _) in hosts(),
            port in any::<Option<u16>>(),
            junk in "[\\]\\[:.a%@ ]{0,3}",
            at in any::<prop::sample::Index>(),
        ) {
            let mut text = match port {
                Some(p) => format!("{written}:{p}"),
                None => written,
            };
            let cut = at.index(text.len() + 1);
            text.insert_str(cut, &junk);
            let parsed = parse_host(text.as_bytes()).map(|h| (h.host.to_string(), h.port, h.ip));
            prop_assert_eq!(parsed, model(&text));
        }
    }
}
