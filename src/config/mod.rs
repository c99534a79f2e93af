//! Configuration: raw TOML (or environment) -> validated [`Config`], and the types it holds.
//!
//! Parsing and validation are two steps (pingora's `ServerConf::validate` pattern): serde fills
//! the `Raw*` structs of `raw.rs`, which reject unknown keys and remember where each value stood
//! in the file; then `validate/` turns them into a [`Config`], one function per table, whose
//! fields are already the types the proxy uses (`SocketAddr`, `Duration`, `Uri`, [`Secret`]).
//! Every error names the file, the line and the key and says how to fix it. The files:
//!
//! - `source.rs`: where the config comes from ([`ConfigSource`]) and loading it
//! - `env.rs`: the configuration from environment variables alone ([`from_env`])
//! - `raw.rs`: the keys of `proxy.toml.example`, as serde reads them
//! - `validate/`: one function per table, raw values in, checked values out
//! - `secret.rs`: the references to a [`Secret`] (`{ env = .. }`, `{ file = .. }`, ...)
//! - `no_proxy.rs`: [`NoProxy`], curl's `NO_PROXY` rules
//! - `diagnostics.rs`: [`ConfigError`], the line and key of a value, redaction
//! - `components.rs`: each component's small config, made from a [`Config`]
//! - `changes.rs`: what a reload from one [`Config`] to another changes

mod changes;
mod components;
mod diagnostics;
mod env;
mod no_proxy;
mod raw;
mod secret;
mod source;
#[cfg(test)]
mod testing;
mod validate;

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use http::{HeaderName, Uri};

use crate::secret::Secret;
use crate::token::TokenMode;
use crate::upstream::Egress;

pub use diagnostics::ConfigError;
pub use env::from_env;
pub use no_proxy::NoProxy;

pub use source::{ConfigSource, from_toml, load, load_file, locate};

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "AZURE_COSTS_PROXY_CONFIG";
/// Config files tried, in order, when neither `--config` nor [`CONFIG_ENV`] is set:
/// `./proxy.toml`, then `/etc/azure-costs-proxy/proxy.toml`, on Windows
/// `%ProgramData%\azure-costs-proxy\proxy.toml` (where `service install` puts it).
pub fn default_paths(env: EnvLookup<'_>) -> [PathBuf; 2] {
    let system = if cfg!(windows) {
        program_data_dir(env).join("proxy.toml")
    } else {
        PathBuf::from("/etc/azure-costs-proxy/proxy.toml")
    };
    [PathBuf::from("proxy.toml"), system]
}

/// `%ProgramData%\azure-costs-proxy`: the Windows home of the config, secrets and logs
/// (`ProgramData` is set on every Windows; `C:\ProgramData` if not).
pub fn program_data_dir(env: EnvLookup<'_>) -> PathBuf {
    let base = env("ProgramData")
        .filter(|v| !v.is_empty())
        .map_or_else(|| PathBuf::from(r"C:\ProgramData"), PathBuf::from);
    base.join("azure-costs-proxy")
}

/// Default upstream (the Azure Costs API).
pub const DEFAULT_UPSTREAM: &str = "https://api.azure-costs.com";
/// Default STS token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://azure-costs.com/sts/issue/oauth/token";
/// The vendor's hard limit on a token's age: a new token at least hourly.
pub const MAX_TOKEN_AGE: Duration = Duration::from_secs(60 * 60);
/// Default time in-flight requests get to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default cap on connections to the API at once (`upstream.max_connections`).
pub const DEFAULT_UPSTREAM_CONNECTIONS: usize = 256;
/// Default longest stall of a request body (`listen.body_timeout`).
pub const DEFAULT_BODY_TIMEOUT: Duration = Duration::from_secs(30);
/// Default cap on connections served at once (`listen.max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Default number of rotated log files kept (`log.keep`).
pub const DEFAULT_LOG_KEEP: usize = 14;

