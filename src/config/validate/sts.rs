//! `[sts]`: the Azure Costs token service.

use std::time::Duration;

use super::fields::{duration, http_url};
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawSts;
use crate::config::{DEFAULT_TOKEN_URL, StsConfig};

/// Checks `[sts]`: the token endpoint (same http:// rule as `[upstream]`) and the call timeout.
pub(super) fn sts(ctx: &Ctx<'_>, raw: &RawSts) -> Result<StsConfig, ConfigError> {
    let (token_url, _) = http_url(
        ctx,
        &raw.token_url,
        "sts.token_url",
        DEFAULT_TOKEN_URL,
        raw.allow_insecure_http.unwrap_or(false),
    )?;
    Ok(StsConfig {
        token_url,
        timeout: duration(ctx, &raw.timeout, "sts.timeout", Duration::from_secs(15))?,
    })
}
