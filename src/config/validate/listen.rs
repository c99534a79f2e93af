//! `[listen]`: the data-plane listener. Loopback unless `allow_remote`; who may connect (extra
//! `Host` names, API keys, TLS); how many connections at once; the shutdown grace.

use toml::Spanned;

use super::fields::{count, duration, socket_addr};
use super::listen_tls::listen_tls;
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawListen;
use crate::config::secret::resolve_secret;
use crate::config::{
    DEFAULT_BODY_TIMEOUT, DEFAULT_MAX_CONNECTIONS, DEFAULT_SHUTDOWN_GRACE, ListenConfig,
};
use crate::host::normalize_host;
use crate::secret::Secret;

/// Longest inbound API key accepted.
const MAX_API_KEY: usize = 512;
/// Shorter inbound API keys are accepted with a warning.
const MIN_API_KEY: usize = 16;
/// Highest `listen.max_connections` accepted.
const MAX_MAX_CONNECTIONS: usize = 1 << 20;

/// Checks `[listen]` and its `[listen.tls]`.
pub(super) fn listen(
    ctx: &Ctx<'_>,
    raw: RawListen,
    warnings: &mut Vec<String>,
) -> Result<ListenConfig, ConfigError> {
    let allow_remote = raw.allow_remote.unwrap_or(false);
    let address = socket_addr(ctx, &raw.address, "listen.address", "127.0.0.1:8080")?;
    if !address.ip().is_loopback() && !allow_remote {
        return Err(ctx.error(
            raw.address.as_ref().map(Spanned::span),
            "listen.address",
            format!(
                "{address} is not a loopback address: anyone who can reach it could spend the \
                 proxy's credential"
            ),
            "listen on 127.0.0.1, or set allow_remote = true in [listen] \
             (AZURE_COSTS_PROXY_ALLOW_REMOTE=true) and protect the port",
        ));
    }
    let allowed_hosts = allowed_hosts(ctx, raw.allowed_hosts.unwrap_or_default())?;
    let api_keys = api_keys(ctx, raw.api_keys.unwrap_or_default(), warnings)?;
    let tls = match &raw.tls {
        None => None,
        Some(t) => Some(listen_tls(ctx, t)?),
    };
    let max_connections = count(
        ctx,
        &raw.max_connections,
        "listen.max_connections",
        DEFAULT_MAX_CONNECTIONS,
        MAX_MAX_CONNECTIONS,
        "",
    )?;
    let shutdown_grace = duration(
        ctx,
        &raw.shutdown_grace,
        "listen.shutdown_grace",
        DEFAULT_SHUTDOWN_GRACE,
    )?;
    let body_timeout = duration(
        ctx,
        &raw.body_timeout,
        "listen.body_timeout",
        DEFAULT_BODY_TIMEOUT,
    )?;
    Ok(ListenConfig {
        address,
        allow_remote,
        allowed_hosts,
        api_keys,
        tls,
        max_connections,
        shutdown_grace,
        body_timeout,
    })
}

/// `listen.allowed_hosts`: host names as the `Host` guard compares them, or `*`.
fn allowed_hosts(ctx: &Ctx<'_>, raw: Vec<Spanned<String>>) -> Result<Vec<String>, ConfigError> {
    let mut allowed_hosts = Vec::new();
    for h in raw {
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
    Ok(allowed_hosts)
}

/// `listen.api_keys`: each a secret a client can type (visible ASCII); short or inline keys warn.
fn api_keys(
    ctx: &Ctx<'_>,
    raw: Vec<Spanned<toml::Value>>,
    warnings: &mut Vec<String>,
) -> Result<Vec<Secret>, ConfigError> {
    let mut api_keys = Vec::new();
    for k in raw {
        let key = resolve_secret(ctx, &k, "listen.api_keys")?;
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
            warnings.push(ctx.warning(
                Some(k.span()),
                format_args!(
                    "an API key is shorter than {MIN_API_KEY} characters; generate a long \
                     random one (`openssl rand -hex 24`)"
                ),
            ));
        }
        if matches!(k.get_ref(), toml::Value::String(_)) {
            warnings.push(ctx.warning(
                Some(k.span()),
                "an API key is written in the config file; keys belong outside it: \
                 { env = \"VAR\" }, { file = \"/path\" } or { credential = \"name\" }",
            ));
        }
        api_keys.push(key);
    }
    Ok(api_keys)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;
    use crate::config::testing::{MINIMAL, env_with, parse};

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
}