/// Reads environment variables; injected so tests do not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as an [`EnvLookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// A validated configuration. Every field is ready to use.
#[derive(Debug, Clone)]
pub struct Config {
    /// Where the configuration came from (a file path or "environment").
    pub origin: String,
    /// The data-plane listener.
    pub listen: ListenConfig,
    /// The admin listener (`/healthz`, `/readyz`, `/metrics`).
    pub admin: AdminConfig,
    /// The Azure Costs API.
    pub upstream: UpstreamConfig,
    /// The Azure Costs token service.
    pub sts: StsConfig,
    /// How the STS and the API are reached, and the roots their certificates must chain to.
    pub outbound: OutboundConfig,
    /// Credentials by name.
    pub credentials: BTreeMap<String, CredentialConfig>,
    /// Token policy defaults.
    pub token: TokenPolicy,
    /// Routes, in file order; at least one.
    pub routes: Vec<RouteConfig>,
    /// `[cache]`.
    pub cache: CacheConfig,
    /// `[reload]`: reloading by itself when a file changes.
    pub reload: ReloadConfig,
    /// `[[clients]]`: the named clients, in file order (`listen.api_keys` are not among them).
    pub clients: Vec<crate::inbound::ClientSpec>,
    /// The files the config was read from (first, if any) and names: secret and API key files,
    /// TLS certificate, key and client CA, `ca_file`. What `[reload] watch` watches.
    pub files: Vec<PathBuf>,
    /// Where logs go besides stderr.
    pub log: LogConfig,
    /// Things that are allowed but unwise (a secret written in the file); logged at start-up.
    pub warnings: Vec<String>,
}

/// The data-plane listener.
#[derive(Debug, Clone)]
pub struct ListenConfig {
    /// Address to bind.
    pub address: SocketAddr,
    /// Whether a non-loopback address was explicitly allowed.
    pub allow_remote: bool,
    /// Extra accepted `Host` names (lower case, without port); `["*"]` turns the check off.
    pub allowed_hosts: Vec<String>,
    /// Inbound keys a client must present; empty means none is required.
    pub api_keys: Vec<Secret>,
    /// HTTPS towards clients; `None` serves plain HTTP.
    pub tls: Option<ListenTlsConfig>,
    /// Connections served at once; further clients wait in the listen backlog.
    pub max_connections: usize,
    /// Time in-flight requests get to finish after SIGTERM/SIGINT.
    pub shutdown_grace: Duration,
    /// A request body that sends nothing for this long gets 408 `request_timeout`.
    pub body_timeout: Duration,
}

/// `[listen.tls]`: the server certificate, read and checked when the config is loaded (and again
/// on every reload, so a renewed certificate takes effect on SIGHUP).
#[derive(Clone)]
pub struct ListenTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// `client_ca`: PEM CA certificates that client certificates must chain to; `None`: no
    /// client certificate is asked for.
    pub client_ca_file: Option<PathBuf>,
    /// `client_auth = "required"` (the default): a connection without a valid client
    /// certificate fails its handshake; `"optional"`: it may identify by key instead.
    pub client_auth_required: bool,
    /// The rustls server configuration built from those files.
    pub server: std::sync::Arc<rustls::ServerConfig>,
}

impl fmt::Debug for ListenTlsConfig {
    // The server configuration holds the private key: only the paths are shown.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ListenTlsConfig")
            .field("cert_file", &self.cert_file)
            .field("key_file", &self.key_file)
            .field("client_ca_file", &self.client_ca_file)
            .field("client_auth_required", &self.client_auth_required)
            .finish_non_exhaustive()
    }
}

impl PartialEq for ListenTlsConfig {
    /// Same files (the contents are compared by the reload, which always rebuilds).
    fn eq(&self, other: &Self) -> bool {
        self.cert_file == other.cert_file
            && self.key_file == other.key_file
            && self.client_ca_file == other.client_ca_file
            && self.client_auth_required == other.client_auth_required
    }
}

/// The admin listener.
#[derive(Debug, Clone)]
pub struct AdminConfig {
    /// Whether the admin listener runs.
    pub enabled: bool,
    /// Address to bind.
    pub address: SocketAddr,
}

/// The upstream API.
#[derive(Debug, Clone)]
pub struct UpstreamConfig {
    /// Scheme and authority, with the base path (no trailing slash) in [`UpstreamConfig::base_path`].
    pub url: Uri,
    /// Path of `url` without a trailing slash ("" for the root).
    pub base_path: String,
    /// Time allowed for the response head, and for each gap between response body chunks.
    pub timeout: Duration,
    /// Time allowed to establish a TCP (and TLS) connection, the outbound proxy's tunnel included.
    pub connect_timeout: Duration,
    /// Connections to the API open at once (HTTP/2 multiplexes on one).
    pub max_connections: usize,
}

