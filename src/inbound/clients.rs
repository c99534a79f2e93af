//! Named clients (`[[clients]]`, and `listen.api_keys` as the one client `api_keys`): who is
//! asking, which routes and teams it may use, and how fast. A client is found by the SHA-256 of
//! its key (one hash lookup, then a constant-time comparison of the whole digest) or by the
//! names of its verified TLS client certificate; 10,000 clients cost a request what one does.

use std::collections::HashMap;
use std::sync::Arc;

use http::header::{self, HeaderMap};
use tokio::sync::OwnedSemaphorePermit;

use super::api_keys::{presented_key, sha256};
use super::limits::{ClientLimits, Limiter};
use super::peer::PeerNames;
use crate::secret::Secret;
use crate::tally::{ClientTally, Tally};

/// The name `listen.api_keys` are known by: one client with every route and team.
pub(crate) const API_KEYS_CLIENT: &str = "api_keys";

/// How a client proves who it is.
#[derive(Clone, PartialEq)]
pub enum ClientIdentity {
    /// A key it sends as `Authorization: Bearer KEY` or as the Basic password.
    Key(Secret),
    /// The SHA-256 of such a key: the config holds only the digest.
    KeyDigest([u8; 32]),
    /// A verified TLS client certificate whose subject CN or a DNS SAN is this name.
    Cert(String),
}

impl std::fmt::Debug for ClientIdentity {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientIdentity::Key(_) => f.write_str("Key(..)"),
            ClientIdentity::KeyDigest(_) => f.write_str("KeyDigest(..)"),
            ClientIdentity::Cert(name) => write!(f, "Cert({name:?})"),
        }
    }
}

/// What a client may use: everything (`["*"]`, the default) or the listed names.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Scope {
    /// Every route, or every team.
    All,
    /// These (sorted, no duplicates).
    Listed(Vec<String>),
}

impl Scope {
    /// Whether `item` is in the scope.
    pub fn allows(&self, item: &str) -> bool {
        match self {
            Scope::All => true,
            Scope::Listed(items) => items
                .binary_search_by(|probe| probe.as_str().cmp(item))
                .is_ok(),
        }
    }
}

/// One `[[clients]]` entry as the config gives it.
#[derive(Clone, Debug, PartialEq)]
pub struct ClientSpec {
    /// In the access line, the metrics and the logs.
    pub name: String,
    /// How it is recognised.
    pub identity: ClientIdentity,
    /// Route prefixes it may use.
    pub routes: Scope,
    /// Teams it may act for.
    pub delegates: Scope,
    /// `rate` and `max_in_flight`.
    pub limits: ClientLimits,
}

/// A client recognised on a request.
#[derive(Debug)]
pub struct Client {
    /// Its name.
    pub name: Arc<str>,
    routes: Scope,
    delegates: Scope,
    limiter: Option<Arc<Limiter>>,
    /// Its requests and refusals, for the status page.
    pub tally: Arc<ClientTally>,
}

impl Client {
    /// Whether it may use the route with this prefix.
    pub fn may_use(&self, prefix: &str) -> bool {
        self.routes.allows(prefix)
    }

    /// Whether its routes are a list (not every route).
    pub fn routes_listed(&self) -> bool {
        matches!(self.routes, Scope::Listed(_))
    }

    /// Whether it may act for `team`.
    pub fn may_act_for(&self, team: &str) -> bool {
        self.delegates.allows(team)
    }

    /// Takes a place within its limits, held until the permit (if any) is dropped; `Err`
    /// carries how long to wait before asking again.
    pub fn admit(&self) -> Result<Option<OwnedSemaphorePermit>, std::time::Duration> {
        match &self.limiter {
            None => Ok(None),
            Some(limiter) => limiter.admit(),
        }
    }
}

/// Why a request names no client.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Unidentified {
    /// No key and no certificate of a client.
    Missing,
    /// A key (or `Authorization` header) no client has.
    UnknownKey,
    /// A verified certificate whose names are no client's.
    UnknownCertificate,
    /// The key and the certificate name different clients, or the certificate several.
    Conflicting,
    /// Several `Authorization` headers.
    Ambiguous,
}

