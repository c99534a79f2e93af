//! `[upstream]`: the Azure Costs API, its timeouts and its connection budget.

use std::time::Duration;

use toml::Spanned;

use super::fields::{count, duration, http_url};
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawUpstream;
use crate::config::{DEFAULT_UPSTREAM, DEFAULT_UPSTREAM_CONNECTIONS, UpstreamConfig};

/// Highest `upstream.max_connections` accepted: each is a file descriptor.
const MAX_UPSTREAM_CONNECTIONS: usize = 65_536;

/// Checks `[upstream]`. Its `ca_file`, the old place of `[outbound] ca_file`, is handed back
/// for `[outbound]` to read.
pub(super) fn upstream(
    ctx: &Ctx<'_>,
    raw: RawUpstream,
) -> Result<(UpstreamConfig, Option<Spanned<String>>), ConfigError> {
    let (url, upstream_span) = http_url(
        ctx,
        &raw.url,
        "upstream.url",
        DEFAULT_UPSTREAM,
        raw.allow_insecure_http.unwrap_or(false),
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
    let config = UpstreamConfig {
        url,
        base_path,
        timeout: duration(
            ctx,
            &raw.timeout,
            "upstream.timeout",
            Duration::from_secs(120),
        )?,
        connect_timeout: duration(
            ctx,
            &raw.connect_timeout,
            "upstream.connect_timeout",
            Duration::from_secs(10),
        )?,
        // Connections to the API at once, 1 to 65,536.
        max_connections: count(
            ctx,
            &raw.max_connections,
            "upstream.max_connections",
            DEFAULT_UPSTREAM_CONNECTIONS,
            MAX_UPSTREAM_CONNECTIONS,
            "",
        )?,
    };
    Ok((config, raw.ca_file))
}

#[cfg(test)]
mod tests {
    use crate::config::DEFAULT_UPSTREAM_CONNECTIONS;
    use crate::config::testing::{MINIMAL, parse};

    #[test]
    fn max_connections_is_a_bounded_positive_number() {
        assert_eq!(
            parse(MINIMAL).unwrap().upstream.max_connections,
            DEFAULT_UPSTREAM_CONNECTIONS
        );
        let c = parse(&format!("[upstream]\nmax_connections = 8\n{MINIMAL}")).unwrap();
        assert_eq!(c.upstream.max_connections, 8);
        for bad in ["0", "-1", "65537"] {
            let e = parse(&format!("[upstream]\nmax_connections = {bad}\n{MINIMAL}")).unwrap_err();
            assert_eq!(
                (e.key.as_str(), e.line),
                ("upstream.max_connections", Some(2)),
                "{e}"
            );
        }
    }
}