/// `[outbound]`: the way out to the STS and the API (direct or through the outbound proxy, decided
/// once per target when the config is loaded) and the trust roots of both.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboundConfig {
    /// The way to the API (`upstream.url`).
    pub api: Egress,
    /// The way to the STS (`sts.token_url`).
    pub sts: Egress,
    /// The roots a certificate of the STS or the API must chain to.
    pub trust: TrustRoots,
}

/// The trust roots of the STS and the API: `[outbound] trust` and `ca_file`, read and parsed
/// once when the config is loaded (so a reload picks up a root IT has just installed).
#[derive(Clone)]
pub struct TrustRoots {
    /// The operating system's roots, when `trust` names `"system"` (else empty).
    pub system: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Whether `"system"` is in `trust`.
    pub use_system: bool,
    /// Whether the bundled Mozilla roots (`"bundled"`) are trusted.
    pub bundled: bool,
    /// `ca_file`, if set.
    pub ca_file: Option<PathBuf>,
    /// The certificates read from `ca_file`.
    pub extra: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// All of the above that rustls can use, parsed once: the roots of the client
    /// configuration.
    pub(crate) store: std::sync::Arc<rustls::RootCertStore>,
}

impl Config {
    /// What reloads the config: SIGHUP, and a change to which files.
    pub fn reload_summary(&self) -> String {
        if !self.reload.watch {
            return "on SIGHUP only ([reload] watch = false)".into();
        }
        if self.files.is_empty() {
            return "on SIGHUP (the config names no file to watch)".into();
        }
        let files: Vec<String> = self.files.iter().map(|f| f.display().to_string()).collect();
        format!("on SIGHUP, or a change to {}", files.join(", "))
    }
}

impl TrustRoots {
    /// The roots in use, with their counts, as `check` and the status page say them.
    pub fn describe(&self) -> String {
        let mut parts = Vec::new();
        if self.use_system {
            parts.push(format!("system store ({} certificates)", self.system.len()));
        }
        if self.bundled {
            parts.push(format!(
                "bundled Mozilla roots ({})",
                webpki_roots::TLS_SERVER_ROOTS.len()
            ));
        }
        if let Some(f) = &self.ca_file {
            parts.push(format!("ca_file {} ({})", f.display(), self.extra.len()));
        }
        parts.join(", ")
    }

    /// The client configuration (STS and API) for these roots, built once per config load and
    /// shared by both clients.
    pub fn client_config(&self) -> Result<std::sync::Arc<rustls::ClientConfig>, String> {
        crate::tls::client_config(self.store.clone()).map(std::sync::Arc::new)
    }
}

impl PartialEq for TrustRoots {
    /// The same sources and certificates (`store` is made of them).
    fn eq(&self, other: &Self) -> bool {
        self.system == other.system
            && self.use_system == other.use_system
            && self.bundled == other.bundled
            && self.ca_file == other.ca_file
            && self.extra == other.extra
    }
}

impl fmt::Debug for TrustRoots {
    // Counts, not some hundred certificates.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustRoots")
            .field("system", &self.use_system.then_some(self.system.len()))
            .field("bundled", &self.bundled)
            .field("ca_file", &self.ca_file)
            .field("extra", &self.extra.len())
            .finish()
    }
}

/// The token service.
#[derive(Debug, Clone)]
pub struct StsConfig {
    /// The token endpoint.
    pub token_url: Uri,
    /// Time allowed for one STS call.
    pub timeout: Duration,
}

/// One client-credentials pair.
#[derive(Debug, Clone)]
pub struct CredentialConfig {
    /// The OAuth2 client id.
    pub client_id: String,
    /// The OAuth2 client secret.
    pub client_secret: Secret,
    /// Where the secret came from ("env VAR", "file /path", ...), for `check`.
    pub secret_source: String,
}

/// Token policy defaults from `[token]`.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    /// Default mode for routes that do not set one.
    pub mode: TokenMode,
    /// A token is never used past this age.
    pub max_age: Duration,
    /// Interval mode refreshes this long before a token's end.
    pub refresh_before_expiry: Duration,
    /// per_transaction: idle gap that starts a new transaction.
    pub transaction_idle: Duration,
    /// per_transaction: header whose new value starts a new transaction.
    pub transaction_header: HeaderName,
    /// Upstream statuses that mean "token refused" (`refresh_on`, default 401).
    pub refresh_on: RefreshOn,
    /// `sts_budget`: STS fetches a second that clients can cause at will (teams not yet held,
    /// new transactions) per credential, bursts of twice that (default 10 a second).
    pub sts_budget: f64,
}

