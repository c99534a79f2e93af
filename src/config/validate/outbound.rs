//! `[outbound]`: the way out to the STS and the API (the outbound proxy, from the file or the
//! environment, and `no_proxy`), decided here once per target, and the trust roots of both.

use http::Uri;
use toml::Spanned;

use super::proxy_endpoint::{endpoint, proxy_auth};
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawOutbound;
use crate::config::{NoProxy, OutboundConfig};
use crate::host::is_loopback_host;
use crate::secret::Secret;
use crate::upstream::{Egress, ProxyEndpoint};

/// Checks `[outbound]` for the two targets; `upstream_ca_file` is `[upstream] ca_file`, the old
/// place of `ca_file`, still read.
pub(super) fn outbound(
    ctx: &Ctx<'_>,
    raw: RawOutbound,
    upstream_ca_file: Option<Spanned<String>>,
    targets: [&Uri; 2],
    warnings: &mut Vec<String>,
) -> Result<OutboundConfig, ConfigError> {
    // Only the schemes of targets that can go through a proxy matter: a variable for the other
    // one is not read, so that a setting meant for other programs cannot stop this one.
    let remote = targets
        .iter()
        .filter(|t| !is_loopback_host(t.host().unwrap_or_default()));
    let mut needs = Needs::default();
    for t in remote {
        match t.scheme_str() {
            Some("http") => needs.http = true,
            _ => needs.https = true,
        }
    }
    let proxy = proxy(ctx, &raw, needs, warnings)?;
    let [api, sts] = targets.map(|target| egress(target, proxy.as_ref()));
    let trust = super::trust::trust(ctx, &raw, upstream_ca_file, warnings)?;
    Ok(OutboundConfig { api, sts, trust })
}

/// Which target schemes may go through a proxy.
#[derive(Default, Clone, Copy)]
struct Needs {
    https: bool,
    http: bool,
}

/// The outbound proxy and the hosts that bypass it; `None`: everything goes direct.
struct Proxies {
    /// One endpoint per target scheme: https targets, then http ones (the environment may name
    /// different proxies for each).
    https: Option<ProxyEndpoint>,
    http: Option<ProxyEndpoint>,
    no_proxy: NoProxy,
    /// Why a target goes direct when no proxy applies to its scheme.
    unset: &'static str,
}

fn egress(target: &Uri, proxies: Option<&Proxies>) -> Egress {
    let host = target.host().unwrap_or_default();
    if is_loopback_host(host) {
        return Egress::Direct("loopback target");
    }
    let Some(proxies) = proxies else {
        return Egress::Direct("proxy = \"none\"");
    };
    let endpoint = if target.scheme_str() == Some("https") {
        &proxies.https
    } else {
        &proxies.http
    };
    match endpoint {
        None => Egress::Direct(proxies.unset),
        Some(_) if proxies.no_proxy.matches(host) => Egress::Direct("matches no_proxy"),
        Some(endpoint) => Egress::Via(endpoint.clone()),
    }
}

fn proxy(
    ctx: &Ctx<'_>,
    raw: &RawOutbound,
    needs: Needs,
    warnings: &mut Vec<String>,
) -> Result<Option<Proxies>, ConfigError> {
    let setting = raw.proxy.as_ref();
    let span = setting.map(Spanned::span);
    let mode = setting.map_or("env", |s| s.get_ref().trim());
    let auth = match &raw.proxy_auth {
        Some(a) => Some(proxy_auth(ctx, a, warnings)?),
        None => None,
    };
    let extra: Vec<&str> = raw
        .no_proxy
        .iter()
        .flatten()
        .map(|v| v.get_ref().as_str())
        .collect();
    if let Some((e, bad)) = raw.no_proxy.iter().flatten().find_map(|v| {
        NoProxy::parse([v.get_ref().as_str()])
            .err()
            .map(|e| (e, v.span()))
    }) {
        return Err(ctx.error(
            Some(bad),
            "outbound.no_proxy",
            e,
            "write host names, .domain suffixes, IP addresses or CIDR ranges such as 10.0.0.0/8",
        ));
    }
    match mode {
        "none" => {
            if auth.is_some() {
                return Err(ctx.error(
                    raw.proxy_auth.as_ref().map(Spanned::span),
                    "outbound.proxy_auth",
                    "proxy_auth is set but proxy = \"none\": nothing would use it",
                    "remove proxy_auth, or set proxy to \"env\" or a proxy URL",
                ));
            }
            Ok(None)
        }
        "env" => from_env(ctx, extra, needs, span, auth, warnings).map(Some),
        url => from_url(ctx, url, extra, span, auth, warnings).map(Some),
    }
}

