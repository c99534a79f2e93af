//! A built-in Azure Costs simulator: an STS that issues and updates tokens like the vendor's, and an
//! API with sample cost data that checks them. It serves `azure-costs-proxy demo`, the integration
//! tests and the benchmarks: one fake, not three.
//!
//! Both servers bind 127.0.0.1:0, report their URLs, count what they see, can be told to misbehave
//! (STS down, slow, rejecting, answering garbage; API slow) and stop when the [`Simulator`] drops.
//!
//! ```no_run
//! # async fn f() -> std::io::Result<()> {
//! use azure_costs_proxy::simulator::Simulator;
//! let sim = Simulator::builder().token_ttl(std::time::Duration::from_secs(4)).spawn().await?;
//! println!("STS at {}, API at {}", sim.sts_url(), sim.api_url());
//! assert_eq!(sim.sts_calls(), 0);
//! # Ok(()) }
//! ```

mod api;
pub mod data;
mod limit;
mod state;
mod sts;

use std::collections::hash_map::RandomState;
use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;
use tokio::sync::watch;

pub use limit::{ApiRateLimit, RetryAfter};
pub use state::{IssuedToken, RecordedRequest, StsFault, TOKEN_PATH};
use state::{SimBody, State};

use crate::sync::lock;

/// Client id the simulator accepts unless the builder sets another.
pub const DEMO_CLIENT_ID: &str = "3f1c0d2e-demo-4c7a-9a51-azurecosts01";
/// Client secret the simulator accepts unless the builder sets another.
pub const DEMO_CLIENT_SECRET: &str = "demo-secret-not-for-production";
/// Configures a [`Simulator`].
#[derive(Debug, Clone)]
pub struct SimulatorBuilder {
    token_ttl: Duration,
    client_id: String,
    client_secret: String,
    record_limit: usize,
    api_tls: Option<Arc<rustls::ServerConfig>>,
    sts_tls: Option<Arc<rustls::ServerConfig>>,
}

impl SimulatorBuilder {
    /// Serves the API over TLS with this configuration (its URL becomes `https://localhost:PORT`);
    /// ALPN offers h2 and http/1.1 unless the configuration sets its own.
    pub fn api_tls(mut self, config: rustls::ServerConfig) -> Self {
        self.api_tls = Some(with_alpn(config));
        self
    }

    /// Serves the STS over TLS with this configuration (`https://localhost:PORT/...`).
    pub fn sts_tls(mut self, config: rustls::ServerConfig) -> Self {
        self.sts_tls = Some(with_alpn(config));
        self
    }

    /// Lifetime of issued tokens (`expires_in`); default 3600 s as the vendor's.
    pub fn token_ttl(mut self, ttl: Duration) -> Self {
        self.token_ttl = ttl;
        self
    }

    /// The one client id and secret the STS accepts.
    pub fn credentials(mut self, client_id: &str, client_secret: &str) -> Self {
        self.client_id = client_id.into();
        self.client_secret = client_secret.into();
        self
    }

    /// How many API requests are kept for [`Simulator::requests`] (oldest dropped first); 0 for
    /// none (benchmarks).
    pub fn record_limit(mut self, limit: usize) -> Self {
        self.record_limit = limit;
        self
    }

    /// Binds the STS and the API on 127.0.0.1:0 and starts serving.
    pub async fn spawn(self) -> std::io::Result<Simulator> {
        let (exports_open, _) = watch::channel(true);
        let state = Arc::new(State {
            client_id: self.client_id,
            client_secret: Mutex::new(self.client_secret),
            token_ttl: Mutex::new(self.token_ttl),
            tokens: Mutex::new(HashMap::new()),
            issued: Mutex::new(Vec::new()),
            issue_calls: AtomicUsize::new(0),
            update_calls: AtomicUsize::new(0),
            sts_fault: Mutex::new(None),
            api_delay: Mutex::new(Duration::ZERO),
            api_requests: AtomicUsize::new(0),
            api_connections: Arc::new(AtomicUsize::new(0)),
            recorded: Mutex::new(VecDeque::new()),
            record_limit: self.record_limit,
            bad_tokens: AtomicUsize::new(0),
            refuse_tokens: AtomicBool::new(false),
            refusal_status: std::sync::atomic::AtomicU16::new(401),
            any_team: AtomicBool::new(false),
            limiter: limit::Limiter::default(),
            exports_open,
            sts_open: watch::channel(true).0,
            sts_seen: watch::channel(0).0,
            exports_finished: AtomicUsize::new(0),
            exports_streaming: watch::channel(0).0,
            random: (RandomState::new(), AtomicU64::new(0)),
        });
        let (stop, stopped) = watch::channel(false);
        let sts_listener = TcpListener::bind("127.0.0.1:0").await?;
        let api_listener = TcpListener::bind("127.0.0.1:0").await?;
        let sts_addr = sts_listener.local_addr()?;
        let api_addr = api_listener.local_addr()?;
        let sts_scheme = if self.sts_tls.is_some() {
            "https://localhost"
        } else {
            "http://127.0.0.1"
        };
        let api_scheme = if self.api_tls.is_some() {
            "https://localhost"
        } else {
            "http://127.0.0.1"
        };
        let s = state.clone();
        tokio::spawn(serve(
            sts_listener,
            self.sts_tls,
            stopped.clone(),
            Arc::new(AtomicUsize::new(0)),
            move |req| sts::handle(s.clone(), req),
        ));
        let s = state.clone();
        tokio::spawn(serve(
            api_listener,
            self.api_tls,
            stopped,
            state.api_connections.clone(),
            move |req| api::handle(s.clone(), req),
        ));
        Ok(Simulator {
            sts_base: format!("{sts_scheme}:{}", sts_addr.port()),
            api_base: format!("{api_scheme}:{}", api_addr.port()),
            api_addr,
            state,
            stop,
        })
    }
}

