//! The `azure-costs-proxy` binary: parse the command line, set up logging and TLS, load the
//! config, call the library; map outcomes to exit codes (0 ok, 1 runtime failure, 2 config error).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;
use tokio::sync::mpsc;

use azure_costs_proxy::cli::{Cli, Command, LogFormat};
use azure_costs_proxy::commands::token::{self as token_command, TokenCommandError};
use azure_costs_proxy::commands::{self, demo};
use azure_costs_proxy::config::{self, Config, ConfigSource};
use azure_costs_proxy::logging::LogFile;
use azure_costs_proxy::{Options, ReloadRequest, Reloader, admin, logging, service};

/// Exit code for a runtime failure.
const EXIT_FAILURE: u8 = 1;
/// Exit code for a configuration error.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // One crypto provider for every TLS client in the process (rustls, reqwest, hyper-rustls).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    // available_parallelism honours the CPU affinity mask (taskset, cpusets) and cgroup quotas.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let worker_threads = cli.worker_threads(cpus);
    let command = cli.command.unwrap_or(Command::Run { service: false });
    // `run` logs where its config says ([log] file), so the config comes first; its errors go
    // to stderr.
    let serving = match command {
        Command::Run { service: true } => {
            return run_service(cli.config, cli.log_format, worker_threads);
        }
        Command::Service { action, name } => {
            return ExitCode::from(service::manage(action, &name, cli.config.as_deref()));
        }
        Command::ClientKey { name } => return client_key(&name),
        Command::Run { service: false } => {
            let source = ConfigSource::locate(cli.config.as_deref(), &config::process_env);
            match load_from(&source) {
                Ok(config) => Some((config, source)),
                Err(code) => return code,
            }
        }
        _ => None,
    };
    let log_file = serving.as_ref().and_then(|(config, _)| {
        let path = config.log.file.clone()?;
        Some(LogFile {
            path,
            keep: config.log.keep,
        })
    });
    if let Err(e) = logging::init(cli.log_format, true, log_file.as_ref(), None) {
        eprintln!("error: {e:#}");
        return ExitCode::from(EXIT_FAILURE);
    }
    match command {
        Command::Check => return check(cli.config.as_deref()),
        Command::Demo { listen } => {
            if let Err(e) = demo::check_listen(listen) {
                eprintln!("error: {e}");
                return ExitCode::from(EXIT_CONFIG);
            }
        }
        _ => {}
    }
    let runtime = match runtime(worker_threads) {
        Ok(rt) => rt,
        Err(code) => return ExitCode::from(code),
    };
    runtime.block_on(async move {
        match command {
            Command::Demo { listen } => finish(demo::run(listen, shutdown_signal()).await),
            Command::Simulator(args) => finish(demo::simulate(args, shutdown_signal()).await),
            Command::Healthcheck { timeout } => healthcheck(cli.config.as_deref(), timeout).await,
            Command::Status { json, timeout } => {
                ExitCode::from(commands::status::run(cli.config.as_deref(), json, timeout).await)
            }
            Command::Token { route, print } => match load(cli.config.as_deref()) {
                Ok(config) => token(&config, &route, print).await,
                Err(code) => code,
            },
            _ => match serving {
                Some((config, source)) => {
                    let reloads = reload_requests();
                    ExitCode::from(serve(config, source, shutdown_signal(), reloads, || {}).await)
                }
                None => ExitCode::from(EXIT_FAILURE),
            },
        }
    })
}