/// `proxy = "env"` (the default): the proxy variables for the schemes in `needs`, and `no_proxy`
/// with `NO_PROXY`.
fn from_env(
    ctx: &Ctx<'_>,
    extra: Vec<&str>,
    needs: Needs,
    span: Option<std::ops::Range<usize>>,
    auth: Option<Secret>,
    warnings: &mut Vec<String>,
) -> Result<Proxies, ConfigError> {
    let var = |names: [&'static str; 2]| {
        names.into_iter().find_map(|n| {
            (ctx.env)(n)
                .filter(|v| !v.trim().is_empty())
                .map(|v| (n, v))
        })
    };
    // Like curl, entries of NO_PROXY that mean nothing here (`<local>`, `10.*`) are
    // skipped; each is named in a warning.
    let mut lists = extra;
    let no_proxy_env = var(["no_proxy", "NO_PROXY"]);
    if let Some((_, value)) = &no_proxy_env {
        lists.push(value);
    }
    let (no_proxy, skipped) = NoProxy::parse_lenient(lists);
    if let Some((name, _)) = &no_proxy_env {
        for entry in skipped {
            warnings.push(format!(
                "{name}: `{entry}` is not a host name, IP address or CIDR range; skipped"
            ));
        }
    }
    let all = var(["all_proxy", "ALL_PROXY"]);
    let from = |wanted: bool, names| -> Result<_, ConfigError> {
        if !wanted {
            return Ok(None);
        }
        match var(names).or_else(|| all.clone()) {
            None => Ok(None),
            Some((name, value)) => {
                endpoint(ctx, &value, name, span.clone(), auth.clone()).map(Some)
            }
        }
    };
    let https = from(needs.https, ["https_proxy", "HTTPS_PROXY"])?;
    let http = from(needs.http, ["http_proxy", "HTTP_PROXY"])?;
    if auth.is_some() && https.is_none() && http.is_none() {
        warnings.push(
            "[outbound] proxy_auth is set, but no proxy variable (HTTPS_PROXY, \
             HTTP_PROXY, ALL_PROXY) names a proxy for the STS or the API: nothing uses it"
                .into(),
        );
    }
    Ok(Proxies {
        https,
        http,
        no_proxy,
        unset: "no HTTPS_PROXY, HTTP_PROXY or ALL_PROXY set",
    })
}

