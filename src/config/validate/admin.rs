//! `[admin]`: the listener of `/healthz`, `/readyz` and `/metrics`.

use toml::Spanned;

use super::fields::socket_addr;
use crate::config::AdminConfig;
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawAdmin;

/// Checks `[admin]`; like the data plane, it stays on loopback unless `listen.allow_remote`.
pub(super) fn admin(
    ctx: &Ctx<'_>,
    raw: &RawAdmin,
    allow_remote: bool,
) -> Result<AdminConfig, ConfigError> {
    let admin = AdminConfig {
        enabled: raw.enabled.unwrap_or(true),
        address: socket_addr(ctx, &raw.address, "admin.address", "127.0.0.1:9090")?,
    };
    if admin.enabled && !admin.address.ip().is_loopback() && !allow_remote {
        return Err(ctx.error(
            raw.address.as_ref().map(Spanned::span),
            "admin.address",
            format!("{} is not a loopback address", admin.address),
            "listen on 127.0.0.1, or set allow_remote = true in [listen]",
        ));
    }
    Ok(admin)
}