/// A running simulator. Dropping it stops both servers and closes their connections.
#[derive(Debug)]
pub struct Simulator {
    sts_base: String,
    api_base: String,
    api_addr: SocketAddr,
    state: Arc<State>,
    stop: watch::Sender<bool>,
}

impl Drop for Simulator {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Simulator {
    /// A builder with the vendor's defaults and the demo credentials.
    pub fn builder() -> SimulatorBuilder {
        SimulatorBuilder {
            token_ttl: Duration::from_secs(3600),
            client_id: DEMO_CLIENT_ID.into(),
            client_secret: DEMO_CLIENT_SECRET.into(),
            record_limit: 10_000,
            api_tls: None,
            sts_tls: None,
        }
    }

    /// The token endpoint URL.
    pub fn sts_url(&self) -> String {
        format!("{}{TOKEN_PATH}", self.sts_base)
    }

    /// The API base URL.
    pub fn api_url(&self) -> String {
        self.api_base.clone()
    }

    /// The API's address.
    pub fn api_addr(&self) -> SocketAddr {
        self.api_addr
    }

    /// The accepted client id.
    pub fn client_id(&self) -> &str {
        &self.state.client_id
    }

    /// The accepted client secret.
    pub fn client_secret(&self) -> String {
        lock(&self.state.client_secret).clone()
    }

    /// STS calls of both kinds (issue and update), answered or not.
    pub fn sts_calls(&self) -> usize {
        self.issue_calls() + self.update_calls()
    }

    /// Client-credentials calls.
    pub fn issue_calls(&self) -> usize {
        self.state.issue_calls.load(Ordering::SeqCst)
    }

    /// `update_token` calls.
    pub fn update_calls(&self) -> usize {
        self.state.update_calls.load(Ordering::SeqCst)
    }

    /// Waits until the STS has received at least `n` calls (of either kind).
    pub async fn wait_for_sts_calls(&self, n: usize) {
        let mut seen = self.state.sts_seen.subscribe();
        let _ = seen.wait_for(|calls| *calls >= n).await;
    }

    /// Every token issued so far, in order.
    pub fn issued_tokens(&self) -> Vec<IssuedToken> {
        lock(&self.state.issued).clone()
    }

    /// API requests received (whether or not their token was good).
    pub fn api_requests(&self) -> usize {
        self.state.api_requests.load(Ordering::SeqCst)
    }

    /// Connections the API has accepted: how well the proxy's pool reuses them.
    pub fn api_connections(&self) -> usize {
        self.state.api_connections.load(Ordering::SeqCst)
    }

    /// The most recent API requests, oldest first.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        lock(&self.state.recorded).iter().cloned().collect()
    }

    /// API requests refused for a missing, unknown or expired token.
    pub fn bad_token_requests(&self) -> usize {
        self.state.bad_tokens.load(Ordering::SeqCst)
    }

    /// Revokes every token issued so far, as after a permission change: the API answers 401 to
    /// them and the STS no longer updates them. Tokens issued later are good.
    pub fn revoke_tokens(&self) {
        lock(&self.state.tokens).clear();
    }

    /// Rotates the client secret: from now on the STS accepts only `secret`. Tokens issued with
    /// the old one stay valid, as at the vendor.
    pub fn rotate_secret(&self, secret: &str) {
        *lock(&self.state.client_secret) = secret.to_string();
    }

    /// Makes the API answer 401 to every token, old or new (`false`: check them again).
    pub fn refuse_all_tokens(&self, refuse: bool) {
        self.state.refuse_tokens.store(refuse, Ordering::SeqCst);
    }

