//! Live reload: a [`Reloader`] hands the proxy [`ReloadRequest`]s (SIGHUP, the Windows service's
//! `paramchange`, tests), and with `[reload] watch` a [`FileWatch`] reports changes of the
//! config's files; one task takes both, one reload at a time, validates the new config and
//! applies it through `Live::reload`.

use std::sync::Arc;

use tokio::sync::{mpsc, oneshot};

use crate::config::{Config, ConfigError};
use crate::live::{Live, ReloadNote, Reloaded};
use crate::systemd::Notifier;
use crate::watch::{self, FileWatch, WatchTiming};

/// Reads the config again when asked (SIGHUP) or, with `[reload] watch`, when a file of it
/// changes: each message on `requests`, and each settled change, makes the proxy call `load`
/// and, if it succeeds, serve new requests with what it returned.
pub struct Reloader {
    /// One message per reload request.
    pub requests: mpsc::Receiver<ReloadRequest>,
    /// Reads and validates the config (file, secrets, environment) as at start-up. It runs as
    /// a blocking task, off the threads that serve requests.
    pub load: std::sync::Arc<dyn Fn() -> Result<Config, ConfigError> + Send + Sync>,
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

/// Reloads the config on each request, and when a file of it changes (`[reload] watch`): a
/// valid one replaces the running one for new requests; an invalid one is logged and the running
/// one stays. One reload at a time, whatever asks.
pub(crate) async fn reload_on_request(
    live: Arc<Live>,
    mut reloader: Reloader,
    notifier: Notifier,
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
        && let Some(warning) = watch::watched_log_warning(files, &log)
    {
        tracing::warn!("{warning}");
    }
}

/// One reload, whatever asked for it: the same validation, log lines, metric and systemd
/// notifications for a signal and for a file change.
async fn reload_now(
    live: &Live,
    reloader: &Reloader,
    trigger: ReloadTrigger,
    notifier: Notifier,
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
            tracing::error!(
                event_id = 3u32,
                %trigger,
                "config reload failed, the running config stays: {e}"
            );
            notifier.ready("config reload failed; the running config stays (see the log)");
        }
    }
    live.metrics().reload(trigger.as_str(), outcome.is_ok());
    live.note_reload(ReloadNote {
        at: std::time::SystemTime::now(),
        trigger: trigger.as_str(),
        error: outcome.as_ref().err().cloned(),
    });
    outcome
}

async fn reload(live: &Live, reloader: &Reloader) -> Result<Reloaded, String> {
    // Reading files is blocking I/O, whatever they are: never on a thread that serves requests.
    let load = reloader.load.clone();
    let config = tokio::task::spawn_blocking(move || load())
        .await
        .map_err(|e| format!("reading the config failed: {e}"))?
        .map_err(|e| e.to_string())?;
    for warning in &config.warnings {
        tracing::warn!("{warning}");
    }
    live.reload(config).await.map_err(|e| format!("{e:#}"))
}