/// `client-key`: the key and the lines to paste on stdout; a bad name exits 2.
fn client_key(name: &str) -> ExitCode {
    match azure_costs_proxy::commands::client_key::new_client(name) {
        Ok(text) => {
            print!("{text}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

fn runtime(worker_threads: usize) -> Result<tokio::runtime::Runtime, u8> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
        .map_err(|e| {
            eprintln!("error: cannot start the async runtime: {e}");
            tracing::error!(event_id = 4u32, "cannot start the async runtime: {e}");
            EXIT_FAILURE
        })
}

fn load(path: Option<&Path>) -> Result<Config, ExitCode> {
    load_from(&ConfigSource::locate(path, &config::process_env))
}

fn load_from(source: &ConfigSource) -> Result<Config, ExitCode> {
    source.load(&config::process_env).map_err(|e| {
        eprintln!("config error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

/// Serves `config` until `shutdown`; `reloads` (SIGHUP, paramchange) re-read it from `source`.
/// `listening` runs once both listeners are bound. The exit code.
async fn serve(
    config: Config,
    source: ConfigSource,
    shutdown: impl Future<Output = ()>,
    reloads: mpsc::Receiver<ReloadRequest>,
    listening: impl FnOnce(),
) -> u8 {
    let listener = match tokio::net::TcpListener::bind(config.listen.address).await {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(
                event_id = 4u32,
                "cannot listen on {}: {e}",
                config.listen.address
            );
            return EXIT_FAILURE;
        }
    };
    let admin = match azure_costs_proxy::bind_admin(&config).await {
        Ok(admin) => admin,
        Err(e) => return finish_code(Err(e)),
    };
    listening();
    let options = Options {
        admin,
        reloader: Some(Reloader {
            requests: reloads,
            load: std::sync::Arc::new(move || source.load(&config::process_env)),
        }),
        systemd: true,
        ..Options::default()
    };
    finish_code(azure_costs_proxy::run_with(config, listener, options, shutdown).await)
}

/// `run --service`: hands the process to the Windows service manager, which runs
/// [`serve_service`] on its thread until a stop control.
#[cfg(windows)]
fn run_service(path: Option<PathBuf>, format: LogFormat, worker_threads: usize) -> ExitCode {
    let body =
        Box::new(move |controls| serve_service(path.as_deref(), format, worker_threads, controls));
    match service::dispatch(body) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!(
                "error: run --service is for the Windows service manager ({e}); in a console, \
                 use `run`, and to install the service, `service install`"
            );
            ExitCode::from(EXIT_CONFIG)
        }
    }
}

#[cfg(not(windows))]
fn run_service(_path: Option<PathBuf>, _format: LogFormat, _worker_threads: usize) -> ExitCode {
    eprintln!("error: {}", service::NOT_WINDOWS);
    ExitCode::from(EXIT_CONFIG)
}

/// The service body: logs only to the file (`[log] file`, else the service's own under
/// `%ProgramData%`), a config error is logged and becomes exit code 2; then the same serving
/// as `run`, with the service manager's stop and `paramchange` in place of the signals.
#[cfg(windows)]
fn serve_service(
    path: Option<&Path>,
    format: LogFormat,
    worker_threads: usize,
    controls: service::ServiceControls,
) -> u8 {
    let env = &config::process_env;
    let source = ConfigSource::locate(path, env);
    let loaded = source.load(env);
    let file = LogFile {
        path: loaded
            .as_ref()
            .ok()
            .and_then(|c| c.log.file.clone())
            .unwrap_or_else(|| service::default_log_file(env, &controls.name)),
        keep: loaded
            .as_ref()
            .map_or(config::DEFAULT_LOG_KEEP, |c| c.log.keep),
    };
    let event_log = Box::new(service::EventLogLayer::new(&controls.name));
    if let Err(e) = logging::init(format, false, Some(&file), Some(event_log)) {
        // Nowhere to say it but the Event Log and the exit code.
        service::report_error(&controls.name, 4, &format!("{e:#}"));
        return EXIT_FAILURE;
    }
    let config = match loaded {
        Ok(config) => config,
        Err(e) => {
            tracing::error!(event_id = 3u32, "config error, the service stops: {e}");
            return EXIT_CONFIG;
        }
    };
    tracing::info!(service = %controls.name, "starting as a Windows service");
    let runtime = match runtime(worker_threads) {
        Ok(rt) => rt,
        Err(code) => return code,
    };
    let service::ServiceControls {
        stop,
        reloads,
        running,
        ..
    } = controls;
    runtime.block_on(async {
        let stop = async {
            let _ = stop.await;
            tracing::info!("stop requested by the service manager; draining");
        };
        serve(config, source, stop, reloads, || running.report()).await
    })
}

/// Reload requests of a console run: each SIGHUP, on Unix. On Windows a console has no reload
/// signal (the service has `paramchange`); there, as everywhere, file changes (`[reload] watch`)
/// reload too.
#[cfg(unix)]
fn reload_requests() -> mpsc::Receiver<ReloadRequest> {
    use tokio::signal::unix::{SignalKind, signal};
    // One pending reload is enough: signals that arrive during a reload fold into the next.
    let (tx, requests) = mpsc::channel(1);
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: only file changes reload");
            return requests;
        }
    };
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let _ = tx.try_send(ReloadRequest::default());
        }
    });
    requests
}

