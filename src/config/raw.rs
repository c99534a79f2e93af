//! The config file as serde reads it: exactly the keys `proxy.toml.example` documents, nothing
//! else (`deny_unknown_fields`), each value kept with its place in the file (`Spanned`) so that
//! an error can name its line. Nothing here is checked yet; `validate/` does that.

use std::collections::BTreeMap;

use serde::Deserialize;
use toml::Spanned;

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawConfig {
    #[serde(default)]
    pub(super) listen: RawListen,
    #[serde(default)]
    pub(super) admin: RawAdmin,
    #[serde(default)]
    pub(super) upstream: RawUpstream,
    #[serde(default)]
    pub(super) sts: RawSts,
    #[serde(default)]
    pub(super) outbound: RawOutbound,
    #[serde(default)]
    pub(super) credentials: BTreeMap<String, Spanned<RawCredential>>,
    #[serde(default)]
    pub(super) token: RawToken,
    #[serde(default)]
    pub(super) log: RawLog,
    #[serde(default)]
    pub(super) routes: Vec<Spanned<RawRoute>>,
    #[serde(default)]
    pub(super) reload: RawReload,
    #[serde(default)]
    pub(super) clients: Vec<Spanned<RawClient>>,
    #[serde(default)]
    pub(super) cache: RawCache,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCache {
    pub(super) max_entry: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawListen {
    pub(super) address: Option<Spanned<String>>,
    pub(super) allow_remote: Option<bool>,
    pub(super) allowed_hosts: Option<Vec<Spanned<String>>>,
    pub(super) api_keys: Option<Vec<Spanned<toml::Value>>>,
    pub(super) tls: Option<Spanned<RawTls>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) shutdown_grace: Option<Spanned<String>>,
    pub(super) body_timeout: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTls {
    pub(super) cert_file: Option<Spanned<String>>,
    pub(super) key_file: Option<Spanned<String>>,
    pub(super) client_ca: Option<Spanned<String>>,
    /// The earlier name of `client_ca`, still read.
    pub(super) client_ca_file: Option<Spanned<String>>,
    pub(super) client_auth: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawAdmin {
    pub(super) enabled: Option<bool>,
    pub(super) address: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawUpstream {
    pub(super) url: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) connect_timeout: Option<Spanned<String>>,
    pub(super) max_connections: Option<Spanned<i64>>,
    pub(super) ca_file: Option<Spanned<String>>,
    pub(super) allow_insecure_http: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawSts {
    pub(super) token_url: Option<Spanned<String>>,
    pub(super) timeout: Option<Spanned<String>>,
    pub(super) allow_insecure_http: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawOutbound {
    pub(super) proxy: Option<Spanned<String>>,
    pub(super) no_proxy: Option<Vec<Spanned<String>>>,
    pub(super) proxy_auth: Option<Spanned<RawProxyAuth>>,
    pub(super) trust: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) ca_file: Option<Spanned<String>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawProxyAuth {
    pub(super) username: Spanned<String>,
    pub(super) password: Spanned<toml::Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCredential {
    pub(super) client_id: Spanned<String>,
    pub(super) client_secret: Spanned<toml::Value>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawToken {
    pub(super) mode: Option<Spanned<String>>,
    pub(super) max_age: Option<Spanned<String>>,
    pub(super) refresh_before_expiry: Option<Spanned<String>>,
    pub(super) transaction_idle: Option<Spanned<String>>,
    pub(super) transaction_header: Option<Spanned<String>>,
    pub(super) refresh_on: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(super) sts_budget: Option<Spanned<String>>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLog {
    pub(super) file: Option<Spanned<String>>,
    pub(super) keep: Option<Spanned<i64>>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawRoute {
    pub(super) prefix: Spanned<String>,
    pub(super) credential: Option<Spanned<String>>,
    pub(super) delegate: Option<Spanned<String>>,
    pub(super) delegates: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) token_mode: Option<Spanned<String>>,
    pub(super) upstream_path: Option<Spanned<String>>,
    pub(super) refresh_on: Option<Spanned<Vec<Spanned<i64>>>>,
    pub(super) max_in_flight: Option<Spanned<i64>>,
    pub(super) queue: Option<Spanned<i64>>,
    pub(super) queue_timeout: Option<Spanned<String>>,
    pub(super) coalesce: Option<bool>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct RawReload {
    pub(super) watch: Option<bool>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawClient {
    pub(super) name: Spanned<String>,
    pub(super) key: Option<Spanned<toml::Value>>,
    pub(super) key_sha256: Option<Spanned<String>>,
    pub(super) cert: Option<Spanned<String>>,
    pub(super) routes: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) delegates: Option<Spanned<Vec<Spanned<String>>>>,
    pub(super) rate: Option<Spanned<String>>,
    pub(super) max_in_flight: Option<Spanned<i64>>,
}
