//! The names of a connection's verified TLS client certificate: its subject CNs and DNS SANs,
//! read once per connection after the handshake, matched against the clients' `cert` on each
//! request (so a reload that changes the clients applies to open connections too).

use rustls_pki_types::CertificateDer;
use x509_parser::extensions::GeneralName;
use x509_parser::prelude::{FromDer, X509Certificate};

/// Most names taken from one certificate: a certificate with thousands of SANs costs each
/// request no more than this many lookups.
const MAX_NAMES: usize = 32;

/// The names a client certificate identifies its holder by (lower case).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PeerNames(Vec<String>);

impl PeerNames {
    /// Names as given (tests); lower-cased like those read from a certificate.
    pub fn new(names: Vec<String>) -> Self {
        PeerNames(names.into_iter().map(|n| n.to_ascii_lowercase()).collect())
    }

    /// The names of the leaf certificate the handshake verified; `None` when the client sent
    /// none, or its names cannot be read (it then identifies no client).
    pub fn of_chain(chain: Option<&[CertificateDer<'_>]>) -> Option<Self> {
        let leaf = chain?.first()?;
        let (_, cert) = X509Certificate::from_der(leaf.as_ref()).ok()?;
        let mut names = Vec::new();
        for cn in cert.subject().iter_common_name() {
            if let Ok(text) = cn.as_str() {
                names.push(text.to_ascii_lowercase());
            }
        }
        if let Ok(Some(san)) = cert.subject_alternative_name() {
            for name in &san.value.general_names {
                if let GeneralName::DNSName(dns) = name {
                    names.push(dns.to_ascii_lowercase());
                }
            }
        }
        names.truncate(MAX_NAMES);
        names.dedup();
        (!names.is_empty()).then_some(PeerNames(names))
    }

    /// Each name.
    pub fn iter(&self) -> impl Iterator<Item = &str> {
        self.0.iter().map(String::as_str)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn common_name_and_dns_names_are_read_in_lower_case() {
        let mut params = rcgen::CertificateParams::new(vec![
            "BI-One.Example".to_string(),
            "bi-two.example".to_string(),
        ])
        .unwrap();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "Contoso-BI");
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = params.self_signed(&key).unwrap();
        let chain = [cert.der().clone()];
        let names = PeerNames::of_chain(Some(&chain)).unwrap();
        assert_eq!(
            names.iter().collect::<Vec<_>>(),
            ["contoso-bi", "bi-one.example", "bi-two.example"]
        );
        assert_eq!(PeerNames::of_chain(None), None);
        assert_eq!(PeerNames::of_chain(Some(&[])), None);
        let garbage = [CertificateDer::from(vec![0x30, 0x03, 0x01, 0x01, 0xff])];
        assert_eq!(PeerNames::of_chain(Some(&garbage)), None);
    }
}
