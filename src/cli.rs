//! Command-line definitions (clap). Only the shape of the command line lives here.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

/// Lets BI tools (Power BI, Tableau, Qlik) read the Azure Costs API without holding its
/// credentials: point them at this proxy on localhost; it adds the bearer token.
#[derive(Debug, Parser)]
#[command(name = "azure-costs-proxy", version, about, long_about = None)]
#[command(after_help = "\
Config file lookup: --config, else $AZURE_COSTS_PROXY_CONFIG, else ./proxy.toml, else
/etc/azure-costs-proxy/proxy.toml (Windows: %ProgramData%\\azure-costs-proxy\\proxy.toml), else
the environment alone (AZURE_COSTS_CLIENT_ID, AZURE_COSTS_CLIENT_SECRET, optional
AZURE_COSTS_PROXY_LISTEN, AZURE_COSTS_DELEGATE).

Exit codes: 0 clean shutdown or valid config, 1 runtime or STS failure, 2 config error
(healthcheck: 0 ready, 1 anything else; status: 0 ready, 1 not ready, 2 no answer).
Signals (run): SIGTERM/SIGINT drain and exit (a second one exits at once); SIGHUP reloads the
config and secrets, keeping the running config if the new one is invalid. On Windows: Ctrl-C
drains; as a service, stop drains and `sc control NAME paramchange` reloads.
Log level: RUST_LOG (default info), e.g. RUST_LOG=azure_costs_proxy=debug.

Try it without an account: azure-costs-proxy demo")]
pub struct Cli {
    /// Config file (TOML). See proxy.toml.example for every key.
    #[arg(long, short = 'c', global = true, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Log format on stderr: human-readable text, or one JSON object per line.
    #[arg(long, global = true, value_enum, default_value_t = LogFormat::Text)]
    pub log_format: LogFormat,

    /// Threads that serve requests. Default: half the CPUs this process may use, at least one
    /// (a sidecar leaves the rest to the BI server beside it; one thread proxies tens of
    /// thousands of requests a second).
    #[arg(long, global = true, env = "AZURE_COSTS_PROXY_WORKER_THREADS", value_name = "N",
          value_parser = clap::value_parser!(u16).range(1..=1024))]
    pub worker_threads: Option<u16>,

    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
}

impl Cli {
    /// `--worker-threads`, else half of `cpus` (the CPUs the process may run on), at least 1.
    pub fn worker_threads(&self, cpus: usize) -> usize {
        self.worker_threads.map_or((cpus / 2).max(1), usize::from)
    }
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve: forward BI requests to the Azure Costs API with a bearer token (the default).
    Run {
        /// Run under the Windows service manager: what `service install` registers. Not for a
        /// console, where plain `run` serves until Ctrl-C.
        #[arg(long)]
        service: bool,
    },
    /// Validate the config and its secrets, then print listeners, routes and credentials
    /// (never a secret). Exit 0 if valid, 2 if not.
    Check,
    /// Fetch one fresh token for a route, as a request on it would get (with its delegate), and
    /// print its type, expiry and a short fingerprint. The token itself only with --print.
    /// Exit 0 if the STS issued it, 1 if not, 2 on a config error or an unknown route.
    Token {
        /// Prefix of the route, as in its [[routes]] entry.
        #[arg(long, default_value = "/", value_name = "PREFIX")]
        route: String,
        /// Print the token alone on stdout (the description goes to stderr), for
        /// `curl -H "Authorization: Bearer $(azure-costs-proxy token --print)"`. Handle with care.
        #[arg(long)]
        print: bool,
    },
    /// Exit 0 if the running proxy is ready, 1 if not: for container HEALTHCHECK (no curl needed).
    ///
    /// Asks GET /readyz on the admin listener at [admin] address of the same config (0.0.0.0 is
    /// asked on 127.0.0.1). 1 means: not ready (no token yet, STS failing, shutting down), not
    /// running, admin disabled, no answer within --timeout, or a config error (Docker reserves 2).
    Healthcheck {
        /// Give up after this long.
        #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Print the running proxy's status: tokens (state, expiry, last STS error), routes
    /// (requests, latency, last upstream error), clients, the last reload, warnings. Asks GET
    /// /status.json on the admin listener at [admin] address of the same config (the page at /
    /// shows the same in a browser). Exit: 0 ready, 1 not ready, 2 no answer (it says which
    /// address it tried).
    Status {
        /// Print the JSON of /status.json instead of the report.
        #[arg(long)]
        json: bool,
        /// Give up after this long.
        #[arg(long, default_value = "5s", value_name = "DURATION", value_parser = humantime::parse_duration)]
        timeout: std::time::Duration,
    },
    /// Start a built-in Azure Costs simulator and the proxy in front of it, on loopback; prints a
    /// ready curl line. Needs no account. Runs until Ctrl-C.
    Demo {
        /// Address for the proxy (the simulator picks free ports of its own).
        #[arg(long, default_value = "127.0.0.1:8080", value_name = "ADDR")]
        listen: SocketAddr,
    },
    /// Make a key for a new client of a shared proxy: 32 random bytes from the operating system,
    /// base64url. Prints the key (give it to the client) and the [[clients]] lines to paste,
    /// with key_sha256, so that the config holds only the key's digest. Exit 0; 2 on a bad name.
    ClientKey {
        /// The client's name in the lines to paste: letters, digits, '.', '_', '-'.
        #[arg(long, default_value = "new-client", value_name = "NAME")]
        name: String,
    },
    /// Windows: manage the native Windows service (install registers `run --service --config
    /// FILE`). On other systems, use the systemd unit in systemd/.
    ///
    /// Exit 0 ok (status: the service runs), 1 failed (status: not running or not installed),
    /// 2 usage or not Windows.
    Service {
        /// What to do with the service.
        #[command(subcommand)]
        action: ServiceAction,
        /// The service's name; a second name installs a second instance.
        #[arg(
            long,
            global = true,
            default_value = "azure-costs-proxy",
            value_name = "NAME"
        )]
        name: String,
    },
    /// The simulated Azure Costs STS and API alone, without the proxy, for load tests and
    /// benchmarks: prints `API URL`, `STS URL` and `CLIENT_ID ID` lines, then serves until
    /// Ctrl-C. The client secret is read from $AZURE_COSTS_CLIENT_SECRET.
    #[command(hide = true)]
    Simulator(SimulatorArgs),
}

