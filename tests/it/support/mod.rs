//! Test support: spawn the proxy in-process on 127.0.0.1:0 in front of a simulator, with a
//! builder whose defaults fit most tests. Nothing more.
//!
//! ```ignore
//! let proxy = Proxy::builder().route(route("/reports").upstream_path("/v1/costs")).spawn().await;
//! assert_eq!(proxy.get("/reports/by-service").await.status(), 200);
//! assert_eq!(proxy.sim.issue_calls(), 1);
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ::tokio::io::{AsyncReadExt, AsyncWriteExt};
use ::tokio::net::{TcpListener, TcpStream};
use ::tokio::sync::{mpsc, oneshot};
use azure_costs_proxy::live::Reloaded;
use azure_costs_proxy::simulator::{Simulator, StsFault};
use azure_costs_proxy::watch::WatchTiming;
use azure_costs_proxy::{ReloadRequest, Reloader};

pub(crate) mod config;
pub(crate) mod connect_proxy;
pub(crate) mod pki;
pub(crate) mod process;
pub(crate) mod tokio;

pub(crate) use config::{ClientEntry, RouteSpec, TestConfig, env, file, route};
use process::Scratch;

/// The SHA-256 of `key` in hex, as `client-key` prints it.
pub(crate) fn sha256_hex(key: &str) -> String {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, key.as_bytes());
    digest.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// A proxy running in this process, in front of its simulator; stopped when dropped.
pub(crate) struct Proxy {
    /// The data-plane listener.
    pub(crate) addr: SocketAddr,
    /// The admin listener.
    pub(crate) admin: SocketAddr,
    /// The fake STS and API behind the proxy.
    pub(crate) sim: Simulator,
    /// A pooled client for [`Proxy::get`], as a BI tool keeps its connections.
    client: reqwest::Client,
    stop: Option<oneshot::Sender<()>>,
    /// `run_with`, until it returns.
    serving: Option<::tokio::task::JoinHandle<anyhow::Result<()>>>,
    /// Set when the config comes from a file (see [`ProxyBuilder::config_file_in`]).
    file: Option<ConfigFile>,
}

/// A config file the proxy reloads on request, and the secret file it names.
struct ConfigFile {
    path: PathBuf,
    secret: PathBuf,
    reloads: mpsc::Sender<ReloadRequest>,
    /// Every config written keeps `reload.watch = false`.
    signal_only: bool,
}

/// Something done to the simulator before the proxy starts.
type SimStep = Box<dyn FnOnce(&Simulator)>;

/// How to start a [`Proxy`]: by default its own simulator and [`TestConfig::new`].
#[derive(Default)]
pub(crate) struct ProxyBuilder {
    sim: Option<Simulator>,
    /// Done to the simulator before the proxy starts.
    before_start: Vec<SimStep>,
    config: TestConfig,
    dir: Option<PathBuf>,
    /// A config file the test wrote itself.
    path: Option<PathBuf>,
    signal_only: bool,
    watch: WatchTiming,
}

impl Proxy {
    /// A builder with the defaults: a fresh simulator, no routes, the secret in the environment.
    pub(crate) fn builder() -> ProxyBuilder {
        ProxyBuilder::default()
    }

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