/// `proxy = "http://..."`: one proxy for both schemes, and `no_proxy` alone.
fn from_url(
    ctx: &Ctx<'_>,
    url: &str,
    extra: Vec<&str>,
    span: Option<std::ops::Range<usize>>,
    auth: Option<Secret>,
    warnings: &mut Vec<String>,
) -> Result<Proxies, ConfigError> {
    if !url.contains("://") {
        // Never echo the value: it may hold a password.
        return Err(ctx.error(
            span,
            "outbound.proxy",
            "the value is neither \"env\", \"none\" nor a proxy URL with its scheme",
            "write \"env\", \"none\" or a URL such as \"http://proxy.corp.example:3128\"",
        ));
    }
    let endpoint = endpoint(ctx, url, "[outbound] proxy", span.clone(), auth)?;
    if url.contains('@') {
        warnings.push(ctx.warning(
            span,
            "[outbound] proxy holds credentials written in the config file; they belong \
             outside it: proxy_auth = { username = \"..\", password = { env = \"VAR\" } }",
        ));
    }
    let no_proxy = NoProxy::parse(extra).map_err(|e| {
        ctx.error(
            None,
            "outbound.no_proxy",
            e,
            "write host names, .domain suffixes, IP addresses or CIDR ranges",
        )
    })?;
    Ok(Proxies {
        https: Some(endpoint.clone()),
        http: Some(endpoint),
        no_proxy,
        unset: "",
    })
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{MINIMAL, env_with};
    use crate::config::{Config, ConfigError, Egress, from_toml};

    fn load(extra: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut vars = vec![("SECRET", "s3cr3t"), ("PROXY_PW", "pa:ss w0rd")];
        vars.extend_from_slice(env);
        from_toml(&format!("{MINIMAL}{extra}"), "proxy.toml", &env_with(&vars))
    }

    fn via(e: &Egress) -> &str {
        match e {
            Egress::Via(p) => &p.shown,
            Egress::Direct(why) => why,
        }
    }

    #[test]
    fn env_is_the_default_and_reads_either_case() {
        let c = load("", &[]).unwrap();
        assert!(matches!(c.outbound.api, Egress::Direct(_)));
        let c = load("", &[("HTTPS_PROXY", "http://proxy.corp:3128")]).unwrap();
        assert_eq!(via(&c.outbound.api), "http://proxy.corp:3128");
        assert_eq!(via(&c.outbound.sts), "http://proxy.corp:3128");
        let c = load(
            "",
            &[
                ("https_proxy", "lower.corp:8080"),
                ("HTTPS_PROXY", "http://upper.corp:3128"),
            ],
        )
        .unwrap();
        assert_eq!(via(&c.outbound.api), "http://lower.corp:8080");
        let c = load("", &[("ALL_PROXY", "http://all.corp")]).unwrap();
        assert_eq!(via(&c.outbound.api), "http://all.corp:80");
        // HTTP_PROXY is for http targets only.
        let c = load("", &[("HTTP_PROXY", "http://plain.corp:3128")]).unwrap();
        assert!(matches!(c.outbound.api, Egress::Direct(_)));
    }

    #[test]
    fn no_proxy_and_loopback_go_direct() {
        let proxy = [("HTTPS_PROXY", "http://proxy.corp:3128")];
        let c = load("", &[proxy[0], ("NO_PROXY", "azure-costs.com")]).unwrap();
        assert_eq!(via(&c.outbound.api), "matches no_proxy");
        assert_eq!(via(&c.outbound.sts), "matches no_proxy");
        let c = load(
            "[outbound]\nproxy = \"http://p.corp:3128\"\nno_proxy = [\"api.azure-costs.com\"]\n",
            &[],
        )
        .unwrap();
        assert_eq!(via(&c.outbound.api), "matches no_proxy");
        assert_eq!(via(&c.outbound.sts), "http://p.corp:3128");
        let c = load(
            "[upstream]\nurl = \"http://127.0.0.1:9\"\n[outbound]\nproxy = \"http://p.corp:1\"\n",
            &[],
        )
        .unwrap();
        assert_eq!(via(&c.outbound.api), "loopback target");
        let c = load("[outbound]\nproxy = \"none\"\n", &proxy).unwrap();
        assert!(matches!(c.outbound.api, Egress::Direct(_)));
    }

    #[test]
    fn credentials_become_basic_auth_and_never_print() {
        let c = load(
            "[outbound]\nproxy = \"http://svc%40corp:pa%3Ass@p.corp:3128\"\n",
            &[],
        )
        .unwrap();
        let Egress::Via(p) = &c.outbound.api else {
            panic!("direct")
        };
        assert_eq!(p.shown, "http://p.corp:3128");
        // base64("svc@corp:pa:ss")
        assert_eq!(
            p.authorization.as_ref().unwrap().expose(),
            "Basic c3ZjQGNvcnA6cGE6c3M="
        );
        let shown = format!("{c:?}");
        assert!(!shown.contains("pa%3Ass") && !shown.contains("c3ZjQGNvcnA6cGE6c3M="));
        let c = load(
            "[outbound]\nproxy = \"http://p.corp:3128\"\n\
             proxy_auth = { username = \"svc\", password = { env = \"PROXY_PW\" } }\n",
            &[],
        )
        .unwrap();
        let Egress::Via(p) = &c.outbound.sts else {
            panic!("direct")
        };
        assert!(p.authorization.is_some());
        assert!(!format!("{c:?}").contains("w0rd"));
    }

    #[test]
    fn mistakes_name_the_key_and_hide_the_password() {
        let e = load("[outbound]\nproxy = \"socks5://u:hunter2@p:1080\"\n", &[]).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("outbound.proxy", Some(5)));
        assert!(e.message.contains("only http://"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = load("", &[("HTTPS_PROXY", "https://u:hunter2@p.corp")]).unwrap_err();
        assert!(e.message.contains("HTTPS_PROXY"), "{e}");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        let e = load("[outbound]\nno_proxy = [\"10.0.0.0/40\"]\n", &[]).unwrap_err();
        assert_eq!(e.key, "outbound.no_proxy");
        let e = load(
            "[outbound]\nproxy = \"none\"\n\
             proxy_auth = { username = \"svc\", password = { env = \"PROXY_PW\" } }\n",
            &[],
        )
        .unwrap_err();
        assert_eq!(e.key, "outbound.proxy_auth");
        let e = load("[outbound]\ntrust = [\"none\"]\n", &[]).unwrap_err();
        assert_eq!(e.key, "outbound.trust");
    }

    #[test]
    fn only_the_schemes_in_use_are_read_and_nothing_echoes_a_password() {
        // A SOCKS ALL_PROXY meant for other programs does not matter when HTTPS_PROXY is set,
        // nor an unusable HTTP_PROXY when no target is plain http.
        let c = load(
            "",
            &[
                ("ALL_PROXY", "socks5://127.0.0.1:1080"),
                ("HTTPS_PROXY", "http://p.corp:3128"),
                ("HTTP_PROXY", "https://nope"),
                ("NO_PROXY", "<local>, 10.*, corp.example"),
            ],
        )
        .unwrap();
        assert_eq!(via(&c.outbound.api), "http://p.corp:3128");
        assert!(
            c.warnings.iter().any(|w| w.contains("`<local>`")),
            "{:?}",
            c.warnings
        );
        // A URL without its scheme, holding credentials: refused without echoing them.
        let e = load("[outbound]\nproxy = \"svc:hunter2@p.corp:3128\"\n", &[]).unwrap_err();
        assert_eq!(e.key, "outbound.proxy");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        // Credentials written in the file work, with a warning that never shows them.
        let c = load(
            "[outbound]\nproxy = \"http://svc:hunter2@p.corp:3128\"\n",
            &[],
        )
        .unwrap();
        let w = c.warnings.join("\n");
        assert!(w.contains("proxy holds credentials"), "{w}");
        assert!(!w.contains("hunter2"), "{w}");
        let c = load(
            "[outbound]\nproxy_auth = { username = \"svc\", password = \"hunter2\" }\n",
            &[],
        )
        .unwrap();
        let w = c.warnings.join("\n");
        assert!(w.contains("password is written in the config file"), "{w}");
        assert!(w.contains("nothing uses it"), "{w}");
        assert!(!w.contains("hunter2"), "{w}");
    }

    #[test]
    fn trusting_nothing_is_refused() {
        let e = load("[outbound]\ntrust = []\n", &[]).unwrap_err();
        assert!(e.message.contains("no certificate"), "{e}");
        let c = load("[outbound]\ntrust = [\"bundled\"]\n", &[]).unwrap();
        assert!(c.outbound.trust.bundled && !c.outbound.trust.use_system);
        assert!(c.outbound.trust.system.is_empty());
    }
}
