//! Configuration: raw TOML (or environment) -> validated [`Config`], and the [`Secret`] type.
//!
//! Parsing and validation are two steps (pingora's `ServerConf::validate` pattern): serde fills
//! `Raw*` structs that reject unknown keys and remember where each value stood in the file; then
//! [`validate`] turns them into a [`Config`] whose fields are already the types the proxy uses
//! (`SocketAddr`, `Duration`, `Uri`, [`Secret`]). Every error names the file, the line and the key and
//! says how to fix it.

use std::collections::BTreeMap;
use std::fmt;
use std::net::SocketAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::time::Duration;

use http::{HeaderName, Uri};
use serde::Deserialize;
use toml::Spanned;

use crate::inbound::host::{is_loopback_host, normalize_host};

/// Environment variable naming the config file when `--config` is not given.
pub const CONFIG_ENV: &str = "AZURE_COSTS_PROXY_CONFIG";
/// Config files tried, in order, when neither `--config` nor [`CONFIG_ENV`] is set.
pub const DEFAULT_PATHS: [&str; 2] = ["proxy.toml", "/etc/azure-costs-proxy/proxy.toml"];

/// Default upstream (the Azure Costs API).
pub const DEFAULT_UPSTREAM: &str = "https://api.azure-costs.com";
/// Default STS token endpoint.
pub const DEFAULT_TOKEN_URL: &str = "https://azure-costs.com/sts/issue/oauth/token";
/// The vendor's hard limit on a token's age: a new token at least hourly.
pub const MAX_TOKEN_AGE: Duration = Duration::from_secs(60 * 60);
/// Default time in-flight requests get to finish after a shutdown signal.
pub const DEFAULT_SHUTDOWN_GRACE: Duration = Duration::from_secs(30);
/// Default cap on connections served at once (`listen.max_connections`).
pub const DEFAULT_MAX_CONNECTIONS: usize = 1024;
/// Longest inbound API key accepted.
const MAX_API_KEY: usize = 512;
/// Shorter inbound API keys are accepted with a warning.
const MIN_API_KEY: usize = 16;
/// Largest secret file read (client secret, API key).
const MAX_SECRET_FILE: u64 = 64 * 1024;
/// Highest `listen.max_connections` accepted.
const MAX_MAX_CONNECTIONS: usize = 1 << 20;

/// A secret value (client secret, inbound API key). It never prints: `Debug` and `Display` show
/// `[redacted]`, and the memory is overwritten when it is dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a value that must not be printed.
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself, for the one place that must send it (the STS form body).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl Drop for Secret {
    fn drop(&mut self) {
        zeroize::Zeroize::zeroize(&mut self.0);
    }
}

/// How a route obtains its tokens (SPEC "Token behaviour").
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenMode {
    /// Cached per (credential, delegate), refreshed ahead of expiry in the background.
    Interval,
    /// A token issued for every proxied request alone.
    PerRequest,
    /// A token per burst of requests on a route.
    PerTransaction,
}

impl TokenMode {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenMode::Interval => "interval",
            TokenMode::PerRequest => "per_request",
            TokenMode::PerTransaction => "per_transaction",
        }
    }
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
    /// Credentials by name.
    pub credentials: BTreeMap<String, CredentialConfig>,
    /// Token policy defaults.
    pub token: TokenPolicy,
    /// Routes, in file order; at least one.
    pub routes: Vec<RouteConfig>,
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
}

/// `[listen.tls]`: the server certificate, read and checked when the config is loaded (and again
/// on every reload, so a renewed certificate takes effect on SIGHUP).
#[derive(Clone)]
pub struct ListenTlsConfig {
    /// PEM certificate chain, leaf first.
    pub cert_file: PathBuf,
    /// PEM private key.
    pub key_file: PathBuf,
    /// PEM CA certificates that client certificates must chain to; `None`: no client certificate.
    pub client_ca_file: Option<PathBuf>,
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
            .finish_non_exhaustive()
    }
}

