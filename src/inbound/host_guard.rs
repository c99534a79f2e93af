//! The DNS-rebinding guard: the names the `Host` header (or `:authority`) may carry.

use std::net::SocketAddr;

use super::host::{host_of, normalize_host};

/// Names the `Host` header may carry (DNS-rebinding guard): a web page that resolves its own name
/// to 127.0.0.1 still sends its own name as `Host`, and is refused.
#[derive(Debug)]
pub struct HostGuard {
    any: bool,
    names: Vec<String>,
}

impl HostGuard {
    /// localhost, 127.0.0.1, [::1], the listen address and the configured extra names.
    pub fn new(listen: SocketAddr, allowed: &[String]) -> Self {
        let mut names: Vec<String> = ["localhost", "127.0.0.1", "::1"]
            .iter()
            .map(|s| (*s).to_string())
            .collect();
        names.push(listen.ip().to_string());
        names.extend(allowed.iter().map(|h| normalize_host(h)));
        HostGuard {
            any: allowed.iter().any(|h| h == "*"),
            names,
        }
    }

    /// [`Self::accepts`] for a raw header value: one that is not UTF-8 names no configured host.
    pub fn accepts_bytes(&self, authority: &[u8]) -> bool {
        self.any || std::str::from_utf8(authority).is_ok_and(|a| self.accepts(a))
    }

    /// Whether an authority (`host[:port]`, `[v6]:port`) names this proxy.
    pub fn accepts(&self, authority: &str) -> bool {
        if self.any {
            return true;
        }
        let host = host_of(authority);
        self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_guard_accepts_loopback_names_and_configured_ones() {
        let g = HostGuard::new("127.0.0.1:8080".parse().unwrap(), &["bi.internal".into()]);
        for ok in [
            "localhost",
            "localhost:8080",
            "LOCALHOST:1",
            "127.0.0.1:8080",
            "[::1]:8080",
            "bi.internal",
            "bi.internal.:80",
        ] {
            assert!(g.accepts(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:8080",
            "localhost.evil.example",
            "127.0.0.2",
        ] {
            assert!(!g.accepts(bad), "{bad}");
        }
        let any = HostGuard::new("127.0.0.1:8080".parse().unwrap(), &["*".into()]);
        assert!(any.accepts("evil.example"));
        // Raw header values: not UTF-8 names nothing, unless any name is allowed.
        assert!(g.accepts_bytes(b"LOCALHOST:8080"));
        assert!(!g.accepts_bytes(b"local\xffhost"));
        assert!(any.accepts_bytes(b"local\xffhost"));
    }
}
