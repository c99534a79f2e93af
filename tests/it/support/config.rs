//! Test configs as typed values: the simulator's defaults, overridden key by key (`set`), with
//! routes and secret references as values; rendered to TOML text the way an operator writes it.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use azure_costs_proxy::config;
use azure_costs_proxy::simulator::Simulator;
use toml::{Table, Value};

/// A proxy config for a simulator: loopback listeners, the simulator as upstream and STS, and its
/// credential as `default` (the secret read from `$SIM_SECRET`, or from a file).
#[derive(Clone, Default)]
pub(crate) struct TestConfig {
    /// `(dotted key, value)` in the order set: a later one wins.
    overrides: Vec<(String, Value)>,
    routes: Vec<RouteSpec>,
    clients: Vec<ClientEntry>,
    secret_file: Option<PathBuf>,
    /// Environment variables the config is loaded with, besides `$SIM_SECRET`.
    env_vars: Vec<(String, String)>,
}

/// One `[[routes]]` entry.
#[derive(Clone)]
pub(crate) struct RouteSpec(Table);

/// A route for `prefix` with the default credential, no delegate and the global token mode.
pub(crate) fn route(prefix: &str) -> RouteSpec {
    RouteSpec(Table::from_iter([("prefix".to_string(), prefix.into())]))
}

impl RouteSpec {
    /// Acts for the customer team `team` (CSP delegation).
    pub(crate) fn delegate(self, team: &str) -> Self {
        self.with("delegate", team)
    }

    /// Prepended to the path after the prefix is stripped.
    pub(crate) fn upstream_path(self, path: &str) -> Self {
        self.with("upstream_path", path)
    }

    /// This route's own token mode.
    pub(crate) fn token_mode(self, mode: &str) -> Self {
        self.with("token_mode", mode)
    }

    /// The teams a `{delegate}` route may act for (`["*"]`: any).
    pub(crate) fn delegates(mut self, teams: &[&str]) -> Self {
        let teams: Vec<Value> = teams.iter().map(|t| (*t).into()).collect();
        self.0.insert("delegates".to_string(), Value::Array(teams));
        self
    }

    /// The statuses that mean "token refused" on this route.
    pub(crate) fn refresh_on(mut self, statuses: &[i64]) -> Self {
        let statuses: Vec<Value> = statuses.iter().map(|s| (*s).into()).collect();
        self.0
            .insert("refresh_on".to_string(), Value::Array(statuses));
        self
    }

    /// Any other key of the route.
    pub(crate) fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.0.insert(key.to_string(), value.into());
        self
    }

    fn with(mut self, key: &str, value: &str) -> Self {
        self.0.insert(key.to_string(), value.into());
        self
    }
}

/// One `[[clients]]` entry.
#[derive(Clone)]
pub(crate) struct ClientEntry(Table);

/// A client named `name`; `key`, `key_sha256` or `cert` says how it is recognised.
pub(crate) fn client(name: &str) -> ClientEntry {
    ClientEntry(Table::from_iter([("name".to_string(), name.into())]))
}

impl ClientEntry {
    /// Recognised by the key the secret reference `key` names.
    pub(crate) fn key(mut self, key: Value) -> Self {
        self.0.insert("key".to_string(), key);
        self
    }

    /// Recognised by the key whose SHA-256 is `hex`.
    pub(crate) fn key_sha256(self, hex: &str) -> Self {
        self.with("key_sha256", hex.into())
    }

    /// Recognised by its TLS client certificate's name.
    pub(crate) fn cert(self, name: &str) -> Self {
        self.with("cert", name.into())
    }

    /// The route prefixes it may use.
    pub(crate) fn routes(self, prefixes: &[&str]) -> Self {
        self.with("routes", strings(prefixes))
    }

    /// The teams it may act for.
    pub(crate) fn delegates(self, teams: &[&str]) -> Self {
        self.with("delegates", strings(teams))
    }

    /// Its `rate` (`"5/s"`).
    pub(crate) fn rate(self, rate: &str) -> Self {
        self.with("rate", rate.into())
    }

    /// Its `max_in_flight`.
    pub(crate) fn max_in_flight(self, n: i64) -> Self {
        self.with("max_in_flight", n.into())
    }

    fn with(mut self, key: &str, value: Value) -> Self {
        self.0.insert(key.to_string(), value);
        self
    }
}

fn strings(items: &[&str]) -> Value {
    Value::Array(items.iter().map(|i| (*i).into()).collect())
}

/// A secret reference `{ env = "NAME" }`.
pub(crate) fn env(name: &str) -> Value {
    Value::Table(Table::from_iter([("env".to_string(), name.into())]))
}

