//! Validation: the raw tables in, a [`Config`] out, with every value checked.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Uri};
use toml::Spanned;

use super::diagnostics::{ConfigError, Ctx};
use super::raw::{RawConfig, RawTls};
use super::secret::{resolve_secret, secret_source};
use super::{
    AdminConfig, Config, CredentialConfig, DEFAULT_MAX_CONNECTIONS, DEFAULT_SHUTDOWN_GRACE,
    DEFAULT_TOKEN_URL, DEFAULT_UPSTREAM, ListenConfig, ListenTlsConfig, MAX_TOKEN_AGE, RouteConfig,
    StsConfig, TokenMode, TokenPolicy, UpstreamConfig,
};
use crate::inbound::host::{is_loopback_host, normalize_host};

/// Longest inbound API key accepted.
const MAX_API_KEY: usize = 512;
/// Shorter inbound API keys are accepted with a warning.
const MIN_API_KEY: usize = 16;
/// Highest `listen.max_connections` accepted.
const MAX_MAX_CONNECTIONS: usize = 1 << 20;

/// Checks every table of `raw`; `ctx` says where it came from, for errors and warnings.
pub(super) fn validate(raw: RawConfig, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();

    // [listen]
    let allow_remote = raw.listen.allow_remote.unwrap_or(false);
    let address = socket_addr(ctx, &raw.listen.address, "listen.address", "127.0.0.1:8080")?;
    if !address.ip().is_loopback() && !allow_remote {
        return Err(ctx.error(
            raw.listen.address.as_ref().map(Spanned::span),
            "listen.address",
            format!(
                "{address} is not a loopback address: anyone who can reach it could spend the \
                 proxy's credential"
            ),
            "listen on 127.0.0.1, or set allow_remote = true in [listen] \
             (AZURE_COSTS_PROXY_ALLOW_REMOTE=true) and protect the port",
        ));
    }
    let mut allowed_hosts = Vec::new();
    for h in raw.listen.allowed_hosts.unwrap_or_default() {
        let text = h.get_ref().trim();
        let name = if text == "*" {
            text.to_string()
        } else {
            normalize_host(text)
        };
        if name.is_empty() || name.contains(['/', ' ', '@', '[', ']']) {
            return Err(ctx.error(
                Some(h.span()),
                "listen.allowed_hosts",
                format!("`{}` is not a host name", h.get_ref()),
                "list host names such as \"bi-gateway.internal\", or [\"*\"] to turn the check off",
            ));
        }
        allowed_hosts.push(name);
    }
    let mut api_keys = Vec::new();
    for k in raw.listen.api_keys.unwrap_or_default() {
        let key = resolve_secret(ctx, &k, "listen.api_keys")?;
        let line = || {
            ctx.line_of(Some(k.span()))
                .map(|l| format!(", line {l}"))
                .unwrap_or_default()
        };
        // What a client can send as a Bearer token or a Basic password, and must type exactly.
        let text = key.expose();
        if text.len() > MAX_API_KEY || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ctx.error(
                Some(k.span()),
                "listen.api_keys",
                format!(
                    "an API key must be 1-{MAX_API_KEY} visible ASCII characters, without \
                     spaces or line breaks"
                ),
                "generate one with `openssl rand -hex 24`",
            ));
        }
        if text.len() < MIN_API_KEY {
            warnings.push(format!(
                "{}{}: an API key is shorter than {MIN_API_KEY} characters; generate a long \
                 random one (`openssl rand -hex 24`)",
                ctx.origin,
                line()
            ));
        }
        if matches!(k.get_ref(), toml::Value::String(_)) {
            warnings.push(format!(
                "{}{}: an API key is written in the config file; keys belong outside it: \
                 {{ env = \"VAR\" }}, {{ file = \"/path\" }} or {{ credential = \"name\" }}",
                ctx.origin,
                line()
            ));
        }
        api_keys.push(key);
    }
    let tls = match &raw.listen.tls {
        None => None,
        Some(t) => Some(listen_tls(ctx, t)?),
    };
    if !address.ip().is_loopback()
        && api_keys.is_empty()
        && tls.as_ref().is_none_or(|t| t.client_ca_file.is_none())
    {
        warnings.push(format!(
            "{}: listen.address {address} accepts remote clients without api_keys or client \
             certificates ([listen.tls] client_ca_file): anyone who can reach the port can spend \
             the proxy's credential; protect the port, or set one of them",
            ctx.origin
        ));
    }
    let max_connections = match &raw.listen.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(n) => usize::try_from(*n.get_ref())
            .ok()
            .filter(|n| (1..=MAX_MAX_CONNECTIONS).contains(n))
            .ok_or_else(|| {
                ctx.error(
                    Some(n.span()),
                    "listen.max_connections",
                    format!("{} is out of range", n.get_ref()),
                    format!("write a number from 1 to {MAX_MAX_CONNECTIONS}"),
                )
            })?,
    };

    let shutdown_grace = duration(
        ctx,
        &raw.listen.shutdown_grace,
        "listen.shutdown_grace",
        DEFAULT_SHUTDOWN_GRACE,
    )?;

    // [admin]
    let admin = AdminConfig {
        enabled: raw.admin.enabled.unwrap_or(true),
        address: socket_addr(ctx, &raw.admin.address, "admin.address", "127.0.0.1:9090")?,
    };
    if admin.enabled && !admin.address.ip().is_loopback() && !allow_remote {
        return Err(ctx.error(
            raw.admin.address.as_ref().map(Spanned::span),
            "admin.address",
            format!("{} is not a loopback address", admin.address),
            "listen on 127.0.0.1, or set allow_remote = true in [listen]",
        ));
    }

    // [upstream]
    let (url, upstream_span) = http_url(
        ctx,
        &raw.upstream.url,
        "upstream.url",
        DEFAULT_UPSTREAM,
        raw.upstream.allow_insecure_http.unwrap_or(false),
    )?;
    if url.query().is_some() {
        return Err(ctx.error(
            upstream_span,
            "upstream.url",
            "the upstream URL must not have a query string",
            "write only scheme, host and an optional base path",
        ));
    }
    let base_path = url.path().trim_end_matches('/').to_string();
    let ca_certs = match &raw.upstream.ca_file {
        None => Vec::new(),
        Some(f) => crate::tls::read_pem_certs(Path::new(f.get_ref())).map_err(|e| {
            ctx.error(
                Some(f.span()),
                "upstream.ca_file",
                format!("cannot use {} as trust roots: {e}", f.get_ref()),
                "point ca_file at a readable PEM file of CA certificates",
            )
        })?,
    };
    let upstream = UpstreamConfig {
        url,
        base_path,
        timeout: duration(
            ctx,
            &raw.upstream.timeout,
            "upstream.timeout",
            Duration::from_secs(120),
        )?,
        connect_timeout: duration(
            ctx,
            &raw.upstream.connect_timeout,
            "upstream.connect_timeout",
            Duration::from_secs(10),
        )?,
        ca_file: raw.upstream.ca_file.map(|f| PathBuf::from(f.into_inner())),
        ca_certs,
    };

    // [sts]
    let (token_url, _) = http_url(
        ctx,
        &raw.sts.token_url,
        "sts.token_url",
        DEFAULT_TOKEN_URL,
        raw.sts.allow_insecure_http.unwrap_or(false),
    )?;
    let sts = StsConfig {
        token_url,
        timeout: duration(
            ctx,
            &raw.sts.timeout,
            "sts.timeout",
            Duration::from_secs(15),
        )?,
    };

    // [credentials.*]
    let mut credentials = BTreeMap::new();
    for (name, cred) in &raw.credentials {
        let key = format!("credentials.{name}");
        if !valid_name(name) {
            return Err(ctx.error(
                Some(cred.span()),
                &key,
                format!("`{name}` is not a valid credential name"),
                "use letters, digits, '-' and '_'",
            ));
        }
        let cred = cred.get_ref();
        let client_id = cred.client_id.get_ref().trim().to_string();
        if client_id.is_empty() || client_id.chars().any(char::is_control) {
            return Err(ctx.error(
                Some(cred.client_id.span()),
                &format!("{key}.client_id"),
                "the client id is empty or holds control characters",
                "copy the client id from the Azure Costs portal",
            ));
        }
        let secret_key = format!("{key}.client_secret");
        if matches!(cred.client_secret.get_ref(), toml::Value::String(_)) {
            warnings.push(format!(
                "{}{}: {secret_key} is written in the config file; secrets belong outside it: \
                 {{ env = \"VAR\" }}, {{ file = \"/path\" }} or {{ credential = \"name\" }}",
                ctx.origin,
                ctx.line_of(Some(cred.client_secret.span()))
                    .map(|l| format!(", line {l}"))
                    .unwrap_or_default(),
            ));
        }
        let client_secret = resolve_secret(ctx, &cred.client_secret, &secret_key)?;
        credentials.insert(
            name.clone(),
            CredentialConfig {
                client_id,
                client_secret,
                secret_source: secret_source(cred.client_secret.get_ref()),
            },
        );
    }

    // [token]
    let mode = token_mode(ctx, &raw.token.mode, "token.mode", TokenMode::Interval)?;
    let max_age = duration(
        ctx,
        &raw.token.max_age,
        "token.max_age",
        Duration::from_secs(55 * 60),
    )?;
    if max_age > MAX_TOKEN_AGE {
        return Err(ctx.error(
            raw.token.max_age.as_ref().map(Spanned::span),
            "token.max_age",
            format!(
                "{} is longer than the vendor's limit of 60 minutes",
                humantime::format_duration(max_age)
            ),
            "set max_age to 60m or less (default 55m)",
        ));
    }
    let refresh_before_expiry = duration(
        ctx,
        &raw.token.refresh_before_expiry,
        "token.refresh_before_expiry",
        Duration::from_secs(5 * 60),
    )?;
    if refresh_before_expiry >= max_age {
        return Err(ctx.error(
            raw.token.refresh_before_expiry.as_ref().map(Spanned::span),
            "token.refresh_before_expiry",
            "must be shorter than token.max_age",
            "for example max_age = \"55m\" with refresh_before_expiry = \"5m\"",
        ));
    }
    let header_name = raw
        .token
        .transaction_header
        .as_ref()
        .map_or("x-transaction-id", |h| h.get_ref().as_str());
    let transaction_header = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
        ctx.error(
            raw.token.transaction_header.as_ref().map(Spanned::span),
            "token.transaction_header",
            format!("`{header_name}` is not a valid header name"),
            "write a header name such as \"X-Transaction-Id\"",
        )
    })?;
    // Credentials, connection-level and per-request headers would keep a secret in memory or
    // make every request a transaction of its own.
    const NOT_A_TRANSACTION_HEADER: [&str; 13] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "x-request-id",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "proxy-connection",
    ];
    if NOT_A_TRANSACTION_HEADER.contains(&transaction_header.as_str()) {
        return Err(ctx.error(
            raw.token.transaction_header.as_ref().map(Spanned::span),
            "token.transaction_header",
            format!("`{header_name}` cannot name a transaction"),
            "use a header of its own, such as \"X-Transaction-Id\"",
        ));
    }
    let token = TokenPolicy {
        mode,
        max_age,
        refresh_before_expiry,
        transaction_idle: duration(
            ctx,
            &raw.token.transaction_idle,
            "token.transaction_idle",
            Duration::from_secs(30),
        )?,
        transaction_header,
    };

    // [[routes]]
    let mut routes: Vec<RouteConfig> = Vec::new();
    for r in &raw.routes {
        let r = r.get_ref();
        let prefix = route_prefix(ctx, &r.prefix, "routes.prefix")?;
        if let Some(dup) = routes.iter().find(|x| x.prefix == prefix) {
            return Err(ctx.error(
                Some(r.prefix.span()),
                "routes.prefix",
                format!("prefix `{}` appears twice", dup.prefix),
                "give every [[routes]] entry its own prefix",
            ));
        }
        let credential = r
            .credential
            .as_ref()
            .map_or("default", |c| c.get_ref().as_str());
        if !credentials.contains_key(credential) {
            return Err(ctx.error(
                r.credential
                    .as_ref()
                    .map_or(Some(r.prefix.span()), |c| Some(c.span())),
                "routes.credential",
                format!("route `{prefix}` uses credential `{credential}`, which is not defined"),
                format!("add a [credentials.{credential}] table with client_id and client_secret"),
            ));
        }
        let delegate = match &r.delegate {
            None => None,
            Some(d) => {
                let team = d.get_ref().trim();
                if team.is_empty() || team.chars().any(char::is_control) {
                    return Err(ctx.error(
                        Some(d.span()),
                        "routes.delegate",
                        "the delegate team id is empty or holds control characters",
                        "write the customer team id from the Azure Costs CSP portal",
                    ));
                }
                Some(team.to_string())
            }
        };
        let token_mode = token_mode(ctx, &r.token_mode, "routes.token_mode", mode)?;
        let upstream_path = match &r.upstream_path {
            None => String::new(),
            Some(p) => {
                let clean = route_prefix(ctx, p, "routes.upstream_path")?;
                if clean == "/" { String::new() } else { clean }
            }
        };
        routes.push(RouteConfig {
            prefix,
            credential: credential.to_string(),
            delegate,
            token_mode,
            upstream_path,
        });
    }
    if routes.is_empty() {
        if !credentials.contains_key("default") {
            return Err(ctx.error(
                None,
                "credentials.default",
                "there is no [[routes]] entry and no [credentials.default] for the implicit `/` route",
                "add [credentials.default] with client_id and client_secret",
            ));
        }
        routes.push(RouteConfig {
            prefix: "/".into(),
            credential: "default".into(),
            delegate: None,
            token_mode: mode,
            upstream_path: String::new(),
        });
    }
    for name in credentials.keys() {
        if !routes.iter().any(|r| &r.credential == name) {
            warnings.push(format!(
                "{}: credential `{name}` is not used by any route",
                ctx.origin
            ));
        }
    }

    Ok(Config {
        origin: ctx.origin.to_string(),
        listen: ListenConfig {
            address,
            allow_remote,
            allowed_hosts,
            api_keys,
            tls,
            max_connections,
            shutdown_grace,
        },
        admin,
        upstream,
        sts,
        credentials,
        token,
        routes,
        warnings,
    })
}

