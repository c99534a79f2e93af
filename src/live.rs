//! The running configuration, replaceable while serving (SIGHUP). Every request takes the
//! current [`Proxy`] when it starts and keeps it to the end, so a reload never touches a request
//! in flight nor closes a connection; new requests see the new config.
//!
//! A reload builds the whole request path again from the new config (routes, upstream client,
//! token source, Host guard). The tokens of credentials that did not change move to the new token
//! source; the others are discarded, so a rotated secret or a changed STS takes effect at once.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::task::JoinHandle;

use crate::config::{Config, DelegateSet};
use crate::inbound::InboundPolicy;
use crate::metrics::Metrics;
use crate::proxy::{Proxy, Settings};
use crate::routes::RouteTable;
use crate::tally::Tally;
use crate::token::TokenMode;
use crate::token::{StsClient, TokenKey, TokenSource};
use crate::upstream::Upstream;

/// The current request path and the config it was built from.
pub struct Live {
    proxy: ArcSwap<Proxy>,
    state: Mutex<State>,
    local: SocketAddr,
    metrics: Arc<Metrics>,
    /// Each route's and client's figures for the status page, across reloads.
    tally: Arc<Tally>,
    /// When the process started serving, by both clocks.
    started: (SystemTime, Instant),
}

/// A reload that ended, for the status page.
#[derive(Debug, Clone)]
pub struct ReloadNote {
    /// When it ended.
    pub at: SystemTime,
    /// What asked for it (`signal`, `file`, `service`).
    pub trigger: &'static str,
    /// Why the running config stayed, if it did (the line and key; never a value).
    pub error: Option<String>,
}

/// What a reload replaces besides the proxy.
struct State {
    config: Config,
    /// The last reload since the start.
    last_reload: Option<ReloadNote>,
    /// Keep the interval-mode tokens of the current proxy fresh.
    keepers: Vec<JoinHandle<()>>,
    /// Shutting down: no more reloads, no more keepers.
    closed: bool,
}

impl Drop for State {
    fn drop(&mut self) {
        // A dropped JoinHandle does not stop its task.
        for keeper in self.keepers.drain(..) {
            keeper.abort();
        }
    }
}

impl std::fmt::Debug for Live {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Live")
            .field("local", &self.local)
            .field("proxy", &self.proxy.load())
            .finish_non_exhaustive()
    }
}

/// What a reload changed, for its log line.
#[derive(Debug, Default)]
pub struct Reloaded {
    /// Credentials whose tokens were discarded (new, changed, or a changed STS or token policy).
    pub discarded: Vec<String>,
    /// Tokens carried over from the old config.
    pub kept_tokens: usize,
    /// Settings that only a restart applies (listen and admin addresses).
    pub need_restart: Vec<&'static str>,
}

impl Live {
    /// Builds the request path for `config` on the listener at `local` and starts warming its
    /// tokens. Must run inside the Tokio runtime.
    pub fn start(config: Config, local: SocketAddr, metrics: Arc<Metrics>) -> anyhow::Result<Self> {
        let tally = Arc::new(Tally::default());
        let proxy = Arc::new(build(&config, local, &metrics, &tally, None)?);
        let keepers = keep_tokens_warm(&proxy);
        Ok(Live {
            proxy: ArcSwap::new(proxy),
            state: Mutex::new(State {
                config,
                last_reload: None,
                keepers,
                closed: false,
            }),
            local,
            metrics,
            tally,
            started: (SystemTime::now(), Instant::now()),
        })
    }

    /// The request path new requests take.
    pub fn proxy(&self) -> Arc<Proxy> {
        self.proxy.load_full()
    }

    /// The metrics every generation of the proxy counts in.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Each route's and client's figures.
    pub(crate) fn tally(&self) -> &Tally {
        &self.tally
    }

    /// When the process started serving (wall clock), and how long ago.
    pub fn started(&self) -> (SystemTime, Duration) {
        (self.started.0, self.started.1.elapsed())
    }

    /// The data-plane listener's address.
    pub fn local(&self) -> SocketAddr {
        self.local
    }

    /// Looks at the current config. `f` runs under the lock that reloads take: it must not call
    /// back into `Live`.
    pub(crate) fn inspect<R>(&self, f: impl FnOnce(&Config) -> R) -> R {
        f(&self.lock().config)
    }

    /// The last reload since the start, if any.
    pub fn last_reload(&self) -> Option<ReloadNote> {
        self.lock().last_reload.clone()
    }

    /// Remembers how a reload ended, for the status page.
    pub fn note_reload(&self, note: ReloadNote) {
        self.lock().last_reload = Some(note);
    }

    /// Time in-flight requests get after a shutdown signal, from the current config.
    pub fn shutdown_grace(&self) -> Duration {
        self.lock().config.listen.shutdown_grace
    }

    /// Connections served at once (bound at start-up; a reload asks for a restart to change it).
    pub fn max_connections(&self) -> usize {
        self.lock().config.listen.max_connections
    }

    /// The files `[reload] watch` watches for the current config: `None` when it is off or the
    /// config names no file (it came from the environment alone).
    pub fn watched_files(&self) -> Option<Vec<PathBuf>> {
        let state = self.lock();
        let config = &state.config;
        (config.reload.watch && !config.files.is_empty()).then(|| config.files.clone())
    }

