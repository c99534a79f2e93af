//! The configuration from environment variables alone, used when no config file is found: one
//! credential, one `/` route, and the listener, admin, upstream and STS settings a container
//! needs. The variables fill the same raw tables a file would, so the same validation applies.

use toml::Spanned;

use super::diagnostics::{ConfigError, Ctx};
use super::raw::{RawConfig, RawCredential, RawListen, RawRoute, RawTls};
use super::validate::validate;
use super::{CONFIG_ENV, Config, EnvLookup};

/// Environment variables of the file-less configuration, and the key each stands for.
pub(super) const ENV_KEYS: &[(&str, &str)] = &[
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
    // An empty variable counts as unset, as a shell's `VAR=` usually means.
    let var = |name: &str| env(name).filter(|v| !v.is_empty());
    let client_id = client_id(&var)?;
    let mut raw = RawConfig {
        listen: listen(&ctx, &var)?,
        ..RawConfig::default()
    };
    raw.admin.address = var("AZURE_COSTS_PROXY_ADMIN").map(unspanned);
    raw.upstream.url = var("AZURE_COSTS_UPSTREAM_URL").map(unspanned);
    raw.sts.token_url = var("AZURE_COSTS_TOKEN_URL").map(unspanned);
    raw.credentials.insert(
        "default".into(),
        unspanned(RawCredential {
            client_id: unspanned(client_id),
            client_secret: env_reference("AZURE_COSTS_CLIENT_SECRET"),
        }),
    );
    if let Some(delegate) = var("AZURE_COSTS_DELEGATE") {
        raw.routes.push(unspanned(RawRoute {
            prefix: unspanned("/".into()),
            credential: None,
            delegate: Some(unspanned(delegate)),
            delegates: None,
            token_mode: None,
            upstream_path: None,
            refresh_on: None,
            max_in_flight: None,
            queue: None,
            queue_timeout: None,
            coalesce: None,
        }));
    }
    validate(raw, &ctx)
}

/// The client id, when both it and the secret are set: without a file, they are the minimum.
fn client_id(var: EnvLookup<'_>) -> Result<String, ConfigError> {
    let client_id = var("AZURE_COSTS_CLIENT_ID");
    let secret_set = var("AZURE_COSTS_CLIENT_SECRET").is_some();
    let (Some(client_id), true) = (client_id, secret_set) else {
        return Err(ConfigError {
            origin: "environment".into(),
            line: None,
            column: None,
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
    Ok(client_id)
}

/// `[listen]` from the `AZURE_COSTS_PROXY_*` variables.
fn listen(ctx: &Ctx<'_>, var: EnvLookup<'_>) -> Result<RawListen, ConfigError> {
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
    let mut listen = RawListen {
        address: var("AZURE_COSTS_PROXY_LISTEN").map(unspanned),
        allow_remote,
        ..RawListen::default()
    };
    listen.allowed_hosts = var("AZURE_COSTS_PROXY_ALLOWED_HOSTS").map(|hosts| {
        hosts
            .split(',')
            .map(str::trim)
            .filter(|h| !h.is_empty())
            .map(|h| unspanned(h.to_string()))
            .collect()
    });
    if var("AZURE_COSTS_PROXY_API_KEY").is_some() {
        listen.api_keys = Some(vec![env_reference("AZURE_COSTS_PROXY_API_KEY")]);
    }
    let (cert, key) = (
        var("AZURE_COSTS_PROXY_TLS_CERT"),
        var("AZURE_COSTS_PROXY_TLS_KEY"),
    );
    if cert.is_some() || key.is_some() {
        listen.tls = Some(unspanned(RawTls {
            cert_file: cert.map(unspanned),
            key_file: key.map(unspanned),
            client_ca: None,
            client_ca_file: None,
            client_auth: None,
        }));
    }
    Ok(listen)
}

/// A value with no place in a file: errors about it name the variable instead of a line.
fn unspanned<T>(value: T) -> Spanned<T> {
    Spanned::new(0..0, value)
}

/// The secret reference `{ env = "NAME" }`, resolved (and reported) like one written in a file.
fn env_reference(name: &str) -> Spanned<toml::Value> {
    let mut reference = toml::Table::new();
    reference.insert("env".into(), toml::Value::String(name.into()));
    unspanned(toml::Value::Table(reference))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::env_with;

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
}
