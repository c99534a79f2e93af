//! Where the configuration comes from and loading it: `--config`, else `$AZURE_COSTS_PROXY_CONFIG`,
//! else the default paths, else the environment alone; then read, parse and validate.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use serde::Deserialize;
use toml::Spanned;

use super::diagnostics::{ConfigError, Ctx};
use super::env::{ENV_KEYS, from_env};
use super::raw::{RawAdmin, RawConfig};
use super::validate::{socket_addr, validate};
use super::{CONFIG_ENV, Config, EnvLookup, default_paths};

/// Finds and loads the configuration: `explicit` (from `--config`), else `$AZURE_COSTS_PROXY_CONFIG`,
/// else `./proxy.toml`, else `/etc/azure-costs-proxy/proxy.toml` (Windows:
/// `%ProgramData%\azure-costs-proxy\proxy.toml`), else the environment alone.
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
    default_paths(env).into_iter().find(|p| p.is_file())
}

/// Loads one config file.
pub fn load_file(path: &Path, env: EnvLookup<'_>) -> Result<Config, ConfigError> {
    let (origin, text) = read_file(path)?;
    let mut config = from_toml(&text, &origin, env)?;
    config.files.insert(0, path.to_path_buf());
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
pub(super) fn read_file(path: &Path) -> Result<(String, String), ConfigError> {
    let origin = path.display().to_string();
    let error = |message: String| ConfigError {
        origin: origin.clone(),
        line: None,
        column: None,
        key: String::new(),
        message,
        hint: Some(format!(
            "check the path given by --config or ${CONFIG_ENV}, and that this user may read it"
        )),
    };
    let bytes = crate::files::read_limited(path, crate::files::MAX_CONFIG_FILE)
        .map_err(|e| error(format!("cannot read the config file: {e}")))?;
    // The bytes may be anything (a wrong path): say so without showing them.
    let text = std::str::from_utf8(&bytes)
        .map_err(|e| {
            error(format!(
                "the config file is not UTF-8 text (an invalid byte at offset {})",
                e.valid_up_to()
            ))
        })?
        .to_string();
    Ok((origin, text))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{MINIMAL, env_with};

    #[test]
    fn the_last_default_path_is_the_systems_own() {
        let env = env_with(&[("ProgramData", r"D:\Data")]);
        let [local, system] = crate::config::default_paths(&env);
        assert_eq!(local, Path::new("proxy.toml"));
        if cfg!(windows) {
            assert_eq!(system, Path::new(r"D:\Data\azure-costs-proxy\proxy.toml"));
        } else {
            assert_eq!(system, Path::new("/etc/azure-costs-proxy/proxy.toml"));
        }
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
        let config = load_file(&path, &env).unwrap();
        assert!(config.warnings.is_empty());
        assert_eq!(
            config.files,
            std::slice::from_ref(&path),
            "the config file is watched"
        );
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
}