/// A secret reference `{ file = "PATH" }`.
pub(crate) fn file(path: &Path) -> Value {
    let path = path.display().to_string();
    Value::Table(Table::from_iter([("file".to_string(), path.into())]))
}

impl TestConfig {
    /// The defaults alone.
    pub(crate) fn new() -> Self {
        Self::default()
    }

    /// Sets `key`, dotted as in the docs (`"upstream.timeout"`, `"listen.tls.cert_file"`), to
    /// `value`, over the default. Any key, also one the proxy does not know.
    pub(crate) fn set(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.overrides.push((key.to_string(), value.into()));
        self
    }

    /// Adds a `[[routes]]` entry (with none, the proxy has its default `/` route).
    pub(crate) fn route(mut self, route: RouteSpec) -> Self {
        self.routes.push(route);
        self
    }

    /// Adds a `[[clients]]` entry.
    pub(crate) fn client(mut self, client: ClientEntry) -> Self {
        self.clients.push(client);
        self
    }

    /// Loads the config with the environment variable `name` set to `value` (in-process: the
    /// process environment is not touched).
    pub(crate) fn env_var(mut self, name: &str, value: &str) -> Self {
        self.env_vars.push((name.to_string(), value.to_string()));
        self
    }

    /// Reads the secret from the file at `path` instead of `$SIM_SECRET`.
    pub(crate) fn secret_file(mut self, path: PathBuf) -> Self {
        self.secret_file = Some(path);
        self
    }

    /// The config file for `sim`.
    pub(crate) fn text(&self, sim: &Simulator) -> String {
        let secret = match &self.secret_file {
            Some(path) => file(path),
            None => env("SIM_SECRET"),
        };
        let mut table = Table::new();
        for (key, value) in [
            ("listen.address", "127.0.0.1:0".into()),
            ("admin.address", "127.0.0.1:0".into()),
            ("upstream.url", sim.api_url().into()),
            ("sts.token_url", sim.sts_url().into()),
            ("credentials.default.client_id", sim.client_id().into()),
            ("credentials.default.client_secret", secret),
        ]
        .into_iter()
        .chain(self.overrides.iter().map(|(k, v)| (k.as_str(), v.clone())))
        {
            insert(&mut table, key, value);
        }
        let routes = self.routes.iter().map(|r| Value::Table(r.0.clone()));
        if !self.routes.is_empty() {
            table.insert("routes".to_string(), Value::Array(routes.collect()));
        }
        let clients = self.clients.iter().map(|c| Value::Table(c.0.clone()));
        if !self.clients.is_empty() {
            table.insert("clients".to_string(), Value::Array(clients.collect()));
        }
        render(&table)
    }

    /// The validated config for `sim`, with its secret in the (fake) environment.
    pub(crate) fn parse(&self, sim: &Simulator) -> config::Config {
        let secret = sim.client_secret();
        config::from_toml(&self.text(sim), "test.toml", &move |name: &str| {
            if name == "SIM_SECRET" {
                return Some(secret.clone());
            }
            self.env_vars
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| v.clone())
        })
        .expect("test config is valid")
    }
}

/// Puts `value` at the dotted `key`, creating the tables on the way.
fn insert(table: &mut Table, key: &str, value: Value) {
    let (parents, last) = key.rsplit_once('.').map_or(("", key), |(p, l)| (p, l));
    let mut at = table;
    for part in parents.split('.').filter(|p| !p.is_empty()) {
        let next = at
            .entry(part.to_string())
            .or_insert_with(|| Value::Table(Table::new()));
        at = next.as_table_mut().expect("a table on the key's path");
    }
    at.insert(last.to_string(), value);
}

/// Writes each top-level table as a `[section]` of `key = value` lines (a table of tables, like
/// `credentials`, as one section per entry; `routes` as `[[routes]]`), nested values inline.
/// One key per line, so that an error names `table.key` and its line as it would for an operator.
fn render(table: &Table) -> String {
    let mut out = String::new();
    let mut section = |name: &str, body: &Table, array: bool| {
        let (open, close) = if array { ("[[", "]]") } else { ("[", "]") };
        let _ = writeln!(out, "{open}{name}{close}");
        for (key, value) in body {
            let _ = writeln!(out, "{key} = {value}");
        }
        out.push('\n');
    };
    for (name, value) in table {
        match value {
            Value::Table(body) if body.values().all(Value::is_table) => {
                for (entry, body) in body {
                    section(&format!("{name}.{entry}"), as_table(body), false);
                }
            }
            Value::Table(body) => section(name, body, false),
            Value::Array(entries) => {
                for body in entries {
                    section(name, as_table(body), true);
                }
            }
            other => panic!("top-level key {name} = {other} is not a table"),
        }
    }
    out
}

fn as_table(value: &Value) -> &Table {
    value.as_table().expect("a table")
}
