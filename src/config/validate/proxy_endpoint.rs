//! One outbound proxy endpoint, as `[outbound]` names it: its URL (from the file or a proxy
//! variable) with the credentials it may hold, or `proxy_auth`'s, as a `Proxy-Authorization`
//! value that no message shows.

use base64::Engine as _;
use http::uri::{Authority, Scheme};
use toml::Spanned;

use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawProxyAuth;
use crate::config::secret::resolve_secret;
use crate::host::{default_port, parse_host};
use crate::secret::Secret;
use crate::upstream::ProxyEndpoint;

/// `http://[user[:password]@]host[:port]` (or `host:port`), as the file or a variable names it.
/// Credentials in the URL are accepted; no message ever shows them, nor anything that did not
/// read as a host and port (`http://svc:PASSWORD`, its host forgotten).
pub(super) fn endpoint(
    ctx: &Ctx<'_>,
    value: &str,
    source: &str,
    span: Option<std::ops::Range<usize>>,
    auth: Option<Secret>,
) -> Result<ProxyEndpoint, ConfigError> {
    let value = value.trim();
    let (scheme, rest) = value.split_once("://").unwrap_or(("http", value));
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, rest),
    };
    let rest = rest.trim_end_matches('/');
    let authority = proxy_authority(rest);
    let shown = authority
        .is_ok()
        .then(|| format!("{}://{rest}", scheme.to_ascii_lowercase()));
    let bad = |why: &str| {
        let message = match &shown {
            Some(shown) => format!("{source} = {shown}: {why}"),
            None => format!("{source}: {why}"),
        };
        ctx.error(
            span.clone(),
            "outbound.proxy",
            message,
            "write \"env\", \"none\" or a URL such as \"http://proxy.corp.example:3128\"",
        )
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(bad(
            "only http:// proxies are supported (the tunnel inside is TLS all the same)",
        ));
    }
    let authority = authority.map_err(bad)?;
    let authorization = match (userinfo, auth) {
        (Some(_), Some(_)) => {
            return Err(bad(
                "credentials are both in the URL and in proxy_auth; keep one of them",
            ));
        }
        (Some(userinfo), None) => {
            let (user, password) = userinfo.split_once(':').unwrap_or((userinfo, ""));
            let decode = |s: &str| {
                percent_encoding::percent_decode_str(s)
                    .decode_utf8()
                    .map(|s| s.into_owned())
                    .map_err(|_| bad("the credentials in the URL are not UTF-8"))
            };
            Some(basic(&decode(user)?, &decode(password)?))
        }
        (None, auth) => auth,
    };
    Ok(ProxyEndpoint {
        shown: format!("http://{authority}"),
        authority,
        source: source.to_string(),
        authorization,
    })
}

/// The proxy's `host:port`, from what follows the scheme and the credentials of its URL; the
/// port always written, 80 when none is (`http://proxy` is port 80, as for any http URL). A
/// written port must be a number from 1 to 65535: `:99999`, `:abc` or a lone `:` must not read
/// as no port at all, which would send the proxy's credentials to port 80.
fn proxy_authority(rest: &str) -> Result<Authority, &'static str> {
    const NOT_A_HOST: &str = "not a host with an optional port";
    if rest.contains('/') {
        return Err(NOT_A_HOST);
    }
    let (host, port) = split_port(rest);
    let port = match port {
        None => default_port(Some(&Scheme::HTTP)),
        Some(port) => port_number(port).ok_or("the port is not a number from 1 to 65535")?,
    };
    if parse_host(host.as_bytes()).is_none_or(|h| h.port.is_some()) {
        return Err(NOT_A_HOST);
    }
    format!("{host}:{port}").parse().map_err(|_| NOT_A_HOST)
}

/// `host[:port]` split at the colon before the port (after the brackets of an IPv6 address):
/// the host, and the port as written (`Some("")` for a colon with nothing after it).
fn split_port(authority: &str) -> (&str, Option<&str>) {
    let host_end = match authority.starts_with('[') {
        true => authority.find(']').map_or(authority.len(), |i| i + 1),
        false => 0,
    };
    match authority[host_end..].rfind(':') {
        Some(i) => (
            &authority[..host_end + i],
            Some(&authority[host_end + i + 1..]),
        ),
        None => (authority, None),
    }
}

/// A TCP port as a URL writes it: 1 to 5 digits, from 1 to 65535.
fn port_number(text: &str) -> Option<u16> {
    let digits = (1..=5).contains(&text.len()) && text.bytes().all(|b| b.is_ascii_digit());
    digits
        .then(|| text.parse().ok())
        .flatten()
        .filter(|&p| p != 0)
}

