//! The DNS-rebinding guard: the names the `Host` header (or `:authority`) may carry, on the
//! data plane and on the admin listener.

use std::net::SocketAddr;

use crate::host::{HostPort, default_port, normalize_host, parse_host};

/// Names the `Host` header may carry (DNS-rebinding guard): a web page that resolves its own name
/// to 127.0.0.1 still sends its own name as `Host`, and is refused.
#[derive(Debug)]
pub struct HostGuard {
    any: bool,
    names: Vec<String>,
    /// The port the listener is bound to, which an absolute-form target must name.
    port: u16,
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
            port: listen.port(),
        }
    }

    /// Whether an absolute-form request target (`http://127.0.0.1:8080/x`) names this proxy:
    /// an accepted host and this listener's port (the scheme's default port when none is
    /// written). `http://127.0.0.1:5000/` is another program on the same machine.
    pub fn is_own_target(&self, target: &http::Uri) -> bool {
        let Some(authority) = target.authority() else {
            return true;
        };
        let port = authority
            .port_u16()
            .unwrap_or_else(|| default_port(target.scheme()));
        port == self.port && self.accepts(authority.as_str())
    }

    /// Whether a raw `Host` value or authority names this proxy: well-formed (see
    /// [`parse_host`]; `[::1]evil` is not, even with `allowed_hosts = ["*"]`) and an accepted
    /// name.
    pub fn accepts_bytes(&self, authority: &[u8]) -> bool {
        parse_host(authority).is_some_and(|h| self.accepts_host(&h))
    }

    /// [`Self::accepts_bytes`] for text.
    pub fn accepts(&self, authority: &str) -> bool {
        self.accepts_bytes(authority.as_bytes())
    }

    /// The admin listener's guard: a well-formed `Host` that is an IP literal (probes and
    /// scrapers use the pod or host address) or a name the data plane accepts. A rebound DNS
    /// name is neither.
    pub fn admits_probe(&self, authority: &[u8]) -> bool {
        parse_host(authority).is_some_and(|h| h.ip || self.accepts_host(&h))
    }

    fn accepts_host(&self, host: &HostPort<'_>) -> bool {
        self.any || self.names.iter().any(|n| n.eq_ignore_ascii_case(host.host))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_targets_must_name_this_host_and_port() {
        let guard = HostGuard::new("127.0.0.1:8080".parse().unwrap(), &[]);
        let own = |t: &str| guard.is_own_target(&t.parse().unwrap());
        assert!(own("http://127.0.0.1:8080/x"));
        assert!(own("http://localhost:8080/x"));
        assert!(own("/x"));
        assert!(!own("http://127.0.0.1:5000/x"));
        assert!(!own("http://127.0.0.1/x"));
        assert!(!own("http://evil.example:8080/x"));
        let on_80 = HostGuard::new("127.0.0.1:80".parse().unwrap(), &[]);
        assert!(on_80.is_own_target(&"http://localhost/x".parse().unwrap()));
        assert!(!on_80.is_own_target(&"https://localhost/x".parse().unwrap()));
        // `allowed_hosts = ["*"]` turns off the name check, not the port check.
        let any = HostGuard::new("127.0.0.1:8080".parse().unwrap(), &["*".into()]);
        assert!(!any.is_own_target(&"http://10.0.0.1:5000/x".parse().unwrap()));
        assert!(any.is_own_target(&"http://bi.corp:8080/x".parse().unwrap()));
    }

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
            "[::1]evil.example",
            "[::1",
            "localhost:99999",
        ] {
            assert!(!g.accepts(bad), "{bad}");
        }
        let any = HostGuard::new("127.0.0.1:8080".parse().unwrap(), &["*".into()]);
        assert!(any.accepts("evil.example"));
        // `*` turns off the name check, not the syntax check.
        assert!(!any.accepts("[::1]evil.example"));
        assert!(g.accepts_bytes(b"LOCALHOST:8080"));
        assert!(!g.accepts_bytes(b"local\xffhost"));
        assert!(!any.accepts_bytes(b"local\xffhost"));
    }

    #[test]
    fn the_admin_guard_takes_ip_literals_and_accepted_names() {
        let g = HostGuard::new("127.0.0.1:8080".parse().unwrap(), &["bi.internal".into()]);
        for ok in [
            "10.1.2.3:9090",
            "[fd00::5]:9090",
            "localhost:9090",
            "bi.internal",
        ] {
            assert!(g.admits_probe(ok.as_bytes()), "{ok}");
        }
        for bad in [
            "evil.example",
            "evil.example:9090",
            "[::1]evil",
            "10.1.2.3:",
        ] {
            assert!(!g.admits_probe(bad.as_bytes()), "{bad}");
        }
    }
}
