//! Request paths as routes read them: prefixes matched on whole segments, the upstream path
//! built (or kept) byte for byte, and the segments the proxy refuses.

/// Matches `prefix` against `path` on whole segments and returns the rest of the path:
/// `/contoso` matches `/contoso` and `/contoso/x` but not `/contosox`. The `/` prefix matches every
/// path and strips nothing.
pub(crate) fn strip_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    if prefix == "/" {
        return path.starts_with('/').then_some(path);
    }
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Builds the upstream path-and-query: `{base_path}{upstream_path}{rest}` followed by the query,
/// all bytes passed through unchanged; an empty path becomes `/`.
pub fn upstream_path_and_query(
    base_path: &str,
    upstream_path: &str,
    rest: &str,
    query: Option<&str>,
) -> String {
    let mut out = String::with_capacity(
        base_path.len() + upstream_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1,
    );
    out.push_str(base_path);
    out.push_str(upstream_path);
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Whether the upstream path-and-query [`upstream_path_and_query`] builds from `rest` (the end of
/// the request's `path`) is the request's own: `path` is `{base_path}{upstream_path}{rest}`, as
/// with the default route and any route whose `upstream_path` is its prefix. The request's
/// target is then sent as it came, without being built and parsed again.
pub(crate) fn keeps_path(base_path: &str, upstream_path: &str, rest: &str, path: &str) -> bool {
    path.len() == base_path.len() + upstream_path.len() + rest.len()
        && path.starts_with(base_path)
        && path[base_path.len()..].starts_with(upstream_path)
        && path.ends_with(rest)
}

/// Whether a raw path holds a segment the proxy refuses (README, "Errors the proxy returns
/// itself"): one that percent-decodes to `.` or `..`, holds an encoded `/` or `\` (`%2F`,
/// `%5C`, any case) or a raw `\`, or begins with `..;`. Each segment is decoded once, then
/// judged: an upstream that decodes before it normalises could otherwise climb out of a route's
/// `upstream_path` (`..%2F`, `..%5c`, `..\`, `..;` as Tomcat reads it), while `%252F` stays a
/// harmless `%2F` after one decoding.
pub fn has_refused_segment(path: &str) -> bool {
    // Split as bytes: a `char` pattern's searcher costs about 100 instructions a segment.
    path.as_bytes()
        .split(|&b| b == b'/')
        .any(is_refused_segment)
}

/// One segment, judged after one percent-decoding. Allocates nothing: it runs on every request.
fn is_refused_segment(segment: &[u8]) -> bool {
    // The first three decoded bytes and the decoded length are all the rule needs, besides the
    // separators anywhere.
    let mut head = [0u8; 3];
    let mut len = 0usize;
    for b in percent_encoding::percent_decode(segment) {
        if b == b'/' || b == b'\\' {
            return true;
        }
        if len < head.len() {
            head[len] = b;
        }
        len += 1;
    }
    match len {
        1 => head[0] == b'.',
        2 => head[..2] == *b"..",
        _ => head == *b"..;",
    }
}

/// [`has_refused_segment`] against a reference model: a plain percent-decoder of its own and
/// the README's rule read word for word, on paths made of the tokens that matter.
#[cfg(test)]
mod props {
    use super::*;
    use proptest::prelude::*;

    /// Percent-decodes once: `%XY` with two hex digits is a byte, anything else stays.
    fn decode(segment: &str) -> Vec<u8> {
        let b = segment.as_bytes();
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        let mut out = Vec::new();
        let mut i = 0;
        while i < b.len() {
            if b[i] == b'%'
                && i + 2 < b.len()
                && let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2]))
            {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
            out.push(b[i]);
            i += 1;
        }
        out
    }

    fn model(path: &str) -> bool {
        path.split('/').any(|segment| {
            let d = decode(segment);
            d == b"."
                || d == b".."
                || d.starts_with(b"..;")
                || d.contains(&b'/')
                || d.contains(&b'\\')
        })
    }

    const TOKENS: &[&str] = &[
        "a", ".", "%2e", "%2E", "%2f", "%2F", "%5c", "%5C", "\\", ";", "%25", "%", "/", "2", "e",
        "f", "%3b", "..", "%2", "5",
    ];

    proptest! {
        #[test]
        fn the_path_rule_agrees_with_the_model(
            parts in prop::collection::vec(prop::sample::select(TOKENS), 0..12)
        ) {
            let path = format!("/{}", parts.concat());
            prop_assert_eq!(has_refused_segment(&path), model(&path), "{}", path);
        }

        #[test]
        fn accepted_paths_have_no_dot_segment_after_one_decoding(
            parts in prop::collection::vec(prop::sample::select(TOKENS), 0..12)
        ) {
            let path = format!("/{}", parts.concat());
            if !has_refused_segment(&path) {
                let decoded = decode(&path);
                let text = String::from_utf8_lossy(&decoded);
                prop_assert!(!text.split(['/', '\\']).any(|s| s == "." || s == ".."), "{}", path);
            }
        }
    }
}
