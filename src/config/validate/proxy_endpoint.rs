//! One outbound proxy endpoint, as `[outbound]` names it: its URL (from the file or a proxy
//! variable) with the credentials it may hold, or `proxy_auth`'s, as a `Proxy-Authorization`
//! value that no message shows.

use base64::Engine as _;
use http::uri::{Authority, Scheme};
use toml::Spanned;

use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawProxyAuth;
use crate::config::secret::resolve_secret;
use crate::host::default_port;
use crate::secret::Secret;
use crate::upstream::ProxyEndpoint;

/// `http://[user[:password]@]host[:port]` (or `host:port`), as the file or a variable names it.
/// Credentials in the URL are accepted; no message ever shows them.
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
    let shown = format!("{}://{rest}", scheme.to_ascii_lowercase());
    let bad = |why: &str| {
        ctx.error(
            span.clone(),
            "outbound.proxy",
            format!("{source} = {shown}: {why}"),
            "write \"env\", \"none\" or a URL such as \"http://proxy.corp.example:3128\"",
        )
    };
    if !scheme.eq_ignore_ascii_case("http") {
        return Err(bad(
            "only http:// proxies are supported (the tunnel inside is TLS all the same)",
        ));
    }
    let authority: Authority = rest
        .parse()
        .map_err(|_| bad("not a host with an optional port"))?;
    if rest.is_empty() || rest.contains('/') || authority.host().is_empty() {
        return Err(bad("not a host with an optional port"));
    }
    // `http://proxy` is port 80, as for any http URL.
    let authority: Authority = match authority.port_u16() {
        Some(_) => authority,
        None => format!("{}:{}", authority.host(), default_port(Some(&Scheme::HTTP)))
            .parse()
            .map_err(|_| bad("not a host with an optional port"))?,
    };
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
