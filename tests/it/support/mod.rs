//! Test support: spawn the proxy in-process on 127.0.0.1:0 in front of a simulator. Nothing more.

use std::net::SocketAddr;

use ::tokio::io::{AsyncReadExt, AsyncWriteExt};
use ::tokio::net::{TcpListener, TcpStream};
use ::tokio::sync::{mpsc, oneshot};
use azure_costs_proxy::config;
use azure_costs_proxy::live::Reloaded;
use azure_costs_proxy::simulator::Simulator;
use azure_costs_proxy::{ReloadRequest, Reloader};

pub(crate) mod pki;
pub(crate) mod process;
pub(crate) mod tokio;

/// What a test changes in the generated config.
#[derive(Default, Clone)]
pub(crate) struct Setup {
    /// Extra lines inside `[listen]`.
    pub(crate) listen: String,
    /// Replaces the simulator's API URL.
    pub(crate) upstream_url: Option<String>,
    /// Replaces the simulator's STS URL.
    pub(crate) sts_url: Option<String>,
    /// Extra lines inside `[upstream]`.
    pub(crate) upstream: String,
    /// Extra lines inside `[sts]`.
    pub(crate) sts: String,
    /// Whole extra sections (`[token]`, `[[routes]]`, ...).
    pub(crate) extra: String,
}

/// The secret as tests configure it (read through `{ env = "SIM_SECRET" }`).
pub(crate) fn config_text(sim: &Simulator, setup: &Setup) -> String {
    format!(
        "[listen]\naddress = \"127.0.0.1:0\"\n{}\n\n\
         [admin]\naddress = \"127.0.0.1:0\"\n\n\
         [upstream]\nurl = \"{}\"\n{}\n\n\
         [sts]\ntoken_url = \"{}\"\n{}\n\n\
         [credentials.default]\nclient_id = \"{}\"\nclient_secret = {{ env = \"SIM_SECRET\" }}\n\n{}\n",
        setup.listen,
        setup.upstream_url.clone().unwrap_or_else(|| sim.api_url()),
        setup.upstream,
        setup.sts_url.clone().unwrap_or_else(|| sim.sts_url()),
        setup.sts,
        sim.client_id(),
        setup.extra,
    )
}

/// The generated config with `extra` sections, its secret read from the file `dir/secret`
/// (written here with the simulator's secret) instead of the environment.
pub(crate) fn secret_file_config(sim: &Simulator, dir: &process::Scratch, extra: &str) -> String {
    let secret = dir.write("secret", &sim.client_secret());
    let setup = Setup {
        extra: extra.into(),
        ..Setup::default()
    };
    config_text(sim, &setup).replace(
        "client_secret = { env = \"SIM_SECRET\" }",
        &format!("client_secret = {{ file = \"{}\" }}", secret.display()),
    )
}

/// Parses the generated config with the simulator's secret in the (fake) environment.
pub(crate) fn config(sim: &Simulator, setup: &Setup) -> config::Config {
    let secret = sim.client_secret().to_string();
    config::from_toml(&config_text(sim, setup), "test.toml", &move |name: &str| {
        (name == "SIM_SECRET").then(|| secret.clone())
    })
    .expect("test config is valid")
}

/// A proxy running in this process.
pub(crate) struct Running {
    pub(crate) addr: SocketAddr,
    pub(crate) admin: SocketAddr,
    /// A pooled client for [`Running::get`], as a BI tool keeps its connections.
    client: reqwest::Client,
    pub(crate) sim: Simulator,
    stop: Option<oneshot::Sender<()>>,
}

impl Running {
    /// `http://127.0.0.1:PORT{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GET `path` through the proxy.
    pub(crate) async fn get(&self, path: &str) -> reqwest::Response {
        self.client
            .get(self.url(path))
            .send()
            .await
            .expect("request through the proxy")
    }

    /// The admin listener's `/metrics` text.
    pub(crate) async fn metrics(&self) -> String {
        let r = self.client.get(self.admin_url("/metrics")).send().await;
        r.expect("GET /metrics").text().await.expect("metrics text")
    }

    /// `http://ADMIN{path}` on the admin listener.
    pub(crate) fn admin_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.admin)
    }

    /// Signals shutdown without waiting for it.
    pub(crate) fn begin_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// A simulator with default settings.
pub(crate) async fn simulator() -> Simulator {
    tokio::assert_bounded();
    Simulator::builder()
        .spawn()
        .await
        .expect("simulator starts")
}

/// Starts the proxy in front of `sim`.
pub(crate) async fn start(sim: Simulator, setup: Setup) -> Running {
    let cfg = config(&sim, &setup);
    launch(sim, cfg, None).await
}

/// Starts the proxy from the config file at `path` (read as `run` reads it; the environment
/// lookup sees nothing), with live reload through [`reload`] on the returned sender.
pub(crate) async fn start_from_file(
    sim: Simulator,
    path: std::path::PathBuf,
) -> (Running, mpsc::Sender<ReloadRequest>) {
    let load = move || config::load(Some(&path), &|_: &str| None);
    let cfg = load().expect("test config is valid");
    let (tx, requests) = mpsc::channel(1);
    let reloader = Reloader {
        requests,
        load: Box::new(load),
    };
    (launch(sim, cfg, Some(reloader)).await, tx)
}

/// Asks for a reload and waits for its outcome.
pub(crate) async fn reload(tx: &mpsc::Sender<ReloadRequest>) -> Result<Reloaded, String> {
    let (done, outcome) = oneshot::channel();
    tx.send(ReloadRequest { done: Some(done) })
        .await
        .expect("the proxy takes reload requests");
    outcome.await.expect("the reload answers")
}

async fn launch(sim: Simulator, cfg: config::Config, reloader: Option<Reloader>) -> Running {
    tokio::assert_bounded();
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let admin = admin_listener.local_addr().expect("admin addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let options = azure_costs_proxy::Options {
        admin: Some(admin_listener),
        reloader,
        systemd: false,
    };
    tokio::spawn(azure_costs_proxy::run_with(cfg, listener, options, async {
        let _ = stopped.await;
    }));
    Running {
        addr,
        admin,
        client: client(),
        sim,
        stop: Some(stop),
    }
}

/// A plain HTTP client without connection pooling surprises.
pub(crate) fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .expect("client")
}

/// A client that speaks HTTP/2 in the clear (h2c) from the first byte.
pub(crate) fn h2_client() -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .http2_prior_knowledge()
        .build()
        .expect("h2c client")
}

/// An address nothing listens on (bound, then released).
pub(crate) async fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    l.local_addr().expect("addr")
}

/// Sends raw bytes and reads the whole answer (the request should say `Connection: close`).
pub(crate) async fn raw(addr: SocketAddr, request: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut out = Vec::new();
    stream.read_to_end(&mut out).await.expect("read answer");
    String::from_utf8_lossy(&out).into_owned()
}

/// Status code of a raw HTTP/1.1 answer.
pub(crate) fn raw_status(answer: &str) -> u16 {
    answer
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}
