//! What a config error says and where: [`ConfigError`] (file, line, column, key, message, hint),
//! the context that turns a value's place in the file into a line and a dotted key, and the
//! redaction of every value that TOML's and serde's messages would repeat: an error shows no
//! value of the file, only key names that read as keys.

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
    /// 1-based column (in characters) of a TOML syntax or type error, when known. A `u32`, so
    /// that the error stays small; a column beyond it reads `u32::MAX`.
    pub column: Option<u32>,
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
        if let Some(column) = self.column {
            write!(f, ", column {column}")?;
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
        Some(position(self.text?, span?.start).0)
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
            column: None,
            key,
            message: message.into(),
            hint: Some(hint.into()),
        }
    }

    /// Turns a TOML syntax or shape error into a [`ConfigError`] naming the line, the column and
    /// the table and key. Neither the message nor the key repeats a value of the file: a secret
    /// written with `:` for `=`, a proxy URL with its password, the first line of a file that is
    /// no config at all (a symlink to `/etc/shadow`), a line of 100 MB.
    pub(super) fn parse_error(&self, e: &toml::de::Error) -> ConfigError {
        let (line, column, key) = match (self.text, e.span()) {
            (Some(text), Some(span)) => {
                let (line, column) = position(text, span.start);
                let column = u32::try_from(column).unwrap_or(u32::MAX);
                (Some(line), Some(column), key_at(text, span.start))
            }
            _ => (None, None, String::new()),
        };
        let message = without_values(e.message().trim());
        let hint = if message.starts_with("unknown field") {
            "remove or correct the key; proxy.toml.example lists every key"
        } else if message.starts_with("missing field") {
            "add the key; proxy.toml.example shows it with its default"
        } else if message.starts_with("invalid type") {
            "write the value as proxy.toml.example shows (strings in quotes, booleans bare)"
        } else {
            "fix the TOML syntax on that line"
        };
        ConfigError {
            origin: self.origin.to_string(),
            line,
            column,
            key,
            message,
            hint: Some(hint.to_string()),
        }
    }
}

/// The 1-based line and column (in characters) of a byte offset of `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..char_start(text, offset)];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    let line = before.bytes().filter(|&b| b == b'\n').count() + 1;
    (line, before[line_start..].chars().count() + 1)
}

/// `offset`, or the start of the character it falls in, within `text`.
fn char_start(text: &str, offset: usize) -> usize {
    let mut at = offset.min(text.len());
    while !text.is_char_boundary(at) {
        at -= 1;
    }
    at
}

/// The longest key or table name an error shows; a longer one is not shown at all.
const MAX_SHOWN_KEY: usize = 64;

/// `name` if it reads as a bare or dotted TOML key: letters, digits, `_`, `-` and `.`, at most
/// [`MAX_SHOWN_KEY`] of them. Anything else may be a value written where a key was expected.
fn shown_key(name: &str) -> Option<&str> {
    let name = name.trim();
    let plausible = !name.is_empty()
        && name.len() <= MAX_SHOWN_KEY
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'));
    plausible.then_some(name)
}

/// The name in a table header line (`[listen]`, `[[routes]]`, a comment after it), if it reads
/// as a key.
fn header_name(line: &str) -> Option<&str> {
    let inner = line.trim_start().strip_prefix('[')?;
    let inner = inner.strip_prefix('[').unwrap_or(inner);
    shown_key(inner.split_once(']')?.0)
}

/// The dotted key at a byte offset of a TOML text: the table header above it plus the key on the
/// line, so "unknown field" errors read `listen.adress` rather than just `adress`. Only names
/// that read as keys ([`shown_key`]): a line without `=`, or whose left side is not a key, names
/// its table alone; under a header that does not read as one, no key is named.
fn key_at(text: &str, offset: usize) -> String {
    let start = char_start(text, offset);
    let line_start = text[..start].rfind('\n').map_or(0, |i| i + 1);
    let line_end = text[start..].find('\n').map_or(text.len(), |i| start + i);
    let line = &text[line_start..line_end];
    if line.trim_start().starts_with('[') {
        // A missing key: the error points at the table that lacks it.
        return header_name(line).unwrap_or_default().to_string();
    }
    let key = line
        .split_once('=')
        .and_then(|(key, _)| shown_key(key))
        .unwrap_or_default();
    let header = text[..line_start]
        .lines()
        .rev()
        .find(|l| l.trim_start().starts_with('['));
    let table = match header.map(header_name) {
        None => "",
        Some(Some(table)) => table,
        // A key alone would name the wrong table.
        Some(None) => return String::new(),
    };
    match (table.is_empty(), key.is_empty()) {
        (_, true) => table.to_string(),
        (true, false) => key.to_string(),
        (false, false) => format!("{table}.{key}"),
    }
}

