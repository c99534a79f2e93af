//! `[token]`: the token policy defaults (mode, age limits, what starts a transaction).

use std::time::Duration;

use http::HeaderName;
use toml::Spanned;

use super::fields::{duration, rate, refresh_on, token_mode};
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawToken;
use crate::config::{MAX_TOKEN_AGE, RefreshOn, TokenPolicy};
use crate::token::TokenMode;

/// Headers that cannot name a transaction: credentials, connection-level and per-request headers
/// would keep a secret in memory or make every request a transaction of its own.
const NOT_A_TRANSACTION_HEADER: [&str; 13] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "host",
    "x-request-id",
    "connection",
    "keep-alive",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "proxy-connection",
];

/// STS fetches a second that clients can cause at will, per credential (`token.sts_budget`).
const DEFAULT_STS_BUDGET: f64 = 10.0;

/// Checks `[token]`: `max_age` within the vendor's hour, the refresh inside it.
pub(super) fn token(ctx: &Ctx<'_>, raw: &RawToken) -> Result<TokenPolicy, ConfigError> {
    let mode = token_mode(ctx, &raw.mode, "token.mode", TokenMode::Interval)?;
    let max_age = duration(
        ctx,
        &raw.max_age,
        "token.max_age",
        Duration::from_secs(55 * 60),
    )?;
    if max_age > MAX_TOKEN_AGE {
        return Err(ctx.error(
            raw.max_age.as_ref().map(Spanned::span),
            "token.max_age",
            format!(
                "{} is longer than the vendor's limit of 60 minutes",
                humantime::format_duration(max_age)
            ),
            "set max_age to 60m or less (default 55m)",
        ));
    }
    let refresh_before_expiry = duration(
        ctx,
        &raw.refresh_before_expiry,
        "token.refresh_before_expiry",
        Duration::from_secs(5 * 60),
    )?;
    if refresh_before_expiry >= max_age {
        return Err(ctx.error(
            raw.refresh_before_expiry.as_ref().map(Spanned::span),
            "token.refresh_before_expiry",
            "must be shorter than token.max_age",
            "for example max_age = \"55m\" with refresh_before_expiry = \"5m\"",
        ));
    }
    let transaction_header = transaction_header(ctx, &raw.transaction_header)?;
    Ok(TokenPolicy {
        mode,
        max_age,
        refresh_before_expiry,
        transaction_idle: duration(
            ctx,
            &raw.transaction_idle,
            "token.transaction_idle",
            Duration::from_secs(30),
        )?,
        transaction_header,
        refresh_on: refresh_on(ctx, &raw.refresh_on, "token.refresh_on", RefreshOn::DEFAULT)?,
        sts_budget: rate(ctx, &raw.sts_budget, "token.sts_budget")?.unwrap_or(DEFAULT_STS_BUDGET),
    })
}

/// `token.transaction_header`: a valid header name of its own (default `x-transaction-id`).
fn transaction_header(
    ctx: &Ctx<'_>,
    value: &Option<Spanned<String>>,
) -> Result<HeaderName, ConfigError> {
    let header_name = value
        .as_ref()
        .map_or("x-transaction-id", |h| h.get_ref().as_str());
    let transaction_header = HeaderName::from_bytes(header_name.as_bytes()).map_err(|_| {
        ctx.error(
            value.as_ref().map(Spanned::span),
            "token.transaction_header",
            format!("`{header_name}` is not a valid header name"),
            "write a header name such as \"X-Transaction-Id\"",
        )
    })?;
    if NOT_A_TRANSACTION_HEADER.contains(&transaction_header.as_str()) {
        return Err(ctx.error(
            value.as_ref().map(Spanned::span),
            "token.transaction_header",
            format!("`{header_name}` cannot name a transaction"),
            "use a header of its own, such as \"X-Transaction-Id\"",
        ));
    }
    Ok(transaction_header)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::testing::{MINIMAL, parse};

    #[test]
    fn max_age_above_an_hour_is_refused() {
        let e = parse(&format!("{MINIMAL}[token]\nmax_age = \"61m\"\n")).unwrap_err();
        assert_eq!(e.key, "token.max_age");
        assert_eq!(e.line, Some(5));
        assert!(parse(&format!("{MINIMAL}[token]\nmax_age = \"60m\"\n")).is_ok());
    }

    #[test]
    fn transaction_header_cannot_be_a_credential_or_connection_header() {
        let e = parse(&format!(
            "{MINIMAL}[token]\ntransaction_header = \"Authorization\"\n"
        ))
        .unwrap_err();
        assert_eq!(e.key, "token.transaction_header");
        assert!(e.message.contains("cannot name a transaction"), "{e}");
        let ok = parse(&format!(
            "{MINIMAL}[token]\nmode = \"per_transaction\"\ntransaction_header = \"X-Reload\"\n"
        ))
        .unwrap();
        assert_eq!(ok.token.transaction_header.as_str(), "x-reload");
        assert_eq!(ok.token.mode, TokenMode::PerTransaction);
    }
}
