//! `[upstream]`: the Azure Costs API, its timeouts and the extra trust roots.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::fields::{duration, http_url};
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawUpstream;
use crate::config::{DEFAULT_UPSTREAM, UpstreamConfig};

/// Checks `[upstream]`; `ca_file` is read now, so a bad file is a config error.
pub(super) fn upstream(ctx: &Ctx<'_>, raw: RawUpstream) -> Result<UpstreamConfig, ConfigError> {
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
    let ca_certs = match &raw.ca_file {
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
    Ok(UpstreamConfig {
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
        ca_file: raw.ca_file.map(|f| PathBuf::from(f.into_inner())),
        ca_certs,
    })
}