    /// Makes the API answer a bad token with `status` (401 by default; 403 as some APIs do).
    pub fn set_refusal_status(&self, status: u16) {
        self.state.refusal_status.store(status, Ordering::SeqCst);
    }

    /// Limits the API to `limit` (`None`: no limit): beyond it, 429 `rate_limited` with the
    /// `Retry-After` form it names. Counts start over.
    pub fn set_api_rate_limit(&self, limit: Option<ApiRateLimit>) {
        self.state.limiter.set(limit);
    }

    /// Requests the API answered 429 because of its rate limit.
    pub fn rate_limited_requests(&self) -> usize {
        self.state.limiter.limited.load(Ordering::SeqCst)
    }

    /// Makes the STS update tokens for any team id (`false`: only the sample teams; others are
    /// refused with 403 `invalid_delegate`).
    pub fn accept_any_team(&self, any: bool) {
        self.state.any_team.store(any, Ordering::SeqCst);
    }

    /// Makes the STS misbehave (`None`: behave).
    pub fn set_sts_fault(&self, fault: Option<StsFault>) {
        *lock(&self.state.sts_fault) = fault;
    }

    /// Lifetime of tokens issued from now on.
    pub fn set_token_ttl(&self, ttl: Duration) {
        *lock(&self.state.token_ttl) = ttl;
    }

    /// Delays every API answer by this long.
    pub fn set_api_delay(&self, delay: Duration) {
        *lock(&self.state.api_delay) = delay;
    }

    /// Makes exports stop after their first chunk until [`Simulator::release_exports`].
    pub fn hold_exports(&self) {
        self.state.exports_open.send_replace(false);
    }

    /// Lets held exports continue.
    pub fn release_exports(&self) {
        self.state.exports_open.send_replace(true);
    }

    /// Makes the STS hold every call (after counting it) until [`Simulator::release_sts`].
    pub fn hold_sts(&self) {
        self.state.sts_open.send_replace(false);
    }

    /// Lets held STS calls be answered.
    pub fn release_sts(&self) {
        self.state.sts_open.send_replace(true);
    }

    /// Exports whose last byte has been produced.
    pub fn exports_finished(&self) -> usize {
        self.state.exports_finished.load(Ordering::SeqCst)
    }

    /// Export answers that are still being produced or sent (their body not yet dropped).
    pub fn exports_streaming(&self) -> usize {
        *self.state.exports_streaming.borrow()
    }

    /// Waits until exactly `n` export answers are being produced or sent.
    pub async fn wait_for_exports_streaming(&self, n: usize) {
        let mut rx = self.state.exports_streaming.subscribe();
        let _ = rx.wait_for(|open| *open == n).await;
    }
}

/// Offers h2 and http/1.1 by ALPN unless the configuration chose already.
fn with_alpn(mut config: rustls::ServerConfig) -> Arc<rustls::ServerConfig> {
    if config.alpn_protocols.is_empty() {
        config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    }
    Arc::new(config)
}

/// Serves one listener (over TLS when configured) until `stopped` turns true; connections end
/// with it. `accepted` counts the connections.
async fn serve<F, Fut>(
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    mut stopped: watch::Receiver<bool>,
    accepted_count: Arc<AtomicUsize>,
    handler: F,
) where
    F: Fn(Request<Incoming>) -> Fut + Clone + Send + Sync + 'static,
    Fut: Future<Output = Response<SimBody>> + Send + 'static,
{
    let mut builder = auto::Builder::new(TokioExecutor::new());
    // Like a front end of a large API: hyper's default of 100 header lines would answer 431
    // to heads the proxy is meant to pass on.
    builder.http1().max_headers(16 * 1024);
    let acceptor = tls.map(tokio_rustls::TlsAcceptor::from);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            _ = stopped.wait_for(|s| *s) => return,
        };
        let Ok((stream, _)) = accepted else { continue };
        accepted_count.fetch_add(1, Ordering::SeqCst);
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let service = service_fn(move |req| {
            let handler = handler.clone();
            async move { Ok::<_, Infallible>(handler(req).await) }
        });
        let builder = builder.clone();
        let acceptor = acceptor.clone();
        let mut stopped = stopped.clone();
        tokio::spawn(async move {
            let connection = async {
                match acceptor {
                    Some(acceptor) => match acceptor.accept(stream).await {
                        Ok(tls) => {
                            let _ = builder.serve_connection(TokioIo::new(tls), service).await;
                        }
                        Err(e) => tracing::debug!(error = %e, "simulator: TLS handshake failed"),
                    },
                    None => {
                        let _ = builder
                            .serve_connection(TokioIo::new(stream), service)
                            .await;
                    }
                }
            };
            tokio::select! {
                () = connection => {}
                _ = stopped.wait_for(|s| *s) => {}
            }
        });
    }
}
