//! systemd readiness protocol (`Type=notify`): READY=1 once listening, RELOADING=1 around a
//! reload, STOPPING=1 on shutdown, and watchdog pings when the unit sets `WatchdogSec=`.
//! Outside systemd (no `NOTIFY_SOCKET`) and on non-Unix systems every call does nothing.

use std::time::Duration;

/// Tells the service manager the proxy is serving.
pub fn ready(status: &str) {
    #[cfg(unix)]
    send(&[
        sd_notify::NotifyState::Ready,
        sd_notify::NotifyState::Status(status),
    ]);
    #[cfg(not(unix))]
    let _ = status;
}

/// Tells the service manager a reload has started; [`ready`] ends it.
pub fn reloading() {
    #[cfg(unix)]
    match sd_notify::NotifyState::monotonic_usec_now() {
        // systemd 253 and later require the timestamp with RELOADING=1.
        Ok(now) => send(&[sd_notify::NotifyState::Reloading, now]),
        Err(e) => tracing::debug!(error = %e, "no monotonic clock for RELOADING=1"),
    }
}

/// Tells the service manager the proxy is shutting down.
pub fn stopping() {
    #[cfg(unix)]
    send(&[
        sd_notify::NotifyState::Stopping,
        sd_notify::NotifyState::Status("draining in-flight requests"),
    ]);
}

/// How often to ping the watchdog: half its timeout, when the unit sets one.
pub fn watchdog_interval() -> Option<Duration> {
    #[cfg(unix)]
    return sd_notify::watchdog_enabled().map(|timeout| timeout / 2);
    #[cfg(not(unix))]
    None
}

/// Pings the watchdog every `interval` for as long as the runtime runs it: a stuck runtime
/// stops the pings and systemd restarts the service.
pub async fn watchdog(interval: Duration) {
    let mut tick = tokio::time::interval(interval);
    loop {
        tick.tick().await;
        #[cfg(unix)]
        send(&[sd_notify::NotifyState::Watchdog]);
    }
}

#[cfg(unix)]
fn send(states: &[sd_notify::NotifyState<'_>]) {
    if let Err(e) = sd_notify::notify(states) {
        tracing::warn!(error = %e, "cannot notify systemd (NOTIFY_SOCKET)");
    }
}
