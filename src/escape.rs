//! Text taken from a request, made safe to write into a log line or a message: every control
//! character and every bidirectional formatting character escaped, so that a terminal or a log
//! viewer shows what the client sent rather than obeying it. A leaf: nothing here imports from
//! the crate.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Whether `c` is written escaped: a control character (C0, DEL, C1: `\u{9b}` is a terminal's
/// CSI), a bidirectional formatting character (U+061C, U+200E, U+200F, U+202A to U+202E,
/// U+2066 to U+2069: they reorder what a viewer shows), or a line or paragraph separator
/// (U+2028, U+2029: line breaks to some viewers).
fn escaped(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{061c}'
                | '\u{200e}'
                | '\u{200f}'
                | '\u{202a}'..='\u{202e}'
                | '\u{2066}'..='\u{2069}'
                | '\u{2028}'
                | '\u{2029}'
        )
}

/// `text` as a log line may hold it: each character [`escaped`] names written as Rust writes it
/// (`\u{9b}`, `\u{202e}`), and `\` as `\\`, so that an escape in the line is always the proxy's
/// and never one the client typed. Borrowed when nothing needs escaping, as for most paths.
pub(crate) fn for_log(text: &str) -> Cow<'_, str> {
    let plain = |b: u8| (b.is_ascii_graphic() && b != b'\\') || b == b' ';
    if text.bytes().all(plain) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        if c == '\\' {
            out.push_str("\\\\");
        } else if escaped(c) {
            // Writing to a String cannot fail.
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_and_bidi_characters_are_escaped_and_nothing_else() {
        assert!(matches!(for_log("/v1/costs?x=1 ~!"), Cow::Borrowed(_)));
        assert_eq!(for_log("/v1/ünïcödé/€"), "/v1/ünïcödé/€");
        assert_eq!(
            for_log("/a\u{9b}31m\u{202e}b\u{1b}[0m\u{7f}\t\r\n"),
            "/a\\u{9b}31m\\u{202e}b\\u{1b}[0m\\u{7f}\\u{9}\\u{d}\\u{a}"
        );
        for c in [
            '\u{0}', '\u{85}', '\u{9f}', '\u{61c}', '\u{200e}', '\u{200f}', '\u{202a}', '\u{202d}',
            '\u{2066}', '\u{2069}', '\u{2028}', '\u{2029}',
        ] {
            let shown = for_log(&format!("x{c}y")).into_owned();
            assert!(!shown.contains(c), "{c:?}: {shown}");
            assert_eq!(shown, format!("x\\u{{{:x}}}y", u32::from(c)));
        }
        // A backslash the client sent cannot pass for an escape.
        assert_eq!(for_log("/a\\u{9b}"), "/a\\\\u{9b}");
        // Percent-encoding is the client's, and stays as sent.
        assert_eq!(for_log("/a%C2%9B%E2%80%AE"), "/a%C2%9B%E2%80%AE");
    }
}