impl PartialEq for ListenTlsConfig {
    /// Same files (the contents are compared by the reload, which always rebuilds).
    fn eq(&self, other: &Self) -> bool {
        self.cert_file == other.cert_file
            && self.key_file == other.key_file
            && self.client_ca_file == other.client_ca_file
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
    /// Time allowed to establish a TCP (and TLS) connection.
    pub connect_timeout: Duration,
    /// Extra PEM trust roots (from `ca_file`), used towards the STS too.
    pub ca_file: Option<PathBuf>,
    /// The certificates read from `ca_file`.
    pub ca_certs: Vec<rustls_pki_types::CertificateDer<'static>>,
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
    /// Token mode for this route.
    pub token_mode: TokenMode,
    /// Path prepended upstream after the prefix is stripped ("" for none).
    pub upstream_path: String,
}

/// A configuration error: where, which key, what is wrong and how to fix it.
#[derive(Debug, thiserror::Error)]
pub struct ConfigError {
    /// A file path, or "environment".
    pub origin: String,
    /// 1-based line in the file, when known.
    pub line: Option<usize>,
    /// The key (dotted path), or an environment variable name.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// How to fix it.
    pub hint: Option<String>,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.origin)?;
        if let Some(line) = self.line {
            write!(f, ", line {line}")?;
        }
        if !self.key.is_empty() {
            write!(f, ", key `{}`", self.key)?;
        }
        write!(f, ": {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

// ---------------------------------------------------------------------------------------------
// Raw structs: exactly the keys of SPEC.md, nothing else.

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    listen: RawListen,
    #[serde(default)]
    admin: RawAdmin,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    sts: RawSts,
    #[serde(default)]
    credentials: BTreeMap<String, Spanned<RawCredential>>,
    #[serde(default)]
    token: RawToken,
    #[serde(default)]
    routes: Vec<Spanned<RawRoute>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawListen {
    address: Option<Spanned<String>>,
    allow_remote: Option<bool>,
    allowed_hosts: Option<Vec<Spanned<String>>>,
    api_keys: Option<Vec<Spanned<toml::Value>>>,
    tls: Option<Spanned<RawTls>>,
    max_connections: Option<Spanned<i64>>,
    shutdown_grace: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawTls {
    cert_file: Option<Spanned<String>>,
    key_file: Option<Spanned<String>>,
    client_ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawAdmin {
    enabled: Option<bool>,
    address: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    url: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    connect_timeout: Option<Spanned<String>>,
    ca_file: Option<Spanned<String>>,
    allow_insecure_http: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawSts {
    token_url: Option<Spanned<String>>,
    timeout: Option<Spanned<String>>,
    allow_insecure_http: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCredential {
    client_id: Spanned<String>,
    client_secret: Spanned<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawToken {
    mode: Option<Spanned<String>>,
    max_age: Option<Spanned<String>>,
    refresh_before_expiry: Option<Spanned<String>>,
    transaction_idle: Option<Spanned<String>>,
    transaction_header: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    prefix: Spanned<String>,
    credential: Option<Spanned<String>>,
    delegate: Option<Spanned<String>>,
    token_mode: Option<Spanned<String>>,
    upstream_path: Option<Spanned<String>>,
}

// ---------------------------------------------------------------------------------------------
// Loading.

/// Reads environment variables; injected so tests do not touch the process environment.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

/// The process environment as an [`EnvLookup`].
pub fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Finds and loads the configuration: `explicit` (from `--config`), else `$AZURE_COSTS_PROXY_CONFIG`,
/// else `./proxy.toml`, else `/etc/azure-costs-proxy/proxy.toml`, else the environment alone.
pub fn load(explicit: Option<&Path>, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    ConfigSource::locate(explicit, env).load(env)
}

/// Where the configuration comes from. Found once at start-up, so that a reload reads the same
/// file (or the environment) even if another candidate appears or disappears meanwhile.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigSource {
    /// A TOML file.
    File(PathBuf),
    /// Environment variables alone (no file was found).
    Environment,
}

impl ConfigSource {
    /// The lookup of [`load`]: `explicit`, `$AZURE_COSTS_PROXY_CONFIG`, the default paths, else
    /// the environment.
    pub fn locate(explicit: Option<&Path>, env: EnvLookup<'_>) -> ConfigSource {
        locate(explicit, env).map_or(ConfigSource::Environment, ConfigSource::File)
    }

    /// Reads and validates the configuration from here, secrets included.
    pub fn load(&self, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
        match self {
            ConfigSource::File(path) => load_file(path, env),
            ConfigSource::Environment => from_env(env),
        }
    }

    /// The admin listener's address (`None`: disabled), read without touching anything else:
    /// for `healthcheck`, which may run where the secrets are not readable (outside the systemd
    /// unit that loads them, say). The file must still be valid TOML.
    pub fn admin_address(&self, env: EnvLookup<'_>) -> Result<Option<SocketAddr>, ConfigError> {
        /// Only `[admin]`; every other table is skipped.
        #[derive(Deserialize)]
        struct AdminOnly {
            #[serde(default)]
            admin: RawAdmin,
        }
        let (admin, text, origin) = match self {
            ConfigSource::File(path) => {
                let (origin, text) = read_file(path)?;
                let ctx = Ctx {
                    origin: &origin,
                    text: Some(&text),
                    env_keys: &[],
                    env,
                };
                let only: AdminOnly = toml::from_str(&text).map_err(|e| ctx.parse_error(&e))?;
                (only.admin, Some(text), origin)
            }
            ConfigSource::Environment => {
                let admin = RawAdmin {
                    address: env("AZURE_COSTS_PROXY_ADMIN")
                        .filter(|v| !v.is_empty())
                        .map(|v| Spanned::new(0..0, v)),
                    ..RawAdmin::default()
                };
                (admin, None, "environment".to_string())
            }
        };
        if admin.enabled == Some(false) {
            return Ok(None);
        }
        let env_keys = if text.is_some() { &[][..] } else { ENV_KEYS };
        let ctx = Ctx {
            origin: &origin,
            text: text.as_deref(),
            env_keys,
            env,
        };
        socket_addr(&ctx, &admin.address, "admin.address", "127.0.0.1:9090").map(Some)
    }
}

/// The config file to read, following the lookup order; `None` means "environment only".
pub fn locate(explicit: Option<&Path>, env: EnvLookup<'_>) -> Option<PathBuf> {
    if let Some(path) = explicit {
        return Some(path.to_path_buf());
    }
    if let Some(path) = env(CONFIG_ENV).filter(|p| !p.is_empty()) {
        return Some(PathBuf::from(path));
    }
    DEFAULT_PATHS
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
}

/// Loads one config file.
pub fn load_file(path: &Path, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let (origin, text) = read_file(path)?;
    let mut config = from_toml(&text, &origin, env)?;
    // The file-less variables that guard the port are easy to believe in force: say when a file
    // makes them inert (unless the file itself reads them).
    for name in [
        "AZURE_COSTS_PROXY_API_KEY",
        "AZURE_COSTS_PROXY_TLS_CERT",
        "AZURE_COSTS_PROXY_TLS_KEY",
    ] {
        if env(name).is_some_and(|v| !v.is_empty()) && !text.contains(name) {
            config.warnings.push(format!(
                "${name} is set but ignored: the config comes from {origin}, which does not \
                 use it; configure [listen] in the file instead"
            ));
        }
    }
    Ok(config)
}

/// The config file's text, and its path as errors name it.
fn read_file(path: &Path) -> Result<(String, String), ConfigError> {
    let origin = path.display().to_string();
    match std::fs::read_to_string(path) {
        Ok(text) => Ok((origin, text)),
        Err(e) => Err(ConfigError {
            origin,
            line: None,
            key: String::new(),
            message: format!("cannot read the config file: {e}"),
            hint: Some(format!(
                "check the path given by --config or ${CONFIG_ENV}, and that this user may read it"
            )),
        }),
    }
}

/// Parses and validates TOML text; `origin` names it in errors.
pub fn from_toml(text: &str, origin: &str, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let ctx = Ctx {
        origin,
        text: Some(text),
        env_keys: &[],
        env,
    };
    let raw: RawConfig = toml::from_str(text).map_err(|e| ctx.parse_error(&e))?;
    validate(raw, &ctx)
}

/// Environment variables of the file-less configuration, and the key each stands for.
const ENV_KEYS: &[(&str, &str)] = &[
    ("credentials.default.client_id", "AZURE_COSTS_CLIENT_ID"),
    (
        "credentials.default.client_secret",
        "AZURE_COSTS_CLIENT_SECRET",
    ),
    ("listen.address", "AZURE_COSTS_PROXY_LISTEN"),
    ("listen.allow_remote", "AZURE_COSTS_PROXY_ALLOW_REMOTE"),
    ("listen.allowed_hosts", "AZURE_COSTS_PROXY_ALLOWED_HOSTS"),
    ("listen.api_keys", "AZURE_COSTS_PROXY_API_KEY"),
    ("listen.tls.cert_file", "AZURE_COSTS_PROXY_TLS_CERT"),
    ("listen.tls.key_file", "AZURE_COSTS_PROXY_TLS_KEY"),
    ("admin.address", "AZURE_COSTS_PROXY_ADMIN"),
    ("routes.delegate", "AZURE_COSTS_DELEGATE"),
    ("upstream.url", "AZURE_COSTS_UPSTREAM_URL"),
    ("sts.token_url", "AZURE_COSTS_TOKEN_URL"),
];

/// Builds the configuration from environment variables alone (no config file found).
pub fn from_env(env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let ctx = Ctx {
        origin: "environment",
        text: None,
        env_keys: ENV_KEYS,
        env,
    };
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let spanned = |v: String| Spanned::new(0..0, v);
    let client_id = var("AZURE_COSTS_CLIENT_ID");
    let secret_set = var("AZURE_COSTS_CLIENT_SECRET").is_some();
    let (Some(client_id), true) = (client_id, secret_set) else {
        return Err(ConfigError {
            origin: "environment".into(),
            line: None,
            key: if secret_set {
                "AZURE_COSTS_CLIENT_ID"
            } else {
                "AZURE_COSTS_CLIENT_SECRET"
            }
            .into(),
            message: "no config file was found and the environment does not hold a credential"
                .into(),
            hint: Some(format!(
                "pass --config FILE, set ${CONFIG_ENV}, create ./proxy.toml, or set both \
                 AZURE_COSTS_CLIENT_ID and AZURE_COSTS_CLIENT_SECRET"
            )),
        });
    };
    let allow_remote = match var("AZURE_COSTS_PROXY_ALLOW_REMOTE").as_deref() {
        None => None,
        Some("true" | "1" | "yes") => Some(true),
        Some("false" | "0" | "no") => Some(false),
        Some(other) => {
            return Err(ctx.error(
                None,
                "listen.allow_remote",
                format!("`{other}` is not a boolean"),
                "use true or false",
            ));
        }
    };
    let mut secret_ref = toml::Table::new();
    secret_ref.insert(
        "env".into(),
        toml::Value::String("AZURE_COSTS_CLIENT_SECRET".into()),
    );
    let mut raw = RawConfig::default();
    raw.listen.address = var("AZURE_COSTS_PROXY_LISTEN").map(spanned);
    raw.listen.allow_remote = allow_remote;
    raw.listen.allowed_hosts = var("AZURE_COSTS_PROXY_ALLOWED_HOSTS").map(|hosts| {
        hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| spanned(h.to_string()))
            .collect()
    });
    if var("AZURE_COSTS_PROXY_API_KEY").is_some() {
        let mut key_ref = toml::Table::new();
        key_ref.insert(
            "env".into(),
            toml::Value::String("AZURE_COSTS_PROXY_API_KEY".into()),
        );
        raw.listen.api_keys = Some(vec![Spanned::new(0..0, toml::Value::Table(key_ref))]);
    }
    let (cert, key) = (
        var("AZURE_COSTS_PROXY_TLS_CERT"),
        var("AZURE_COSTS_PROXY_TLS_KEY"),
    );
    if cert.is_some() || key.is_some() {
        raw.listen.tls = Some(Spanned::new(
            0..0,
            RawTls {
                cert_file: cert.map(spanned),
                key_file: key.map(spanned),
                client_ca_file: None,
            },
        ));
    }
    raw.admin.address = var("AZURE_COSTS_PROXY_ADMIN").map(spanned);
    raw.upstream.url = var("AZURE_COSTS_UPSTREAM_URL").map(spanned);
    raw.sts.token_url = var("AZURE_COSTS_TOKEN_URL").map(spanned);
    raw.credentials.insert(
        "default".into(),
        Spanned::new(
            0..0,
            RawCredential {
                client_id: spanned(client_id),
                client_secret: Spanned::new(0..0, toml::Value::Table(secret_ref)),
            },
        ),
    );
    if let Some(delegate) = var("AZURE_COSTS_DELEGATE") {
        raw.routes.push(Spanned::new(
            0..0,
            RawRoute {
                prefix: spanned("/".into()),
                credential: None,
                delegate: Some(spanned(delegate)),
                token_mode: None,
                upstream_path: None,
            },
        ));
    }
    validate(raw, &ctx)
}

// ---------------------------------------------------------------------------------------------
// Validation.

/// Where values came from, to turn spans into lines and keys into environment variable names.
struct Ctx<'a> {
    origin: &'a str,
    text: Option<&'a str>,
    env_keys: &'a [(&'a str, &'a str)],
    env: EnvLookup<'a>,
}

impl Ctx<'_> {
    fn line_of(&self, span: Option<Range<usize>>) -> Option<usize> {
        let text = self.text?;
        let start = span?.start.min(text.len());
        Some(
            text.as_bytes()[..start]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
                + 1,
        )
    }

    fn error(
        &self,
        span: Option<Range<usize>>,
        key: &str,
        message: impl Into<String>,
        hint: impl Into<String>,
    ) -> ConfigError {
        let key = match self.env_keys.iter().find(|(k, _)| *k == key) {
            Some((_, var)) => (*var).to_string(),
            None => key.to_string(),
        };
        ConfigError {
            origin: self.origin.to_string(),
            line: self.line_of(span),
            key,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// Turns a TOML syntax or shape error into a [`ConfigError`] naming the table and key.
    fn parse_error(&self, e: &toml::de::Error) -> ConfigError {
        let line = self.line_of(e.span());
        let key = match (self.text, e.span()) {
            (Some(text), Some(span)) => key_at(text, span),
            _ => String::new(),
        };
        // serde quotes offending string values ("invalid type: string \"...\""): that string
        // may be a secret written in the wrong place, so it is never repeated.
        let message = redact_quoted(e.message().trim());
        let hint = if message.starts_with("unknown field") {
            "remove or correct the key; proxy.toml.example lists every key".to_string()
        } else if message.starts_with("missing field") {
            "add the key; proxy.toml.example shows it with its default".to_string()
        } else if message.starts_with("invalid type") {
            "write the value as proxy.toml.example shows (strings in quotes, booleans bare)"
                .to_string()
        } else {
            "fix the TOML syntax on that line".to_string()
        };
        ConfigError {
            origin: self.origin.to_string(),
            line,
            key,
            message,
            hint: Some(hint),
        }
    }

    fn duration(
        &self,
        value: &Option<Spanned<String>>,
        key: &str,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        let Some(v) = value else { return Ok(default) };
        let d = humantime::parse_duration(v.get_ref().trim()).map_err(|e| {
            self.error(
                Some(v.span()),
                key,
                format!("`{}` is not a duration ({e})", v.get_ref()),
                "write a duration such as \"30s\", \"5m\" or \"1h\"",
            )
        })?;
        if d.is_zero() {
            return Err(self.error(
                Some(v.span()),
                key,
                "must be longer than zero",
                "write a duration such as \"30s\"",
            ));
        }
        Ok(d)
    }

    fn secret(&self, value: &Spanned<toml::Value>, key: &str) -> Result<Secret, ConfigError> {
        let span = Some(value.span());
        let how = "write { env = \"VAR\" }, { file = \"/path\" } or { credential = \"name\" }";
        match value.get_ref() {
            toml::Value::String(s) if !s.is_empty() => Ok(Secret::new(s.clone())),
            toml::Value::Table(t) if t.len() == 1 => {
                let (kind, arg) = t
                    .iter()
                    .next()
                    .map(|(k, v)| (k.as_str(), v))
                    .ok_or_else(|| self.error(span.clone(), key, "empty secret reference", how))?;
                let Some(arg) = arg.as_str().filter(|a| !a.is_empty()) else {
                    return Err(self.error(
                        span,
                        key,
                        format!("`{kind}` must be a non-empty string"),
                        how,
                    ));
                };
                match kind {
                    "env" => (self.env)(arg)
                        .filter(|v| !v.is_empty())
                        .map(Secret::new)
                        .ok_or_else(|| {
                            self.error(
                                span,
                                key,
                                format!("environment variable {arg} is not set or empty"),
                                format!("export {arg} before starting the proxy"),
                            )
                        }),
                    "file" => read_secret_file(Path::new(arg)).map_err(|e| {
                        self.error(
                            span,
                            key,
                            format!("cannot read secret file {arg}: {e}"),
                            "check the path and that this user may read it",
                        )
                    }),
                    "credential" => {
                        let Some(dir) = (self.env)("CREDENTIALS_DIRECTORY") else {
                            return Err(self.error(
                                span,
                                key,
                                "$CREDENTIALS_DIRECTORY is not set",
                                format!(
                                    "run under systemd with LoadCredential={arg}:/path/to/secret, \
                                     or use {{ file = \"...\" }}"
                                ),
                            ));
                        };
                        let path = Path::new(&dir).join(arg);
                        read_secret_file(&path).map_err(|e| {
                            self.error(
                                span,
                                key,
                                format!("cannot read credential {}: {e}", path.display()),
                                format!("check the LoadCredential={arg}:... line of the unit"),
                            )
                        })
                    }
                    other => {
                        Err(self.error(span, key, format!("unknown secret source `{other}`"), how))
                    }
                }
            }
            toml::Value::String(_) => Err(self.error(span, key, "the secret is empty", how)),
            _ => Err(self.error(span, key, "not a secret value", how)),
        }
    }
}

/// Where a secret reference points, for display: never the value.
fn secret_source(value: &toml::Value) -> String {
    match value {
        toml::Value::Table(t) => t
            .iter()
            .next()
            .map(|(kind, arg)| format!("{kind} {}", arg.as_str().unwrap_or("?")))
            .unwrap_or_default(),
        _ => "written in the config file".into(),
    }
}

/// Reads a secret file, dropping one trailing newline (editors add it) and refusing an empty one.
fn read_secret_file(path: &Path) -> Result<Secret, String> {
    let mut bytes = crate::files::read_limited(path, MAX_SECRET_FILE)?;
    let mut text = String::from_utf8(std::mem::take(&mut *bytes))
        .map_err(|_| "the file is not UTF-8 text".to_string())?;
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    if text.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(Secret(text))
}

/// The dotted key at a byte offset of a TOML text: the table header above it plus the key on the
/// line, so "unknown field" errors read `listen.adress` rather than just `adress`.
fn key_at(text: &str, span: Range<usize>) -> String {
    let start = span.start.min(text.len());
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = &text[line_start..line_end];
    if line.trim_start().starts_with('[') {
        // A missing key: the error points at the table that lacks it.
        return line
            .trim()
            .trim_matches(|c| c == '[' || c == ']')
            .trim()
            .to_string();
    }
    let key = line
        .split('=')
        .next()
        .map(str::trim)
        .filter(|k| !k.is_empty() && !k.starts_with('['))
        .unwrap_or_default();
    let table = text[..line_start]
        .lines()
        .rev()
        .map(str::trim)
        .find(|l| l.starts_with('['))
        .map(|l| l.trim_matches(|c| c == '[' || c == ']').trim())
        .unwrap_or_default();
    match (table.is_empty(), key.is_empty()) {
        (_, true) => table.to_string(),
        (true, false) => key.to_string(),
        (false, false) => format!("{table}.{key}"),
    }
}

/// Replaces every double-quoted part of a message with `"[redacted]"`.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len());
    let mut parts = message.split('"');
    if let Some(first) = parts.next() {
        out.push_str(first);
    }
    let mut inside = true;
    for part in parts {
        out.push('"');
        out.push_str(if inside { "[redacted]" } else { part });
        inside = !inside;
    }
    out
}

fn validate(raw: RawConfig, ctx: &Ctx<'_>) -> Result<Config, ConfigError> {
    let mut warnings = Vec::new();

    // [listen]
    let allow_remote = raw.listen.allow_remote.unwrap_or(false);
    let address = socket_addr(ctx, &raw.listen.address, "listen.address", "127.0.0.1:8080")?;
    if !address.ip().is_loopback() && !allow_remote {
        return Err(ctx.error(
            raw.listen.address.as_ref().map(Spanned::span),
            "listen.address",
            format!(
                "{address} is not a loopback address: anyone who can reach it could spend the \
                 proxy's credential"
            ),
            "listen on 127.0.0.1, or set allow_remote = true in [listen] \
             (AZURE_COSTS_PROXY_ALLOW_REMOTE=true) and protect the port",
        ));
    }
    let mut allowed_hosts = Vec::new();
    for h in raw.listen.allowed_hosts.unwrap_or_default() {
        let text = h.get_ref().trim();
        let name = if text == "*" {
            text.to_string()
        } else {
            normalize_host(text)
        };
        if name.is_empty() || name.contains(['/', ' ', '@', '[', ']']) {
            return Err(ctx.error(
                Some(h.span()),
                "listen.allowed_hosts",
                format!("`{}` is not a host name", h.get_ref()),
                "list host names such as \"bi-gateway.internal\", or [\"*\"] to turn the check off",
            ));
        }
        allowed_hosts.push(name);
    }
    let mut api_keys = Vec::new();
    for k in raw.listen.api_keys.unwrap_or_default() {
        let key = ctx.secret(&k, "listen.api_keys")?;
        let line = || {
            ctx.line_of(Some(k.span()))
                .map(|l| format!(", line {l}"))
                .unwrap_or_default()
        };
        // What a client can send as a Bearer token or a Basic password, and must type exactly.
        let text = key.expose();
        if text.len() > MAX_API_KEY || !text.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(ctx.error(
                Some(k.span()),
                "listen.api_keys",
                format!(
                    "an API key must be 1-{MAX_API_KEY} visible ASCII characters, without \
                     spaces or line breaks"
                ),
                "generate one with `openssl rand -hex 24`",
            ));
        }
        if text.len() < MIN_API_KEY {
            warnings.push(format!(
                "{}{}: an API key is shorter than {MIN_API_KEY} characters; generate a long \
                 random one (`openssl rand -hex 24`)",
                ctx.origin,
                line()
            ));
        }
        if matches!(k.get_ref(), toml::Value::String(_)) {
            warnings.push(format!(
                "{}{}: an API key is written in the config file; keys belong outside it: \
                 {{ env = \"VAR\" }}, {{ file = \"/path\" }} or {{ credential = \"name\" }}",
                ctx.origin,
                line()
            ));
        }
        api_keys.push(key);
    }
    let tls = match &raw.listen.tls {
        None => None,
        Some(t) => Some(listen_tls(ctx, t)?),
    };
    if !address.ip().is_loopback()
        && api_keys.is_empty()
        && tls.as_ref().is_none_or(|t| t.client_ca_file.is_none())
    {
        warnings.push(format!(
            "{}: listen.address {address} accepts remote clients without api_keys or client \
             certificates ([listen.tls] client_ca_file): anyone who can reach the port can spend \
             the proxy's credential; protect the port, or set one of them",
            ctx.origin
        ));
    }
    let max_connections = match &raw.listen.max_connections {
        None => DEFAULT_MAX_CONNECTIONS,
        Some(n) => usize::try_from(*n.get_ref())
            .ok()
            .filter(|n| (1..=MAX_MAX_CONNECTIONS).contains(n))
            .ok_or_else(|| {
                ctx.error(
                    Some(n.span()),
                    "listen.max_connections",
                    format!("{} is out of range", n.get_ref()),
                    format!("write a number from 1 to {MAX_MAX_CONNECTIONS}"),
                )
            })?,
    };

    let shutdown_grace = ctx.duration(
        &raw.listen.shutdown_grace,
        "listen.shutdown_grace",
        DEFAULT_SHUTDOWN_GRACE,
    )?;

    // [admin]
    let admin = AdminConfig {
        enabled: raw.admin.enabled.unwrap_or(true),
        address: socket_addr(ctx, &raw.admin.address, "admin.address", "127.0.0.1:9090")?,
    };
    if admin.enabled && !admin.address.ip().is_loopback() && !allow_remote {
        return Err(ctx.error(
            raw.admin.address.as_ref().map(Spanned::span),
            "admin.address",
            format!("{} is not a loopback address", admin.address),
            "listen on 127.0.0.1, or set allow_remote = true in [listen]",
        ));
    }

    // [upstream]
    let (url, upstream_span) = http_url(
        ctx,
        &raw.upstream.url,
        "upstream.url",
        DEFAULT_UPSTREAM,
        raw.upstream.allow_insecure_http.unwrap_or(false),
    )?;
    if url.query().is_some() {
        return Err(ctx.error(
            upstream_span,
            "upstream.url",
            "the upstream URL must not have a query string",
            "write only scheme, host and an optional base path",
        ));
    }
    let base_path = url.path().trim_end_matches('/').to_string();
    let ca_certs = match &raw.upstream.ca_file {
        None => Vec::new(),
        Some(f) => crate::tls::read_pem_certs(Path::new(f.get_ref())).map_err(|e| {
            ctx.error(
                Some(f.span()),
                "upstream.ca_file",
                format!("cannot use {} as trust roots: {e}", f.get_ref()),
                "point ca_file at a readable PEM file of CA certificates",
            )
        })?,
    };
    let upstream = UpstreamConfig {
        url,
        base_path,
        timeout: ctx.duration(
            &raw.upstream.timeout,
            "upstream.timeout",
            Duration::from_secs(120),
        )?,
        connect_timeout: ctx.duration(
            &raw.upstream.connect_timeout,
            "upstream.connect_timeout",
            Duration::from_secs(10),
        )?,
        ca_file: raw.upstream.ca_file.map(|f| PathBuf::from(f.into_inner())),
        ca_certs,
    };

    // [sts]
    let (token_url, _) = http_url(
        ctx,
        &raw.sts.token_url,
        "sts.token_url",
        DEFAULT_TOKEN_URL,
        raw.sts.allow_insecure_http.unwrap_or(false),
    )?;
    let sts = StsConfig {
        token_url,
        timeout: ctx.duration(&raw.sts.timeout, "sts.timeout", Duration::from_secs(15))?,
    };

    // [credentials.*]
    let mut credentials = BTreeMap::new();
    for (name, cred) in &raw.credentials {
        let key = format!("credentials.{name}");
        if !valid_name(name) {
            return Err(ctx.error(
                Some(cred.span()),
                &key,
                format!("`{name}` is not a valid credential name"),
                "use letters, digits, '-' and '_'",
            ));
        }
        let cred = cred.get_ref();
        let client_id = cred.client_id.get_ref().trim().to_string();
        if client_id.is_empty() || client_id.chars().any(char::is_control) {
            return Err(ctx.error(
                Some(cred.client_id.span()),
                &format!("{key}.client_id"),
                "the client id is empty or holds control characters",
                "copy the client id from the Azure Costs portal",
            ));
        }
        let secret_key = format!("{key}.client_secret");
        if matches!(cred.client_secret.get_ref(), toml::Value::String(_)) {
            warnings.push(format!(
                "{}{}: {secret_key} is written in the config file; secrets belong outside it: \
                 {{ env = \"VAR\" }}, {{ file = \"/path\" }} or {{ credential = \"name\" }}",
                ctx.origin,
                ctx.line_of(Some(cred.client_secret.span()))
                    .map(|l| format!(", line {l}"))
                    .unwrap_or_default(),
            ));
        }
        let client_secret = ctx.secret(&cred.client_secret, &secret_key)?;
        credentials.insert(
            name.clone(),
            CredentialConfig {
                client_id,
                client_secret,
                secret_source: secret_source(cred.client_secret.get_ref()),
            },
        );
    }

    // [token]
    let mode = token_mode(ctx, &raw.token.mode, "token.mode", TokenMode::Interval)?;
    let max_age = ctx.duration(
        &raw.token.max_age,
        "token.max_age",
        Duration::from_secs(55 * 60),
    )?;
    if max_age > MAX_TOKEN_AGE {
        return Err(ctx.error(
            raw.token.max_age.as_ref().map(Spanned::span),
            "token.max_age",
            format!(
                "{} is longer than the vendor's limit of 60 minutes",
                humantime::format_duration(max_age)
            ),
            "set max_age to 60m or less (default 55m)",
        ));
    }
    let refresh_before_expiry = ctx.duration(
        &raw.token.refresh_before_expiry,
        "token.refresh_before_expiry",
        Duration::from_secs(5 * 60),
    )?;
    if refresh_before_expiry >= max_age {
        return Err(ctx.error(
            raw.token.refresh_before_expiry.as_ref().map(Spanned::span),
            "token.refresh_before_expiry",
            "must be shorter than token.max_age",
            "for example max_age = \"55m\" with refresh_before_expiry = \"5m\"",
        ));
    }
    let header_name = raw
        .token
        .transaction_header
        .as_ref()
        .map_or("x-transaction-id", |h| h.get_ref().as_str());
    let transaction_header = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
        ctx.error(
            raw.token.transaction_header.as_ref().map(Spanned::span),
            "token.transaction_header",
            format!("`{header_name}` is not a valid header name"),
            "write a header name such as \"X-Transaction-Id\"",
        )
    })?;
    // Credentials, connection-level and per-request headers would keep a secret in memory or
    // make every request a transaction of its own.
    const NOT_A_TRANSACTION_HEADER: [&str; 13] = [
        "authorization",
        "proxy-authorization",
        "cookie",
        "host",
        "x-request-id",
        "connection",
        "keep-alive",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "proxy-connection",
    ];
    if NOT_A_TRANSACTION_HEADER.contains(&transaction_header.as_str()) {
        return Err(ctx.error(
            raw.token.transaction_header.as_ref().map(Spanned::span),
            "token.transaction_header",
            format!("`{header_name}` cannot name a transaction"),
            "use a header of its own, such as \"X-Transaction-Id\"",
        ));
    }
    let token = TokenPolicy {
        mode,
        max_age,
        refresh_before_expiry,
        transaction_idle: ctx.duration(
            &raw.token.transaction_idle,
            "token.transaction_idle",
            Duration::from_secs(30),
        )?,
        transaction_header,
    };

    // [[routes]]
    let mut routes: Vec<RouteConfig> = Vec::new();
    for r in &raw.routes {
        let r = r.get_ref();
        let prefix = route_prefix(ctx, &r.prefix, "routes.prefix")?;
        if let Some(dup) = routes.iter().find(|x| x.prefix == prefix) {
            return Err(ctx.error(
                Some(r.prefix.span()),
                "routes.prefix",
                format!("prefix `{}` appears twice", dup.prefix),
                "give every [[routes]] entry its own prefix",
            ));
        }
        let credential = r
            .credential
            .as_ref()
            .map_or("default", |c| c.get_ref().as_str());
        if !credentials.contains_key(credential) {
            return Err(ctx.error(
                r.credential
                    .as_ref()
                    .map_or(Some(r.prefix.span()), |c| Some(c.span())),
                "routes.credential",
                format!("route `{prefix}` uses credential `{credential}`, which is not defined"),
                format!("add a [credentials.{credential}] table with client_id and client_secret"),
            ));
        }
        let delegate = match &r.delegate {
            None => None,
            Some(d) => {
                let team = d.get_ref().trim();
                if team.is_empty() || team.chars().any(char::is_control) {
                    return Err(ctx.error(
                        Some(d.span()),
                        "routes.delegate",
                        "the delegate team id is empty or holds control characters",
                        "write the customer team id from the Azure Costs CSP portal",
                    ));
                }
                Some(team.to_string())
            }
        };
        let token_mode = token_mode(ctx, &r.token_mode, "routes.token_mode", mode)?;
        let upstream_path = match &r.upstream_path {
            None => String::new(),
            Some(p) => {
                let clean = route_prefix(ctx, p, "routes.upstream_path")?;
                if clean == "/" { String::new() } else { clean }
            }
        };
        routes.push(RouteConfig {
            prefix,
            credential: credential.to_string(),
            delegate,
            token_mode,
            upstream_path,
        });
    }
    if routes.is_empty() {
        if !credentials.contains_key("default") {
            return Err(ctx.error(
                None,
                "credentials.default",
                "there is no [[routes]] entry and no [credentials.default] for the implicit `/` route",
                "add [credentials.default] with client_id and client_secret",
            ));
        }
        routes.push(RouteConfig {
            prefix: "/".into(),
            credential: "default".into(),
            delegate: None,
            token_mode: mode,
            upstream_path: String::new(),
        });
    }
    for name in credentials.keys() {
        if !routes.iter().any(|r| &r.credential == name) {
            warnings.push(format!(
                "{}: credential `{name}` is not used by any route",
                ctx.origin
            ));
        }
    }

    Ok(Config {
        origin: ctx.origin.to_string(),
        listen: ListenConfig {
            address,
            allow_remote,
            allowed_hosts,
            api_keys,
            tls,
            max_connections,
            shutdown_grace,
        },
        admin,
        upstream,
        sts,
        credentials,
        token,
        routes,
        warnings,
    })
}

/// `[listen.tls]`: both files required, read now so that a bad file is a config error with its
/// line, not a failed handshake later.
fn listen_tls(ctx: &Ctx<'_>, raw: &Spanned<RawTls>) -> Result<ListenTlsConfig, ConfigError> {
    let t = raw.get_ref();
    let required = |value: &Option<Spanned<String>>, key: &str| {
        value
            .as_ref()
            .map(|v| PathBuf::from(v.get_ref()))
            .ok_or_else(|| {
                ctx.error(
                    Some(raw.span()),
                    key,
                    "missing",
                    "[listen.tls] needs both cert_file and key_file (PEM)",
                )
            })
    };
    let cert_file = required(&t.cert_file, "listen.tls.cert_file")?;
    let key_file = required(&t.key_file, "listen.tls.key_file")?;
    let span_of = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span).or(Some(raw.span()));
    let certs = crate::tls::read_pem_certs(&cert_file).map_err(|e| {
        ctx.error(
            span_of(&t.cert_file),
            "listen.tls.cert_file",
            format!("cannot use {}: {e}", cert_file.display()),
            "point cert_file at a readable PEM certificate chain, leaf first",
        )
    })?;
    let key = crate::tls::read_pem_key(&key_file).map_err(|e| {
        ctx.error(
            span_of(&t.key_file),
            "listen.tls.key_file",
            format!("cannot use {}: {e}", key_file.display()),
            "point key_file at a readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    let client_ca_file = t
        .client_ca_file
        .as_ref()
        .map(|v| PathBuf::from(v.get_ref()));
    let client_roots = match &client_ca_file {
        None => None,
        Some(path) => Some(crate::tls::read_pem_certs(path).map_err(|e| {
            ctx.error(
                span_of(&t.client_ca_file),
                "listen.tls.client_ca_file",
                format!("cannot use {} as client CA: {e}", path.display()),
                "point client_ca_file at a readable PEM file of CA certificates",
            )
        })?),
    };
    let server = crate::tls::server_config(certs, key, client_roots.as_deref()).map_err(|e| {
        ctx.error(
            span_of(&t.key_file),
            "listen.tls",
            e,
            "check that key_file is the private key of cert_file's first certificate",
        )
    })?;
    Ok(ListenTlsConfig {
        cert_file,
        key_file,
        client_ca_file,
        server: std::sync::Arc::new(server),
    })
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn socket_addr(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
    key: &str,
    default: &str,
) -> Result<SocketAddr, ConfigError> {
    let text = value.as_ref().map_or(default, |v| v.get_ref().as_str());
    let text = if text.starts_with("localhost:") {
        text.replacen("localhost", "127.0.0.1", 1)
    } else {
        text.to_string()
    };
    text.trim().parse().map_err(|_| {
        ctx.error(
            value.as_ref().map(Spanned::span),
            key,
            format!("`{text}` is not an IP address with a port"),
            "write for example \"127.0.0.1:8080\" or \"[::1]:8080\"",
        )
    })
}

fn http_url(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
    key: &str,
    default: &str,
    allow_insecure_http: bool,
) -> Result<(Uri, Option<Range<usize>>), ConfigError> {
    let span = value.as_ref().map(Spanned::span);
    let text = value
        .as_ref()
        .map_or(default, |v| v.get_ref().as_str())
        .trim();
    let bad = |why: &str| {
        ctx.error(
            span.clone(),
            key,
            format!("`{text}` is not a usable URL: {why}"),
            "write an absolute URL such as \"https://api.azure-costs.com\"",
        )
    };
    let uri: Uri = text.parse().map_err(|_| bad("it does not parse"))?;
    let scheme = uri.scheme_str().ok_or_else(|| bad("no scheme"))?;
    let host = uri.host().ok_or_else(|| bad("no host"))?;
    if uri.authority().is_some_and(|a| a.as_str().contains('@')) {
        return Err(bad("user information in the URL is not supported"));
    }
    match scheme {
        "https" => {}
        "http" if is_loopback_host(host) || allow_insecure_http => {}
        "http" => {
            let table = key.split('.').next().unwrap_or_default();
            return Err(ctx.error(
                span,
                key,
                format!("plain http:// to {host} would send the credential unencrypted"),
                format!(
                    "use https://, or set allow_insecure_http = true in [{table}] if the network \
                     path is protected by other means"
                ),
            ));
        }
        _ => return Err(bad("the scheme must be https (or http to a loopback host)")),
    }
    Ok((uri, span))
}

fn token_mode(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
    key: &str,
    default: TokenMode,
) -> Result<TokenMode, ConfigError> {
    let Some(v) = value else { return Ok(default) };
    match v.get_ref().as_str() {
        "interval" => Ok(TokenMode::Interval),
        "per_request" => Ok(TokenMode::PerRequest),
        "per_transaction" => Ok(TokenMode::PerTransaction),
        other => Err(ctx.error(
            Some(v.span()),
            key,
            format!("unknown token mode `{other}`"),
            "use \"interval\", \"per_request\" or \"per_transaction\"",
        )),
    }
}

/// Validates a path prefix: `/` or `/seg[/seg...]`, no trailing slash, no query, no dot segments.
fn route_prefix(ctx: &Ctx<'_>, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    let p = value.get_ref().trim();
    let bad = |why: &str| {
        ctx.error(
            Some(value.span()),
            key,
            format!("`{p}` is not a valid path prefix: {why}"),
            "write \"/\" or a path such as \"/contoso\" or \"/customers/contoso\"",
        )
    };
    if !p.starts_with('/') {
        return Err(bad("it must start with '/'"));
    }
    if p == "/" {
        return Ok("/".into());
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".into());
    }
    for seg in trimmed[1..].split('/') {
        if seg.is_empty() {
            return Err(bad("it has an empty segment (`//`)"));
        }
        if seg == "." || seg == ".." {
            return Err(bad("dot segments are not allowed"));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#'))
        {
            return Err(bad("it holds a space, '?', '#' or a non-ASCII character"));
        }
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env_with<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_string())
        }
    }

    fn parse(text: &str) -> Result<Config, ConfigError> {
        from_toml(text, "proxy.toml", &env_with(&[("SECRET", "s3cr3t")]))
    }

    const MINIMAL: &str =
        "[credentials.default]\nclient_id = \"abc\"\nclient_secret = { env = \"SECRET\" }\n";

    #[test]
    fn minimal_config_gets_defaults() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.listen.address, "127.0.0.1:8080".parse().unwrap());
        assert_eq!(c.routes.len(), 1);
        assert_eq!(c.routes[0].prefix, "/");
        assert_eq!(c.token.max_age, Duration::from_secs(55 * 60));
        assert_eq!(c.upstream.url.host(), Some("api.azure-costs.com"));
        assert_eq!(c.credentials["default"].client_secret.expose(), "s3cr3t");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let text = format!("{MINIMAL}\n[listen]\nadress = \"127.0.0.1:1\"\n");
        let e = parse(&text).unwrap_err();
        assert_eq!(e.line, Some(6));
        assert_eq!(e.key, "listen.adress");
        assert!(e.message.contains("unknown field"), "{e}");
        assert!(e.to_string().contains("proxy.toml, line 6"), "{e}");
    }

    #[test]
    fn max_age_above_an_hour_is_refused() {
        let e = parse(&format!("{MINIMAL}[token]\nmax_age = \"61m\"\n")).unwrap_err();
        assert_eq!(e.key, "token.max_age");
        assert_eq!(e.line, Some(5));
        assert!(parse(&format!("{MINIMAL}[token]\nmax_age = \"60m\"\n")).is_ok());
    }

    #[test]
    fn non_loopback_listen_needs_allow_remote() {
        let e = parse(&format!("{MINIMAL}[listen]\naddress = \"0.0.0.0:8080\"\n")).unwrap_err();
        assert_eq!(e.key, "listen.address");
        assert!(e.to_string().contains("allow_remote"), "{e}");
        let ok = parse(&format!(
            "{MINIMAL}[listen]\naddress = \"0.0.0.0:8080\"\nallow_remote = true\n"
        ));
        assert!(ok.is_ok());
    }

    #[test]
    fn plain_secret_is_accepted_with_a_warning_that_does_not_show_it() {
        let c = parse("[credentials.default]\nclient_id = \"abc\"\nclient_secret = \"hunter2\"\n")
            .unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("line 3"), "{:?}", c.warnings);
        assert!(!c.warnings[0].contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }

    #[test]
    fn missing_env_secret_says_which_variable() {
        let e =
            parse("[credentials.default]\nclient_id = \"a\"\nclient_secret = { env = \"NOPE\" }\n")
                .unwrap_err();
        assert_eq!(e.key, "credentials.default.client_secret");
        assert!(e.message.contains("NOPE"));
        assert_eq!(e.line, Some(3));
    }

    #[test]
    fn durations_are_humantime_and_errors_point_at_them() {
        let c = parse(&format!("{MINIMAL}[upstream]\ntimeout = \"90s\"\n")).unwrap();
        assert_eq!(c.upstream.timeout, Duration::from_secs(90));
        assert_eq!(c.listen.shutdown_grace, DEFAULT_SHUTDOWN_GRACE);
        let c = parse(&format!("[listen]\nshutdown_grace = \"2m\"\n{MINIMAL}")).unwrap();
        assert_eq!(c.listen.shutdown_grace, Duration::from_secs(120));
        let e = parse(&format!("[listen]\nshutdown_grace = \"0s\"\n{MINIMAL}")).unwrap_err();
        assert_eq!(e.key, "listen.shutdown_grace");
        assert_eq!(e.line, Some(2));
        let e = parse(&format!("{MINIMAL}[upstream]\ntimeout = \"soon\"\n")).unwrap_err();
        assert_eq!(e.key, "upstream.timeout");
        assert_eq!(e.line, Some(5));
    }

    #[test]
    fn transaction_header_cannot_be_a_credential_or_connection_header() {
        let e = parse(&format!(
            "{MINIMAL}[token]\ntransaction_header = \"Authorization\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "token.transaction_header");
        assert!(e.message.contains("cannot name a transaction"), "{e}");
        let ok = parse(&format!(
            "{MINIMAL}[token]\nmode = \"per_transaction\"\ntransaction_header = \"X-Reload\"\n"
        ))
        .unwrap();
        assert_eq!(ok.token.transaction_header.as_str(), "x-reload");
        assert_eq!(ok.token.mode, TokenMode::PerTransaction);
    }

    #[test]
    fn routes_are_validated() {
        let route = |body: &str| parse(&format!("{MINIMAL}[[routes]]\n{body}\n"));
        assert!(route("prefix = \"/contoso\"").is_ok());
        assert_eq!(
            route("prefix = \"/contoso/\"").unwrap().routes[0].prefix,
            "/contoso"
        );
        assert!(route("prefix = \"contoso\"").is_err());
        assert!(route("prefix = \"/a//b\"").is_err());
        assert!(route("prefix = \"/a/../b\"").is_err());
        let e = route("prefix = \"/x\"\ncredential = \"other\"").unwrap_err();
        assert_eq!(e.key, "routes.credential");
        assert!(e.hint.unwrap().contains("[credentials.other]"));
        let dup = parse(&format!(
            "{MINIMAL}[[routes]]\nprefix = \"/a\"\n[[routes]]\nprefix = \"/a\"\n"
        ))
        .unwrap_err();
        assert_eq!(dup.line, Some(7));
    }

    #[test]
    fn plain_http_only_to_loopback() {
        assert!(
            parse(&format!(
                "{MINIMAL}[upstream]\nurl = \"http://127.0.0.1:9\"\n"
            ))
            .is_ok()
        );
        let e = parse(&format!(
            "{MINIMAL}[sts]\ntoken_url = \"http://sts.example\"\n"
        ))
        .unwrap_err();
        assert!(e.to_string().contains("allow_insecure_http"), "{e}");
        assert!(
            parse(&format!(
                "{MINIMAL}[sts]\ntoken_url = \"http://sts.example\"\nallow_insecure_http = true\n"
            ))
            .is_ok()
        );
    }

    #[test]
    fn environment_only_config() {
        let env = env_with(&[
            ("AZURE_COSTS_CLIENT_ID", "id-1"),
            ("AZURE_COSTS_CLIENT_SECRET", "sec"),
            ("AZURE_COSTS_PROXY_LISTEN", "127.0.0.1:9999"),
            ("AZURE_COSTS_DELEGATE", "TEAM-7"),
            ("AZURE_COSTS_PROXY_ALLOWED_HOSTS", "proxy, dashboard.local"),
            ("AZURE_COSTS_PROXY_ADMIN", "127.0.0.1:9191"),
        ]);
        let c = from_env(&env).unwrap();
        assert_eq!(c.admin.address.port(), 9191);
        assert_eq!(c.credentials["default"].client_id, "id-1");
        assert_eq!(c.listen.address.port(), 9999);
        assert_eq!(c.routes[0].delegate.as_deref(), Some("TEAM-7"));
        assert_eq!(c.listen.allowed_hosts, ["proxy", "dashboard.local"]);

        let e = from_env(&env_with(&[("AZURE_COSTS_CLIENT_ID", "x")])).unwrap_err();
        assert_eq!(e.key, "AZURE_COSTS_CLIENT_SECRET");
        let remote = env_with(&[
            ("AZURE_COSTS_CLIENT_ID", "id-1"),
            ("AZURE_COSTS_CLIENT_SECRET", "sec"),
            ("AZURE_COSTS_PROXY_LISTEN", "0.0.0.0:8080"),
        ]);
        let e = from_env(&remote).unwrap_err();
        assert_eq!(e.key, "AZURE_COSTS_PROXY_LISTEN");
        assert!(e.to_string().contains("AZURE_COSTS_PROXY_ALLOW_REMOTE"));
        let admin_remote = env_with(&[
            ("AZURE_COSTS_CLIENT_ID", "id-1"),
            ("AZURE_COSTS_CLIENT_SECRET", "sec"),
            ("AZURE_COSTS_PROXY_ADMIN", "0.0.0.0:9090"),
        ]);
        let e = from_env(&admin_remote).unwrap_err();
        assert_eq!(e.key, "AZURE_COSTS_PROXY_ADMIN");
    }

    #[test]
    fn environment_api_key_and_tls_guard_the_port() {
        let base = [
            ("AZURE_COSTS_CLIENT_ID", "id-1"),
            ("AZURE_COSTS_CLIENT_SECRET", "sec"),
            ("AZURE_COSTS_PROXY_LISTEN", "0.0.0.0:8080"),
            ("AZURE_COSTS_PROXY_ALLOW_REMOTE", "true"),
        ];
        let open = from_env(&env_with(&base)).unwrap();
        assert!(
            open.warnings.iter().any(|w| w.contains("api_keys")),
            "{:?}",
            open.warnings
        );
        let mut keyed = base.to_vec();
        keyed.push(("AZURE_COSTS_PROXY_API_KEY", "0123456789abcdef0123"));
        let c = from_env(&env_with(&keyed)).unwrap();
        assert_eq!(c.listen.api_keys[0].expose(), "0123456789abcdef0123");
        assert!(c.warnings.is_empty(), "{:?}", c.warnings);

        let mut half_tls = base.to_vec();
        half_tls.push(("AZURE_COSTS_PROXY_TLS_CERT", "/etc/cert.pem"));
        let e = from_env(&env_with(&half_tls)).unwrap_err();
        assert_eq!(e.key, "AZURE_COSTS_PROXY_TLS_KEY", "{e}");
    }

    #[test]
    fn api_keys_are_visible_ascii_and_short_or_inline_ones_warn() {
        let with_key = |key: &str| {
            from_toml(
                &format!("[listen]\napi_keys = [{{ env = \"K\" }}]\n{MINIMAL}"),
                "proxy.toml",
                &env_with(&[("SECRET", "s"), ("K", key)]),
            )
        };
        for bad in [
            "two words here 1234",
            "tab\there-0123456789",
            "é-0123456789abcdef",
        ] {
            let e = with_key(bad).unwrap_err();
            assert_eq!(
                (e.key.as_str(), e.line),
                ("listen.api_keys", Some(2)),
                "{e}"
            );
            assert!(!e.to_string().contains(bad), "{e}");
        }
        let long = "k".repeat(MAX_API_KEY + 1);
        assert!(with_key(&long).is_err());
        let short = with_key("short").unwrap();
        assert!(
            short.warnings.iter().any(|w| w.contains("shorter than")),
            "{:?}",
            short.warnings
        );
        let inline = parse(&format!(
            "[listen]\napi_keys = [\"inline-key-0123456789\"]\n{MINIMAL}"
        ))
        .unwrap();
        assert!(
            inline
                .warnings
                .iter()
                .any(|w| w.contains("line 2") && w.contains("written in the config")),
            "{:?}",
            inline.warnings
        );
        assert!(!inline.warnings.concat().contains("inline-key"));
    }

    #[test]
    fn guard_variables_ignored_beside_a_file_are_named() {
        let dir = std::env::temp_dir().join(format!("acp-ignored-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy.toml");
        std::fs::write(&path, MINIMAL).unwrap();
        let env = env_with(&[
            ("SECRET", "s"),
            ("AZURE_COSTS_PROXY_API_KEY", "k-0123456789abcdef"),
        ]);
        let c = load_file(&path, &env).unwrap();
        assert!(
            c.warnings
                .iter()
                .any(|w| w.contains("AZURE_COSTS_PROXY_API_KEY") && w.contains("ignored")),
            "{:?}",
            c.warnings
        );
        // A file that reads the variable itself gets no warning.
        std::fs::write(
            &path,
            format!("[listen]\napi_keys = [{{ env = \"AZURE_COSTS_PROXY_API_KEY\" }}]\n{MINIMAL}"),
        )
        .unwrap();
        assert!(load_file(&path, &env).unwrap().warnings.is_empty());
        // Oversized secret files are refused before they are read whole.
        let big = dir.join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_FILE as usize + 1]).unwrap();
        let e = from_toml(
            &format!(
                "[credentials.default]\nclient_id = \"a\"\nclient_secret = {{ file = \"{}\" }}\n",
                big.display()
            ),
            "proxy.toml",
            &env,
        )
        .unwrap_err();
        assert!(e.message.contains("larger than"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn healthcheck_reads_the_admin_address_alone() {
        let dir = std::env::temp_dir().join(format!("acp-admin-only-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("proxy.toml");
        // The secret cannot be read here, and need not be.
        let text = "[admin]\naddress = \"127.0.0.1:9191\"\n\n[credentials.default]\n\
                    client_id = \"x\"\nclient_secret = { credential = \"missing\" }\n";
        std::fs::write(&path, text).unwrap();
        let file = ConfigSource::File(path.clone());
        let none = env_with(&[]);
        assert_eq!(
            file.admin_address(&none).unwrap(),
            Some("127.0.0.1:9191".parse().unwrap())
        );
        assert!(file.load(&none).is_err(), "the full load needs the secret");
        std::fs::write(&path, "[admin]\nenabled = false\n").unwrap();
        assert_eq!(file.admin_address(&none).unwrap(), None);
        std::fs::write(&path, "[admin]\naddress = \"nowhere\"\n").unwrap();
        let e = file.admin_address(&none).unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("admin.address", Some(2)));
        let _ = std::fs::remove_dir_all(&dir);

        let env = env_with(&[("AZURE_COSTS_PROXY_ADMIN", "127.0.0.1:9292")]);
        assert_eq!(
            ConfigSource::Environment.admin_address(&env).unwrap(),
            Some("127.0.0.1:9292".parse().unwrap())
        );
        assert_eq!(
            ConfigSource::Environment.admin_address(&none).unwrap(),
            Some("127.0.0.1:9090".parse().unwrap())
        );
    }

    #[test]
    fn lookup_order_is_flag_then_environment_variable() {
        let env = env_with(&[(CONFIG_ENV, "/from/env.toml")]);
        assert_eq!(
            locate(Some(Path::new("/from/flag.toml")), &env),
            Some(PathBuf::from("/from/flag.toml"))
        );
        assert_eq!(locate(None, &env), Some(PathBuf::from("/from/env.toml")));
    }

    #[test]
    fn secret_sources_file_and_credential_directory() {
        let dir = std::env::temp_dir().join(format!("acp-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("client_secret"), "from-file\n").unwrap();
        std::fs::write(dir.join("empty"), "\n").unwrap();
        let cred_dir = dir.to_str().unwrap().to_string();
        let vars = [("CREDENTIALS_DIRECTORY", cred_dir.as_str())];
        let env = env_with(&vars);
        let parse = |secret: &str| {
            from_toml(
                &format!("[credentials.default]\nclient_id = \"a\"\nclient_secret = {secret}\n"),
                "proxy.toml",
                &env,
            )
        };
        let file = format!("{{ file = \"{}/client_secret\" }}", cred_dir);
        assert_eq!(
            parse(&file).unwrap().credentials["default"]
                .client_secret
                .expose(),
            "from-file"
        );
        let cred = parse("{ credential = \"client_secret\" }").unwrap();
        assert_eq!(
            cred.credentials["default"].client_secret.expose(),
            "from-file"
        );
        assert_eq!(
            cred.credentials["default"].secret_source,
            "credential client_secret"
        );
        let empty = parse(&format!("{{ file = \"{}/empty\" }}", cred_dir)).unwrap_err();
        assert!(empty.message.contains("empty"), "{empty}");
        let unknown = parse("{ vault = \"x\" }").unwrap_err();
        assert!(
            unknown.message.contains("unknown secret source"),
            "{unknown}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn missing_key_names_its_table() {
        let e = parse(&format!(
            "{MINIMAL}\n[[routes]]\ncredential = \"default\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "routes");
        assert_eq!(e.line, Some(5));
        assert!(e.message.contains("missing field `prefix`"), "{e}");
    }

    #[test]
    fn type_errors_do_not_repeat_the_value() {
        let e = parse("[credentials.default]\nclient_id = \"a\"\nclient_secret = { env = \"SECRET\" }\n[listen]\nallow_remote = \"hunter2\"\n")
            .unwrap_err();
        assert_eq!(e.key, "listen.allow_remote");
        assert!(!e.to_string().contains("hunter2"), "{e}");
        assert_eq!(
            redact_quoted("a \"x\" b \"y\" c"),
            "a \"[redacted]\" b \"[redacted]\" c"
        );
    }

    #[test]
    fn allowed_hosts_are_normalised() {
        let c = parse(&format!(
            "{MINIMAL}[listen]\nallowed_hosts = [\"BI.internal:8080\", \"[fe80::1]\", \"gw.local.\", \"*\"]\n"
        ))
        .unwrap();
        assert_eq!(
            c.listen.allowed_hosts,
            ["bi.internal", "fe80::1", "gw.local", "*"]
        );
    }

    #[test]
    fn api_keys_come_from_env_or_file_and_remote_without_them_warns() {
        let c = parse(&format!(
            "[listen]\napi_keys = [{{ env = \"SECRET\" }}]\n{MINIMAL}"
        ))
        .unwrap();
        assert_eq!(c.listen.api_keys.len(), 1);
        assert_eq!(c.listen.api_keys[0].expose(), "s3cr3t");
        assert!(
            !c.warnings.iter().any(|w| w.contains("remote clients")),
            "{:?}",
            c.warnings
        );
        let missing = parse(&format!(
            "[listen]\napi_keys = [{{ env = \"NOPE\" }}]\n{MINIMAL}"
        ))
        .unwrap_err();
        assert_eq!(
            (missing.key.as_str(), missing.line),
            ("listen.api_keys", Some(2))
        );
        assert!(missing.message.contains("NOPE"), "{missing}");

        let open = parse(&format!(
            "[listen]\naddress = \"0.0.0.0:8080\"\nallow_remote = true\n{MINIMAL}"
        ))
        .unwrap();
        assert!(
            open.warnings.iter().any(|w| w.contains("api_keys")),
            "{:?}",
            open.warnings
        );
        let keyed = parse(&format!(
            "[listen]\naddress = \"0.0.0.0:8080\"\nallow_remote = true\n\
             api_keys = [{{ env = \"SECRET\" }}]\n{MINIMAL}"
        ))
        .unwrap();
        assert!(
            !keyed.warnings.iter().any(|w| w.contains("remote clients")),
            "{:?}",
            keyed.warnings
        );
    }

    #[test]
    fn max_connections_is_a_positive_number() {
        assert_eq!(
            parse(MINIMAL).unwrap().listen.max_connections,
            DEFAULT_MAX_CONNECTIONS
        );
        let c = parse(&format!("[listen]\nmax_connections = 10\n{MINIMAL}")).unwrap();
        assert_eq!(c.listen.max_connections, 10);
        for bad in ["0", "-1", "9999999999"] {
            let e = parse(&format!("[listen]\nmax_connections = {bad}\n{MINIMAL}")).unwrap_err();
            assert_eq!(
                (e.key.as_str(), e.line),
                ("listen.max_connections", Some(2)),
                "{e}"
            );
        }
    }

    #[test]
    fn listen_tls_reads_and_checks_its_files() {
        let dir = std::env::temp_dir().join(format!("acp-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let path = |name: &str| dir.join(name).to_str().unwrap().to_string();
        std::fs::write(path("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        std::fs::write(path("other-key.pem"), other.signing_key.serialize_pem()).unwrap();
        let tls = |body: &str| parse(&format!("[listen.tls]\n{body}\n{MINIMAL}"));

        let ok = tls(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"",
            path("cert.pem"),
            path("key.pem"),
            path("cert.pem")
        ))
        .unwrap();
        let listen_tls = ok.listen.tls.as_ref().unwrap();
        assert_eq!(
            listen_tls.server.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        let debug = format!("{:?}", ok.listen);
        assert!(
            debug.contains("key.pem") && !debug.contains("PRIVATE"),
            "{debug}"
        );

        let missing = tls(&format!("cert_file = \"{}\"", path("cert.pem"))).unwrap_err();
        assert_eq!(missing.key, "listen.tls.key_file", "{missing}");
        let unreadable = tls(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"",
            path("nope.pem"),
            path("key.pem")
        ))
        .unwrap_err();
        assert_eq!(
            (unreadable.key.as_str(), unreadable.line),
            ("listen.tls.cert_file", Some(2))
        );
        let not_a_key = tls(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"",
            path("cert.pem"),
            path("cert.pem")
        ))
        .unwrap_err();
        assert_eq!(
            (not_a_key.key.as_str(), not_a_key.line),
            ("listen.tls.key_file", Some(3))
        );
        let mismatched = tls(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"",
            path("cert.pem"),
            path("other-key.pem")
        ))
        .unwrap_err();
        assert_eq!(mismatched.key, "listen.tls", "{mismatched}");
        assert!(
            mismatched.message.contains("do not go together"),
            "{mismatched}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn secret_debug_is_redacted() {
        let s = Secret::new("top");
        assert_eq!(format!("{s:?} {s}"), "[redacted] [redacted]");
    }
}
