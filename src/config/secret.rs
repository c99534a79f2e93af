//! Secret references: what a config value may write instead of the secret itself:
//! `{ env = "VAR" }`, `{ file = "/path" }` or `{ credential = "name" }` (systemd's
//! `$CREDENTIALS_DIRECTORY`), resolved into a [`Secret`]. A secret written inline is accepted;
//! validation warns.

use std::path::{Path, PathBuf};

use toml::Spanned;

use super::diagnostics::{ConfigError, Ctx};
use crate::files::read_limited;
use crate::secret::Secret;

/// Largest secret file read (client secret, API key).
const MAX_SECRET_FILE: u64 = crate::files::MAX_SMALL_FILE;

/// The secret a config value holds or points at; `key` names the value in errors.
pub(super) fn resolve_secret(
    ctx: &Ctx<'_>,
    value: &Spanned<toml::Value>,
    key: &str,
) -> Result<Secret, ConfigError> {
    let span = Some(value.span());
    let how = "write { env = \"VAR\" }, { file = \"/path\" } or { credential = \"name\" }";
    match value.get_ref() {
        toml::Value::String(s) if !s.is_empty() => Ok(Secret::new(s.clone())),
        toml::Value::Table(t) if t.len() == 1 => {
            let (kind, arg) = t
                .iter()
                .next()
                .map(|(k, v)| (k.as_str(), v))
                .ok_or_else(|| ctx.error(span.clone(), key, "empty secret reference", how))?;
            let Some(arg) = arg.as_str().filter(|a| !a.is_empty()) else {
                return Err(ctx.error(
                    span,
                    key,
                    format!("`{kind}` must be a non-empty string"),
                    how,
                ));
            };
            match kind {
                "env" => (ctx.env)(arg)
                    .filter(|v| !v.is_empty())
                    .map(Secret::new)
                    .ok_or_else(|| {
                        ctx.error(
                            span,
                            key,
                            format!("environment variable {arg} is not set or empty"),
                            format!("export {arg} before starting the proxy"),
                        )
                    }),
                "file" => read_secret_file(Path::new(arg)).map_err(|e| {
                    ctx.error(
                        span,
                        key,
                        format!("cannot read secret file {arg}: {e}"),
                        "check the path and that this user may read it",
                    )
                }),
                "credential" => {
                    let Some(dir) = (ctx.env)("CREDENTIALS_DIRECTORY") else {
                        return Err(ctx.error(
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
                        ctx.error(
                            span,
                            key,
                            format!("cannot read credential {}: {e}", path.display()),
                            format!("check the LoadCredential={arg}:... line of the unit"),
                        )
                    })
                }
                other => Err(ctx.error(span, key, format!("unknown secret source `{other}`"), how)),
            }
        }
        toml::Value::String(_) => Err(ctx.error(span, key, "the secret is empty", how)),
        _ => Err(ctx.error(span, key, "not a secret value", how)),
    }
}

/// The file a secret reference reads (`{ file = .. }`, or `{ credential = .. }` in
/// `$CREDENTIALS_DIRECTORY`), if any: what a reload watches for a rotated secret.
pub(super) fn secret_file(ctx: &Ctx<'_>, value: &toml::Value) -> Option<PathBuf> {
    let table = value.as_table().filter(|t| t.len() == 1)?;
    let (kind, arg) = table.iter().next()?;
    let arg = arg.as_str().filter(|a| !a.is_empty())?;
    match kind.as_str() {
        "file" => Some(PathBuf::from(arg)),
        "credential" => (ctx.env)("CREDENTIALS_DIRECTORY").map(|dir| Path::new(&dir).join(arg)),
        _ => None,
    }
}

/// Where a secret reference points, for display: never the value.
pub(super) fn secret_source(value: &toml::Value) -> String {
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
    let mut bytes = read_limited(path, MAX_SECRET_FILE)?;
    let mut text = String::from_utf8(std::mem::take(&mut *bytes)).map_err(|_| {
        "the file is not UTF-8 text (Windows PowerShell's Out-File writes UTF-16: use \
         Set-Content -Encoding ascii)"
            .to_string()
    })?;
    // Windows editors and PowerShell 5 may start a UTF-8 file with a byte order mark; it is
    // never part of a secret.
    if text.starts_with('\u{feff}') {
        text.remove(0);
    }
    while text.ends_with('\n') || text.ends_with('\r') {
        text.pop();
    }
    if text.is_empty() {
        return Err("the file is empty".into());
    }
    Ok(Secret::new(text))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::from_toml;
    use crate::config::testing::{env_with, parse};

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
    fn secret_sources_file_and_credential_directory() {
        let dir = std::env::temp_dir().join(format!("acp-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("client_secret"), "from-file\n").unwrap();
        std::fs::write(dir.join("empty"), "\n").unwrap();
        std::fs::write(dir.join("bom"), "\u{feff}from-bom\r\n").unwrap();
        // Forward slashes: a Windows path's backslashes would be escapes in a TOML string.
        let cred_dir = dir.to_str().unwrap().replace('\\', "/");
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
        let bom = parse(&format!("{{ file = \"{}/bom\" }}", cred_dir)).unwrap();
        assert_eq!(
            bom.credentials["default"].client_secret.expose(),
            "from-bom",
            "a byte order mark and CRLF are not part of the secret"
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
    fn oversized_secret_files_are_refused() {
        let dir = std::env::temp_dir().join(format!("acp-big-secret-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let env = env_with(&[]);
        // Oversized secret files are refused before they are read whole.
        let big = dir.join("big");
        std::fs::write(&big, vec![b'a'; MAX_SECRET_FILE as usize + 1]).unwrap();
        let e = from_toml(
            &format!(
                "[credentials.default]\nclient_id = \"a\"\nclient_secret = {{ file = \"{}\" }}\n",
                big.display().to_string().replace('\\', "/")
            ),
            "proxy.toml",
            &env,
        )
        .unwrap_err();
        assert!(e.message.contains("larger than"), "{e}");
        let _ = std::fs::remove_dir_all(&dir);
    }
}
