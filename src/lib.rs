//! azure-costs-proxy: a sidecar that holds the Azure Costs credentials so BI tools do not.
//!
//! BI servers send plain HTTP to the proxy on localhost. The proxy obtains an OAuth2
//! client-credentials token from the Azure Costs STS (optionally updated to act for a CSP customer
//! team), injects `Authorization: Bearer ...` and streams the request to the API and the answer
//! back. [`run`] is the whole data plane; `main` only parses the command line around it.

pub mod access_log;
pub mod admin;
pub mod body;
mod cause;
pub mod check;
pub mod cli;
pub mod config;
pub mod demo;
pub mod error;
pub mod files;
pub mod headers;
pub mod host;
pub mod inbound;
pub mod inspect;
pub mod live;
pub mod logging;
pub mod metrics;
pub mod notify;
pub mod proxy;
pub mod readiness;
pub mod request_body;
pub mod respond;
pub mod routes;
mod secret;
pub mod server;
pub mod service;
pub mod simulator;
mod sync;
pub mod tls;
pub mod token;
pub mod upstream;
pub mod watch;

use std::future::Future;
use std::sync::Arc;

use anyhow::Context as _;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};

pub use config::Config;
pub use error::ProxyError;
pub use secret::Secret;

use crate::config::ConfigError;
use crate::live::{Live, Reloaded};
use crate::watch::{FileWatch, WatchTiming};

/// Reads the config again when asked (SIGHUP) or, with `[reload] watch`, when a file of it
/// changes: each message on `requests`, and each settled change, makes the proxy call `load`
/// and, if it succeeds, serve new requests with what it returned.
pub struct Reloader {
    /// One message per reload request.
    pub requests: mpsc::Receiver<ReloadRequest>,
    /// Reads and validates the config (file, secrets, environment) as at start-up.
    pub load: Box<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
}

/// A request to reload the config.
#[derive(Debug, Default)]
pub struct ReloadRequest {
    /// What asked for it.
    pub trigger: ReloadTrigger,
    /// Hears how the reload went: what changed, or why the running config stayed.
    pub done: Option<oneshot::Sender<Result<Reloaded, String>>>,
}

/// What asked for a reload: named in the reload's log lines and in the
/// `config_reloads_total` metric, so an operator can tell a rotation from a signal.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ReloadTrigger {
    /// SIGHUP, or a caller of [`Reloader`] (tests).
    #[default]
    Signal,
    /// A change to the config file or a file it names (`[reload] watch`).
    File,
    /// The Windows service manager's `paramchange` control.
    Service,
}

impl ReloadTrigger {
    /// Every trigger, for the metric's label sets.
    pub const ALL: [ReloadTrigger; 3] = [
        ReloadTrigger::Signal,
        ReloadTrigger::File,
        ReloadTrigger::Service,
    ];

    /// The name in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            ReloadTrigger::Signal => "signal",
            ReloadTrigger::File => "file",
            ReloadTrigger::Service => "service",
        }
    }
}

