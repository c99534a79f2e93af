//! `[outbound] trust` and `ca_file`: the roots a certificate of the STS or the API must chain
//! to, read and parsed once per config load into the one root store of the client configuration.

use std::path::{Path, PathBuf};

use toml::Spanned;

use crate::config::TrustRoots;
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawOutbound;

/// The trust roots of `[outbound]`; `upstream_ca_file` is `[upstream] ca_file`, the old place of
/// `ca_file`, still read.
pub(super) fn trust(
    ctx: &Ctx<'_>,
    raw: &RawOutbound,
    upstream_ca_file: Option<Spanned<String>>,
    warnings: &mut Vec<String>,
) -> Result<TrustRoots, ConfigError> {
    let (use_system, bundled) = trust_sources(ctx, raw)?;
    let mut store = crate::tls::root_store(bundled);
    let ca_file = ca_file(ctx, raw, upstream_ca_file)?;
    let extra = match &ca_file {
        None => Vec::new(),
        Some((f, key)) => {
            let bad = |e: String| {
                ctx.error(
                    Some(f.span()),
                    key,
                    format!("cannot use {} as trust roots: {e}", f.get_ref()),
                    "point ca_file at a readable PEM file of CA certificates",
                )
            };
            let certs =
                crate::tls::read_pem_certs(Path::new(f.get_ref()), crate::files::MAX_CA_FILE)
                    .map_err(bad)?;
            let (_, unusable) = store.add_parsable_certificates(certs.iter().cloned());
            if unusable > 0 {
                return Err(bad(format!(
                    "{unusable} of its {} certificates cannot be a trust root",
                    certs.len()
                )));
            }
            certs
        }
    };
    let (system, system_usable) = if use_system {
        let (certs, errors) = crate::tls::system_roots();
        for e in errors {
            warnings.push(format!("the system trust store: {e}"));
        }
        let usable = store.add_parsable_certificates(certs.iter().cloned()).0;
        if usable == 0 {
            warnings.push(
                "the system trust store holds no usable certificate (on Linux: SSL_CERT_FILE, \
                 SSL_CERT_DIR or the ca-certificates package)"
                    .into(),
            );
        }
        (certs, usable)
    } else {
        (Vec::new(), 0)
    };
    if !bundled && system_usable == 0 && extra.is_empty() {
        return Err(ctx.error(
            raw.trust.as_ref().map(Spanned::span),
            "outbound.trust",
            "no certificate would be trusted: the system store is not used or empty, the \
             bundled roots are not used and no ca_file is set",
            "add \"bundled\" to trust, or set ca_file",
        ));
    }
    Ok(TrustRoots {
        system,
        use_system,
        bundled,
        ca_file: ca_file.map(|(f, _)| PathBuf::from(f.into_inner())),
        extra,
        store: std::sync::Arc::new(store),
    })
}

/// `[outbound] trust`: whether the system store and the bundled roots are trusted (both when
/// it is not set).
fn trust_sources(ctx: &Ctx<'_>, raw: &RawOutbound) -> Result<(bool, bool), ConfigError> {
    let Some(list) = &raw.trust else {
        return Ok((true, true));
    };
    let (mut use_system, mut bundled) = (false, false);
    for item in list.get_ref() {
        match item.get_ref().as_str() {
            "system" => use_system = true,
            "bundled" => bundled = true,
            other => {
                return Err(ctx.error(
                    Some(item.span()),
                    "outbound.trust",
                    format!("`{other}` is not a trust source"),
                    "write [\"system\", \"bundled\"], or one of them",
                ));
            }
        }
    }
    Ok((use_system, bundled))
}

/// `ca_file`, from `[outbound]` or its old place in `[upstream]` (not both), with its key.
fn ca_file(
    ctx: &Ctx<'_>,
    raw: &RawOutbound,
    upstream_ca_file: Option<Spanned<String>>,
) -> Result<Option<(Spanned<String>, &'static str)>, ConfigError> {
    match (&raw.ca_file, upstream_ca_file) {
        (Some(_), Some(old)) => Err(ctx.error(
            Some(old.span()),
            "upstream.ca_file",
            "ca_file is set in both [outbound] and [upstream]",
            "keep it in [outbound] only ([upstream] ca_file is its old place)",
        )),
        (Some(f), None) => Ok(Some((f.clone(), "outbound.ca_file"))),
        (None, old) => Ok(old.map(|f| (f, "upstream.ca_file"))),
    }
}
