//! `service install|uninstall|start|stop|status` through the Windows service manager, and the
//! service's folder: `%ProgramData%\azure-costs-proxy\` with the config and `logs\`, its ACL
//! restricted to SYSTEM, Administrators and the service's virtual account; `install` registers
//! the service's Event Log source, `uninstall` removes it.

use std::ffi::OsString;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail};
use windows_service::service::{
    Service, ServiceAccess, ServiceAction, ServiceActionType, ServiceErrorControl, ServiceExitCode,
    ServiceFailureActions, ServiceFailureResetPeriod, ServiceInfo, ServiceSidType,
    ServiceStartType, ServiceState, ServiceStatus, ServiceType,
};
use windows_service::service_manager::{ServiceManager, ServiceManagerAccess};

use super::eventlog;
use super::paths::{DEFAULT_NAME, data_dir, default_config};
use crate::cli::ServiceAction as Action;
use crate::config::{self, DEFAULT_SHUTDOWN_GRACE};

/// What `install` writes as the config when there is none.
const EXAMPLE: &str = include_str!("../../proxy.toml.example");
/// The description shown in services.msc.
const DESCRIPTION: &str = "Holds the Azure Costs API credentials for BI tools on this machine \
     (Power BI gateway, Qlik Sense, Tableau Server) and adds the bearer token to their requests.";
/// Extra pre-shutdown time beyond `shutdown_grace`: start-up of the drain and the last report.
const PRESHUTDOWN_MARGIN: Duration = Duration::from_secs(15);
/// The longest `start` waits for the service to run.
const START_WAIT: Duration = Duration::from_secs(60);
/// The longest `stop` and `uninstall` wait for the drain (it is bounded by `shutdown_grace`).
const STOP_WAIT: Duration = Duration::from_secs(600);
/// Win32 errors that have a better explanation than their text.
const ERROR_ACCESS_DENIED: i32 = 5;
const ERROR_SERVICE_ALREADY_RUNNING: i32 = 1056;
const ERROR_SERVICE_DOES_NOT_EXIST: i32 = 1060;
const ERROR_SERVICE_EXISTS: i32 = 1073;

/// Runs `action` on the service `name`; the exit code (0 ok, 1 failed).
pub(super) fn manage(action: Action, name: &str, config: Option<&Path>) -> u8 {
    let outcome = match action {
        Action::Install => install(name, config),
        Action::Uninstall => uninstall(name),
        Action::Start => start(name),
        Action::Stop => stop(name),
        Action::Status => status(name),
    };
    outcome.unwrap_or_else(|e| {
        eprintln!("error: {e:#}");
        1
    })
}

