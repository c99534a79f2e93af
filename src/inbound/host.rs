//! Host names as the `Host` guard compares them: the host part of an authority, normalised, and
//! whether it names this machine. Pure functions; config validation and the request path share them.

use std::net::IpAddr;

/// The host of an authority or host name, as the `Host` guard compares it: lower case, without
/// port, IPv6 brackets or a trailing dot (`[::1]:8080` -> `::1`, `BI.internal.:80` -> `bi.internal`).
pub fn normalize_host(authority: &str) -> String {
    host_of(authority).to_ascii_lowercase()
}

/// The host part of an authority, without port, brackets or trailing dots, case kept. Allocates
/// nothing: the `Host` guard runs it on every request.
pub fn host_of(authority: &str) -> &str {
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
    host.trim_end_matches('.')
}

/// Whether a host name or address is on this machine's loopback interface.
pub fn is_loopback_host(host: &str) -> bool {
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
    fn hosts_are_normalised() {
        assert_eq!(normalize_host("[::1]:8080"), "::1");
        assert_eq!(normalize_host("::1"), "::1");
        assert_eq!(normalize_host("LocalHost"), "localhost");
    }
}
