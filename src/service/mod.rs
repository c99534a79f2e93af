//! The native Windows service: `service install|uninstall|start|stop|status` manage it through
//! the service manager (`scm.rs`), and `run --service` serves under it (`control.rs`: stop,
//! shutdown and pre-shutdown drain, `paramchange` reloads). On other systems `service` points
//! to the systemd unit. `docs/windows.md` is the guide.
//!
//! - `scm.rs`: register, remove, start, stop and query the service; its folder and ACL
//! - `control.rs`: the service's life under the dispatcher: status, checkpoints, controls
//! - `eventlog.rs`: its Event Log source, and the log lines written there (`event_id`)
//! - `paths.rs`: the service's name and where its config and logs live
//! - `ffi.rs`: the dispatcher's entry point (the `windows-service` macro, with its `unsafe` inside)

#[cfg(windows)]
mod control;
#[cfg(windows)]
mod eventlog;
#[cfg(windows)]
mod ffi;
#[cfg(windows)]
mod scm;

use std::path::Path;

use crate::cli::ServiceAction;

mod paths;

#[cfg(windows)]
pub use control::{Body, Running, ServiceControls};
#[cfg(windows)]
pub use eventlog::{EventLogLayer, report_error};
#[cfg(windows)]
pub use ffi::dispatch;
pub use paths::{DEFAULT_NAME, data_dir, default_config, default_log_file};

/// What `service` and `run --service` print on systems without the Windows service manager.
pub const NOT_WINDOWS: &str = "the service command manages the native Windows service; on this \
     system run the proxy under systemd instead: systemd/azure-costs-proxy.service, installed as \
     systemd/README.md says";

/// `service ACTION --name NAME [--config FILE]`: the exit code (0 ok, 1 failed, 2 usage or
/// not Windows). Prints what it did, or what went wrong and what to do about it.
pub fn manage(action: ServiceAction, name: &str, config: Option<&Path>) -> u8 {
    if let Err(why) = paths::check_name(name) {
        eprintln!("error: --name {name:?}: {why}");
        return 2;
    }
    #[cfg(windows)]
    return scm::manage(action, name, config);
    #[cfg(not(windows))]
    {
        let _ = (action, config);
        eprintln!("error: {NOT_WINDOWS}");
        2
    }
}
