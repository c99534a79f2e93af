//! The `azure-costs-proxy` binary: parse the command line, set up logging and TLS, load the
//! config, call the library; map outcomes to exit codes (0 ok, 1 runtime failure, 2 config error).

use std::path::Path;
use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use azure_costs_proxy::cli::{Cli, Command};
use azure_costs_proxy::config::{self, Config, ConfigSource};
use azure_costs_proxy::inspect::{self, InspectError};
use azure_costs_proxy::{Options, Reloader, admin, demo, logging};

/// Exit code for a runtime failure.
const EXIT_FAILURE: u8 = 1;
/// Exit code for a configuration error.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    // One crypto provider for every TLS client in the process (rustls, reqwest, hyper-rustls).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    // available_parallelism honours the CPU affinity mask (taskset, cpusets) and cgroup quotas.
    let cpus = std::thread::available_parallelism().map_or(1, usize::from);
    let worker_threads = cli.worker_threads(cpus);
    let command = cli.command.unwrap_or(Command::Run);
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
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(worker_threads)
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    runtime.block_on(async move {
        match command {
            Command::Demo { listen } => finish(demo::run(listen, shutdown_signal()).await),
            Command::Simulator {
                api_delay,
                sts_delay,
            } => finish(demo::simulate(api_delay, sts_delay, shutdown_signal()).await),
            Command::Healthcheck { timeout } => healthcheck(cli.config.as_deref(), timeout).await,
            Command::Token { route, print } => match load(cli.config.as_deref()) {
                Ok(config) => token(&config, &route, print).await,
                Err(code) => code,
            },
            _ => {
                let source = ConfigSource::locate(cli.config.as_deref(), &config::process_env);
                match load_from(&source) {
                    Ok(config) => serve(config, source).await,
                    Err(code) => code,
                }
            }
        }
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

async fn serve(config: Config, source: ConfigSource) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(config.listen.address).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.listen.address);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    let admin = match azure_costs_proxy::bind_admin(&config).await {
        Ok(admin) => admin,
        Err(e) => return finish(Err(e)),
    };
    let options = Options {
        admin,
        reloader: reloader(source),
        systemd: true,
        ..Options::default()
    };
    finish(azure_costs_proxy::run_with(config, listener, options, shutdown_signal()).await)
}

/// SIGHUP asks for a reload; the config is read again from where it was found at start-up.
#[cfg(unix)]
fn reloader(source: ConfigSource) -> Option<Reloader> {
    use azure_costs_proxy::ReloadRequest;
    use tokio::signal::unix::{SignalKind, signal};
    let mut hangup = match signal(SignalKind::hangup()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP: live reload is off");
            return None;
        }
    };
    // One pending reload is enough: signals that arrive during a reload fold into the next.
    let (tx, requests) = tokio::sync::mpsc::channel(1);
    tokio::spawn(async move {
        while hangup.recv().await.is_some() {
            let _ = tx.try_send(ReloadRequest::default());
        }
    });
    Some(Reloader {
        requests,
        load: Box::new(move || source.load(&config::process_env)),
    })
}

#[cfg(not(unix))]
fn reloader(_source: ConfigSource) -> Option<Reloader> {
    None
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
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            let code = if e.downcast_ref::<config::ConfigError>().is_some() {
                EXIT_CONFIG
            } else {
                EXIT_FAILURE
            };
            eprintln!("error: {e:#}");
            ExitCode::from(code)
        }
    }
}

/// `check`: validate and summarise, never printing a secret.
fn check(path: Option<&Path>) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    print!("{}", azure_costs_proxy::check::summary(&config));
    ExitCode::SUCCESS
}

/// `token`: fetch one token for a route and describe it; the token itself only with `print`.
async fn token(config: &Config, route: &str, print: bool) -> ExitCode {
    match inspect::fetch(config, route).await {
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
        Err(e @ InspectError::UnknownRoute { .. }) => {
            eprintln!("error: {e}");
            ExitCode::from(EXIT_CONFIG)
        }
        Err(e) => {
            eprintln!("error: no token: {e}");
            ExitCode::from(EXIT_FAILURE)
        }
    }
}

/// Resolves on the first SIGINT or SIGTERM; a second one exits at once.
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

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