impl std::fmt::Display for ReloadTrigger {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

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
    let admin = admin::Admin::new(live.clone());
    let admin_task = match options.admin {
        Some(l) => {
            let at = l.local_addr().context("admin listener address")?;
            tracing::info!(address = %at, "admin endpoints on http://{at}/healthz, /readyz, /metrics");
            Some(tokio::spawn(admin::serve(l, admin.clone())))
        }
        None => None,
    };
    let notifier = notify::Notifier::new(options.systemd);
    let timing = options.watch;
    let reload_task = options
        .reloader
        .map(|reloader| tokio::spawn(reload_on_request(live.clone(), reloader, notifier, timing)));
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
    server::serve(listener, live.clone(), shutdown).await;
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

/// Reloads the config on each request, and when a file of it changes (`[reload] watch`): a
/// valid one replaces the running one for new requests; an invalid one is logged and the running
/// one stays. One reload at a time, whatever asks.
async fn reload_on_request(
    live: Arc<Live>,
    mut reloader: Reloader,
    notifier: notify::Notifier,
    timing: WatchTiming,
) {
    for trigger in ReloadTrigger::ALL {
        live.metrics().reload_trigger(trigger.as_str());
    }
    let mut files = live.watched_files().map(|f| {
        warn_of_a_watched_log(&live, &f);
        FileWatch::start(f, timing)
    });
    let mut requests_open = true;
    loop {
        let (trigger, done) = tokio::select! {
            request = reloader.requests.recv(), if requests_open => match request {
                Some(request) => {
                    // What the files are now is what this reload applies.
                    if let Some(watch) = files.as_mut() {
                        watch.rebase();
                    }
                    (request.trigger, request.done)
                }
                None => {
                    requests_open = false;
                    continue;
                }
            },
            changed = next_change(&mut files) => {
                tracing::info!(changed = ?changed, "config files changed");
                (ReloadTrigger::File, None)
            }
        };
        let outcome = reload_now(&live, &reloader, trigger, notifier).await;
        if outcome.is_ok() {
            follow_config(&live, &mut files, timing);
        }
        if let Some(done) = done {
            let _ = done.send(outcome);
        }
    }
}

/// The next change of the watched files; never, when nothing is watched.
async fn next_change(files: &mut Option<FileWatch>) -> Vec<std::path::PathBuf> {
    match files {
        Some(watch) => watch.changed().await,
        None => std::future::pending().await,
    }
}

/// After a reload, the watch follows the new config: its files, and `[reload] watch` itself.
fn follow_config(live: &Live, files: &mut Option<FileWatch>, timing: WatchTiming) {
    let now = live.watched_files();
    if let Some(now) = &now {
        warn_of_a_watched_log(live, now);
    }
    match (files.as_mut(), now) {
        (Some(watch), Some(now)) => watch.follow(now),
        (None, Some(now)) => *files = Some(FileWatch::start(now, timing)),
        (Some(_), None) => {
            tracing::info!("[reload] watch is off: only a signal reloads the config now");
            *files = None;
        }
        (None, None) => {}
    }
}

/// Warns when `[log] file` lies in a folder the watch watches for `files`: each log line would
/// wake the watch.
fn warn_of_a_watched_log(live: &Live, files: &[std::path::PathBuf]) {
    if let Some(log) = live.log_file()
        && let Some(folder) = watch::watched_log_folder(files, &log)
    {
        tracing::warn!(
            "[log] file {} is in {}, a folder watched for config changes ([reload] watch): \
             every log line wakes the watch; give the log a folder of its own (logs/, say)",
            log.display(),
            folder.display()
        );
    }
}

/// One reload, whatever asked for it: the same validation, log lines, metric and systemd
/// notifications for a signal and for a file change.
async fn reload_now(
    live: &Live,
    reloader: &Reloader,
    trigger: ReloadTrigger,
    notifier: notify::Notifier,
) -> Result<Reloaded, String> {
    notifier.reloading();
    tracing::info!(%trigger, "reloading the config");
    let outcome = reload(live, reloader).await;
    match &outcome {
        Ok(done) => {
            for setting in &done.need_restart {
                tracing::warn!("{setting} changed: it takes effect after a restart");
            }
            tracing::info!(
                %trigger,
                discarded = ?done.discarded,
                kept_tokens = done.kept_tokens,
                "config reloaded; new requests use it"
            );
            notifier.ready("config reloaded");
        }
        Err(e) => {
            tracing::error!(%trigger, "config reload failed, the running config stays: {e}");
            notifier.ready("config reload failed; the running config stays (see the log)");
        }
    }
    live.metrics().reload(trigger.as_str(), outcome.is_ok());
    outcome
}

async fn reload(live: &Live, reloader: &Reloader) -> Result<Reloaded, String> {
    let config = (reloader.load)().map_err(|e| e.to_string())?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    live.reload(config).await.map_err(|e| format!("{e:#}"))
}