impl Unidentified {
    /// The reason, as the log line says it.
    pub fn reason(self) -> &'static str {
        match self {
            Unidentified::Missing => "no key or client certificate",
            Unidentified::UnknownKey => "unknown key",
            Unidentified::UnknownCertificate => "unknown client certificate",
            Unidentified::Conflicting => "the key and the certificate name different clients",
            Unidentified::Ambiguous => "several Authorization headers",
        }
    }
}

/// The clients whose key digests begin with the same 8 bytes (almost always one).
type DigestBucket = Vec<([u8; 32], Arc<Client>)>;

/// Every configured client, ready to be looked up.
pub struct Clients {
    /// Keyed by the first 8 bytes of the key's digest; the whole digest is compared in
    /// constant time.
    by_digest: HashMap<u64, DigestBucket>,
    /// Keyed by the certificate name (DNS names in lower case).
    by_cert: HashMap<String, Arc<Client>>,
    /// The limiters, by client name: what a reload hands on.
    limiters: HashMap<String, Arc<Limiter>>,
    /// How many clients there are (`api_keys` counts as one).
    count: usize,
    /// Where requests of no known client are counted.
    unknown: Arc<ClientTally>,
}

impl std::fmt::Debug for Clients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Clients({})", self.count)
    }
}

fn bucket(digest: &[u8; 32]) -> u64 {
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    u64::from_le_bytes(first)
}

impl Clients {
    /// Where requests of no known client are counted: `unknown`.
    pub fn unknown_tally(&self) -> &Arc<ClientTally> {
        &self.unknown
    }

    /// The clients of `specs`, with the keys of `listen.api_keys` as the client `api_keys`.
    /// Limits whose settings did not change keep their state from `previous` (a reload does not
    /// hand a client a fresh burst).
    pub fn new(specs: &[ClientSpec], api_keys: &[Secret], previous: Option<&Clients>) -> Self {
        Self::tallied(specs, api_keys, previous, &Tally::default())
    }

    /// [`Clients::new`], each client counting in `tally` under its name (the figures a reload
    /// keeps), requests of no known client under `unknown`.
    pub fn tallied(
        specs: &[ClientSpec],
        api_keys: &[Secret],
        previous: Option<&Clients>,
        tally: &Tally,
    ) -> Self {
        let mut clients = Clients {
            by_digest: HashMap::new(),
            by_cert: HashMap::new(),
            limiters: HashMap::new(),
            count: 0,
            unknown: tally.client(&Arc::from("unknown")),
        };
        if !api_keys.is_empty() {
            let client = clients.client(API_KEYS_CLIENT, Scope::All, Scope::All, None, tally);
            for key in api_keys {
                clients.add_key(sha256(key.expose().as_bytes()), &client);
            }
        }
        for spec in specs {
            let limiter = spec.limits.is_set().then(|| {
                let limiter = previous
                    .and_then(|p| p.limiters.get(&spec.name))
                    .filter(|l| l.limits() == spec.limits)
                    .cloned()
                    .unwrap_or_else(|| Arc::new(Limiter::new(spec.limits)));
                clients.limiters.insert(spec.name.clone(), limiter.clone());
                limiter
            });
            let client = clients.client(
                &spec.name,
                spec.routes.clone(),
                spec.delegates.clone(),
                limiter,
                tally,
            );
            match &spec.identity {
                ClientIdentity::Key(key) => {
                    clients.add_key(sha256(key.expose().as_bytes()), &client);
                }
                ClientIdentity::KeyDigest(digest) => clients.add_key(*digest, &client),
                ClientIdentity::Cert(name) => {
                    clients.by_cert.insert(cert_name(name), client);
                }
            }
        }
        clients
    }

    fn client(
        &mut self,
        name: &str,
        routes: Scope,
        delegates: Scope,
        limiter: Option<Arc<Limiter>>,
        tally: &Tally,
    ) -> Arc<Client> {
        self.count += 1;
        let name: Arc<str> = Arc::from(name);
        Arc::new(Client {
            tally: tally.client(&name),
            name,
            routes,
            delegates,
            limiter,
        })
    }