/// How the simulator alone slows down and limits its answers.
#[derive(Debug, Clone, clap::Args)]
pub struct SimulatorArgs {
    /// Delay every API answer by this long (e.g. "1s"): a slow upstream.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub api_delay: std::time::Duration,
    /// Delay every STS answer by this long: a slow token service, so that concurrent cold
    /// requests can be seen to share one call.
    #[arg(long, default_value = "0s", value_parser = humantime::parse_duration, value_name = "DURATION")]
    pub sts_delay: std::time::Duration,
    /// Answer at most this many API requests per second per token identity (the partner,
    /// or each team); beyond it, 429. 0: no limit.
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub api_rate_limit: u32,
    /// What a 429 of --api-rate-limit says: seconds, http-date or absent.
    #[arg(long, default_value = "seconds", value_name = "FORM",
          value_parser = ["seconds", "http-date", "absent"])]
    pub api_retry_after: String,
}

/// What `service` does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Subcommand)]
pub enum ServiceAction {
    /// Register the service (automatic start, restart on failure, virtual account
    /// NT SERVICE\NAME), create %ProgramData%\azure-costs-proxy\ with the config and logs\,
    /// and restrict that folder to SYSTEM, Administrators and the service.
    Install,
    /// Stop the service if it runs and remove it (the folder and its files stay).
    Uninstall,
    /// Start the service and wait until it runs.
    Start,
    /// Stop the service and wait until in-flight requests have drained.
    Stop,
    /// Print the service's state, process id, account and command line.
    Status,
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    /// Human-readable lines.
    Text,
    /// One JSON object per line, for log shippers.
    Json,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn worker_threads_default_to_half_the_cpus_and_can_be_set() {
        // Built directly: parsing would read AZURE_COSTS_PROXY_WORKER_THREADS from the
        // environment the tests run in.
        let cli = Cli {
            config: None,
            log_format: LogFormat::Text,
            worker_threads: None,
            command: None,
        };
        assert_eq!(cli.worker_threads(1), 1);
        assert_eq!(cli.worker_threads(2), 1);
        assert_eq!(cli.worker_threads(3), 1);
        assert_eq!(cli.worker_threads(8), 4);
        let cli = Cli::try_parse_from(["azure-costs-proxy", "--worker-threads", "3"]).unwrap();
        assert_eq!(cli.worker_threads(2), 3);
        assert!(Cli::try_parse_from(["azure-costs-proxy", "--worker-threads", "0"]).is_err());
    }
}
