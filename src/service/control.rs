//! The service's life under the Windows service manager: start-pending until the proxy
//! listens, running, then on stop, shutdown or pre-shutdown the same drain as SIGTERM, with
//! stop-pending reports whose checkpoint rises every second until the drain ends; `paramchange`
//! reloads like SIGHUP. The exit code reaches the manager as a service-specific code, so a
//! failure (config error 2, runtime failure 1) triggers the recovery actions. Running and
//! stopped are also Event Log entries (ids 1 and 2, `eventlog.rs`).

use std::ffi::OsString;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::{mpsc, oneshot};
use windows_service::service::{
    ServiceControl, ServiceControlAccept, ServiceExitCode, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_control_handler::ServiceStatusHandle;
use windows_service::service_control_handler::{self, ServiceControlHandlerResult};

use super::paths::DEFAULT_NAME;
use crate::{ReloadRequest, ReloadTrigger};

/// How long the manager should wait for the next report while starting or stopping; the
/// reports come every [`TICK`].
const WAIT_HINT: Duration = Duration::from_secs(10);
/// How often a stop-pending report raises its checkpoint.
const TICK: Duration = Duration::from_secs(1);
/// The controls a running service takes. Logoff is no control at all: it never stops us.
const ACCEPTED: ServiceControlAccept = ServiceControlAccept::STOP
    .union(ServiceControlAccept::SHUTDOWN)
    .union(ServiceControlAccept::PRESHUTDOWN)
    .union(ServiceControlAccept::PARAM_CHANGE);

/// What the service body gets from the service manager.
pub struct ServiceControls {
    /// The name the service runs under (the manager's first argument).
    pub name: String,
    /// Resolves on stop, shutdown or pre-shutdown: start draining.
    pub stop: oneshot::Receiver<()>,
    /// One request per `paramchange` control.
    pub reloads: mpsc::Receiver<ReloadRequest>,
    /// Reports the service as running.
    pub running: Running,
}

/// Reports the service as running: [`Running::report`] once the proxy listens.
pub struct Running {
    status: Arc<Status>,
    name: String,
}

impl Running {
    /// The service runs and takes stop, shutdown, pre-shutdown and `paramchange` controls;
    /// the Event Log says so (event 1).
    pub fn report(&self) {
        if self
            .status
            .report(ServiceState::Running, ServiceExitCode::NO_ERROR)
        {
            tracing::info!(
                event_id = 1u32,
                service = %self.name,
                version = env!("CARGO_PKG_VERSION"),
                "service started"
            );
        }
    }
}

/// The body of the service: serves until [`ServiceControls::stop`], returns the exit code.
pub type Body = Box<dyn FnOnce(ServiceControls) -> u8 + Send>;

/// What the service thread runs: register for controls, report start-pending, run the body,
/// report stopped with its exit code.
pub(super) fn service_main(arguments: Vec<OsString>, body: Body) {
    let name = arguments.first().map_or_else(
        || DEFAULT_NAME.to_string(),
        |n| n.to_string_lossy().into_owned(),
    );
    let (stop_tx, stop) = oneshot::channel();
    let (reload_tx, reloads) = mpsc::channel(1);
    let status = Arc::new(Status::default());
    let handler_status = status.clone();
    let mut stop_tx = Some(stop_tx);
    let handler = move |control| match control {
        ServiceControl::Stop | ServiceControl::Shutdown | ServiceControl::Preshutdown => {
            if let Some(stop) = stop_tx.take() {
                handler_status.stopping();
                let _ = stop.send(());
            }
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::ParamChange => {
            // One pending reload is enough: more fold into it, as with SIGHUP.
            let _ = reload_tx.try_send(ReloadRequest {
                trigger: ReloadTrigger::Service,
                done: None,
            });
            ServiceControlHandlerResult::NoError
        }
        ServiceControl::Interrogate => ServiceControlHandlerResult::NoError,
        _ => ServiceControlHandlerResult::NotImplemented,
    };
    let handle = match service_control_handler::register(&name, handler) {
        Ok(handle) => handle,
        Err(e) => {
            tracing::error!(error = %e, "cannot register with the service manager");
            return;
        }
    };
    status.attach(handle);
    status.report(ServiceState::StartPending, ServiceExitCode::NO_ERROR);
    let running = Running {
        status: status.clone(),
        name: name.clone(),
    };
    let code = body(ServiceControls {
        name: name.clone(),
        stop,
        reloads,
        running,
    });
    // Event 2 in the Event Log; after a failure, the lines before it (3 or 4) say why.
    let exit = match code {
        0 => {
            tracing::info!(event_id = 2u32, service = %name, "service stopped");
            ServiceExitCode::NO_ERROR
        }
        code => {
            tracing::warn!(
                event_id = 2u32,
                service = %name,
                exit_code = code,
                "service stopped after a failure"
            );
            ServiceExitCode::ServiceSpecific(u32::from(code))
        }
    };
    status.report(ServiceState::Stopped, exit);
}

/// The service's status as last reported, and the handle to report it.
#[derive(Default)]
struct Status {
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    handle: Option<ServiceStatusHandle>,
    checkpoint: u32,
    stopping: bool,
    stopped: bool,
}

impl Status {
    fn attach(&self, handle: ServiceStatusHandle) {
        self.lock().handle = Some(handle);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Reports `state`; a pending state raises the checkpoint, a settled one clears it. After
    /// `Stopped` nothing more is reported. False if `state` was not reported for that reason.
    fn report(&self, state: ServiceState, exit_code: ServiceExitCode) -> bool {
        let mut inner = self.lock();
        // A stop that came before the proxy listened wins over its "running".
        if inner.stopped || (inner.stopping && state == ServiceState::Running) {
            return false;
        }
        inner.stopping |= state == ServiceState::StopPending;
        let pending = matches!(
            state,
            ServiceState::StartPending | ServiceState::StopPending
        );
        inner.checkpoint = if pending { inner.checkpoint + 1 } else { 0 };
        inner.stopped = state == ServiceState::Stopped;
        let status = ServiceStatus {
            service_type: ServiceType::OWN_PROCESS,
            current_state: state,
            controls_accepted: if state == ServiceState::Running {
                ACCEPTED
            } else {
                ServiceControlAccept::empty()
            },
            exit_code,
            checkpoint: inner.checkpoint,
            wait_hint: if pending { WAIT_HINT } else { Duration::ZERO },
            process_id: None,
        };
        if let Some(handle) = &inner.handle
            && let Err(e) = handle.set_service_status(status)
        {
            tracing::warn!(error = %e, "cannot report the service status");
        }
        true
    }

    /// Stop-pending now and every [`TICK`] with a rising checkpoint, until stopped is reported
    /// (the drain is bounded by `shutdown_grace`, so this is too).
    fn stopping(self: &Arc<Self>) {
        self.report(ServiceState::StopPending, ServiceExitCode::NO_ERROR);
        let status = self.clone();
        std::thread::spawn(move || {
            loop {
                std::thread::sleep(TICK);
                if status.lock().stopped {
                    return;
                }
                status.report(ServiceState::StopPending, ServiceExitCode::NO_ERROR);
            }
        });
    }
}