    fn add_key(&mut self, digest: [u8; 32], client: &Arc<Client>) {
        self.by_digest
            .entry(bucket(&digest))
            .or_default()
            .push((digest, client.clone()));
    }

    /// Whether every request must name a client.
    pub fn required(&self) -> bool {
        self.count > 0
    }

    /// How many clients there are (`api_keys` counts as one).
    pub fn count(&self) -> usize {
        self.count
    }

    /// The client a request names by its key or its connection's certificate. `Ok(None)` when
    /// no client is configured (anyone may ask).
    pub fn identify(
        &self,
        headers: &HeaderMap,
        peer: Option<&PeerNames>,
    ) -> Result<Option<Arc<Client>>, Unidentified> {
        if !self.required() {
            return Ok(None);
        }
        let by_key = self.by_key(headers)?;
        let by_cert = match peer {
            Some(names) if !self.by_cert.is_empty() => self.by_certificate(names)?,
            _ => None,
        };
        match (by_key, by_cert) {
            (Some(key), Some(cert)) if !Arc::ptr_eq(&key, &cert) => Err(Unidentified::Conflicting),
            (Some(client), _) | (None, Some(client)) => Ok(Some(client)),
            (None, None) if peer.is_some() && !self.by_cert.is_empty() => {
                Err(Unidentified::UnknownCertificate)
            }
            (None, None) => Err(Unidentified::Missing),
        }
    }

    /// The client of the key in the request's one `Authorization` header; `Ok(None)` when there
    /// is none.
    fn by_key(&self, headers: &HeaderMap) -> Result<Option<Arc<Client>>, Unidentified> {
        let mut values = headers.get_all(header::AUTHORIZATION).iter();
        let value = match (values.next(), values.next()) {
            (None, _) => return Ok(None),
            (Some(value), None) => value,
            // Two Authorization headers: ambiguous, refused even if one is right.
            (Some(_), Some(_)) => return Err(Unidentified::Ambiguous),
        };
        let key = presented_key(value).ok_or(Unidentified::UnknownKey)?;
        let presented = sha256(&key);
        let candidates = self.by_digest.get(&bucket(&presented));
        let mut found = None;
        for (digest, client) in candidates.into_iter().flatten() {
            if bool::from(subtle::ConstantTimeEq::ct_eq(&digest[..], &presented[..])) {
                found = Some(client.clone());
            }
        }
        found.map(Some).ok_or(Unidentified::UnknownKey)
    }

    /// The client whose `cert` is one of the certificate's names; several is a conflict.
    fn by_certificate(&self, names: &PeerNames) -> Result<Option<Arc<Client>>, Unidentified> {
        let mut found: Option<&Arc<Client>> = None;
        for name in names.iter() {
            if let Some(client) = self.by_cert.get(name) {
                match found {
                    Some(other) if !Arc::ptr_eq(other, client) => {
                        return Err(Unidentified::Conflicting);
                    }
                    _ => found = Some(client),
                }
            }
        }
        Ok(found.cloned())
    }
}

/// Longest client name.
pub(crate) const MAX_NAME: usize = 64;

/// Whether `name` can name a client: 1 to [`MAX_NAME`] letters, digits, `.`, `_` or `-`, and
/// not a name the proxy gives itself (`api_keys`, `unknown`).
pub(crate) fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= MAX_NAME
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && name != API_KEYS_CLIENT
        && name != "unknown"
}

