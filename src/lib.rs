//! azure-costs-proxy: a sidecar that holds the Azure Costs credentials so BI tools do not.
//!
//! BI servers send plain HTTP to the proxy on localhost. The proxy obtains an OAuth2
//! client-credentials token from the Azure Costs STS (optionally updated to act for a CSP customer
//! team), injects `Authorization: Bearer ...` and streams the request to the API and the answer
//! back. [`run`] is the whole data plane; `main` only parses the command line around it.

pub mod admin;
pub mod body;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod headers;
pub mod inspect;
pub mod logging;
pub mod metrics;
pub mod proxy;
pub mod routes;
pub mod server;
pub mod simulator;
pub mod tls;
pub mod token;
pub mod upstream;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;

pub use config::Config;
pub use error::ProxyError;

use crate::config::TokenMode;
use crate::proxy::{HostGuard, Proxy};
use crate::routes::RouteTable;
use crate::token::{TokenKey, TokenSource};
use crate::upstream::Upstream;

/// Serves the proxy on `listener` with `config` until `shutdown` resolves, then drains in-flight
/// requests (bounded by [`server::SHUTDOWN_GRACE`]) and returns. The admin listener, when
/// enabled, is bound here on `admin.address`.
///
/// Tokens of interval-mode routes are fetched at once in the background and kept fresh, so
/// requests do not wait for the STS (and join that fetch if they come before it ends).
pub async fn run(
    config: Config,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    let admin = if config.admin.enabled {
        let address = config.admin.address;
        let bound = TcpListener::bind(address).await.with_context(|| {
            format!(
                "cannot listen on the admin address {address}; set [admin] address to a free                  port, or enabled = false"
            )
        })?;
        Some(bound)
    } else {
        None
    };
    run_with_admin(config, listener, admin, shutdown).await
}

/// [`run`] with the admin listener bound by the caller (`None`: no admin listener), so that tests
/// and the demo can use a port of their choosing.
pub async fn run_with_admin(
    config: Config,
    listener: TcpListener,
    admin_listener: Option<TcpListener>,
    shutdown: impl Future<Output = ()>,
) -> anyhow::Result<()> {
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    let tls = tls::client_config(&config.upstream.ca_certs)
        .map_err(anyhow::Error::msg)
        .context("TLS client configuration")?;
    let metrics = Arc::new(metrics::Metrics::new());
    let tokens = TokenSource::new(&config, tls.clone(), metrics.clone())
        .map_err(anyhow::Error::msg)
        .context("STS client")?;
    let upstream = Upstream::new(&config.upstream, tls)
        .map_err(anyhow::Error::msg)
        .context("upstream client")?;
    let local = listener.local_addr().context("listener address")?;
    let hosts = HostGuard::new(local, &config.listen.allowed_hosts);
    if !local.ip().is_loopback() && config.listen.allowed_hosts.is_empty() {
        tracing::warn!(
            "listening on {local} for remote clients, but listen.allowed_hosts is empty: only \
             requests with Host localhost or {} are accepted",
            local.ip()
        );
    }
    let proxy = Arc::new(Proxy::new(
        RouteTable::new(&config.routes, &config.token),
        tokens.clone(),
        upstream,
        hosts,
        metrics.clone(),
    ));
    let keepers = keep_tokens_warm(&proxy);
    let admin = admin::Admin::new(proxy.clone());
    let admin_task = match admin_listener {
        Some(l) => {
            let at = l.local_addr().context("admin listener address")?;
            tracing::info!(address = %at, "admin endpoints on http://{at}/healthz, /readyz, /metrics");
            Some(tokio::spawn(admin::serve(l, admin.clone())))
        }
        None => None,
    };
    tracing::info!(
        address = %local,
        upstream = %config.upstream.url,
        routes = config.routes.len(),
        "listening on http://{local}"
    );
    let draining = admin.clone();
    let shutdown = async move {
        shutdown.await;
        // Probes see 503 while in-flight requests drain.
        draining.shutting_down();
    };
    server::serve(listener, proxy, shutdown, server::SHUTDOWN_GRACE).await;
    for keeper in keepers {
        keeper.abort();
    }
    if let Some(task) = admin_task {
        task.abort();
    }
    Ok(())
}

/// Starts a keeper for the token of every interval-mode route (each cache key once): the token
/// is fetched at start-up and kept fresh. Failures are logged and backed off by the token source.
fn keep_tokens_warm(proxy: &Proxy) -> Vec<tokio::task::JoinHandle<()>> {
    let mut keys: Vec<TokenKey> = Vec::new();
    for route in proxy.routes().routes() {
        let key = route.token_key();
        if route.token_mode == TokenMode::Interval && !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|key| {
            let tokens = proxy.tokens().clone();
            tokio::spawn(async move { tokens.keep_warm(key).await })
        })
        .collect()
}
