//! The service dispatcher's entry point. `define_windows_service!` expands to the `extern
//! "system"` function the service manager calls, which reads its arguments through a raw
//! pointer: `unsafe` written by the `windows-service` crate inside its macro, which the
//! `unsafe_code` lint does not count as ours (an `#[expect(unsafe_code)]` here is unfulfilled).

use std::ffi::OsString;
use std::sync::{Mutex, PoisonError};

use super::control::{self, Body};
use super::paths::DEFAULT_NAME;

windows_service::define_windows_service!(ffi_service_main, service_main);

/// The body [`dispatch`] hands to the service thread. The service manager calls back into a
/// plain function without a context pointer, so this is the one way across.
static BODY: Mutex<Option<Body>> = Mutex::new(None);

/// `run --service`: hands this process to the service manager, which runs `body` on its
/// service thread; returns once the service has stopped. An error means the process was not
/// started by the service manager.
pub fn dispatch(body: Body) -> windows_service::Result<()> {
    *BODY.lock().unwrap_or_else(PoisonError::into_inner) = Some(body);
    // The name is ignored for a service in its own process; the manager passes the real one.
    windows_service::service_dispatcher::start(DEFAULT_NAME, ffi_service_main)
}

fn service_main(arguments: Vec<OsString>) {
    if let Some(body) = BODY.lock().unwrap_or_else(PoisonError::into_inner).take() {
        control::service_main(arguments, body);
    }
}
