//! `azure-costs-proxy demo`: the simulator plus the proxy in front of it, on loopback.

use std::net::SocketAddr;

use anyhow::Context as _;
use tokio::net::TcpListener;

use crate::cli::SimulatorArgs;
use crate::config::{self, Config, ConfigError};
use crate::simulator::Simulator;

/// Name of the (simulated) secret in the demo config; never a real secret.
const DEMO_SECRET_VAR: &str = "AZURE_COSTS_DEMO_SECRET";

/// The demo configuration: the proxy on `listen`, the API and STS of `sim`, a `/` route, CSP
/// routes `/customers/contoso` and `/customers/fabrikam` acting for those customer teams (the
/// latter with a fresh token per transaction), and one `/teams/{delegate}` route for all three
/// sample teams.
pub fn demo_config(sim: &Simulator, listen: SocketAddr) -> Result<Config, ConfigError> {
    let text = format!(
        r#"
[listen]
address = "{listen}"

[upstream]
url = "{api}"

[sts]
token_url = "{sts}"

[credentials.default]
client_id = "{client_id}"
client_secret = {{ env = "{DEMO_SECRET_VAR}" }}

[[routes]]
prefix = "/"

[[routes]]
prefix = "/customers/contoso"
delegate = "TEAM-CONTOSO"

[[routes]]
prefix = "/customers/fabrikam"
delegate = "TEAM-FABRIKAM"
token_mode = "per_transaction"

[[routes]]
prefix = "/teams/{{delegate}}"
delegates = ["TEAM-CONTOSO", "TEAM-FABRIKAM", "TEAM-WOODGROVE"]
"#,
        api = sim.api_url(),
        sts = sim.sts_url(),
        client_id = sim.client_id(),
    );
    let secret = sim.client_secret().to_string();
    config::from_toml(&text, "demo", &move |name: &str| {
        (name == DEMO_SECRET_VAR).then(|| secret.clone())
    })
}

/// The demo's address rule: loopback only (it serves a credential, if a simulated one).
pub fn check_listen(listen: SocketAddr) -> Result<(), String> {
    if listen.ip().is_loopback() {
        Ok(())
    } else {
        Err(format!(
            "the demo listens on loopback only ({listen} is not); use --listen 127.0.0.1:PORT"
        ))
    }
}

/// Runs the demo until `shutdown` resolves.
pub async fn run(
    listen: SocketAddr,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    check_listen(listen).map_err(anyhow::Error::msg)?;
    // The demo has no test reading recorded requests: keep none.
    let sim = Simulator::builder()
        .record_limit(0)
        .spawn()
        .await
        .context("starting the simulator")?;
    let listener = TcpListener::bind(listen).await.with_context(|| {
        format!("cannot listen on {listen}; pick another address with --listen 127.0.0.1:PORT")
    })?;
    let local = listener.local_addr()?;
    let config = demo_config(&sim, local)?;
    // The admin endpoints on their usual port, or any free one if that is taken.
    let admin = match TcpListener::bind(config.admin.address).await {
        Ok(l) => l,
        Err(_) => TcpListener::bind((local.ip(), 0))
            .await
            .context("binding the admin listener")?,
    };
    let admin_url = format!("http://{}", admin.local_addr()?);
    let base = format!("http://{local}");
    println!(
        "\nazure-costs-proxy demo: the proxy on {base}, in front of a simulated Azure Costs API\n\
         (STS {sts}, API {api}). No account needed; the BI side sends no credentials.\n\n\
         Try:\n  \
         curl -s '{base}/v1/costs/by-service?month=2026-10'\n  \
         curl -s '{base}/v1/teams'\n  \
         curl -s '{base}/customers/contoso/v1/costs/by-service?month=2026-10'   # CSP: acts for Contoso\n  \
         curl -s '{base}/customers/fabrikam/v1/teams'   # CSP: Fabrikam, a fresh token per transaction\n  \
         curl -s '{base}/teams/TEAM-WOODGROVE/v1/costs/by-service?month=2026-10'   # CSP: any listed team by its id\n  \
         curl -s '{base}/v1/costs/export?rows=100000' | head\n\n\
         Status page: {admin_url}/ (open it in a browser)\n\
         Admin: {admin_url}/readyz and {admin_url}/metrics\n\n\
         Press Ctrl-C to stop.\n",
        sts = sim.sts_url(),
        api = sim.api_url(),
    );
    let options = crate::Options {
        admin: Some(admin),
        ..crate::Options::default()
    };
    crate::run_with(config, listener, options, shutdown).await
}

/// `simulator`: the simulated STS and API alone, for load tests and benchmarks that run the
/// proxy as its own process. The client secret comes from `$AZURE_COSTS_CLIENT_SECRET`, so the
/// proxy can be configured from the environment alone.
pub async fn simulate(
    args: SimulatorArgs,
    shutdown: impl std::future::Future<Output = ()>,
) -> anyhow::Result<()> {
    let SimulatorArgs {
        api_delay,
        sts_delay,
        api_rate_limit,
        api_retry_after,
    } = args;
    let retry_after: crate::simulator::RetryAfter =
        api_retry_after.parse().map_err(anyhow::Error::msg)?;
    let secret = config::process_env("AZURE_COSTS_CLIENT_SECRET")
        .filter(|s| !s.is_empty())
        .context("set AZURE_COSTS_CLIENT_SECRET to the secret the simulated STS should accept")?;
    let client_id = "00000000-0000-4000-8000-00000000b1a5";
    let sim = Simulator::builder()
        .record_limit(0)
        .credentials(client_id, &secret)
        .spawn()
        .await
        .context("starting the simulator")?;
    sim.set_api_delay(api_delay);
    if api_rate_limit > 0 {
        sim.set_api_rate_limit(Some(crate::simulator::ApiRateLimit {
            per_second: api_rate_limit,
            retry_after,
        }));
    }
    if !sts_delay.is_zero() {
        sim.set_sts_fault(Some(crate::simulator::StsFault::Slow(sts_delay)));
    }
    println!("API {}", sim.api_url());
    println!("STS {}", sim.sts_url());
    println!("CLIENT_ID {client_id}");
    shutdown.await;
    Ok(())
}