fn install(name: &str, config: Option<&Path>) -> anyhow::Result<u8> {
    let env = &config::process_env;
    let exe = std::env::current_exe().context("cannot find the path of this program")?;
    let dir = data_dir(env);
    let logs = dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("cannot create {}", logs.display()))?;
    // The service starts in System32: a relative path would not lead back here.
    let config = match config {
        Some(path) => std::path::absolute(path)
            .with_context(|| format!("cannot resolve {}", path.display()))?,
        None => default_config(env, name),
    };
    if !config.exists() {
        std::fs::write(&config, EXAMPLE)
            .with_context(|| format!("cannot write {}", config.display()))?;
        println!("wrote {} from proxy.toml.example", config.display());
    }
    let grace = match config::load_file(&config, env) {
        Ok(loaded) => loaded.listen.shutdown_grace,
        Err(_) => DEFAULT_SHUTDOWN_GRACE,
    };

    let manager = manager(ServiceManagerAccess::CONNECT | ServiceManagerAccess::CREATE_SERVICE)?;
    let info = ServiceInfo {
        name: name.into(),
        display_name: if name == DEFAULT_NAME {
            "Azure Costs proxy".into()
        } else {
            format!("Azure Costs proxy ({name})").into()
        },
        service_type: ServiceType::OWN_PROCESS,
        start_type: ServiceStartType::AutoStart,
        error_control: ServiceErrorControl::Normal,
        executable_path: exe,
        launch_arguments: vec![
            "run".into(),
            "--service".into(),
            "--config".into(),
            config.clone().into_os_string(),
        ],
        dependencies: vec![],
        account_name: Some(OsString::from(account(name))),
        account_password: None,
    };
    let service = manager
        .create_service(
            &info,
            ServiceAccess::CHANGE_CONFIG | ServiceAccess::QUERY_STATUS,
        )
        .map_err(|e| explain(e, name))?;
    configure(&service, name, grace);
    println!(
        "installed service {name}: automatic start, restarts after a failure, runs as {} with \
         {config}",
        account(name),
        config = config.display()
    );
    match eventlog::register(name) {
        Ok(()) => println!(
            "registered the Event Log source {name}: start, stop and failures go to the \
             Application log"
        ),
        Err(e) => println!(
            "warning: could not register the Event Log source {name} ({e}); as administrator, \
             run in PowerShell:\n  {}",
            eventlog::register_command(name)
        ),
    }
    restrict(&dir, &logs, name);
    println!(
        "next: put the client secret in a file in {dir} and name it in {config} \
         (client_secret = {{ file = '...' }}), check with `azure-costs-proxy check --config \
         {config}`, then `azure-costs-proxy service start{flag}`. Logs: {logs}",
        dir = dir.display(),
        config = config.display(),
        logs = logs.display(),
        flag = name_flag(name),
    );
    Ok(0)
}

/// Description, recovery (restart after 5 s, 30 s, 60 s; the count resets after a day, also
/// for a non-zero exit code), a service SID, and a pre-shutdown timeout above the drain. A
/// setting the system refuses is printed with the command that sets it, and install goes on:
/// the service works without it (Wine, for one, refuses some).
fn configure(service: &Service, name: &str, grace: Duration) {
    let restart = |secs| ServiceAction {
        action_type: ServiceActionType::Restart,
        delay: Duration::from_secs(secs),
    };
    let preshutdown = grace + PRESHUTDOWN_MARGIN;
    let steps: [(&str, windows_service::Result<()>, String); 5] = [
        (
            "description",
            service.set_description(DESCRIPTION),
            format!("sc.exe description {name} \"{DESCRIPTION}\""),
        ),
        (
            "restart on failure",
            service.update_failure_actions(ServiceFailureActions {
                reset_period: ServiceFailureResetPeriod::After(Duration::from_secs(24 * 60 * 60)),
                reboot_msg: None,
                command: None,
                actions: Some(vec![restart(5), restart(30), restart(60)]),
            }),
            format!(
                "sc.exe failure {name} reset= 86400 actions= restart/5000/restart/30000/restart/60000"
            ),
        ),
        (
            "restart after a non-zero exit code",
            service.set_failure_actions_on_non_crash_failures(true),
            format!("sc.exe failureflag {name} 1"),
        ),
        (
            "service SID",
            service.set_config_service_sid_info(ServiceSidType::Unrestricted),
            format!("sc.exe sidtype {name} unrestricted"),
        ),
        (
            "pre-shutdown timeout",
            service.set_preshutdown_timeout(preshutdown),
            format!(
                "reg.exe add HKLM\\SYSTEM\\CurrentControlSet\\Services\\{name} /v PreshutdownTimeout \
                 /t REG_DWORD /d {} /f",
                preshutdown.as_millis()
            ),
        ),
    ];
    for (what, outcome, command) in steps {
        if let Err(e) = outcome {
            let e = match e {
                windows_service::Error::Winapi(io) => io.to_string(),
                other => other.to_string(),
            };
            println!(
                "warning: could not set the {what} ({e}); as administrator, run:\n  {command}"
            );
        }
    }
}

