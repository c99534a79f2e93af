//! The native Windows service, through the binary and the service manager: install a uniquely
//! named service (and its Event Log source), start it (a second start finds it running), proxy
//! a request, reload it with `paramchange`, stop it while an export is in flight (the drain lets
//! it finish), uninstall it. The lines meant for the Event Log carry their `event_id` in the log
//! file too; under Wine, `.ci/windows` checks the entries themselves.

use std::process::Output;
use std::time::Duration;

use azure_costs_proxy::service::default_log_file;
use windows_service::service::ServiceAccess;
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use crate::support::process::{BIN, Scratch, command, log_file_with};
use crate::support::tokio;
use crate::support::{TestConfig, client, simulator};

/// Runs `service ARGS --name NAME`.
async fn service(args: &[&str], name: &str) -> Output {
    let out = command()
        .arg("service")
        .args(args)
        .args(["--name", name])
        .output()
        .await
        .unwrap();
    eprintln!(
        "service {args:?}: {:?}\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Removes the service even when the test fails half-way.
struct Installed(String);

impl Drop for Installed {
    fn drop(&mut self) {
        let _ = std::process::Command::new(BIN)
            .args(["service", "uninstall", "--name", &self.0])
            .output();
    }
}

/// The first line of `text` that contains `needle`.
fn line_with<'a>(text: &'a str, needle: &str) -> &'a str {
    let line = text.lines().find(|line| line.contains(needle));
    line.unwrap_or_else(|| panic!("no {needle:?} in {text}"))
}

/// The values of the Event Log source `name` (`EventMessageFile` unexpanded, `TypesSupported`);
/// `None` if it is not registered.
fn event_source(name: &str) -> Option<(String, u32)> {
    use windows_sys::Win32::System::Registry::{
        HKEY_LOCAL_MACHINE, RRF_NOEXPAND, RRF_RT_REG_DWORD, RRF_RT_REG_EXPAND_SZ, RegGetValueW,
    };
    let wide = |s: &str| s.encode_utf16().chain([0]).collect::<Vec<u16>>();
    let key = wide(&format!(
        r"SYSTEM\CurrentControlSet\Services\EventLog\Application\{name}"
    ));
    let get = |value: &str, flags, data: *mut std::ffi::c_void, size: &mut u32| {
        // SAFETY: NUL-terminated names and a buffer of `size` bytes, all outliving the call.
        #[expect(unsafe_code, reason = "reading the registry")]
        unsafe {
            RegGetValueW(
                HKEY_LOCAL_MACHINE,
                key.as_ptr(),
                wide(value).as_ptr(),
                flags,
                std::ptr::null_mut(),
                data,
                size,
            )
        }
    };
    let mut file = [0u16; 260];
    let mut size = 520;
    match get(
        "EventMessageFile",
        RRF_RT_REG_EXPAND_SZ | RRF_NOEXPAND,
        file.as_mut_ptr().cast(),
        &mut size,
    ) {
        0 => {}
        2 => return None,
        status => panic!("EventMessageFile: error {status}"),
    }
    let file = String::from_utf16_lossy(&file[..(size as usize / 2).saturating_sub(1)]);
    let mut types = 0u32;
    let mut size = 4;
    let status = get(
        "TypesSupported",
        RRF_RT_REG_DWORD,
        (&raw mut types).cast(),
        &mut size,
    );
    assert_eq!(status, 0, "TypesSupported");
    Some((file, types))
}

/// What `sc control NAME paramchange` does (the windows-service crate has no call for it).
fn paramchange(name: &str) {
    let manager = ServiceManager::local_computer(None::<&str>, ServiceManagerAccess::CONNECT)
        .expect("connect to the service manager");
    let service = manager
        .open_service(name, ServiceAccess::PAUSE_CONTINUE)
        .expect("open the service");
    let mut status = windows_sys::Win32::System::Services::SERVICE_STATUS {
        dwServiceType: 0,
        dwCurrentState: 0,
        dwControlsAccepted: 0,
        dwWin32ExitCode: 0,
        dwServiceSpecificExitCode: 0,
        dwCheckPoint: 0,
        dwWaitHint: 0,
    };
    // SAFETY: a valid, open service handle and a status struct that outlives the call.
    #[expect(unsafe_code, reason = "windows-service has no call for paramchange")]
    let sent = unsafe {
        windows_sys::Win32::System::Services::ControlService(
            service.raw_handle(),
            windows_sys::Win32::System::Services::SERVICE_CONTROL_PARAMCHANGE,
            &mut status,
        )
    };
    assert_ne!(sent, 0, "{}", std::io::Error::last_os_error());
}

