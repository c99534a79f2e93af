//! What a config error says and where: [`ConfigError`] (file, line, key, message, hint), the
//! context that turns a value's place in the file into a line and a dotted key, and the redaction
//! of values that serde quotes in its messages.

use std::fmt;
use std::ops::Range;

use super::EnvLookup;

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

/// Where values came from, to turn spans into lines and keys into environment variable names.
pub(super) struct Ctx<'a> {
    /// A file path, or "environment"; every error and warning starts with it.
    pub(super) origin: &'a str,
    /// The file's text, to count lines; `None` for the environment.
    pub(super) text: Option<&'a str>,
    /// (key, variable) pairs: errors of the environment-only config name the variable.
    pub(super) env_keys: &'a [(&'a str, &'a str)],
    /// Where `{ env = .. }` secrets and `$CREDENTIALS_DIRECTORY` are looked up.
    pub(super) env: EnvLookup<'a>,
}

impl Ctx<'_> {
    /// The 1-based line a span starts on; `None` without a file or a span.
    pub(super) fn line_of(&self, span: Option<Range<usize>>) -> Option<usize> {
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

    /// A warning about the value at `span`: `origin, line N: text` (without the line when
    /// there is no file).
    pub(super) fn warning(
        &self,
        span: Option<Range<usize>>,
        text: impl std::fmt::Display,
    ) -> String {
        match self.line_of(span) {
            Some(line) => format!("{}, line {line}: {text}", self.origin),
            None => format!("{}: {text}", self.origin),
        }
    }

    /// The one way a validation error is built: the key is replaced by its environment
    /// variable when the config comes from the environment.
    pub(super) fn error(
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
    pub(super) fn parse_error(&self, e: &toml::de::Error) -> ConfigError {
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{MINIMAL, parse};

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
}
