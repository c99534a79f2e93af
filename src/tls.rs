//! rustls configurations: the one client configuration used towards both the STS and the API (the
//! system and/or bundled roots plus the operator's `ca_file`, verification always on), and the server configuration of
//! `[listen.tls]`. aws-lc-rs is the crypto provider of both.

use std::path::Path;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

/// Reads every certificate of a PEM file of at most `max` bytes (`files::MAX_SMALL_FILE` for a
/// certificate chain, `files::MAX_CA_FILE` for a CA bundle); an unreadable file or one without
/// certificates is an error.
pub(crate) fn read_pem_certs(
    path: &Path,
    max: u64,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let bytes = crate::files::read_limited(path, max)?;
    let certs = CertificateDer::pem_slice_iter(&bytes)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| e.to_string())?;
    if certs.is_empty() {
        return Err("the file holds no PEM certificate".into());
    }
    Ok(certs)
}

/// The operating system's trust roots (the Windows certificate store, the macOS keychain; on
/// Linux `SSL_CERT_FILE`/`SSL_CERT_DIR` or the distribution's bundle), with what could not be
/// read. rustls-native-certs rather than rustls-platform-verifier: it gives certificates, which
/// go into the one root store with the bundled roots and `ca_file` on every platform, read once
/// per config load (a few milliseconds) instead of a second verifier per system.
pub(crate) fn system_roots() -> (Vec<CertificateDer<'static>>, Vec<String>) {
    let found = rustls_native_certs::load_native_certs();
    let errors = found.errors.iter().map(ToString::to_string).collect();
    (found.certs, errors)
}

/// An empty root store, or one holding the bundled Mozilla roots.
pub(crate) fn root_store(bundled: bool) -> RootCertStore {
    let mut roots = RootCertStore::empty();
    if bundled {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    roots
}

/// A rustls client configuration (STS and API) trusting `roots` (see `config::TrustRoots`:
/// the bundled roots, the system's and `ca_file`'s, parsed when the config was loaded).
/// Verification is always on.
pub(crate) fn client_config(roots: Arc<RootCertStore>) -> Result<rustls::ClientConfig, String> {
    if roots.is_empty() {
        return Err("no trust root could be used".into());
    }
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(config)
}

/// Reads the first private key of a PEM file (PKCS#8, PKCS#1 or SEC1).
pub(crate) fn read_pem_key(path: &Path) -> Result<PrivateKeyDer<'static>, String> {
    let bytes = crate::files::read_limited(path, crate::files::MAX_SMALL_FILE)?;
    PrivateKeyDer::from_pem_slice(&bytes).map_err(|e| match e {
        rustls_pki_types::pem::Error::NoItemsFound => "the file holds no PEM private key".into(),
        other => other.to_string(),
    })
}

/// The rustls server configuration towards clients: the certificate chain and its key, ALPN for
/// HTTP/2 and HTTP/1.1, and, with `client_roots`, client certificates that chain to them:
/// verified when sent, and with `required` a connection without one fails its handshake.
pub(crate) fn server_config(
    certs: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    client_roots: Option<&[CertificateDer<'static>]>,
    required: bool,
) -> Result<rustls::ServerConfig, String> {
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?;
    let builder = match client_roots {
        None => builder.with_no_client_auth(),
        Some(roots) => {
            let mut store = RootCertStore::empty();
            for cert in roots {
                store
                    .add(cert.clone())
                    .map_err(|e| format!("client_ca: {e}"))?;
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(store.into(), provider);
            let verifier = match required {
                true => verifier,
                false => verifier.allow_unauthenticated(),
            };
            let verifier = verifier.build().map_err(|e| format!("client_ca: {e}"))?;
            builder.with_client_cert_verifier(verifier)
        }
    };
    let mut config = builder
        .with_single_cert(certs, key)
        .map_err(|e| format!("the certificate and key do not go together: {e}"))?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}
