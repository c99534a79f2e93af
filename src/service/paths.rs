//! The service's name and where its files live: `%ProgramData%\azure-costs-proxy\`, with the
//! config and `logs\`.

use std::path::PathBuf;

use crate::config::EnvLookup;

/// The service name unless `--name` says otherwise; also the folder under `%ProgramData%`.
pub const DEFAULT_NAME: &str = "azure-costs-proxy";

/// A name the service manager takes, that also works as a file name (the default log file is
/// `NAME.log`) and inside `NT SERVICE\NAME`.
pub(super) fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() || name.len() > 80 {
        return Err("must have 1 to 80 characters");
    }
    if !name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
    {
        return Err("may hold only letters, digits, '-', '_' and '.'");
    }
    Ok(())
}

/// `%ProgramData%\azure-costs-proxy`: the service's config and logs.
pub fn data_dir(env: EnvLookup<'_>) -> PathBuf {
    crate::config::program_data_dir(env)
}

/// The config file a service named `name` reads unless `--config` says otherwise:
/// `proxy.toml` for the default name, `NAME.toml` for another, in [`data_dir`].
pub fn default_config(env: EnvLookup<'_>, name: &str) -> PathBuf {
    let file = if name == DEFAULT_NAME {
        "proxy.toml".to_string()
    } else {
        format!("{name}.toml")
    };
    data_dir(env).join(file)
}

/// The log file of a service named `name` when `[log] file` is not set: `logs\NAME.log` in
/// [`data_dir`] (each day's file is `NAME.YYYY-MM-DD.log`).
pub fn default_log_file(env: EnvLookup<'_>, name: &str) -> PathBuf {
    data_dir(env).join("logs").join(format!("{name}.log"))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn names_are_checked_and_paths_follow_them() {
        assert!(check_name(DEFAULT_NAME).is_ok());
        assert!(check_name("acp-test_1.2").is_ok());
        for bad in ["", "a b", r"a\b", "a/b", "ä", &"x".repeat(81)] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        let env = |name: &str| (name == "ProgramData").then(|| "D:/data".to_string());
        assert_eq!(data_dir(&env), Path::new("D:/data/azure-costs-proxy"));
        assert_eq!(
            default_config(&env, DEFAULT_NAME),
            Path::new("D:/data/azure-costs-proxy/proxy.toml")
        );
        assert_eq!(
            default_config(&env, "other"),
            Path::new("D:/data/azure-costs-proxy/other.toml")
        );
        assert_eq!(
            default_log_file(&|_: &str| None, "x"),
            Path::new(r"C:\ProgramData").join("azure-costs-proxy/logs/x.log")
        );
    }
}