/// `[listen.tls]`: both files required, read now so that a bad file is a config error with its
/// line, not a failed handshake later.
fn listen_tls(ctx: &Ctx<'_>, raw: &Spanned<RawTls>) -> Result<ListenTlsConfig, ConfigError> {
    let t = raw.get_ref();
    let required = |value: &Option<Spanned<String>>, key: &str| {
        value
            .as_ref()
            .map(|v| PathBuf::from(v.get_ref()))
            .ok_or_else(|| {
                ctx.error(
                    Some(raw.span()),
                    key,
                    "missing",
                    "[listen.tls] needs both cert_file and key_file (PEM)",
                )
            })
    };
    let cert_file = required(&t.cert_file, "listen.tls.cert_file")?;
    let key_file = required(&t.key_file, "listen.tls.key_file")?;
    let span_of = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span).or(Some(raw.span()));
    let certs = crate::tls::read_pem_certs(&cert_file).map_err(|e| {
        ctx.error(
            span_of(&t.cert_file),
            "listen.tls.cert_file",
            format!("cannot use {}: {e}", cert_file.display()),
            "point cert_file at a readable PEM certificate chain, leaf first",
        )
    })?;
    let key = crate::tls::read_pem_key(&key_file).map_err(|e| {
        ctx.error(
            span_of(&t.key_file),
            "listen.tls.key_file",
            format!("cannot use {}: {e}", key_file.display()),
            "point key_file at a readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    let client_ca_file = t
        .client_ca_file
        .as_ref()
        .map(|v| PathBuf::from(v.get_ref()));
    let client_roots = match &client_ca_file {
        None => None,
        Some(path) => Some(crate::tls::read_pem_certs(path).map_err(|e| {
            ctx.error(
                span_of(&t.client_ca_file),
                "listen.tls.client_ca_file",
                format!("cannot use {} as client CA: {e}", path.display()),
                "point client_ca_file at a readable PEM file of CA certificates",
            )
        })?),
    };
    let server = crate::tls::server_config(certs, key, client_roots.as_deref()).map_err(|e| {
        ctx.error(
            span_of(&t.key_file),
            "listen.tls",
            e,
            "check that key_file is the private key of cert_file's first certificate",
        )
    })?;
    Ok(ListenTlsConfig {
        cert_file,
        key_file,
        client_ca_file,
        server: std::sync::Arc::new(server),
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

pub(super) fn socket_addr(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
    key: &str,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = value.as_ref().map_or(default, |v| v.get_ref().as_str());
    let text = if text.starts_with("localhost:") {
        text.replacen("localhost", "127.0.0.1", 1)
    } else {
        text.to_string()
    };
    text.trim().parse().map_err(|_| {
        ctx.error(
            value.as_ref().map(Spanned::span),
            key,
            format!("`{text}` is not an IP address with a port"),
            "write for example \"127.0.0.1:8080\" or \"[::1]:8080\"",
        )
    })
}

fn http_url(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
    key: &str,
    default: &str,
    allow_insecure_http: bool,
) -> Result<(Uri, Option<Range<usize>>), ConfigError> {
    let span = value.as_ref().map(Spanned::span);
    let text = value
        .as_ref()
        .map_or(default, |v| v.get_ref().as_str())
        .trim();
    let bad = |why: &str| {
        ctx.error(
            span.clone(),
            key,
            format!("`{text}` is not a usable URL: {why}"),
            "write an absolute URL such as \"https://api.azure-costs.com\"",
        )
    };
    let uri: Uri = text.parse().map_err(|_| bad("it does not parse"))?;
    let scheme = uri.scheme_str().ok_or_else(|| bad("no scheme"))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad("user information in the URL is not supported"));
    }
    match scheme {
        "https" => {}
        "http" if is_loopback_host(host) || allow_insecure_http => {}
        "http" => {
            let table = key.split('.').next().unwrap_or_default();
            return Err(ctx.error(
                span,
                key,
                format!("plain http:// to {host} would send the credential unencrypted"),
                format!(
                    "use https://, or set allow_insecure_http = true in [{table}] if the network \
                     path is protected by other means"
                ),
            ));
        }
        _ => return Err(bad("the scheme must be https (or http to a loopback host)")),
    }
    Ok((uri, span))
}

fn token_mode(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
    key: &str,
    default: TokenMode,
) -> Result<TokenMode, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    match v.get_ref().as_str() {
        "interval" => Ok(TokenMode::Interval),
        "per_request" => Ok(TokenMode::PerRequest),
        "per_transaction" => Ok(TokenMode::PerTransaction),
        other => Err(ctx.error(
            Some(v.span()),
            key,
            format!("unknown token mode `{other}`"),
            "use \"interval\", \"per_request\" or \"per_transaction\"",
        )),
    }
}

/// Validates a path prefix: `/` or `/seg[/seg...]`, no trailing slash, no query, no dot segments.
fn route_prefix(ctx: &Ctx<'_>, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    let p = value.get_ref().trim();
    let bad = |why: &str| {
        ctx.error(
            Some(value.span()),
            key,
            format!("`{p}` is not a valid path prefix: {why}"),
            "write \"/\" or a path such as \"/contoso\" or \"/customers/contoso\"",
        )
    };
    if !p.starts_with('/') {
        return Err(bad("it must start with '/'"));
    }
    if p == "/" {
        return Ok("/".into());
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".into());
    }
    for seg in trimmed[1..].split('/') {
        if seg.is_empty() {
            return Err(bad("it has an empty segment (`//`)"));
        }
        if seg == "." || seg == ".." {
            return Err(bad("dot segments are not allowed"));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#'))
        {
            return Err(bad("it holds a space, '?', '#' or a non-ASCII character"));
        }
    }
    Ok(trimmed.to_string())
}

fn duration(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
    key: &str,
    default: Duration,
) -> Result<Duration, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    let d = humantime::parse_duration(v.get_ref().trim()).map_err(|e| {
        ctx.error(
            Some(v.span()),
            key,
            format!("`{}` is not a duration ({e})", v.get_ref()),
            "write a duration such as \"30s\", \"5m\" or \"1h\"",
        )
    })?;
    if d.is_zero() {
        return Err(ctx.error(
            Some(v.span()),
            key,
            "must be longer than zero",
            "write a duration such as \"30s\"",
        ));
    }
    Ok(d)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;
    use crate::config::testing::{MINIMAL, env_with, parse};

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.listen.address, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].prefix, "/");
        assert_eq!(c.token.max_age, Duration::from_secs(55 * 60));
        assert_eq!(c.upstream.url.host(), Some("api.azure-costs.com"));
        assert_eq!(c.credentials["default"].client_secret.expose(), "s3cr3t");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn max_age_above_an_hour_is_refused() {
        let e = parse(&format!("{MINIMAL}[token]\nmax_age = \"61m\"\n")).unwrap_err();
        assert_eq!(e.key, "token.max_age");
        assert_eq!(e.line, Some(5));
        assert!(parse(&format!("{MINIMAL}[token]\nmax_age = \"60m\"\n")).is_ok());
    }

    #[test]
    fn non_loopback_listen_needs_allow_remote() {
        let e = parse(&format!("{MINIMAL}[listen]\naddress = \"0.0.0.0:8080\"\n")).unwrap_err();
        assert_eq!(e.key, "listen.address");
        assert!(e.to_string().contains("allow_remote"), "{e}");
        let ok = parse(&format!(
            "{MINIMAL}[listen]\naddress = \"0.0.0.0:8080\"\nallow_remote = true\n"
        ));
        assert!(ok.is_ok());
    }

    #[test]
    fn plain_secret_is_accepted_with_a_warning_that_does_not_show_it() {
        let c = parse("[credentials.default]\nclient_id = \"abc\"\nclient_secret = \"hunter2\"\n")
            .unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("line 3"), "{:?}", c.warnings);
        assert!(!c.warnings[0].contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn durations_are_humantime_and_errors_point_at_them() {
        let c = parse(&format!("{MINIMAL}[upstream]\ntimeout = \"90s\"\n")).unwrap();
        assert_eq!(c.upstream.timeout, Duration::from_secs(90));
        assert_eq!(c.listen.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        let c = parse(&format!("[listen]\nshutdown_grace = \"2m\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.listen.shutdown_grace, Duration::from_secs(120));
        let e = parse(&format!("[listen]\nshutdown_grace = \"0s\"\n{MINIMAL}")).unwrap_err();
        assert_eq!(e.key, "listen.shutdown_grace");
        assert_eq!(e.line, Some(2));
        let e = parse(&format!("{MINIMAL}[upstream]\ntimeout = \"soon\"\n")).unwrap_err();
        assert_eq!(e.key, "upstream.timeout");
        assert_eq!(e.line, Some(5));
    }

    #[test]
    fn transaction_header_cannot_be_a_credential_or_connection_header() {
        let e = parse(&format!(
            "{MINIMAL}[token]\ntransaction_header = \"Authorization\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "token.transaction_header");
        assert!(e.message.contains("cannot name a transaction"), "{e}");
        let ok = parse(&format!(
            "{MINIMAL}[token]\nmode = \"per_transaction\"\ntransaction_header = \"X-Reload\"\n"
        ))
        .unwrap();
        assert_eq!(ok.token.transaction_header.as_str(), "x-reload");
        assert_eq!(ok.token.mode, TokenMode::PerTransaction);
    }

    #[test]
    fn routes_are_validated() {
        let route = |body: &str| parse(&format!("{MINIMAL}[[routes]]\n{body}\n"));
        assert!(route("prefix = \"/contoso\"").is_ok());
        assert_eq!(
            route("prefix = \"/contoso/\"").unwrap().routes[0].prefix,
            "/contoso"
        );
        assert!(route("prefix = \"contoso\"").is_err());
        assert!(route("prefix = \"/a//b\"").is_err());
        assert!(route("prefix = \"/a/../b\"").is_err());
        let e = route("prefix = \"/x\"\ncredential = \"other\"").unwrap_err();
        assert_eq!(e.key, "routes.credential");
        assert!(e.hint.unwrap().contains("[credentials.other]"));
        let dup = parse(&format!(
            "{MINIMAL}[[routes]]\nprefix = \"/a\"\n[[routes]]\nprefix = \"/a\"\n"
        ))
        .unwrap_err();
        assert_eq!(dup.line, Some(7));
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(
            parse(&format!(
                "{MINIMAL}[upstream]\nurl = \"http://127.0.0.1:9\"\n"
            ))
            .is_ok()
        );
        let e = parse(&format!(
            "{MINIMAL}[sts]\ntoken_url = \"http://sts.example\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("allow_insecure_http"), "{e}");
        assert!(
            parse(&format!(
                "{MINIMAL}[sts]\ntoken_url = \"http://sts.example\"\nallow_insecure_http = true\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn api_keys_are_visible_ascii_and_short_or_inline_ones_warn() {
        let with_key = |key: &str| {
            from_toml(
                &format!("[listen]\napi_keys = [{{ env = \"K\" }}]\n{MINIMAL}"),
                "proxy.toml",
                &env_with(&[("SECRET", "s"), ("K", key)]),
            )
        };
        for bad in [
            "two words here 1234",
            "tab\there-0123456789",
            "é-0123456789abcdef",
        ] {
            let e = with_key(bad).unwrap_err();
            assert_eq!(
                (e.key.as_str(), e.line),
                ("listen.api_keys", Some(2)),
                "{e}"
            );
            assert!(!e.to_string().contains(bad), "{e}");
        }
        let long = "k".repeat(MAX_API_KEY + 1);
        assert!(with_key(&long).is_err());
        let short = with_key("short").unwrap();
        assert!(
            short.warnings.iter().any(|w| w.contains("shorter than")),
            "{:?}",
            short.warnings
        );
        let inline = parse(&format!(
            "[listen]\napi_keys = [\"inline-key-0123456789\"]\n{MINIMAL}"
        ))
        .unwrap();
        assert!(
            inline
                .warnings
                .iter()
                .any(|w| w.contains("line 2") && w.contains("written in the config")),
            "{:?}",
            inline.warnings
        );
        assert!(!inline.warnings.concat().contains("inline-key"));
    }

    #[test]
    fn allowed_hosts_are_normalised() {
        let c = parse(&format!(
            "{MINIMAL}[listen]\nallowed_hosts = [\"BI.internal:8080\", \"[fe80::1]\", \"gw.local.\", \"*\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.listen.allowed_hosts,
            ["bi.internal", "fe80::1", "gw.local", "*"]
        );
    }

    #[test]
    fn api_keys_come_from_env_or_file_and_remote_without_them_warns() {
        let c = parse(&format!(
            "[listen]\napi_keys = [{{ env = \"SECRET\" }}]\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.listen.api_keys.len(), 1);
        assert_eq!(c.listen.api_keys[0].expose(), "s3cr3t");
        assert!(
            !c.warnings.iter().any(|w| w.contains("remote clients")),
            "{:?}",
            c.warnings
        );
        let missing = parse(&format!(
            "[listen]\napi_keys = [{{ env = \"NOPE\" }}]\n{MINIMAL}"
        ))
        .unwrap_err();
        assert_eq!(
            (missing.key.as_str(), missing.line),
            ("listen.api_keys", Some(2))
        );
        assert!(missing.message.contains("NOPE"), "{missing}");

        let open = parse(&format!(
            "[listen]\naddress = \"0.0.0.0:8080\"\nallow_remote = true\n{MINIMAL}"
        ))
        .unwrap();
        assert!(
            open.warnings.iter().any(|w| w.contains("api_keys")),
            "{:?}",
            open.warnings
        );
        let keyed = parse(&format!(
            "[listen]\naddress = \"0.0.0.0:8080\"\nallow_remote = true\n\
             api_keys = [{{ env = \"SECRET\" }}]\n{MINIMAL}"
        ))
        .unwrap();
        assert!(
            !keyed.warnings.iter().any(|w| w.contains("remote clients")),
            "{:?}",
            keyed.warnings
        );
    }

    #[test]
    fn max_connections_is_a_positive_number() {
        assert_eq!(
            parse(MINIMAL).unwrap().listen.max_connections,
            DEFAULT_MAX_CONNECTIONS
        );
        let c = parse(&format!("[listen]\nmax_connections = 10\n{MINIMAL}")).unwrap();
        assert_eq!(c.listen.max_connections, 10);
        for bad in ["0", "-1", "9999999999"] {
            let e = parse(&format!("[listen]\nmax_connections = {bad}\n{MINIMAL}")).unwrap_err();
            assert_eq!(
                (e.key.as_str(), e.line),
                ("listen.max_connections", Some(2)),
                "{e}"
            );
        }
    }

    #[test]
    fn listen_tls_reads_and_checks_its_files() {
        let dir = std::env::temp_dir().join(format!("acp-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
        std::fs::write(path("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        std::fs::write(path("other-key.pem"), other.signing_key.serialize_pem()).unwrap();
        let tls = |body: &str| parse(&format!("[listen.tls]\n{body}\n{MINIMAL}"));

        let ok = tls(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"",
            path("cert.pem"),
            path("key.pem"),
            path("cert.pem")
        ))
        .unwrap();
        let listen_tls = ok.listen.tls.as_ref().unwrap();
        assert_eq!(
            listen_tls.server.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let debug = format!("{:?}", ok.listen);
        assert!(
            debug.contains("key.pem") && !debug.contains("PRIVATE"),
            "{debug}"
        );

        let missing = tls(&format!("cert_file = \"{}\"", path("cert.pem"))).unwrap_err();
        assert_eq!(missing.key, "listen.tls.key_file", "{missing}");
        let unreadable = tls(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"",
            path("nope.pem"),
            path("key.pem")
        ))
        .unwrap_err();
        assert_eq!(
            (unreadable.key.as_str(), unreadable.line),
            ("listen.tls.cert_file", Some(2))
        );
        let not_a_key = tls(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"",
            path("cert.pem"),
            path("cert.pem")
        ))
        .unwrap_err();
        assert_eq!(
            (not_a_key.key.as_str(), not_a_key.line),
            ("listen.tls.key_file", Some(3))
        );
        let mismatched = tls(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"",
            path("cert.pem"),
            path("other-key.pem")
        ))
        .unwrap_err();
        assert_eq!(mismatched.key, "listen.tls", "{mismatched}");
        assert!(
            mismatched.message.contains("do not go together"),
            "{mismatched}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
