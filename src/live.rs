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
use std::time::Duration;

use anyhow::Context as _;
use arc_swap::ArcSwap;
use tokio::task::JoinHandle;
use tokio_rustls::TlsAcceptor;

use crate::config::{Config, DelegateSet, TokenMode};
use crate::inbound::{ApiKeys, HostGuard, InboundPolicy};
use crate::metrics::Metrics;
use crate::proxy::Proxy;
use crate::routes::RouteTable;
use crate::token::{TokenKey, TokenSource};
use crate::upstream::Upstream;

/// The current request path and the config it was built from.
pub struct Live {
    proxy: ArcSwap<Proxy>,
    state: Mutex<State>,
    local: SocketAddr,
    metrics: Arc<Metrics>,
}

/// What a reload replaces besides the proxy.
struct State {
    config: Config,
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
        let proxy = Arc::new(build(&config, local, &metrics)?);
        let keepers = keep_tokens_warm(&proxy);
        Ok(Live {
            proxy: ArcSwap::new(proxy),
            state: Mutex::new(State {
                config,
                keepers,
                closed: false,
            }),
            local,
            metrics,
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
            if let Some(refusal) = listener_change(&state.config, &config) {
                anyhow::bail!("{refusal}");
            }
        }
        let proxy = build(&config, self.local, &self.metrics)?;
        let old = self.proxy();
        let (discarded, need_restart) = {
            let state = self.lock();
            (
                discarded_credentials(&state.config, &config),
                restart_settings(&state.config, &config),
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

/// The request path for `config` on the listener at `local`. Does not start anything: no token
/// is fetched until a request (or [`Live::start`]'s keepers) asks.
pub fn build(config: &Config, local: SocketAddr, metrics: &Arc<Metrics>) -> anyhow::Result<Proxy> {
    let tls = config
        .outbound
        .trust
        .client_config()
        .map_err(anyhow::Error::msg)
        .context("TLS client configuration")?;
    let tokens = TokenSource::new(config, tls.clone(), metrics.clone())
        .map_err(anyhow::Error::msg)
        .context("STS client")?;
    let upstream = Upstream::new(&config.upstream, &config.outbound.api, tls)
        .map_err(anyhow::Error::msg)
        .context("upstream client")?;
    let inbound = InboundPolicy {
        hosts: HostGuard::new(local, &config.listen.allowed_hosts),
        keys: ApiKeys::new(&config.listen.api_keys),
        tls: config
            .listen
            .tls
            .as_ref()
            .map(|t| TlsAcceptor::from(t.server.clone())),
    };
    Ok(Proxy::new(
        RouteTable::new(&config.routes, &config.token),
        tokens,
        upstream,
        inbound,
        metrics.clone(),
        config.listen.body_timeout,
    ))
}

/// Credentials of `new` whose tokens cannot be reused: new ones, changed id or secret, and all of
/// them when the STS, its trust roots or the token lifetimes changed.
fn discarded_credentials(old: &Config, new: &Config) -> Vec<String> {
    let everything = old.sts.token_url != new.sts.token_url
        || old.outbound.trust != new.outbound.trust
        || old.token.max_age != new.token.max_age
        || old.token.refresh_before_expiry != new.token.refresh_before_expiry;
    new.credentials
        .iter()
        .filter(|(name, credential)| {
            everything
                || old.credentials.get(*name).is_none_or(|was| {
                    was.client_id != credential.client_id
                        || was.client_secret != credential.client_secret
                })
        })
        .map(|(name, _)| name.clone())
        .collect()
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

/// Why a reload must be refused because it changes the data-plane listener itself: applying the
/// rest would leave the port where it was (judged by the new address's rules: a loopback config
/// still listening on 0.0.0.0 without keys), or turn an HTTPS port into plain HTTP in place.
fn listener_change(old: &Config, new: &Config) -> Option<String> {
    if old.listen.address != new.listen.address {
        return Some(format!(
            "listen.address changed ({} -> {}): the listener moves only on a restart; restart \
             to apply this config",
            old.listen.address, new.listen.address
        ));
    }
    if old.listen.tls.is_some() != new.listen.tls.is_some() {
        return Some(
            "[listen.tls] was added or removed: switching the port between HTTP and HTTPS takes \
             a restart (a renewed certificate or key needs only a reload)"
                .to_string(),
        );
    }
    None
}

/// Settings that differ and that a reload cannot apply: the sockets are bound once.
fn restart_settings(old: &Config, new: &Config) -> Vec<&'static str> {
    let mut out = Vec::new();
    if old.listen.max_connections != new.listen.max_connections {
        out.push("listen.max_connections");
    }
    if old.admin.enabled != new.admin.enabled || old.admin.address != new.admin.address {
        out.push("admin");
    }
    if old.log != new.log {
        out.push("log");
    }
    out
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

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str, secret: &str) -> Config {
        let secret = secret.to_string();
        crate::config::from_toml(text, "test.toml", &move |_: &str| Some(secret.clone()))
            .unwrap_or_else(|e| panic!("{e}"))
    }

    const TWO: &str = "[credentials.a]\nclient_id = \"a\"\nclient_secret = { env = \"S\" }\n\
                       [credentials.b]\nclient_id = \"b\"\nclient_secret = { env = \"S\" }\n\
                       [[routes]]\nprefix = \"/\"\ncredential = \"a\"\n\
                       [[routes]]\nprefix = \"/b\"\ncredential = \"b\"\n";

    #[test]
    fn only_changed_credentials_are_discarded() {
        let old = parse(TWO, "s1");
        assert!(discarded_credentials(&old, &parse(TWO, "s1")).is_empty());
        // Both read the same variable: a rotated secret changes both.
        assert_eq!(discarded_credentials(&old, &parse(TWO, "s2")), ["a", "b"]);
        let renamed = TWO.replacen("client_id = \"b\"", "client_id = \"b2\"", 1);
        assert_eq!(discarded_credentials(&old, &parse(&renamed, "s1")), ["b"]);
        let added = format!("{TWO}[credentials.c]\nclient_id = \"c\"\nclient_secret = \"x\"\n");
        assert_eq!(discarded_credentials(&old, &parse(&added, "s1")), ["c"]);
    }

    #[test]
    fn a_changed_sts_or_lifetime_discards_every_credential() {
        let old = parse(TWO, "s1");
        let sts = format!("[sts]\ntoken_url = \"https://sts.example/token\"\n{TWO}");
        assert_eq!(discarded_credentials(&old, &parse(&sts, "s1")), ["a", "b"]);
        let age = format!("[token]\nmax_age = \"30m\"\n{TWO}");
        assert_eq!(discarded_credentials(&old, &parse(&age, "s1")), ["a", "b"]);
    }

    #[test]
    fn listener_changes_need_a_restart() {
        let old = parse(TWO, "s1");
        assert!(restart_settings(&old, &parse(TWO, "s1")).is_empty());
        assert!(listener_change(&old, &parse(TWO, "s1")).is_none());
        let admin = format!("[listen]\nmax_connections = 5\n[admin]\nenabled = false\n{TWO}");
        assert_eq!(
            restart_settings(&old, &parse(&admin, "s1")),
            ["listen.max_connections", "admin"]
        );
        // Moving the data-plane listener is refused rather than half applied.
        let moved = format!("[listen]\naddress = \"127.0.0.1:8181\"\n{TWO}");
        let refusal = listener_change(&old, &parse(&moved, "s1")).unwrap();
        assert!(refusal.contains("listen.address"), "{refusal}");
    }
}