#[tokio::test]
async fn service_installs_serves_reloads_on_paramchange_drains_on_stop_and_uninstalls() {
    let sim = simulator().await;
    let secret = sim.client_secret();
    let dir = Scratch::new("service");
    let name = format!("acp-test-{}", std::process::id());
    let log = dir.0.join("logs").join("service.log");
    let config = TestConfig::new()
        .secret_file(dir.write("secret", &secret))
        .set("log.file", log.display().to_string())
        .set("listen.shutdown_grace", "20s");
    let path = dir.write("proxy.toml", &config.text(&sim));

    let out = service(&["install", "--config", &path.display().to_string()], &name).await;
    assert!(out.status.success());
    let _installed = Installed(name.clone());
    assert!(String::from_utf8_lossy(&out.stdout).contains("installed service"));
    let source = event_source(&name);
    eprintln!("Event Log source {name}: {source:?}");
    assert_eq!(
        source,
        Some((
            r"%SystemRoot%\Microsoft.NET\Framework64\v4.0.30319\EventLogMessages.dll".into(),
            7
        ))
    );
    let out = service(&["start"], &name).await;
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(": running"));
    // As Start-Service does: starting a running service is no failure.
    let out = service(&["start"], &name).await;
    assert!(out.status.success());
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("already running"), "{stdout}");
    assert!(stdout.contains(": running"), "{stdout}");
    let (_, text) = log_file_with(&log, "service started").await;
    assert!(line_with(&text, "service started").contains("event_id=1"));

    let (_, text) = log_file_with(&log, "listening on http://").await;
    let addr = text
        .split("listening on http://")
        .nth(1)
        .and_then(|rest| rest.split([' ', '\n', '\r']).next())
        .unwrap()
        .to_string();
    let c = client();
    let url = |path: &str| format!("http://{addr}{path}");
    assert_eq!(c.get(url("/v1/teams")).send().await.unwrap().status(), 200);

    sim.rotate_secret("rotated-secret-value");
    dir.write("secret", "rotated-secret-value");
    paramchange(&name);
    let (_, text) = log_file_with(&log, "config reloaded").await;
    assert!(text.contains("trigger=service"), "{text}");
    assert_eq!(c.get(url("/v1/teams")).send().await.unwrap().status(), 200);
    assert_eq!(sim.issued_tokens().len(), 2, "a new token after the reload");

    sim.hold_exports();
    let mut export = c
        .get(url("/v1/costs/export?rows=20000"))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    let mut received = export.chunk().await.unwrap().unwrap().len();
    let stopping = {
        let name = name.clone();
        tokio::spawn(async move { service(&["stop"], &name).await })
    };
    log_file_with(&log, "no longer accepting connections").await;
    let out = service(&["status"], &name).await;
    assert!(
        String::from_utf8_lossy(&out.stdout).contains(": stopping"),
        "stop-pending while draining"
    );
    sim.release_exports();
    while let Some(chunk) = export.chunk().await.unwrap() {
        received += chunk.len();
    }
    assert!(received > 100_000, "only {received} bytes");
    assert_eq!(sim.exports_finished(), 1, "the export ran to its end");
    let out = tokio::time::timeout(Duration::from_secs(30), stopping)
        .await
        .expect("stop returns once drained")
        .unwrap();
    assert!(out.status.success());
    assert!(String::from_utf8_lossy(&out.stdout).contains(": stopped"));

    let (_, text) = log_file_with(&log, "service stopped").await;
    assert!(line_with(&text, "service stopped").contains("event_id=2"));

    let out = service(&["uninstall"], &name).await;
    assert!(out.status.success());
    let out = service(&["status"], &name).await;
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no service named"));
    assert_eq!(event_source(&name), None, "the Event Log source is removed");

    let (_, text) = log_file_with(&log, "all connections closed").await;
    assert!(
        text.contains("stop requested by the service manager"),
        "{text}"
    );
    assert!(!text.contains(&secret), "the secret is in the log");
    assert!(
        !text.contains("rotated-secret-value"),
        "the secret is in the log"
    );
}

#[tokio::test]
async fn service_with_a_config_error_stops_with_exit_code_2_and_logs_which_key() {
    let sim = simulator().await;
    let dir = Scratch::new("service-config-error");
    let name = format!("acp-test-bad-{}", std::process::id());
    let config = TestConfig::new()
        .secret_file(dir.write("secret", "any"))
        .set("token.max_age", "2h");
    let path = dir.write("proxy.toml", &config.text(&sim));

    let out = service(&["install", "--config", &path.display().to_string()], &name).await;
    assert!(out.status.success());
    let _installed = Installed(name.clone());
    let out = service(&["start"], &name).await;
    assert_eq!(out.status.code(), Some(1), "the service did not run");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(": stopped, exit code 2"), "{stdout}");
    // The config, [log] file included, could not be read: the service's own log under
    // %ProgramData% has it. Wine gives services C:\users\Public as %ProgramData% (Windows gives
    // them C:\ProgramData, as to everyone), so both are watched.
    let env = |var: &'static str| move |_: &str| std::env::var(var).ok();
    let windows = default_log_file(&env("ProgramData"), &name);
    let wine = default_log_file(&env("PUBLIC"), &name);
    let text = tokio::select! {
        (_, text) = log_file_with(&windows, "config error") => text,
        (_, text) = log_file_with(&wine, "config error") => text,
    };
    assert!(
        line_with(&text, "config error").contains("token.max_age"),
        "{text}"
    );
    // The fields come after the message, and so after its hint's line.
    assert!(text.contains("event_id=3"), "{text}");
}
