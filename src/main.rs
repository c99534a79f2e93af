//! The `azure-costs-proxy` binary: parse the command line, set up logging and TLS, load the
//! config, call the library; map outcomes to exit codes (0 ok, 1 runtime failure, 2 config error).

use std::process::ExitCode;

use clap::Parser;

use azure_costs_proxy::cli::{Cli, Command};
use azure_costs_proxy::config::{self, Config};
use azure_costs_proxy::inspect::{self, InspectError};
use azure_costs_proxy::{demo, logging};

/// Exit code for a runtime failure.
const EXIT_FAILURE: u8 = 1;
/// Exit code for a configuration error.
const EXIT_CONFIG: u8 = 2;

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    // One crypto provider for every TLS client in the process (rustls, reqwest, hyper-rustls).
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();

    let command = cli.command.unwrap_or(Command::Run);
    match command {
        Command::Check => return check(cli.config.as_deref()),
        Command::Demo { listen } if !listen.ip().is_loopback() => {
            eprintln!("error: the demo listens on loopback only; use --listen 127.0.0.1:PORT");
            return ExitCode::from(EXIT_CONFIG);
        }
        _ => {}
    }
    let runtime = match tokio::runtime::Builder::new_multi_thread()
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
            Command::Token { route, print } => match load(cli.config.as_deref()) {
                Ok(config) => token(&config, &route, print).await,
                Err(code) => code,
            },
            _ => match load(cli.config.as_deref()) {
                Ok(config) => serve(config).await,
                Err(code) => code,
            },
        }
    })
}

fn load(path: Option<&std::path::Path>) -> Result<Config, ExitCode> {
    config::load(path, &config::process_env).map_err(|e| {
        eprintln!("config error: {e}");
        ExitCode::from(EXIT_CONFIG)
    })
}

async fn serve(config: Config) -> ExitCode {
    let listener = match tokio::net::TcpListener::bind(config.listen.address).await {
        Ok(l) => l,
        Err(e) => {
            eprintln!("error: cannot listen on {}: {e}", config.listen.address);
            return ExitCode::from(EXIT_FAILURE);
        }
    };
    finish(azure_costs_proxy::run(config, listener, shutdown_signal()).await)
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
fn check(path: Option<&std::path::Path>) -> ExitCode {
    let config = match load(path) {
        Ok(c) => c,
        Err(code) => return code,
    };
    print!("{}", azure_costs_proxy::config::summary(&config));
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
