//! `[upstream]`: the Azure Costs API and its timeouts.

use std::time::Duration;

use toml::Spanned;

use super::fields::{duration, http_url};
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawUpstream;
use crate::config::{DEFAULT_UPSTREAM, UpstreamConfig};

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
    };
    Ok((config, raw.ca_file))
}