/// Restricts the folder to SYSTEM (S-1-5-18), Administrators (S-1-5-32-544) and the service
/// (read; modify in `logs\`) with `icacls`; prints the commands if that fails.
fn restrict(dir: &Path, logs: &Path, name: &str) {
    let account = account(name);
    let commands = [
        vec![
            dir.display().to_string(),
            "/inheritance:r".into(),
            "/grant:r".into(),
            "*S-1-5-18:(OI)(CI)F".into(),
            "/grant:r".into(),
            "*S-1-5-32-544:(OI)(CI)F".into(),
            "/grant:r".into(),
            format!("{account}:(OI)(CI)RX"),
        ],
        vec![
            logs.display().to_string(),
            "/grant:r".into(),
            format!("{account}:(OI)(CI)M"),
        ],
    ];
    let failed =
        commands
            .iter()
            .find_map(|args| match Command::new("icacls").args(args).output() {
                Ok(out) if out.status.success() => None,
                Ok(out) => Some(String::from_utf8_lossy(&out.stderr).trim().to_string()),
                Err(e) => Some(e.to_string()),
            });
    match failed {
        None => println!(
            "restricted {} to SYSTEM, Administrators and {account} (read; modify in logs)",
            dir.display()
        ),
        Some(why) => {
            println!(
                "could not restrict {} ({why}); run, as administrator:",
                dir.display()
            );
            for args in &commands {
                let quoted: Vec<String> = args.iter().map(|a| format!("\"{a}\"")).collect();
                println!("  icacls {}", quoted.join(" "));
            }
        }
    }
}

fn uninstall(name: &str) -> anyhow::Result<u8> {
    let service = open(
        name,
        ServiceAccess::QUERY_STATUS | ServiceAccess::STOP | ServiceAccess::DELETE,
    )?;
    if service.query_status()?.current_state != ServiceState::Stopped {
        stop_and_wait(&service, name)?;
    }
    service.delete().map_err(|e| explain(e, name))?;
    if let Err(e) = eventlog::deregister(name) {
        println!(
            "warning: could not remove the Event Log source {name} ({e}); as administrator, run \
             in PowerShell:\n  Remove-EventLog -Source {name}"
        );
    }
    println!(
        "removed service {name}; {} stays (config, secrets, logs): delete it if you no longer \
         need it",
        data_dir(&config::process_env).display()
    );
    Ok(0)
}

fn start(name: &str) -> anyhow::Result<u8> {
    let service = open(name, ServiceAccess::START | ServiceAccess::QUERY_STATUS)?;
    match service.start::<&str>(&[]) {
        Ok(()) => {}
        // As PowerShell's Start-Service does: a service that runs (or starts) already is no
        // failure.
        Err(e) if os_error(&e) == Some(ERROR_SERVICE_ALREADY_RUNNING) => {
            println!("{name}: already running");
        }
        Err(e) => return Err(explain(e, name)),
    }
    let status = wait_while(&service, ServiceState::StartPending, START_WAIT)?;
    print_status(name, &status);
    if status.current_state == ServiceState::Running {
        return Ok(0);
    }
    println!(
        "the service did not start: see its log in {}, and `azure-costs-proxy check --config \
         FILE` for config errors (exit code 2)",
        data_dir(&config::process_env).join("logs").display()
    );
    Ok(1)
}

fn stop(name: &str) -> anyhow::Result<u8> {
    let service = open(name, ServiceAccess::STOP | ServiceAccess::QUERY_STATUS)?;
    if service.query_status()?.current_state == ServiceState::Stopped {
        println!("{name}: already stopped");
        return Ok(0);
    }
    let status = stop_and_wait(&service, name)?;
    print_status(name, &status);
    Ok(0)
}