/// A client's `cert` as certificate names are compared: `CN=` dropped, DNS names are
/// case-insensitive, so the lower case is kept.
pub(crate) fn cert_name(cert: &str) -> String {
    let name = cert.trim();
    let name = match name.get(..3) {
        Some(prefix) if prefix.eq_ignore_ascii_case("CN=") => &name[3..],
        _ => name,
    };
    name.trim().to_ascii_lowercase()
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn spec(name: &str, identity: ClientIdentity) -> ClientSpec {
        ClientSpec {
            name: name.into(),
            identity,
            routes: Scope::Listed(vec!["/a".into()]),
            delegates: Scope::All,
            limits: ClientLimits::default(),
        }
    }

    fn bearer(key: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(
            header::AUTHORIZATION,
            HeaderValue::from_str(&format!("Bearer {key}")).unwrap(),
        );
        h
    }

    #[test]
    fn no_clients_lets_anyone_in() {
        let clients = Clients::new(&[], &[], None);
        assert!(!clients.required());
        assert!(clients.identify(&HeaderMap::new(), None).unwrap().is_none());
    }

    #[test]
    fn keys_digests_and_certificates_name_their_client() {
        let specs = [
            spec("one", ClientIdentity::Key(Secret::new("key-one"))),
            spec("two", ClientIdentity::KeyDigest(sha256(b"key-two"))),
            spec("three", ClientIdentity::Cert("CN=Three.Example".into())),
        ];
        let clients = Clients::new(&specs, &[Secret::new("legacy")], None);
        assert_eq!(clients.count(), 4);
        let name = |h: &HeaderMap, peer: Option<&PeerNames>| {
            clients
                .identify(h, peer)
                .map(|c| c.map(|c| c.name.to_string()))
        };
        assert_eq!(name(&bearer("key-one"), None), Ok(Some("one".into())));
        assert_eq!(name(&bearer("key-two"), None), Ok(Some("two".into())));
        assert_eq!(name(&bearer("legacy"), None), Ok(Some("api_keys".into())));
        assert_eq!(
            name(&bearer("key-three"), None),
            Err(Unidentified::UnknownKey)
        );
        assert_eq!(name(&HeaderMap::new(), None), Err(Unidentified::Missing));
        let three = PeerNames::new(vec!["three.example".into()]);
        let stranger = PeerNames::new(vec!["stranger".into()]);
        assert_eq!(
            name(&HeaderMap::new(), Some(&three)),
            Ok(Some("three".into()))
        );
        assert_eq!(
            name(&HeaderMap::new(), Some(&stranger)),
            Err(Unidentified::UnknownCertificate)
        );
        // A key of one client on the connection of another: which one is asking?
        assert_eq!(
            name(&bearer("key-one"), Some(&three)),
            Err(Unidentified::Conflicting)
        );
        // A certificate of no client does not stand in the way of a key.
        assert_eq!(
            name(&bearer("key-one"), Some(&stranger)),
            Ok(Some("one".into()))
        );
    }

    #[test]
    fn certificate_names_compare_without_cn_and_case() {
        assert_eq!(cert_name("CN=Contoso BI"), "contoso bi");
        assert_eq!(cert_name(" cn=bi.example "), "bi.example");
        assert_eq!(cert_name("bi.Example"), "bi.example");
    }

    #[test]
    fn scopes_allow_what_they_list() {
        let listed = Scope::Listed(vec!["A".into(), "C".into()]);
        assert!(listed.allows("A") && listed.allows("C"));
        assert!(!listed.allows("B") && !listed.allows("a"));
        assert!(Scope::All.allows("anything"));
    }

    #[test]
    fn a_reload_keeps_the_state_of_unchanged_limits() {
        let limited = |rate: f64| ClientSpec {
            limits: ClientLimits {
                rate: Some(rate),
                max_in_flight: None,
            },
            ..spec("one", ClientIdentity::Key(Secret::new("key-one")))
        };
        let old = Clients::new(&[limited(1.0)], &[], None);
        let client = old.identify(&bearer("key-one"), None).unwrap().unwrap();
        while client.admit().is_ok() {}
        let same = Clients::new(&[limited(1.0)], &[], Some(&old));
        let again = same.identify(&bearer("key-one"), None).unwrap().unwrap();
        assert!(again.admit().is_err(), "the spent burst stays spent");
        let changed = Clients::new(&[limited(2.0)], &[], Some(&old));
        let fresh = changed.identify(&bearer("key-one"), None).unwrap().unwrap();
        assert!(fresh.admit().is_ok(), "new limits start afresh");
    }

    #[test]
    fn debug_shows_no_key_material() {
        let clients = Clients::new(
            &[spec("one", ClientIdentity::Key(Secret::new("key-one")))],
            &[],
            None,
        );
        assert_eq!(format!("{clients:?}"), "Clients(1)");
        let identity = ClientIdentity::KeyDigest(sha256(b"key-two"));
        assert_eq!(format!("{identity:?}"), "KeyDigest(..)");
    }
}
