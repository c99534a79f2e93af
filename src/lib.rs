//! azure-costs-proxy: a sidecar that holds the Azure Costs credentials so BI tools do not.
//!
//! BI servers send plain HTTP to the proxy on localhost. The proxy obtains an OAuth2
//! client-credentials token from the Azure Costs STS (optionally updated to act for a CSP customer
//! team), injects `Authorization: Bearer ...` and streams the request to the API and the answer
//! back. [`run`] is the whole data plane; `main` only parses the command line around it.

// The surface: what the binary, the tests, the fuzz targets and the benchmarks use. Everything
// else is the crate's own (`pub(crate)`), so that the compiler reports what nothing uses.
pub mod admin;
pub mod cli;
pub mod commands;
pub mod config;
pub mod http1;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod service;
pub mod simulator;
pub mod token;
pub mod watch;

mod access_log;
mod body;
mod bucket;
mod cause;
mod coalesce;
mod cooldown;
mod error;
mod escape;
mod fields;
mod files;
mod headers;
mod host;
mod inbound;
mod proxy;
mod readiness;
mod reload;
mod replay;
mod request_body;
mod respond;
mod route_queue;
mod routes;
mod secret;
mod server;
mod status;
mod sync;
mod systemd;
mod tally;
mod tls;
mod transaction;
mod upstream;

/// Parts of the request path, public only for the fuzz targets (`fuzz/`) and the
/// micro-benchmarks (`benches/`), which drive one part alone. Not an API.
#[doc(hidden)]
pub mod parts {
    /// Header rules.
    pub mod headers {
        pub use crate::headers::{
            RequestIds, X_REQUEST_ID, bearer_value, rewrite_request, rewrite_response,
            valid_request_id,
        };
    }
    pub use crate::host::parse_host;
    pub use crate::inbound::{ClientIdentity, ClientLimits, ClientSpec, Clients, HostGuard, Scope};
    pub use crate::proxy::Proxy;
    /// Errors as the client sees them.
    pub mod respond {
        pub use crate::respond::{error_response, status_and_code};
    }
    /// Route matching.
    pub mod routes {
        pub use crate::routes::{RouteTable, has_refused_segment, upstream_path_and_query};
    }

    /// The request path for `config` on the listener at `local`, as a start builds it.
    pub fn proxy(
        config: &crate::config::Config,
        local: std::net::SocketAddr,
        metrics: &std::sync::Arc<crate::metrics::Metrics>,
    ) -> anyhow::Result<Proxy> {
        crate::live::build(
            config,
            local,
            metrics,
            &crate::tally::Tally::default(),
            None,
        )
    }
}

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

pub use config::Config;
pub use error::ProxyError;
pub use reload::{ReloadRequest, ReloadTrigger, Reloader};
pub use secret::Secret;

use crate::live::Live;
use crate::watch::WatchTiming;

/// Optional parts of [`run_with`].
#[derive(Default)]
pub struct Options {
    /// The admin listener, bound by the caller; `None`: no admin endpoints.
    pub admin: Option<TcpListener>,
    /// Live reload (by request and by file changes); `None`: the config is fixed.
    pub reloader: Option<Reloader>,
    /// Tell systemd (`NOTIFY_SOCKET`) about readiness, reloads and shutdown, and ping its
    /// watchdog. Only for the process's own service (`run`), not a proxy embedded in tests.
    pub systemd: bool,
    /// How `[reload] watch` notices file changes (with a `reloader` only). Tests shorten it.
    pub watch: WatchTiming,
    /// Which server reads HTTP/1.1 requests: the lean one by default.
    pub http1: http1::Engine,
}

/// Binds the admin listener of `config`, if it is enabled.
pub async fn bind_admin(config: &Config) -> anyhow::Result<Option<TcpListener>> {
    if !config.admin.enabled {
        return Ok(None);
    }
    let address = config.admin.address;
    let bound = TcpListener::bind(address).await.with_context(|| {
        format!(
            "cannot listen on the admin address {address}; set [admin] address to a free port, \
             or enabled = false"
        )
    })?;
    Ok(Some(bound))
}

/// Serves the proxy on `listener` with `config` until `shutdown` resolves, then drains in-flight
/// requests (bounded by `listen.shutdown_grace`) and returns. The admin listener, when enabled,
/// is bound here on `admin.address`. The config stays fixed; see [`run_with`] for reloads.
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let admin = bind_admin(&config).await?;
    let options = Options {
        admin,
        ..Options::default()
    };
    run_with(config, listener, options, shutdown).await
}

/// [`run`] with the admin listener bound by the caller and, optionally, live reload.
///
/// Tokens of interval-mode routes are fetched at once in the background and kept fresh, so
/// requests do not wait for the STS (and join that fetch if they come before it ends). Under
/// systemd, READY=1 is sent once the listeners are up, STOPPING=1 when `shutdown` resolves.
pub async fn run_with(
    config: Config,
    listener: TcpListener,
    options: Options,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let local = listener.local_addr().context("listener address")?;
    warn_if_hosts_unset(&config, local);
    let upstream = config.upstream.url.to_string();
    let routes = config.routes.len();
    let config_tls = config.listen.tls.is_some();
    let live = Arc::new(Live::start(
        config,
        local,
        Arc::new(metrics::Metrics::new()),
    )?);
    let admin = admin::Admin::new(live.clone(), options.reloader.is_some());
    let admin_task = match options.admin {
        Some(l) => {
            let at = l.local_addr().context("admin listener address")?;
            tracing::info!(
                address = %at,
                "admin endpoints on http://{at}/ (status page), /status.json, /healthz, /readyz, /metrics"
            );
            Some(tokio::spawn(admin::serve(l, admin.clone())))
        }
        None => None,
    };
    let notifier = systemd::Notifier::new(options.systemd);
    let timing = options.watch;
    let reload_task = options.reloader.map(|reloader| {
        tokio::spawn(reload::reload_on_request(
            live.clone(),
            reloader,
            notifier,
            timing,
        ))
    });
    let stop_reloads = reload_task.as_ref().map(|task| task.abort_handle());
    let watchdog = notifier
        .watchdog_interval()
        .map(|every| tokio::spawn(notifier.watchdog(every)));
    let scheme = if config_tls { "https" } else { "http" };
    tracing::info!(address = %local, %upstream, routes, "listening on {scheme}://{local}");
    notifier.ready(&format!("listening on {scheme}://{local}"));
    let draining = admin.clone();
    let closing = live.clone();
    let shutdown = async move {
        shutdown.await;
        notifier.stopping();
        // Probes see 503 while in-flight requests drain; no reload starts any more.
        draining.shutting_down();
        if let Some(reloads) = stop_reloads {
            reloads.abort();
        }
        closing.close();
    };
    server::serve(listener, live.clone(), options.http1, shutdown).await;
    live.close();
    for task in [admin_task, watchdog].into_iter().flatten() {
        task.abort();
    }
    if let Some(task) = reload_task {
        // Wait for it to be dropped: the file watcher (and its thread) goes with it.
        task.abort();
        let _ = task.await;
    }
    Ok(())
}

fn warn_if_hosts_unset(config: &Config, local: std::net::SocketAddr) {
    if !local.ip().is_loopback() && config.listen.allowed_hosts.is_empty() {
        tracing::warn!(
            "listening on {local} for remote clients, but listen.allowed_hosts is empty: only \
             requests with Host localhost or {} are accepted",
            local.ip()
        );
    }
}