/// The message of a TOML or serde error without any value from the file. serde repeats the
/// offending value (`invalid type: string "..."`, `invalid value: integer `...``, `unknown
/// variant `...``) and an unknown key as written, and a value may be a secret written in the
/// wrong place. What is kept comes from the parser (the literals it expected) or from the keys
/// `raw.rs` declares: serde's expectation follows the last ", expected ", whatever a value holds.
fn without_values(message: &str) -> String {
    for prefix in ["invalid type: ", "invalid value: "] {
        if let Some(rest) = message.strip_prefix(prefix) {
            let (unexpected, expected) = rest.rsplit_once(", expected ").unwrap_or((rest, ""));
            // `string "..."`, `integer `...``, `map`: the kind, before any quote or backtick.
            let kind = unexpected
                .split(['"', '`'])
                .next()
                .unwrap_or_default()
                .trim();
            let plain =
                !kind.is_empty() && kind.bytes().all(|b| b.is_ascii_lowercase() || b == b' ');
            return with_expected(
                format!("{prefix}{}", if plain { kind } else { "value" }),
                expected,
            );
        }
    }
    if let Some(rest) = message.strip_prefix("unknown variant `") {
        let expected = rest.rsplit_once("`, expected ").map_or("", |(_, e)| e);
        return with_expected("unknown variant".to_string(), expected);
    }
    if let Some(rest) = message.strip_prefix("unknown field `") {
        let (name, expected) = rest.rsplit_once("`, expected ").unwrap_or((rest, ""));
        let shown = match shown_key(name) {
            Some(name) => format!("unknown field `{name}`"),
            None => "unknown field".to_string(),
        };
        return with_expected(shown, expected);
    }
    if message.starts_with("missing field `") || message.starts_with("duplicate field `") {
        // A key `raw.rs` declares.
        return message.to_string();
    }
    if message.starts_with("unexpected keys in table") {
        // toml lists them unquoted.
        return "unexpected keys in table".to_string();
    }
    redact_quoted(message)
}

/// `what, expected EXPECTED`, or `what` alone.
fn with_expected(what: String, expected: &str) -> String {
    match expected {
        "" => what,
        expected => format!("{what}, expected {expected}"),
    }
}

/// The longest message [`redact_quoted`] keeps; the parser's own are far shorter.
const MAX_MESSAGE: usize = 300;