/// `refresh_on`: the upstream statuses (401, 403) that make the proxy drop the token, fetch a
/// fresh one and replay a body-less request once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RefreshOn {
    /// 401 Unauthorized.
    pub unauthorized: bool,
    /// 403 Forbidden (some APIs answer it to stale rights).
    pub forbidden: bool,
}

impl RefreshOn {
    /// The default: 401 only.
    pub const DEFAULT: RefreshOn = RefreshOn {
        unauthorized: true,
        forbidden: false,
    };

    /// Whether `status` means "token refused".
    pub fn contains(self, status: http::StatusCode) -> bool {
        (status == http::StatusCode::UNAUTHORIZED && self.unauthorized)
            || (status == http::StatusCode::FORBIDDEN && self.forbidden)
    }
}

/// The team segment of a `{delegate}` route's prefix.
pub const DELEGATE_SEGMENT: &str = "{delegate}";
/// Longest team id accepted from a path.
pub const MAX_TEAM_ID: usize = 64;

/// Whether `team` can be a team id: 1 to [`MAX_TEAM_ID`] ASCII letters, digits, `-`, `_` or `.`,
/// not a dot segment. A path segment that is not is refused before any STS call; nothing is
/// percent-decoded (`TEAM%2DA` is not `TEAM-A`).
pub fn plausible_team(team: &str) -> bool {
    !team.is_empty()
        && team.len() <= MAX_TEAM_ID
        && team != "."
        && team != ".."
        && team
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

/// The teams a `{delegate}` route may act for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DelegateSet {
    /// `["*"]`: any team the STS accepts.
    Any,
    /// These teams (sorted, no duplicates).
    Listed(Vec<String>),
}

/// `[reload]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadConfig {
    /// Reload when the config file or a file it names changes (README: "Live reload").
    pub watch: bool,
}

/// `[log]`: a log file besides stderr, rotated daily.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    /// The file's path; each day's file gets the date before the extension
    /// (`proxy.log` -> `proxy.2026-12-01.log`). `None`: stderr only (a Windows service
    /// defaults to its own log folder).
    pub file: Option<PathBuf>,
    /// Rotated files kept; older ones are deleted.
    pub keep: usize,
}

/// One route.
#[derive(Debug, Clone)]
pub struct RouteConfig {
    /// Path prefix, `/` or `/seg[/seg...]` without a trailing slash.
    pub prefix: String,
    /// Name of the credential in [`Config::credentials`].
    pub credential: String,
    /// CSP customer team to act for.
    pub delegate: Option<String>,
    /// A `{delegate}` route (its prefix ends in [`DELEGATE_SEGMENT`]): the teams it may act for.
    pub delegates: Option<DelegateSet>,
    /// Token mode for this route.
    pub token_mode: TokenMode,
    /// Path prepended upstream after the prefix is stripped ("" for none).
    pub upstream_path: String,
    /// Upstream statuses that mean "token refused" on this route.
    pub refresh_on: RefreshOn,
    /// `max_in_flight` > 0: the route's requests upstream at once, and how the rest wait.
    pub concurrency: Option<RouteConcurrency>,
    /// Identical GET/HEAD requests in flight at once share one upstream request.
    pub coalesce: bool,
}

/// `[cache]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheConfig {
    /// The largest answer coalesced requests share, in bytes.
    pub max_entry: usize,
}

/// A route's `max_in_flight`, `queue` and `queue_timeout`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RouteConcurrency {
    /// Requests of the route upstream at once.
    pub max_in_flight: usize,
    /// Requests waiting for a place, in arrival order; beyond them 503 `route_busy`.
    pub queue: usize,
    /// The longest a request waits for a place; longer is 503 `route_busy`.
    pub queue_timeout: Duration,
}

impl RouteConfig {
    /// The prefix without its team segment (`/teams` for `/teams/{delegate}`, `/` for
    /// `/{delegate}`); the prefix itself for other routes.
    pub fn fixed_prefix(&self) -> &str {
        match self.prefix.strip_suffix(DELEGATE_SEGMENT) {
            Some(rest) if self.delegates.is_some() => match rest.trim_end_matches('/') {
                "" => "/",
                fixed => fixed,
            },
            _ => &self.prefix,
        }
    }
}
