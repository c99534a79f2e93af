//! Value parsers shared by several tables: durations, socket addresses, URLs, token modes. Each
//! names its key in the error and says what to write instead.

use std::net::SocketAddr;
use std::ops::Range;
use std::time::Duration;

use http::Uri;
use toml::Spanned;

use crate::config::RefreshOn;
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::host::is_loopback_host;
use crate::token::TokenMode;

/// A humantime duration (`"30s"`, `"5m"`), longer than zero; `default` when the key is absent.
pub(super) fn duration(
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

/// A socket address (`localhost:` is read as `127.0.0.1:`); `default` when the key is absent.
pub(in crate::config) fn socket_addr(
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

/// An absolute https URL (http only to a loopback host or with `allow_insecure_http`), with
/// the span it came from; `default` when the key is absent.
pub(super) fn http_url(
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
    // A URL with user information may hold a password: it is not shown.
    let shown = if text.contains('@') {
        "the URL".to_string()
    } else {
        format!("`{}`", text.chars().take(200).collect::<String>())
    };
    let bad = |why: &str| {
        ctx.error(
            span.clone(),
            key,
            format!("{shown} is not a usable URL: {why}"),
            "write an absolute URL such as \"https://api.azure-costs.com\"",
        )
    };
    let uri: Uri = text.parse().map_err(|_| bad("it does not parse"))?;
    let scheme = uri.scheme_str().ok_or_else(|| bad("no scheme"))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad("user information in the URL is not supported"));
    }
    // A port written after the host must be one: `:99999`, `:abc` or a bare `:` would
    // otherwise quietly become the scheme's default.
    let written_port = uri.authority().and_then(|a| {
        let text = a.as_str();
        let after_host = text.rsplit_once(']').map_or(text, |(_, rest)| rest);
        after_host.rsplit_once(':').map(|(_, port)| port)
    });
    if let Some(port) = written_port
        && !port.parse::<u16>().is_ok_and(|p| p > 0)
    {
        return Err(bad("the port must be a number from 1 to 65535"));
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

/// A token mode by its config name; `default` when the key is absent.
pub(super) fn token_mode(
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

/// A count from 1 to `max` (`listen.max_connections`, `upstream.max_connections`, `log.keep`);
/// `default` when the key is absent. `unit` names what is counted in the hint (" of files").
pub(super) fn count(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<i64>>,
    key: &str,
    default: usize,
    max: usize,
    unit: &str,
) -> Result<usize, ConfigError> {
    number(ctx, value, key, default, 1..=max, unit)
}

/// A whole number within `range`; `default` when the key is absent. `unit` names what is
/// counted in the hint (" of files").
pub(super) fn number(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<i64>>,
    key: &str,
    default: usize,
    range: std::ops::RangeInclusive<usize>,
    unit: &str,
) -> Result<usize, ConfigError> {
    let Some(n) = value else {
        return Ok(default);
    };
    usize::try_from(*n.get_ref())
        .ok()
        .filter(|n| range.contains(n))
        .ok_or_else(|| {
            ctx.error(
                Some(n.span()),
                key,
                format!("{} is out of range", n.get_ref()),
                format!(
                    "write a number{unit} from {} to {}",
                    range.start(),
                    range.end()
                ),
            )
        })
}

/// A rate: `"N/s"`, `"N/m"` or `"N/h"`, N a positive number; in requests per second.
pub(super) fn rate(
    ctx: &Ctx<'_>,
    raw: &Option<Spanned<String>>,
    key: &str,
) -> Result<Option<f64>, ConfigError> {
    let Some(value) = raw else {
        return Ok(None);
    };
    let parsed = value.get_ref().split_once('/').and_then(|(n, unit)| {
        let n: f64 = n.trim().parse().ok()?;
        let per = match unit.trim() {
            "s" => 1.0,
            "m" | "min" => 60.0,
            "h" => 3600.0,
            _ => return None,
        };
        let rate = n / per;
        (n.is_finite() && rate > 0.0 && n <= 1e9).then_some(rate)
    });
    parsed.map(Some).ok_or_else(|| {
        ctx.error(
            Some(value.span()),
            key,
            format!("`{}` is not a rate", value.get_ref()),
            "write requests per second, minute or hour: \"20/s\", \"600/m\", \"5000/h\"",
        )
    })
}

/// `refresh_on`: a list of 401 and/or 403; `default` when the key is absent.
pub(super) fn refresh_on(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<Vec<Spanned<i64>>>>,
    key: &str,
    default: RefreshOn,
) -> Result<RefreshOn, ConfigError> {
    let Some(list) = value else {
        return Ok(default);
    };
    let mut on = RefreshOn {
        unauthorized: false,
        forbidden: false,
    };
    for status in list.get_ref() {
        match status.get_ref() {
            401 => on.unauthorized = true,
            403 => on.forbidden = true,
            other => {
                return Err(ctx.error(
                    Some(status.span()),
                    key,
                    format!("{other} cannot mean \"token refused\""),
                    "write [401], or [401, 403] for an API that answers 403 to stale rights",
                ));
            }
        }
    }
    Ok(on)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::DEFAULT_SHUTDOWN_GRACE;
    use crate::config::testing::{MINIMAL, parse};

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
    fn urls_with_a_bad_port_or_a_password_are_refused_without_showing_it() {
        for (url, shown) in [
            ("https://api.example:99999", true),
            ("https://api.example:abc", true),
            ("https://api.example:", true),
            ("https://api.example:0", true),
            ("https://svc:pa55word@api.example", false),
        ] {
            let e = crate::config::testing::parse(&format!(
                "{}[upstream]\nurl = \"{url}\"\n",
                crate::config::testing::MINIMAL
            ))
            .unwrap_err();
            assert_eq!(e.key, "upstream.url", "{url}: {e}");
            assert_eq!(e.to_string().contains(url), shown, "{url}: {e}");
            assert!(!e.to_string().contains("pa55word"), "{e}");
        }
        let ok = crate::config::testing::parse(&format!(
            "{}[upstream]\nurl = \"https://[::1]:8443\"\n",
            crate::config::testing::MINIMAL
        ));
        assert!(ok.is_ok(), "{:?}", ok.err());
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
}
