//! `azure-costs-proxy check`: what it prints about a valid configuration. Every setting a reader
//! would ask about, with where each secret comes from, never a secret itself.

use std::fmt::Write as _;
use std::time::Duration;

use crate::config::{Config, DelegateSet, RefreshOn};

/// The summary `check` prints: listeners, upstream, STS, credentials (with where each secret comes
/// from, never the secret), token policy and the route table.
pub fn summary(c: &Config) -> String {
    let mut out = String::new();
    listeners(&mut out, c);
    clients(&mut out, c);
    ways_out(&mut out, c);
    tokens(&mut out, c);
    routes(&mut out, c);
    for w in &c.warnings {
        let _ = writeln!(out, "warning:     {w}");
    }
    let _ = writeln!(out, "config OK");
    out
}

/// A duration as the config writes it (`30s`, `1h`).
fn d(d: Duration) -> String {
    humantime::format_duration(d).to_string()
}

/// The config's origin, the data-plane listener, its TLS and keys, timeouts, reload, admin.
fn listeners(out: &mut String, c: &Config) {
    let _ = writeln!(out, "config:      {}", c.origin);
    let _ = writeln!(
        out,
        "listen:      {}://{}{}, at most {} connections",
        if c.listen.tls.is_some() {
            "https"
        } else {
            "http"
        },
        c.listen.address,
        if c.listen.address.ip().is_loopback() {
            " (loopback only)"
        } else {
            " (remote clients allowed)"
        },
        c.listen.max_connections
    );
    if let Some(tls) = &c.listen.tls {
        let _ = writeln!(
            out,
            "tls:         certificate {}, key {}{}",
            tls.cert_file.display(),
            tls.key_file.display(),
            tls.client_ca_file
                .as_ref()
                .map(|f| format!(
                    ", client certificates {} (CA {})",
                    if tls.client_auth_required {
                        "required"
                    } else {
                        "optional"
                    },
                    f.display()
                ))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(
        out,
        "api keys:    {}",
        match (c.listen.api_keys.len(), c.clients.is_empty()) {
            (0, true) => "none (clients are not asked for a key)".to_string(),
            (0, false) => "none".to_string(),
            (n, _) => format!("{n} accepted (Bearer, or Basic auth password), as client api_keys"),
        }
    );
    if !c.listen.allowed_hosts.is_empty() {
        let _ = writeln!(out, "extra hosts: {}", c.listen.allowed_hosts.join(", "));
    }
    let _ = writeln!(
        out,
        "timeouts:    request body stall {}, shutdown grace {}",
        d(c.listen.body_timeout),
        d(c.listen.shutdown_grace)
    );
    let _ = writeln!(out, "reload:      {}", c.reload_summary());
    let _ = writeln!(
        out,
        "admin:       {}",
        if c.admin.enabled {
            format!("http://{}/healthz, /readyz, /metrics", c.admin.address)
        } else {
            "disabled".into()
        }
    );
}

/// Most clients listed one by one; a gateway with thousands gets a count for the rest.
const CLIENTS_LISTED: usize = 50;

/// `[[clients]]`: each client's name, how it is recognised, its scopes and limits.
fn clients(out: &mut String, c: &Config) {
    use crate::inbound::{ClientIdentity, Scope};
    let scope = |s: &Scope| match s {
        Scope::All => "all".to_string(),
        Scope::Listed(items) => items.join(" "),
    };
    for client in c.clients.iter().take(CLIENTS_LISTED) {
        let identity = match &client.identity {
            ClientIdentity::Key(_) => "key".to_string(),
            ClientIdentity::KeyDigest(_) => "key (digest)".to_string(),
            ClientIdentity::Cert(name) => format!("certificate {name}"),
        };
        let mut limits = String::new();
        if let Some(rate) = client.limits.rate {
            let _ = write!(
                limits,
                ", rate {}/s (burst {})",
                decimal(rate),
                decimal(crate::bucket::burst_of(rate))
            );
        }
        if let Some(n) = client.limits.max_in_flight {
            let _ = write!(limits, ", at most {n} in flight");
        }
        let _ = writeln!(
            out,
            "client:      {} by {identity}; routes {}; teams {}{limits}",
            client.name,
            scope(&client.routes),
            scope(&client.delegates),
        );
    }
    if c.clients.len() > CLIENTS_LISTED {
        let _ = writeln!(
            out,
            "client:      ... and {} more",
            c.clients.len() - CLIENTS_LISTED
        );
    }
}

/// A number with at most three decimals, without trailing zeros: `20`, `1.389`, `0.017`.
fn decimal(x: f64) -> String {
    let text = format!("{x:.3}");
    text.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// The API and the STS, how each is reached, and the roots their certificates must chain to.
fn ways_out(out: &mut String, c: &Config) {
    let _ = writeln!(
        out,
        "upstream:    {} (timeout {}, connect timeout {}, at most {} connections)",
        c.upstream.url,
        d(c.upstream.timeout),
        d(c.upstream.connect_timeout),
        c.upstream.max_connections,
    );
    let _ = writeln!(out, "  way out:   {}", c.outbound.api.describe());
    let _ = writeln!(
        out,
        "sts:         {} (timeout {})",
        c.sts.token_url,
        d(c.sts.timeout)
    );
    let _ = writeln!(out, "  way out:   {}", c.outbound.sts.describe());
    let _ = writeln!(out, "trust:       {}", c.outbound.trust.describe());
}

/// The token policy and the credentials (where each secret comes from, never the secret).
fn tokens(out: &mut String, c: &Config) {
    let _ = writeln!(
        out,
        "token:       mode {}, max_age {}, refresh_before_expiry {}, refresh_on {}",
        c.token.mode.as_str(),
        d(c.token.max_age),
        d(c.token.refresh_before_expiry),
        refresh_on(c.token.refresh_on)
    );
    let _ = writeln!(out, "credentials:");
    for (name, cred) in &c.credentials {
        let _ = writeln!(
            out,
            "  {name:<12} client_id {}, secret from {}",
            cred.client_id, cred.secret_source
        );
    }
}

/// The route table, with the teams of `{delegate}` routes and routes' own `refresh_on`.
fn routes(out: &mut String, c: &Config) {
    let _ = writeln!(out, "routes:");
    let _ = writeln!(
        out,
        "  {:<24} {:<12} {:<16} {:<12} upstream path",
        "prefix", "credential", "delegate", "mode"
    );
    for r in &c.routes {
        let _ = writeln!(
            out,
            "  {:<24} {:<12} {:<16} {:<12} {}",
            r.prefix,
            r.credential,
            match &r.delegates {
                Some(_) => "from the path",
                None => r.delegate.as_deref().unwrap_or("-"),
            },
            r.token_mode.as_str(),
            if r.upstream_path.is_empty() {
                "-"
            } else {
                &r.upstream_path
            }
        );
        match &r.delegates {
            Some(DelegateSet::Any) => {
                let _ = writeln!(
                    out,
                    "  {:<24} acts for any team the STS accepts (metrics label it *)",
                    ""
                );
            }
            Some(DelegateSet::Listed(teams)) => {
                let _ = writeln!(out, "  {:<24} acts for {}", "", teams.join(", "));
            }
            None => {}
        }
        if r.refresh_on != c.token.refresh_on {
            let _ = writeln!(out, "  {:<24} refresh_on {}", "", refresh_on(r.refresh_on));
        }
    }
}

/// `[401, 403]` as written in the config.
fn refresh_on(on: RefreshOn) -> String {
    let mut statuses = Vec::new();
    if on.unauthorized {
        statuses.push("401");
    }
    if on.forbidden {
        statuses.push("403");
    }
    format!("[{}]", statuses.join(", "))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str =
        "[credentials.default]\nclient_id = \"abc\"\nclient_secret = { env = \"SECRET\" }\n";

    fn parse(text: &str) -> Config {
        let env = |name: &str| (name == "SECRET").then(|| "s3cr3t".to_string());
        crate::config::from_toml(text, "proxy.toml", &env).unwrap()
    }

    #[test]
    fn summary_says_keys_are_required_never_which() {
        let keyed = parse(&format!(
            "[listen]\naddress = \"0.0.0.0:8080\"\nallow_remote = true\n\
             api_keys = [{{ env = \"SECRET\" }}]\n{MINIMAL}"
        ));
        let summary = summary(&keyed);
        assert!(summary.contains("1 accepted"), "{summary}");
        assert!(!summary.contains("s3cr3t"), "{summary}");
    }

    #[test]
    fn summary_names_required_client_certificates() {
        let dir = std::env::temp_dir().join(format!("acp-check-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        // Forward slashes: a Windows path's backslashes would be escapes in a TOML string.
        let path = |name: &str| dir.join(name).to_str().unwrap().replace('\\', "/");
        std::fs::write(path("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        let ok = parse(&format!(
            "[listen.tls]\ncert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"\n{MINIMAL}",
            path("cert.pem"),
            path("key.pem"),
            path("cert.pem")
        ));
        assert!(summary(&ok).contains("client certificates required"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn summary_lists_clients_and_warns_of_an_open_remote_listener() {
        let gateway = parse(&format!(
            "[listen]\naddress = \"0.0.0.0:8080\"\nallow_remote = true\n{MINIMAL}\
             [[routes]]\nprefix = \"/teams/{{delegate}}\"\ndelegates = [\"*\"]\n\
             [[clients]]\nname = \"contoso\"\nkey = {{ env = \"SECRET\" }}\n\
             routes = [\"/teams/{{delegate}}\"]\ndelegates = [\"TEAM-CONTOSO\"]\n\
             rate = \"20/s\"\nmax_in_flight = 32\n"
        ));
        let summary = summary(&gateway);
        assert!(
            summary.contains(
                "client:      contoso by key; routes /teams/{delegate}; teams TEAM-CONTOSO, \
                 rate 20/s (burst 40), at most 32 in flight"
            ),
            "{summary}"
        );
        assert!(
            !summary.contains("s3cr3t") && !summary.contains("client authentication"),
            "{summary}"
        );
        let open = parse(&format!(
            "[listen]\naddress = \"0.0.0.0:8080\"\nallow_remote = true\n{MINIMAL}"
        ));
        let warned = super::summary(&open);
        assert!(
            warned.contains("warning:") && warned.contains("without any client authentication"),
            "{warned}"
        );
        assert_eq!(
            [decimal(20.0), decimal(5000.0 / 3600.0), decimal(1.0 / 60.0)],
            ["20", "1.389", "0.017"]
        );
    }
}