    /// Waits until the API has received `count` requests, at most 5 s.
    pub(crate) async fn wait_for_api_requests(&self, count: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        while self.sim.requests().len() < count {
            assert!(
                std::time::Instant::now() < deadline,
                "the API never got {count} requests"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    /// Waits until `/metrics` shows `line`, at most 5 s.
    pub(crate) async fn wait_for_metric(&self, line: &str) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
        loop {
            let metrics = self.metrics().await;
            if metrics.contains(line) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "no {line} in\n{metrics}"
            );
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
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

    /// Signals shutdown and waits (20 s at most) until `run_with` has returned.
    pub(crate) async fn stop(&mut self) {
        self.begin_stop();
        if let Some(serving) = self.serving.take() {
            let done = ::tokio::time::timeout(Duration::from_secs(20), serving).await;
            let served = done.expect("run_with returns after shutdown");
            served
                .expect("run_with ran")
                .expect("run_with ended cleanly");
        }
    }

    /// Whether the proxy has stopped taking reload requests (its reload task is gone).
    pub(crate) fn reloads_closed(&self) -> bool {
        self.file().reloads.is_closed()
    }

    fn file(&self) -> &ConfigFile {
        self.file
            .as_ref()
            .expect("a proxy started with ProxyBuilder::config_file_in")
    }

    /// The config file it was started from.
    pub(crate) fn config_path(&self) -> &std::path::Path {
        &self.file().path
    }

    /// Replaces the config file with `config` (its secret still read from the same file); the
    /// proxy sees it at the next [`Proxy::reload`].
    pub(crate) fn rewrite_config(&self, config: TestConfig) {
        let file = self.file();
        let text = self.config_text(config);
        std::fs::write(&file.path, text).expect("write the config file");
    }

    /// The text [`Proxy::rewrite_config`] writes for `config`.
    pub(crate) fn config_text(&self, config: TestConfig) -> String {
        let file = self.file();
        let mut config = config.secret_file(file.secret.clone());
        if file.signal_only {
            config = config.set("reload.watch", false);
        }
        config.text(&self.sim)
    }

    /// The secret file the config names.
    pub(crate) fn secret_path(&self) -> &std::path::Path {
        &self.file().secret
    }

    /// `azure_costs_proxy_config_reloads_total{outcome,trigger}` now.
    pub(crate) async fn reloads(&self, outcome: &str, trigger: &str) -> u64 {
        let series = format!(
            "azure_costs_proxy_config_reloads_total{{outcome=\"{outcome}\",trigger=\"{trigger}\"}} "
        );
        let metrics = self.metrics().await;
        let line = metrics
            .lines()
            .find_map(|l| l.strip_prefix(series.as_str()));
        line.and_then(|n| n.trim().parse().ok()).unwrap_or(0)
    }

    /// Waits (20 s at most) until `reloads(outcome, trigger)` is at least `count`; returns it.
    pub(crate) async fn wait_for_reloads(&self, outcome: &str, trigger: &str, count: u64) -> u64 {
        let deadline = ::tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let now = self.reloads(outcome, trigger).await;
            if now >= count {
                return now;
            }
            assert!(
                ::tokio::time::Instant::now() < deadline,
                "{now} {outcome} reloads by {trigger}, waited for {count}"
            );
            ::tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Asks for a reload (as SIGHUP does) and waits for its outcome.
    pub(crate) async fn reload(&self) -> Result<Reloaded, String> {
        let (done, outcome) = oneshot::channel();
        let request = ReloadRequest {
            done: Some(done),
            ..ReloadRequest::default()
        };
        let sent = self.file().reloads.send(request).await;
        sent.expect("the proxy takes reload requests");
        outcome.await.expect("the reload answers")
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.begin_stop();
    }
}

impl ProxyBuilder {
    /// In front of `sim` (set up beforehand: faults, held calls, token lifetime).
    pub(crate) fn sim(mut self, sim: Simulator) -> Self {
        self.sim = Some(sim);
        self
    }

    /// Has the simulator answer token requests with `fault` from the start (before the warm-up).
    pub(crate) fn sts_fault(self, fault: StsFault) -> Self {
        self.before_start(move |sim| sim.set_sts_fault(Some(fault)))
    }

    /// Has the simulator issue tokens that live `ttl` (the first one included).
    pub(crate) fn token_ttl(self, ttl: Duration) -> Self {
        self.before_start(move |sim| sim.set_token_ttl(ttl))
    }

    fn before_start(mut self, step: impl FnOnce(&Simulator) + 'static) -> Self {
        self.before_start.push(Box::new(step));
        self
    }

    /// The whole config at once.
    pub(crate) fn config(mut self, config: TestConfig) -> Self {
        self.config = config;
        self
    }

    /// Sets a config key, as [`TestConfig::set`].
    pub(crate) fn set(mut self, key: &str, value: impl Into<toml::Value>) -> Self {
        self.config = self.config.set(key, value);
        self
    }

    /// Sets an environment variable for the config, as [`TestConfig::env_var`].
    pub(crate) fn env_var(mut self, name: &str, value: &str) -> Self {
        self.config = self.config.env_var(name, value);
        self
    }

    /// Adds a client, as [`TestConfig::client`].
    pub(crate) fn client(mut self, client: ClientEntry) -> Self {
        self.config = self.config.client(client);
        self
    }

    /// Adds a route, as [`TestConfig::route`].
    pub(crate) fn route(mut self, route: RouteSpec) -> Self {
        self.config = self.config.route(route);
        self
    }

    /// Loads the config as `run` loads a file: written to `dir/proxy.toml`, the secret read from
    /// `dir/secret` (written with the simulator's secret), nothing from the environment; the
    /// proxy then reloads on [`Proxy::reload`].
    pub(crate) fn config_file_in(mut self, dir: &Scratch) -> Self {
        self.dir = Some(dir.0.clone());
        self
    }

    /// Loads the config from `path`, a file the test wrote (with its secrets); reloads as
    /// [`ProxyBuilder::config_file_in`], but [`Proxy::rewrite_config`] is not for it. Only the
    /// symlink (Kubernetes volume) test uses it, which is Unix-only.
    #[cfg(unix)]
    pub(crate) fn config_path(mut self, path: PathBuf) -> Self {
        self.path = Some(path);
        self
    }

    /// Only a signal ([`Proxy::reload`]) reloads: `reload.watch = false` in every config
    /// written, so that a test of explicit reloads is not raced by the file watch.
    pub(crate) fn signal_only(mut self) -> Self {
        self.signal_only = true;
        self.config = self.config.set("reload.watch", false);
        self
    }

    /// How the file watch notices changes (default: as in production).
    pub(crate) fn watch_timing(mut self, timing: WatchTiming) -> Self {
        self.watch = timing;
        self
    }

    /// Starts the proxy on 127.0.0.1:0 with an admin listener on 127.0.0.1:0.
    pub(crate) async fn spawn(self) -> Proxy {
        tokio::assert_bounded();
        let sim = match self.sim {
            Some(sim) => sim,
            None => simulator().await,
        };
        for step in self.before_start {
            step(&sim);
        }
        let (path, secret) = match (self.path, self.dir) {
            (Some(path), _) => (path, PathBuf::new()),
            (None, Some(dir)) => {
                let secret = dir.join("secret");
                std::fs::write(&secret, sim.client_secret()).expect("write the secret file");
                let path = dir.join("proxy.toml");
                let text = self.config.secret_file(secret.clone()).text(&sim);
                std::fs::write(&path, text).expect("write the config file");
                (path, secret)
            }
            (None, None) => {
                let config = self.config.parse(&sim);
                return launch(sim, config, None, self.watch).await;
            }
        };
        let load = {
            let path = path.clone();
            move || azure_costs_proxy::config::load(Some(&path), &|_: &str| None)
        };
        let config = load().expect("test config is valid");
        let (reloads, requests) = mpsc::channel(1);
        let reloader = Reloader {
            requests,
            load: std::sync::Arc::new(load),
        };
        let mut proxy = launch(sim, config, Some(reloader), self.watch).await;
        proxy.file = Some(ConfigFile {
            path,
            secret,
            reloads,
            signal_only: self.signal_only,
        });
        proxy
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

async fn launch(
    sim: Simulator,
    config: azure_costs_proxy::config::Config,
    reloader: Option<Reloader>,
    watch: WatchTiming,
) -> Proxy {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.expect("bind admin");
    let admin = admin_listener.local_addr().expect("admin addr");
    let (stop, stopped) = oneshot::channel::<()>();
    let options = azure_costs_proxy::Options {
        admin: Some(admin_listener),
        reloader,
        systemd: false,
        watch,
        http1: http1_engine(),
    };
    let serving = ::tokio::spawn(azure_costs_proxy::run_with(
        config,
        listener,
        options,
        async {
            let _ = stopped.await;
        },
    ));
    Proxy {
        addr,
        admin,
        sim,
        client: client(),
        stop: Some(stop),
        serving: Some(serving),
        file: None,
    }
}

/// The HTTP/1.1 server the proxy under test uses: the lean one, or hyper's when
/// `ACP_TEST_HTTP1=hyper` (`.ci/run` runs the hardening tests both ways).
fn http1_engine() -> azure_costs_proxy::http1::Engine {
    match std::env::var("ACP_TEST_HTTP1").as_deref() {
        Ok("hyper") => azure_costs_proxy::http1::Engine::Hyper,
        _ => azure_costs_proxy::http1::Engine::Lean,
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

/// An address nothing listens on, for good: a socket bound to it that never listens is kept for
/// the rest of the test run, so connections are refused and no other test can take the port
/// (one that was bound and released could be reused by a server that accepts and stays silent).
pub(crate) async fn closed_port() -> SocketAddr {
    static HELD: std::sync::Mutex<Vec<::tokio::net::TcpSocket>> = std::sync::Mutex::new(Vec::new());
    let socket = ::tokio::net::TcpSocket::new_v4().expect("socket");
    socket
        .bind(SocketAddr::from(([127, 0, 0, 1], 0)))
        .expect("bind");
    let addr = socket.local_addr().expect("addr");
    HELD.lock().unwrap_or_else(|e| e.into_inner()).push(socket);
    addr
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