fn status(name: &str) -> anyhow::Result<u8> {
    let service = open(
        name,
        ServiceAccess::QUERY_STATUS | ServiceAccess::QUERY_CONFIG,
    )?;
    let status = service.query_status().map_err(|e| explain(e, name))?;
    print_status(name, &status);
    if let Ok(config) = service.query_config() {
        let account = config.account_name.unwrap_or_default();
        println!("  account: {}", account.to_string_lossy());
        println!("  start: {:?}", config.start_type);
        println!("  command: {}", config.executable_path.display());
    }
    Ok(u8::from(status.current_state != ServiceState::Running))
}

/// Sends stop and waits for stopped, telling the operator that in-flight requests drain.
fn stop_and_wait(service: &Service, name: &str) -> anyhow::Result<ServiceStatus> {
    service.stop().map_err(|e| explain(e, name))?;
    println!("{name}: stopping; requests in flight finish first (up to [listen] shutdown_grace)");
    let status = wait_while(service, ServiceState::StopPending, STOP_WAIT)?;
    if status.current_state != ServiceState::Stopped {
        bail!("{name} did not stop within {} s", STOP_WAIT.as_secs());
    }
    Ok(status)
}

/// Polls the service until it leaves `state` or `limit` has passed; the last status.
fn wait_while(
    service: &Service,
    state: ServiceState,
    limit: Duration,
) -> anyhow::Result<ServiceStatus> {
    let deadline = Instant::now() + limit;
    loop {
        let status = service.query_status()?;
        if status.current_state != state || Instant::now() >= deadline {
            return Ok(status);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn print_status(name: &str, status: &ServiceStatus) {
    let state = match status.current_state {
        ServiceState::Running => "running",
        ServiceState::Stopped => "stopped",
        ServiceState::StartPending => "starting",
        ServiceState::StopPending => "stopping",
        _ => "paused",
    };
    let pid = status
        .process_id
        .map(|pid| format!(" (pid {pid})"))
        .unwrap_or_default();
    let exit = match status.exit_code {
        ServiceExitCode::Win32(0) => String::new(),
        ServiceExitCode::Win32(code) => format!(", Windows error {code}"),
        ServiceExitCode::ServiceSpecific(code) => format!(", exit code {code}"),
    };
    println!("{name}: {state}{pid}{exit}");
}

fn manager(access: ServiceManagerAccess) -> anyhow::Result<ServiceManager> {
    ServiceManager::local_computer(None::<&str>, access).map_err(|e| explain(e, DEFAULT_NAME))
}

fn open(name: &str, access: ServiceAccess) -> anyhow::Result<Service> {
    manager(ServiceManagerAccess::CONNECT)?
        .open_service(name, access)
        .map_err(|e| explain(e, name))
}

/// `NT SERVICE\NAME`: the virtual account Windows makes for the service.
fn account(name: &str) -> String {
    format!(r"NT SERVICE\{name}")
}

fn name_flag(name: &str) -> String {
    if name == DEFAULT_NAME {
        String::new()
    } else {
        format!(" --name {name}")
    }
}

/// The service manager's error, with what to do for the common ones.
fn explain(e: windows_service::Error, name: &str) -> anyhow::Error {
    match os_error(&e) {
        Some(ERROR_ACCESS_DENIED) => anyhow::anyhow!(
            "{e}: managing services needs an elevated prompt (Run as administrator)"
        ),
        Some(ERROR_SERVICE_DOES_NOT_EXIST) => anyhow::anyhow!(
            "no service named {name} is installed: `azure-costs-proxy service install{}`",
            name_flag(name)
        ),
        Some(ERROR_SERVICE_EXISTS) => anyhow::anyhow!(
            "a service named {name} is already installed: `service uninstall{flag}` first, or \
             choose another --name",
            flag = name_flag(name)
        ),
        _ => anyhow::Error::new(e).context(format!("service {name}")),
    }
}

/// The Win32 error code behind `e`, if it is one.
fn os_error(e: &windows_service::Error) -> Option<i32> {
    match e {
        windows_service::Error::Winapi(io) => io.raw_os_error(),
        _ => None,
    }
}
