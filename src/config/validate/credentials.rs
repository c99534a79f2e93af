//! `[credentials.NAME]`: the client-credentials pairs that routes name.

use std::collections::BTreeMap;

use toml::Spanned;

use crate::config::CredentialConfig;
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawCredential;
use crate::config::secret::{resolve_secret, secret_source};

/// Checks every `[credentials.NAME]` table, in name order; a secret written inline warns.
pub(super) fn credentials(
    ctx: &Ctx<'_>,
    raw: &BTreeMap<String, Spanned<RawCredential>>,
    warnings: &mut Vec<String>,
) -> Result<BTreeMap<String, CredentialConfig>, ConfigError> {
    let mut credentials = BTreeMap::new();
    for (name, cred) in raw {
        let key = format!("credentials.{name}");
        if !valid_name(name) {
            return Err(ctx.error(
                Some(cred.span()),
                &key,
                format!("`{name}` is not a valid credential name"),
                "use letters, digits, '-' and '_'",
            ));
        }
        let cred = cred.get_ref();
        let client_id = cred.client_id.get_ref().trim().to_string();
        if client_id.is_empty() || client_id.chars().any(char::is_control) {
            return Err(ctx.error(
                Some(cred.client_id.span()),
                &format!("{key}.client_id"),
                "the client id is empty or holds control characters",
                "copy the client id from the Azure Costs portal",
            ));
        }
        let secret_key = format!("{key}.client_secret");
        if matches!(cred.client_secret.get_ref(), toml::Value::String(_)) {
            warnings.push(ctx.warning(
                Some(cred.client_secret.span()),
                format_args!(
                    "{secret_key} is written in the config file; secrets belong outside it: \
                     {{ env = \"VAR\" }}, {{ file = \"/path\" }} or {{ credential = \"name\" }}"
                ),
            ));
        }
        let client_secret = resolve_secret(ctx, &cred.client_secret, &secret_key)?;
        credentials.insert(
            name.clone(),
            CredentialConfig {
                client_id,
                client_secret,
                secret_source: secret_source(cred.client_secret.get_ref()),
            },
        );
    }
    Ok(credentials)
}

/// A credential name: letters, digits, `-` and `_`.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

#[cfg(test)]
mod tests {
    use crate::config::testing::parse;

    #[test]
    fn plain_secret_is_accepted_with_a_warning_that_does_not_show_it() {
        let c = parse("[credentials.default]\nclient_id = \"abc\"\nclient_secret = \"hunter2\"\n")
            .unwrap();
        assert_eq!(c.warnings.len(), 1);
        assert!(c.warnings[0].contains("line 3"), "{:?}", c.warnings);
        assert!(!c.warnings[0].contains("hunter2"));
        assert!(!format!("{c:?}").contains("hunter2"));
    }
}
