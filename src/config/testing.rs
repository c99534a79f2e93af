//! Shared set-up of the config unit tests: a fake environment and the smallest valid file.

use super::{Config, ConfigError, from_toml};

/// An environment holding exactly `pairs`.
pub(super) fn env_with<'a>(
    pairs: &'a [(&'a str, &'a str)],
) -> impl Fn(&str) -> Option<String> + 'a {
    move |name| {
        pairs
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| (*v).to_string())
    }
}

/// `text` as the file `proxy.toml`, with `$SECRET` set to `s3cr3t`.
pub(super) fn parse(text: &str) -> Result<Config, ConfigError> {
    from_toml(text, "proxy.toml", &env_with(&[("SECRET", "s3cr3t")]))
}

/// One credential, its secret from `$SECRET`: three lines.
pub(super) const MINIMAL: &str =
    "[credentials.default]\nclient_id = \"abc\"\nclient_secret = { env = \"SECRET\" }\n";