/// No reload signal in a Windows console: the channel is closed from the start.
#[cfg(not(unix))]
fn reload_requests() -> mpsc::Receiver<ReloadRequest> {
    mpsc::channel(1).1
}

/// `healthcheck`: 0 if the proxy of this config says it is ready, 1 otherwise (also for a config
/// error: Docker reserves exit code 2 of a HEALTHCHECK). Reads only the admin address, so it
/// works where the secrets are not readable.
async fn healthcheck(path: Option<&Path>, timeout: Duration) -> ExitCode {
    let source = ConfigSource::locate(path, &config::process_env);
    let address = match source.admin_address(&config::process_env) {
        Ok(Some(address)) => address,
        Ok(None) => {
            eprintln!(
                "not ready: the admin listener is disabled ([admin] enabled = false), so there is \
                 nothing to ask; enable it to use healthcheck"
            );
            return ExitCode::from(EXIT_FAILURE);
        }
        Err(e) => {
            eprintln!("config error: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    match admin::probe(address, timeout).await {
        Ok(probe) if probe.is_ready() => {
            println!("ready: {}", probe.body);
            ExitCode::SUCCESS
        }
        Ok(probe) => {
            println!("not ready ({}): {}", probe.status, probe.body);
            ExitCode::from(EXIT_FAILURE)
        }
        Err(e) => {
            println!("not ready: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

fn finish(result: anyhow::Result<()>) -> ExitCode {
    ExitCode::from(finish_code(result))
}

/// 0, or the exit code of the error (2 for a config error, else 1), which is logged.
fn finish_code(result: anyhow::Result<()>) -> u8 {
    match result {
        Ok(()) => 0,
        Err(e) => {
            // The Event Log's ids, under the service: 3 a rejected config, 4 a fatal error.
            let config = e.downcast_ref::<config::ConfigError>().is_some();
            tracing::error!(event_id = if config { 3u32 } else { 4u32 }, "{e:#}");
            if config { EXIT_CONFIG } else { EXIT_FAILURE }
        }
    }
}

/// `check`: validate and summarise, never printing a secret.
fn check(path: Option<&Path>) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    print!("{}", azure_costs_proxy::commands::check::summary(&config));
    ExitCode::SUCCESS
}

/// `token`: fetch one token for a route and describe it; the token itself only with `print`.
async fn token(config: &Config, route: &str, print: bool) -> ExitCode {
    match token_command::fetch(config, route).await {
        Ok(fetched) => {
            let description = fetched.describe(std::time::SystemTime::now());
            if print {
                eprint!("{description}");
                println!("{}", fetched.token.secret().expose());
            } else {
                print!("{description}");
            }
            ExitCode::SUCCESS
        }
        Err(
            e @ (TokenCommandError::UnknownRoute { .. } | TokenCommandError::NotADelegate { .. }),
        ) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("error: no token: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM (Windows: Ctrl-C or Ctrl-Break); a second one
/// exits at once.
async fn shutdown_signal() {
    wait_for_signal().await;
    tracing::info!("shutdown signal received; send it again to exit at once");
    tokio::spawn(async {
        wait_for_signal().await;
        tracing::warn!("second shutdown signal: exiting now");
        std::process::exit(130);
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = tokio::signal::ctrl_c() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Ctrl-C or Ctrl-Break in the console. Closing the window, logoff and shutdown are not
/// listened for: a logoff never stops the proxy, and the service has its own controls.
#[cfg(windows)]
async fn wait_for_signal() {
    use tokio::signal::windows::{ctrl_break, ctrl_c};
    match (ctrl_c(), ctrl_break()) {
        (Ok(mut c), Ok(mut brk)) => {
            tokio::select! {
                _ = c.recv() => {}
                _ = brk.recv() => {}
            }
        }
        _ => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}