/// Replaces every double-quoted part of a message (quoted as `Debug` does, `\"` inside) with
/// `"[redacted]"`, and every part in backticks longer than the parser's literals (`=`, `]]`,
/// `'''`, `0x`) with `` `[redacted]` ``; keeps at most [`MAX_MESSAGE`] characters.
fn redact_quoted(message: &str) -> String {
    let mut out = String::with_capacity(message.len().min(MAX_MESSAGE));
    let mut chars = message.chars().take(MAX_MESSAGE);
    while let Some(c) = chars.next() {
        match c {
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    match c {
                        _ if escaped => escaped = false,
                        '\\' => escaped = true,
                        '"' => break,
                        _ => {}
                    }
                }
                out.push_str("\"[redacted]\"");
            }
            '`' => {
                let quoted: String = chars.by_ref().take_while(|&c| c != '`').collect();
                let literal = quoted.chars().count() <= 3;
                out.push('`');
                out.push_str(if literal { &quoted } else { "[redacted]" });
                out.push('`');
            }
            c => out.push(c),
        }
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

    /// `text` must fail with an error at `line` and `column` whose text and key hold none of
    /// `secrets`; the error, for more checks.
    fn refused_without(text: &str, line: usize, column: u32, secrets: &[&str]) -> ConfigError {
        let e = parse(text).unwrap_err();
        let shown = e.to_string();
        assert_eq!((e.line, e.column), (Some(line), Some(column)), "{shown}");
        assert!(
            shown.starts_with(&format!("proxy.toml, line {line}, column {column}")),
            "{shown}"
        );
        for secret in secrets {
            assert!(!shown.contains(secret), "{secret} shown: {shown}");
            assert!(!e.key.contains(secret), "{secret} in the key: {}", e.key);
        }
        e
    }

    #[test]
    fn a_colon_for_an_equals_sign_shows_no_value() {
        let text = "[credentials.default]\nclient_id = \"a\"\nclient_secret: \"S3cr3tV4lue\"\n";
        let e = refused_without(text, 3, 16, &["S3cr3t", "client_secret:"]);
        // The table parsed as one; the line did not.
        assert_eq!(e.key, "credentials.default");
        assert_eq!(e.message, "key with no value, expected `=`");
        let text = "[outbound]\nproxy: \"http://svc:PW-hunter2@proxy.corp:3128\"\n";
        let e = refused_without(text, 2, 8, &["hunter2", "svc", "proxy.corp"]);
        assert_eq!(e.key, "outbound");
    }

    #[test]
    fn a_file_that_is_no_config_shows_none_of_its_first_line() {
        // The first line of /etc/shadow, say, through a symlink named proxy.toml.
        let text = "root:$6$abcdefgh$S3cr3tHashS3cr3tHash:19000:0:99999:7:::\ndaemon:*:19000::\n";
        let e = refused_without(text, 1, 57, &["root", "$6$", "S3cr3t", "19000", "daemon"]);
        assert_eq!(e.key, "");
        let e = refused_without("password_is_hunter2\n", 1, 20, &["hunter2"]);
        assert_eq!(e.key, "", "a line without `=` names no key");
    }

    #[test]
    fn a_line_of_a_megabyte_is_not_repeated() {
        let value = "A".repeat(1 << 20);
        let text = format!("[listen]\nallowed_hosts: \"{value}\"\n");
        let e = refused_without(&text, 2, 16, &["AAAA"]);
        assert!(e.to_string().len() < 300, "{e}");
        assert_eq!(e.key, "listen");
        // A key too long to be one is not named either.
        let text = format!("[listen]\n{value} = 1\n");
        let e = refused_without(&text, 2, 1, &["AAAA"]);
        assert_eq!(e.key, "listen");
    }

    #[test]
    fn type_errors_show_the_kind_of_value_and_not_the_value() {
        let text = format!("{MINIMAL}[listen]\nallow_remote = \"hun\\\"ter2, expected x\"\n");
        let e = refused_without(&text, 5, 16, &["hun", "ter2", "expected x"]);
        assert_eq!(e.key, "listen.allow_remote");
        assert_eq!(e.message, "invalid type: string, expected a boolean");
        let text = format!("{MINIMAL}[listen]\nallow_remote = 1234567\n");
        let e = refused_without(&text, 5, 16, &["1234567"]);
        assert_eq!(e.message, "invalid type: integer, expected a boolean");
        // An unknown key is named when it reads as one, and not otherwise.
        let text = format!("{MINIMAL}[listen]\n\"S3cr3t value\" = 1\n");
        let e = refused_without(&text, 5, 1, &["S3cr3t"]);
        assert!(
            e.message
                .starts_with("unknown field, expected one of `address`"),
            "{e}"
        );
        assert_eq!(e.key, "listen");
        let text = format!("{MINIMAL}[\"S3cr3t value\"]\nkey = 1\n");
        let e = refused_without(&text, 4, 2, &["S3cr3t"]);
        assert_eq!(e.key, "");
    }

    #[test]
    fn messages_of_other_shapes_lose_their_quoted_parts() {
        assert_eq!(
            without_values("unknown variant `S3cr3t`, expected `a` or `b`"),
            "unknown variant, expected `a` or `b`"
        );
        assert_eq!(
            without_values("invalid value: string \"a\\\"b\", expected a URL"),
            "invalid value: string, expected a URL"
        );
        assert_eq!(
            without_values("unknown field `x`, expected one of `y`, expected `z`"),
            "unknown field, expected `z`",
            "an unknown key that holds serde's own words is not shown"
        );
        assert_eq!(
            redact_quoted("found `S3cr3t` and \"q\\\"S3cr3t\", expected `=`, `]]`"),
            "found `[redacted]` and \"[redacted]\", expected `=`, `]]`"
        );
        assert!(redact_quoted(&"x".repeat(10_000)).len() <= MAX_MESSAGE);
        // Columns count characters; an offset inside one counts as its start.
        assert_eq!(position("[é]\nab", 2), (1, 2));
        assert_eq!(position("[é]\nab", 6), (2, 2));
    }
}