    /// `[log] file`, if set.
    pub fn log_file(&self) -> Option<PathBuf> {
        self.lock().config.log.file.clone()
    }

    /// Replaces the config: new requests take a request path built from `config`. Connections
    /// and requests in flight are untouched. Tokens of unchanged credentials are kept. On an
    /// error, or once [`Live::close`] has run, nothing changes.
    pub async fn reload(&self, config: Config) -> anyhow::Result<Reloaded> {
        {
            let state = self.lock();
            if let Some(refusal) = state.config.listener_change(&config) {
                anyhow::bail!("{refusal}");
            }
        }
        let old = self.proxy();
        let proxy = build(&config, self.local, &self.metrics, &self.tally, Some(&old))?;
        let (discarded, need_restart) = {
            let state = self.lock();
            (
                state.config.discarded_credentials(&config),
                state.config.restart_settings(&config),
            )
        };
        let kept_tokens = proxy
            .tokens()
            .adopt(old.tokens(), |name| {
                config.credentials.contains_key(name) && !discarded.iter().any(|d| d == name)
            })
            .await;
        let proxy = Arc::new(proxy);
        let (old_keepers, gone) = {
            let mut state = self.lock();
            if state.closed {
                anyhow::bail!("shutting down: the reload is ignored");
            }
            let kept = token_labels(&config);
            let gone = token_labels(&state.config)
                .into_iter()
                .filter(|pair| !kept.contains(pair))
                .collect::<Vec<_>>();
            let keepers = keep_tokens_warm(&proxy);
            self.proxy.store(proxy);
            state.config = config;
            (std::mem::replace(&mut state.keepers, keepers), gone)
        };
        for keeper in old_keepers {
            keeper.abort();
        }
        for (credential, delegate) in gone {
            self.metrics.forget_token(&credential, delegate.as_deref());
        }
        Ok(Reloaded {
            discarded,
            kept_tokens,
            need_restart,
        })
    }

    /// Shutting down: stops the token keepers, and reloads from now on change nothing.
    pub fn close(&self) {
        let mut state = self.lock();
        state.closed = true;
        for keeper in state.keepers.drain(..) {
            keeper.abort();
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        crate::sync::lock(&self.state)
    }
}

/// The request path for `config` on the listener at `local`; `previous`, the one it replaces
/// (its clients' limits carry over where unchanged); routes and clients count in `tally`. Does
/// not start anything: no token is fetched until a request (or [`Live::start`]'s keepers) asks.
pub(crate) fn build(
    config: &Config,
    local: SocketAddr,
    metrics: &Arc<Metrics>,
    tally: &Tally,
    previous: Option<&Proxy>,
) -> anyhow::Result<Proxy> {
    let tls = config
        .outbound
        .trust
        .client_config()
        .map_err(anyhow::Error::msg)
        .context("TLS client configuration")?;
    let sts = StsClient::new(&config.sts_client_config(), &tls)
        .map_err(anyhow::Error::msg)
        .context("STS client")?;
    let tokens = TokenSource::new(config.token_config(), sts, metrics.clone());
    let upstream = Upstream::new(&config.api_client_config(), &tls)
        .map_err(anyhow::Error::msg)
        .context("upstream client")?;
    Ok(Proxy::new(
        RouteTable::tallied(
            &config.routes,
            &config.token,
            tally,
            previous.map(Proxy::routes),
        ),
        tokens,
        upstream,
        InboundPolicy::new(
            &config.inbound_config(),
            local,
            previous.map(Proxy::inbound),
            tally,
        ),
        metrics.clone(),
        Settings {
            body_timeout: config.listen.body_timeout,
            max_entry: config.cache.max_entry,
        },
        previous,
    ))
}

/// The (credential, delegate) pairs whose tokens `config` uses, base tokens of delegates included:
/// the label sets of the token expiry metric.
fn token_labels(config: &Config) -> Vec<(String, Option<String>)> {
    let mut pairs = Vec::new();
    for route in &config.routes {
        let mut teams = vec![route.delegate.clone()];
        match &route.delegates {
            Some(DelegateSet::Any) => teams.push(Some("*".to_string())),
            Some(DelegateSet::Listed(listed)) => teams.extend(listed.iter().cloned().map(Some)),
            None => {}
        }
        for team in std::iter::once(None).chain(teams) {
            let pair = (route.credential.clone(), team);
            if !pairs.contains(&pair) {
                pairs.push(pair);
            }
        }
    }
    pairs
}

/// Starts a keeper for the token of every interval-mode route (each cache key once): the token
/// is fetched at once and kept fresh. For a `{delegate}` route that is the credential's own
/// token, the base of its teams' updates (the teams come with the requests). Failures are logged
/// and backed off by the token source.
fn keep_tokens_warm(proxy: &Proxy) -> Vec<JoinHandle<()>> {
    let mut keys: Vec<TokenKey> = Vec::new();
    for route in proxy.routes().routes() {
        let key = route.token_key();
        if route.token_mode == TokenMode::Interval && !keys.contains(&key) {
            keys.push(key);
        }
    }
    keys.into_iter()
        .map(|key| {
            let tokens = proxy.tokens().clone();
            tokio::spawn(async move { tokens.keep_warm(key).await })
        })
        .collect()
}
