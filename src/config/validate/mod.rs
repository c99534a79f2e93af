//! Validation: the raw tables in, a [`Config`] out. One function per table, called in file order,
//! each a flat list of "parse this key, check this rule"; the first error found is the one
//! reported, and warnings (allowed but unwise settings) are collected in that order too.

mod admin;
mod cache;
mod clients;
mod credentials;
mod fields;
mod listen;
mod listen_tls;
mod log;
mod outbound;
mod proxy_endpoint;
mod reload;
mod routes;
mod sts;
mod token;
mod trust;
mod upstream;

pub(super) use fields::socket_addr;

use super::Config;
use super::diagnostics::{ConfigError, Ctx};
use super::raw::RawConfig;

/// Checks every table of `raw`; `ctx` says where it came from, for errors and warnings.
pub(super) fn validate(raw: RawConfig, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();
    // Before the tables are taken apart: the paths as written, for `[reload] watch`.
    let files = reload::named_files(ctx, &raw);
    let listen = listen::listen(ctx, raw.listen, &mut warnings)?;
    let admin = admin::admin(ctx, &raw.admin, listen.allow_remote)?;
    let (upstream, upstream_ca_file) = upstream::upstream(ctx, raw.upstream)?;
    let sts = sts::sts(ctx, &raw.sts)?;
    let outbound = outbound::outbound(
        ctx,
        raw.outbound,
        upstream_ca_file,
        [&upstream.url, &sts.token_url],
        &mut warnings,
    )?;
    let credentials = credentials::credentials(ctx, &raw.credentials, &mut warnings)?;
    let token = token::token(ctx, &raw.token)?;
    let log = log::log(ctx, &raw.log)?;
    let routes = routes::routes(ctx, &raw.routes, &credentials, &token, &mut warnings)?;
    let reload = reload::reload(&raw.reload);
    let cache = cache::cache(ctx, &raw.cache)?;
    let clients = clients::clients(ctx, &raw.clients, &listen, &routes, &mut warnings)?;
    clients::open_listener_warning(ctx, &listen, &clients, &mut warnings);
    Ok(Config {
        origin: ctx.origin.to_string(),
        listen,
        admin,
        upstream,
        sts,
        outbound,
        credentials,
        token,
        routes,
        cache,
        reload,
        clients,
        files,
        log,
        warnings,
    })
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use crate::config::testing::{MINIMAL, parse};

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
}
