//! `[listen.tls]`: the server certificate and key, and the CA that client certificates must chain
//! to (`client_ca`, and whether one is `required` or `optional`), read and checked while the
//! config loads.

use std::path::PathBuf;

use toml::Spanned;

use crate::config::ListenTlsConfig;
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawTls;

/// `[listen.tls]`: both files required, read now so that a bad file is a config error with its
/// line, not a failed handshake later.
pub(super) fn listen_tls(
    ctx: &Ctx<'_>,
    raw: &Spanned<RawTls>,
) -> Result<ListenTlsConfig, ConfigError> {
    let t = raw.get_ref();
    let required = |value: &Option<Spanned<String>>, key: &str| {
        value
            .as_ref()
            .map(|v| PathBuf::from(v.get_ref()))
            .ok_or_else(|| {
                ctx.error(
                    Some(raw.span()),
                    key,
                    "missing",
                    "[listen.tls] needs both cert_file and key_file (PEM)",
                )
            })
    };
    let cert_file = required(&t.cert_file, "listen.tls.cert_file")?;
    let key_file = required(&t.key_file, "listen.tls.key_file")?;
    let span_of = |v: &Option<Spanned<String>>| v.as_ref().map(Spanned::span).or(Some(raw.span()));
    let certs =
        crate::tls::read_pem_certs(&cert_file, crate::files::MAX_SMALL_FILE).map_err(|e| {
            ctx.error(
                span_of(&t.cert_file),
                "listen.tls.cert_file",
                format!("cannot use {}: {e}", cert_file.display()),
                "point cert_file at a readable PEM certificate chain, leaf first",
            )
        })?;
    let key = crate::tls::read_pem_key(&key_file).map_err(|e| {
        ctx.error(
            span_of(&t.key_file),
            "listen.tls.key_file",
            format!("cannot use {}: {e}", key_file.display()),
            "point key_file at a readable PEM private key (PKCS#8, PKCS#1 or SEC1)",
        )
    })?;
    let (ca_value, client_ca_file) = client_ca(ctx, raw)?;
    let client_roots = match &client_ca_file {
        None => None,
        Some(path) => Some(
            crate::tls::read_pem_certs(path, crate::files::MAX_CA_FILE).map_err(|e| {
                ctx.error(
                    span_of(ca_value),
                    "listen.tls.client_ca",
                    format!("cannot use {} as client CA: {e}", path.display()),
                    "point client_ca at a readable PEM file of CA certificates",
                )
            })?,
        ),
    };
    let client_auth_required = client_auth(ctx, raw, client_ca_file.is_some())?;
    let server =
        crate::tls::server_config(certs, key, client_roots.as_deref(), client_auth_required)
            .map_err(|e| {
                ctx.error(
                    span_of(&t.key_file),
                    "listen.tls",
                    e,
                    "check that key_file is the private key of cert_file's first certificate",
                )
            })?;
    Ok(ListenTlsConfig {
        cert_file,
        key_file,
        client_ca_file,
        client_auth_required,
        server: std::sync::Arc::new(server),
    })
}

/// `client_ca` (or its earlier name `client_ca_file`, not both): the value as written and the
/// path.
fn client_ca<'a>(
    ctx: &Ctx<'_>,
    raw: &'a Spanned<RawTls>,
) -> Result<(&'a Option<Spanned<String>>, Option<PathBuf>), ConfigError> {
    let t = raw.get_ref();
    let value = match (&t.client_ca, &t.client_ca_file) {
        (Some(_), Some(old)) => {
            return Err(ctx.error(
                Some(old.span()),
                "listen.tls.client_ca_file",
                "client_ca_file is the earlier name of client_ca; both are set",
                "keep only client_ca",
            ));
        }
        (Some(_), None) => &t.client_ca,
        (None, _) => &t.client_ca_file,
    };
    Ok((value, value.as_ref().map(|v| PathBuf::from(v.get_ref()))))
}

/// `client_auth`: `"required"` (the default: a client certificate is the way in) or
/// `"optional"` (a certificate identifies its client; without one, a key must).
fn client_auth(ctx: &Ctx<'_>, raw: &Spanned<RawTls>, has_ca: bool) -> Result<bool, ConfigError> {
    let Some(value) = &raw.get_ref().client_auth else {
        return Ok(true);
    };
    let required = match value.get_ref().as_str() {
        "required" => true,
        "optional" => false,
        _ => {
            return Err(ctx.error(
                Some(value.span()),
                "listen.tls.client_auth",
                format!("`{}` is not a client_auth", value.get_ref()),
                "write \"required\" or \"optional\"",
            ));
        }
    };
    if !has_ca {
        return Err(ctx.error(
            Some(value.span()),
            "listen.tls.client_auth",
            "client_auth needs client_ca, the CA client certificates are checked against",
            "add client_ca = \"/path/clients-ca.pem\" to [listen.tls]",
        ));
    }
    Ok(required)
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{MINIMAL, parse};

    #[test]
    fn listen_tls_reads_and_checks_its_files() {
        let dir = std::env::temp_dir().join(format!("acp-tls-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let cert = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        let other = rcgen::generate_simple_self_signed(vec!["localhost".into()]).unwrap();
        // Forward slashes: a Windows path's backslashes would be escapes in a TOML string.
        let path = |name: &str| dir.join(name).to_str().unwrap().replace('\\', "/");
        std::fs::write(path("cert.pem"), cert.cert.pem()).unwrap();
        std::fs::write(path("key.pem"), cert.signing_key.serialize_pem()).unwrap();
        std::fs::write(path("other-key.pem"), other.signing_key.serialize_pem()).unwrap();
        let tls = |body: &str| parse(&format!("[listen.tls]\n{body}\n{MINIMAL}"));

        let ok = tls(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"\nclient_ca_file = \"{}\"",
            path("cert.pem"),
            path("key.pem"),
            path("cert.pem")
        ))
        .unwrap();
        let listen_tls = ok.listen.tls.as_ref().unwrap();
        assert_eq!(
            listen_tls.server.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        // A renewed certificate is a change [reload] watch sees: each file is named once.
        let named = ["cert.pem", "key.pem"].map(|name| std::path::PathBuf::from(path(name)));
        assert_eq!(ok.files, named);
        let debug = format!("{:?}", ok.listen);
        assert!(
            debug.contains("key.pem") && !debug.contains("PRIVATE"),
            "{debug}"
        );

        let missing = tls(&format!("cert_file = \"{}\"", path("cert.pem"))).unwrap_err();
        assert_eq!(missing.key, "listen.tls.key_file", "{missing}");
        let unreadable = tls(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"",
            path("nope.pem"),
            path("key.pem")
        ))
        .unwrap_err();
        assert_eq!(
            (unreadable.key.as_str(), unreadable.line),
            ("listen.tls.cert_file", Some(2))
        );
        let not_a_key = tls(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"",
            path("cert.pem"),
            path("cert.pem")
        ))
        .unwrap_err();
        assert_eq!(
            (not_a_key.key.as_str(), not_a_key.line),
            ("listen.tls.key_file", Some(3))
        );
        let mismatched = tls(&format!(
            "cert_file = \"{}\"\nkey_file = \"{}\"",
            path("cert.pem"),
            path("other-key.pem")
        ))
        .unwrap_err();
        assert_eq!(mismatched.key, "listen.tls", "{mismatched}");
        assert!(
            mismatched.message.contains("do not go together"),
            "{mismatched}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
