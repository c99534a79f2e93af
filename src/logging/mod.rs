//! Log set-up: tracing to stderr and, with `[log] file`, to a file rotated daily, as text or JSON
//! lines; level from `RUST_LOG` (default info). Every output gets the same lines; a caller may
//! add a layer of its own (the Windows service's Event Log), under the same level.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::fmt::writer::{BoxMakeWriter, MakeWriterExt as _};
use tracing_subscriber::layer::SubscriberExt as _;
use tracing_subscriber::util::SubscriberInitExt as _;
use tracing_subscriber::{EnvFilter, Layer, Registry};

use crate::cli::LogFormat;

mod text;

/// A log file rotated daily (at midnight UTC): `proxy.log` is written as
/// `proxy.YYYY-MM-DD.log` beside it, and the oldest files beyond `keep` are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogFile {
    /// The path as configured (`[log] file`).
    pub path: PathBuf,
    /// Files kept, today's included.
    pub keep: usize,
}

/// A layer that sees the same lines as the log output: the Windows service's Event Log writer.
pub type ExtraLayer = Box<dyn Layer<Registry> + Send + Sync>;

/// Installs the global subscriber, writing to stderr when `stderr`, to `file` when given, and
/// to `extra` when given. Call once, before anything logs. Fails only if the file's folder
/// cannot be created or the file opened.
pub fn init(
    format: LogFormat,
    stderr: bool,
    file: Option<&LogFile>,
    extra: Option<ExtraLayer>,
) -> anyhow::Result<()> {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // The file watcher logs every inotify event at trace level: with the log file in a watched
    // folder, each such line would be an event of its own, and the log would feed itself. Only
    // its warnings are kept, whatever RUST_LOG says.
    let filter = match "notify=warn".parse() {
        Ok(directive) => filter.add_directive(directive),
        Err(_) => filter,
    };
    let writer = match (file.map(appender).transpose()?, stderr) {
        (None, _) => BoxMakeWriter::new(std::io::stderr),
        (Some(file), true) => BoxMakeWriter::new(std::io::stderr.and(file)),
        (Some(file), false) => BoxMakeWriter::new(file),
    };
    // The filter is global: it decides for the output and `extra` alike.
    let registry = tracing_subscriber::registry().with(extra).with(filter);
    // No colour codes, on a terminal either: journald and files would keep them as noise.
    let output = tracing_subscriber::fmt::layer()
        .with_writer(writer)
        .with_target(true)
        .with_ansi(false);
    // A second init (tests) leaves the first subscriber in place.
    let _ = match format {
        LogFormat::Text => registry
            .with(output.event_format(text::TextFormat::new()))
            .try_init(),
        LogFormat::Json => registry
            .with(output.json().flatten_event(true).with_current_span(false))
            .try_init(),
    };
    Ok(())
}

/// The rolling writer of `file`; creates its folder.
fn appender(file: &LogFile) -> anyhow::Result<RollingFileAppender> {
    let (dir, prefix, suffix) = split(&file.path);
    let mut builder = RollingFileAppender::builder()
        .rotation(Rotation::DAILY)
        .filename_prefix(prefix)
        .max_log_files(file.keep);
    if let Some(suffix) = suffix {
        builder = builder.filename_suffix(suffix);
    }
    builder.build(&dir).with_context(|| {
        format!(
            "cannot write the log file {} ([log] file); check that its folder exists or can \
             be created, and that this account may write there",
            file.path.display()
        )
    })
}

/// `dir/name.ext` -> (`dir`, `name`, `Some("ext")`); a bare name lives in the current folder.
fn split(path: &Path) -> (PathBuf, String, Option<String>) {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = |s: &std::ffi::OsStr| s.to_string_lossy().into_owned();
    match (path.file_stem(), path.extension()) {
        (Some(stem), ext) => (dir, name(stem), ext.map(name)),
        (None, _) => (dir, "proxy".to_string(), Some("log".to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_file_splits_into_folder_name_and_extension() {
        let (dir, prefix, suffix) = split(Path::new("/var/log/acp/proxy.log"));
        assert_eq!(dir, Path::new("/var/log/acp"));
        assert_eq!((prefix.as_str(), suffix.as_deref()), ("proxy", Some("log")));
        let (dir, prefix, suffix) = split(Path::new("proxy"));
        assert_eq!(dir, Path::new("."));
        assert_eq!((prefix.as_str(), suffix), ("proxy", None));
    }
}