/// `[outbound] proxy_auth`: the `Proxy-Authorization` value of its user name and password.
pub(super) fn proxy_auth(
    ctx: &Ctx<'_>,
    raw: &Spanned<RawProxyAuth>,
    warnings: &mut Vec<String>,
) -> Result<Secret, ConfigError> {
    let raw_auth = raw.get_ref();
    if matches!(raw_auth.password.get_ref(), toml::Value::String(_)) {
        warnings.push(ctx.warning(
            Some(raw_auth.password.span()),
            "outbound.proxy_auth.password is written in the config file; secrets belong outside \
             it: { env = \"VAR\" }, { file = \"/path\" } or { credential = \"name\" }",
        ));
    }
    let username = raw_auth.username.get_ref();
    if username.is_empty() || username.contains(':') || username.chars().any(char::is_control) {
        return Err(ctx.error(
            Some(raw_auth.username.span()),
            "outbound.proxy_auth.username",
            "the user name is empty or holds ':' or control characters",
            "write the account the outbound proxy knows, e.g. \"svc-bi\"",
        ));
    }
    let password = resolve_secret(ctx, &raw_auth.password, "outbound.proxy_auth.password")?;
    Ok(basic(username, password.expose()))
}

/// The `Proxy-Authorization` value for Basic authentication.
fn basic(user: &str, password: &str) -> Secret {
    let pair = zeroize::Zeroizing::new(format!("{user}:{password}"));
    Secret::new(format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair.as_bytes())
    ))
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{MINIMAL, env_with};
    use crate::config::{Config, ConfigError, Egress, from_toml};

    /// An http target too, so that `HTTP_PROXY` is read.
    const HTTP_API: &str =
        "[upstream]\nurl = \"http://api.corp.example\"\nallow_insecure_http = true\n";

    fn load(extra: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut vars = vec![("SECRET", "s3cr3t")];
        vars.extend_from_slice(env);
        from_toml(&format!("{MINIMAL}{extra}"), "proxy.toml", &env_with(&vars))
    }

    fn proxy_of(c: &Config) -> &str {
        match &c.outbound.api {
            Egress::Via(p) => &p.shown,
            Egress::Direct(why) => why,
        }
    }

    const BAD_PORTS: [&str; 5] = ["99999", "65536", "abc", "", "0"];

    #[test]
    fn a_port_that_is_no_port_is_refused_in_the_file() {
        for port in BAD_PORTS {
            for url in [
                format!("http://p.corp:{port}"),
                format!("http://p.corp:{port}/"),
                format!("http://[2001:db8::1]:{port}"),
            ] {
                let e = load(&format!("[outbound]\nproxy = \"{url}\"\n"), &[]).unwrap_err();
                assert_eq!((e.key.as_str(), e.line), ("outbound.proxy", Some(5)), "{e}");
                assert!(
                    e.to_string()
                        .contains("[outbound] proxy: the port is not a number from 1 to 65535"),
                    "{e}"
                );
            }
        }
        // Ports that are ports, and none at all, still work.
        for (url, shown) in [
            ("http://p.corp:65535", "http://p.corp:65535"),
            ("http://p.corp:1/", "http://p.corp:1"),
            ("http://p.corp", "http://p.corp:80"),
            ("http://[2001:db8::1]:3128", "http://[2001:db8::1]:3128"),
        ] {
            let c = load(&format!("[outbound]\nproxy = \"{url}\"\n"), &[]).unwrap();
            assert_eq!(proxy_of(&c), shown);
        }
    }

    #[test]
    fn a_port_that_is_no_port_is_refused_in_the_environment() {
        for port in BAD_PORTS {
            for var in [
                "HTTPS_PROXY",
                "https_proxy",
                "HTTP_PROXY",
                "ALL_PROXY",
                "all_proxy",
            ] {
                let value = format!("http://p.corp:{port}");
                let e = load(HTTP_API, &[(var, value.as_str())]).unwrap_err();
                assert_eq!(e.key, "outbound.proxy", "{e}");
                assert!(
                    e.message
                        .starts_with(&format!("{var}: the port is not a number from 1 to 65535")),
                    "{e}"
                );
            }
        }
    }

    #[test]
    fn a_bad_port_beside_a_password_shows_neither() {
        for url in [
            "http://svc:Pa55-hunter2@p.corp:99999",
            "HTTP://svc:Pa55-hunter2@p.corp:abc/",
            "http://svc:Pa55-hunter2@p.corp:",
            // The host forgotten: the password reads as the port.
            "http://svc:Pa55-hunter2",
        ] {
            let e = load(&format!("[outbound]\nproxy = \"{url}\"\n"), &[]).unwrap_err();
            let from_env = load("", &[("HTTPS_PROXY", url)]).unwrap_err();
            // A variable may leave the scheme out.
            let bare = url.split_once("://").map_or(url, |(_, rest)| rest);
            let bare = load("", &[("HTTPS_PROXY", bare)]).unwrap_err();
            for e in [e, from_env, bare] {
                let shown = format!("{e}\n{e:?}");
                assert!(shown.contains("the port is not a number"), "{shown}");
                assert!(
                    !shown.contains("hunter2") && !shown.contains("svc"),
                    "{shown}"
                );
            }
        }
    }
}
