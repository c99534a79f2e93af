//! `[cache]`: what a shared answer may weigh. `max_entry` bounds an answer that coalesced
//! requests share (larger ones stream to the first request only).

use toml::Spanned;

use crate::config::CacheConfig;
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawCache;

/// Default `max_entry`: 8 MiB.
const DEFAULT_MAX_ENTRY: usize = 8 << 20;
/// Largest `max_entry`: 1 GiB.
const MAX_ENTRY_LIMIT: usize = 1 << 30;

/// Checks `[cache]`.
pub(super) fn cache(ctx: &Ctx<'_>, raw: &RawCache) -> Result<CacheConfig, ConfigError> {
    let max_entry = match &raw.max_entry {
        None => DEFAULT_MAX_ENTRY,
        Some(v) => size(v.get_ref())
            .filter(|n| (1..=MAX_ENTRY_LIMIT).contains(n))
            .ok_or_else(|| size_error(ctx, v, "cache.max_entry"))?,
    };
    Ok(CacheConfig { max_entry })
}

/// A size: a whole number followed by `B`, `KiB`, `MiB` or `GiB` (or none: bytes).
fn size(text: &str) -> Option<usize> {
    let text = text.trim();
    let digits = text.bytes().take_while(u8::is_ascii_digit).count();
    let (number, unit) = text.split_at(digits);
    let shift = match unit.trim() {
        "" | "B" => 0,
        "KiB" => 10,
        "MiB" => 20,
        "GiB" => 30,
        _ => return None,
    };
    let n: usize = number.parse().ok()?;
    n.checked_mul(1 << shift)
}

fn size_error(ctx: &Ctx<'_>, v: &Spanned<String>, key: &str) -> ConfigError {
    ctx.error(
        Some(v.span()),
        key,
        format!("`{}` is not a size from 1 B to 1 GiB", v.get_ref()),
        "write a size such as \"8MiB\", \"512KiB\" or \"1048576\"",
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{MINIMAL, parse};

    #[test]
    fn sizes_take_binary_units() {
        for (text, want) in [
            ("8MiB", Some(8 << 20)),
            (" 512KiB ", Some(512 << 10)),
            ("1 GiB", Some(1 << 30)),
            ("100", Some(100)),
            ("100B", Some(100)),
            ("8MB", None),
            ("-1", None),
            ("MiB", None),
            ("1.5MiB", None),
        ] {
            assert_eq!(size(text), want, "{text}");
        }
    }

    #[test]
    fn max_entry_defaults_to_8_mib_and_errors_name_key_and_line() {
        assert_eq!(parse(MINIMAL).unwrap().cache.max_entry, 8 << 20);
        let c = parse(&format!("{MINIMAL}[cache]\nmax_entry = \"64KiB\"\n")).unwrap();
        assert_eq!(c.cache.max_entry, 64 << 10);
        for bad in ["\"0\"", "\"2GiB\"", "\"lots\""] {
            let e = parse(&format!("{MINIMAL}[cache]\nmax_entry = {bad}\n")).unwrap_err();
            assert_eq!(
                (e.key.as_str(), e.line),
                ("cache.max_entry", Some(5)),
                "{bad}"
            );
        }
    }
}
