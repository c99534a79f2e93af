//! systemd readiness protocol (`Type=notify`): READY=1 once listening, RELOADING=1 around a
//! reload, STOPPING=1 on shutdown, and watchdog pings when the unit sets `WatchdogSec=`.
//! Outside systemd (no `NOTIFY_SOCKET`), on non-Unix systems, and for a [`Notifier`] that is
//! off (tests and the demo, which run inside other processes), every call does nothing.

use std::time::Duration;

/// Sends the service manager notifications, if it is on.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Notifier {
    #[cfg(unix)]
    on: bool,
}

impl Notifier {
    /// A notifier that talks to systemd when `on` (the `run` command) and is silent otherwise.
    pub(crate) fn new(on: bool) -> Self {
        #[cfg(unix)]
        return Notifier { on };
        #[cfg(not(unix))]
        {
            let _ = on;
            Notifier {}
        }
    }

    /// The proxy is serving; `status` says how (shown by `systemctl status`).
    pub(crate) fn ready(self, status: &str) {
        #[cfg(unix)]
        self.send(&[
            sd_notify::NotifyState::Ready,
            sd_notify::NotifyState::Status(status),
        ]);
        #[cfg(not(unix))]
        let _ = (self, status);
    }

    /// A reload has started; [`Notifier::ready`] ends it.
    pub(crate) fn reloading(self) {
        #[cfg(unix)]
        match sd_notify::NotifyState::monotonic_usec_now() {
            // systemd 253 and later require the timestamp with RELOADING=1.
            Ok(now) => self.send(&[sd_notify::NotifyState::Reloading, now]),
            Err(e) => tracing::debug!(error = %e, "no monotonic clock for RELOADING=1"),
        }
        #[cfg(not(unix))]
        let _ = self;
    }

    /// The proxy is shutting down.
    pub(crate) fn stopping(self) {
        #[cfg(unix)]
        self.send(&[
            sd_notify::NotifyState::Stopping,
            sd_notify::NotifyState::Status("draining in-flight requests"),
        ]);
        #[cfg(not(unix))]
        let _ = self;
    }

    /// How often to ping the watchdog: half its timeout, when the unit sets one (and it is
    /// at least a millisecond: anything shorter is a misconfiguration, not a watchdog).
    pub(crate) fn watchdog_interval(self) -> Option<Duration> {
        #[cfg(unix)]
        return sd_notify::watchdog_enabled()
            .filter(|timeout| self.on && *timeout >= Duration::from_millis(2))
            .map(|timeout| timeout / 2);
        #[cfg(not(unix))]
        {
            let _ = self;
            None
        }
    }

    /// Pings the watchdog every `interval` (from [`Notifier::watchdog_interval`]) for as long as
    /// the runtime runs it: a stuck runtime stops the pings and systemd restarts the service.
    pub(crate) async fn watchdog(self, interval: Duration) {
        let mut tick = tokio::time::interval(interval);
        loop {
            tick.tick().await;
            #[cfg(unix)]
            self.send(&[sd_notify::NotifyState::Watchdog]);
        }
    }

    #[cfg(unix)]
    fn send(self, states: &[sd_notify::NotifyState<'_>]) {
        if !self.on {
            return;
        }
        if let Err(e) = sd_notify::notify(states) {
            tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
        }
    }
}
