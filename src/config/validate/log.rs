//! `[log]`: a log file besides stderr, rotated daily, and how many rotated files are kept.

use std::path::PathBuf;

use toml::Spanned;

use super::fields::count;

use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawLog;
use crate::config::{DEFAULT_LOG_KEEP, LogConfig};

/// Most rotated log files kept: ten years of days.
const MAX_LOG_KEEP: usize = 3650;

/// Checks `[log]`: `file` must name a file (not a folder), `keep` is from 1 to [`MAX_LOG_KEEP`].
pub(super) fn log(ctx: &Ctx<'_>, raw: &RawLog) -> Result<LogConfig, ConfigError> {
    Ok(LogConfig {
        file: file(ctx, &raw.file)?,
        keep: count(
            ctx,
            &raw.keep,
            "log.keep",
            DEFAULT_LOG_KEEP,
            MAX_LOG_KEEP,
            " of files",
        )?,
    })
}

fn file(ctx: &Ctx<'_>, value: &Option<Spanned<String>>) -> Result<Option<PathBuf>, ConfigError> {
    let Some(v) = value else { return Ok(None) };
    let text = v.get_ref().trim();
    let path = PathBuf::from(text);
    // A trailing separator names a folder, whose "file name" Path would take from its last part.
    if text.is_empty() || text.ends_with(['/', '\\']) || path.file_name().is_none() {
        return Err(ctx.error(
            Some(v.span()),
            "log.file",
            format!("`{text}` does not name a file"),
            "write the path of the log file, e.g. \"/var/log/azure-costs-proxy/proxy.log\"",
        ));
    }
    Ok(Some(path))
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::testing::{MINIMAL, parse};

    #[test]
    fn log_defaults_to_stderr_only_and_keeps_fourteen_files() {
        let c = parse(MINIMAL).unwrap();
        assert_eq!(c.log.file, None);
        assert_eq!(c.log.keep, 14);
        let c = parse(&format!(
            "{MINIMAL}[log]\nfile = \"/var/log/p.log\"\nkeep = 3\n"
        ))
        .unwrap();
        assert_eq!(c.log.file.as_deref(), Some(Path::new("/var/log/p.log")));
        assert_eq!(c.log.keep, 3);
    }

    #[test]
    fn log_file_must_name_a_file_and_keep_be_in_range() {
        for bad in ["file = \"\"", "file = \"/var/log/\"", "file = \"logs\\\\\""] {
            let e = parse(&format!("{MINIMAL}[log]\n{bad}\n")).unwrap_err();
            assert_eq!(e.key, "log.file", "{bad}");
        }
        for bad in ["keep = 0", "keep = -1", "keep = 100000"] {
            let e = parse(&format!("{MINIMAL}[log]\n{bad}\n")).unwrap_err();
            assert_eq!(e.key, "log.keep", "{bad}");
        }
    }
}
