//! `[reload]`: whether the proxy reloads by itself when a file of its config changes, and which
//! files those are (every path the config names: secrets, API keys, the outbound proxy's
//! password, TLS files, trust roots).

use std::path::PathBuf;

use crate::config::ReloadConfig;
use crate::config::diagnostics::Ctx;
use crate::config::raw::{RawConfig, RawReload};
use crate::config::secret::secret_file;

/// Checks `[reload]`: `watch` defaults to true.
pub(super) fn reload(raw: &RawReload) -> ReloadConfig {
    ReloadConfig {
        watch: raw.watch.unwrap_or(true),
    }
}

/// The files `raw` names, in file order, each once: what a change of makes a reload worthwhile.
/// The config file itself is added by whoever read it (`source.rs`).
pub(super) fn named_files(ctx: &Ctx<'_>, raw: &RawConfig) -> Vec<PathBuf> {
    let listen = &raw.listen;
    let keys = listen
        .api_keys
        .iter()
        .flatten()
        .chain(raw.clients.iter().filter_map(|c| c.get_ref().key.as_ref()));
    let secrets = raw.credentials.values().map(|c| &c.get_ref().client_secret);
    let proxy_password = raw
        .outbound
        .proxy_auth
        .iter()
        .map(|a| &a.get_ref().password);
    let from_secrets = keys
        .chain(secrets)
        .chain(proxy_password)
        .filter_map(|value| secret_file(ctx, value.get_ref()));
    let tls = listen.tls.as_ref().map(|t| t.get_ref());
    let written = tls
        .into_iter()
        .flat_map(|t| [&t.cert_file, &t.key_file, &t.client_ca, &t.client_ca_file])
        .chain([&raw.upstream.ca_file, &raw.outbound.ca_file])
        .flatten()
        .map(|path| PathBuf::from(path.get_ref()));
    let mut files: Vec<PathBuf> = Vec::new();
    for file in written.chain(from_secrets) {
        if !files.contains(&file) {
            files.push(file);
        }
    }
    files
}

#[cfg(test)]
mod tests {
    use crate::config::from_toml;
    use crate::config::testing::{MINIMAL, env_with, parse};

    #[test]
    fn watch_is_on_unless_turned_off() {
        assert!(parse(MINIMAL).unwrap().reload.watch);
        let off = parse(&format!("[reload]\nwatch = false\n{MINIMAL}")).unwrap();
        assert!(!off.reload.watch);
        let e = parse(&format!("[reload]\nwach = false\n{MINIMAL}")).unwrap_err();
        assert!(e.to_string().contains("wach"), "{e}");
    }

    #[test]
    fn the_files_a_config_names_are_listed_once() {
        let dir = std::env::temp_dir().join(format!("acp-named-files-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let secret = dir.join("secret");
        std::fs::write(&secret, "s3cr3t-0123456789abcdef").unwrap();
        std::fs::write(dir.join("cred"), "from-systemd").unwrap();
        let password = dir.join("proxy-password");
        std::fs::write(&password, "egress").unwrap();
        // Paths as TOML literal strings: a Windows path's backslashes are no escapes there.
        let text = format!(
            "[outbound]\nproxy = \"http://proxy.example:3128\"\n\
             proxy_auth = {{ username = \"u\", password = {{ file = '{p}' }} }}\n\
             [listen]\napi_keys = [{{ file = '{s}' }}, {{ env = \"SECRET\" }}]\n\
             [credentials.default]\nclient_id = \"a\"\nclient_secret = {{ file = '{s}' }}\n\
             [credentials.other]\nclient_id = \"b\"\nclient_secret = {{ credential = \"cred\" }}\n",
            s = secret.display(),
            p = password.display()
        );
        let dir_text = dir.display().to_string();
        let vars = [("SECRET", "s3cr3t"), ("CREDENTIALS_DIRECTORY", &dir_text)];
        let env = env_with(&vars);
        let config = from_toml(&text, "proxy.toml", &env).unwrap();
        assert_eq!(config.files, [secret.clone(), dir.join("cred"), password]);
        // The environment alone names no file.
        assert!(parse(MINIMAL).unwrap().files.is_empty());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
