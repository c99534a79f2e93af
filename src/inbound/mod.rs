//! Who may talk to the proxy: the TLS server side, the `Host` guard (DNS rebinding), the
//! absolute-form target rule and the clients (`[[clients]]`, `listen.api_keys`): who is asking,
//! what it may use, how fast. The checks run before anything that reveals the proxy's routes.

mod api_keys;
mod clients;
mod host_guard;
mod limits;
mod peer;

use std::net::SocketAddr;
use std::sync::Arc;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Version};
use tokio_rustls::TlsAcceptor;

pub(crate) use api_keys::CHALLENGES;
pub(crate) use api_keys::sha256 as key_digest;
pub(crate) use clients::Client;
pub use clients::{ClientIdentity, ClientSpec, Clients, Scope};
pub(crate) use clients::{MAX_NAME as MAX_CLIENT_NAME, cert_name, valid_name as valid_client_name};
pub use host_guard::HostGuard;
pub use limits::ClientLimits;
pub(crate) use peer::PeerNames;

use crate::error::ProxyError;
use crate::secret::Secret;
use crate::tally::Tally;

/// What an [`InboundPolicy`] is built from: `listen.allowed_hosts`, `listen.api_keys`,
/// `[[clients]]` and the server side of `[listen.tls]`.
#[derive(Clone)]
pub struct InboundConfig {
    /// Extra accepted `Host` names; `["*"]` turns the check off.
    pub allowed_hosts: Vec<String>,
    /// Keys of the client `api_keys`, which may use everything.
    pub api_keys: Vec<Secret>,
    /// The named clients. With none and no `api_keys`, anyone may ask.
    pub clients: Vec<ClientSpec>,
    /// HTTPS towards clients; `None` serves plain HTTP.
    pub tls: Option<Arc<rustls::ServerConfig>>,
}

/// The inbound side of one configuration: the `Host` guard, the clients and the TLS acceptor.
pub struct InboundPolicy {
    /// The DNS-rebinding guard.
    pub hosts: HostGuard,
    /// `[[clients]]` and `listen.api_keys`.
    pub clients: Clients,
    /// `[listen.tls]`: new connections are TLS handshakes with this configuration.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for InboundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundPolicy")
            .field("hosts", &self.hosts)
            .field("clients", &self.clients)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl InboundPolicy {
    /// The policy of `config` on the listener bound to `local`. The clients' limits that did
    /// not change keep their state from `previous` (the policy a reload replaces).
    pub fn new(
        config: &InboundConfig,
        local: SocketAddr,
        previous: Option<&InboundPolicy>,
        tally: &Tally,
    ) -> Self {
        InboundPolicy {
            hosts: HostGuard::new(local, &config.allowed_hosts),
            clients: Clients::tallied(
                &config.clients,
                &config.api_keys,
                previous.map(|p| &p.clients),
                tally,
            ),
            tls: config.tls.clone().map(TlsAcceptor::from),
        }
    }

    /// Whether the request may come in at all: not CONNECT or TRACE, a target and `Host` that name this
    /// proxy, and a known client where clients are set (by its key, or the certificate `peer`
    /// of its connection). In that order: a client with no key learns nothing about the
    /// routes, a foreign page not even whether keys are required. Returns the client, `None`
    /// when no client is configured.
    pub fn check(
        &self,
        request: &Parts,
        peer: Option<&PeerNames>,
    ) -> Result<Option<Arc<Client>>, ProxyError> {
        // CONNECT would make a tunnel; TRACE would have an API that implements it echo the
        // injected Authorization back to the client.
        if request.method == Method::CONNECT || request.method == Method::TRACE {
            return Err(ProxyError::MethodNotAllowed);
        }
        self.check_target(request)?;
        self.clients
            .identify(&request.headers, peer)
            .map_err(|why| ProxyError::Unauthorized(why.reason()))
    }

    /// The DNS-rebinding guard and the absolute-form rule: the token goes only to the configured
    /// upstream, whatever the request names. Every name the request carries (`Host`, and the
    /// target's or `:authority`'s authority) must be well-formed and accepted.
    fn check_target(&self, request: &Parts) -> Result<(), ProxyError> {
        let host = single_host(request.version, &request.headers)?;
        if request.version < Version::HTTP_2 && !self.hosts.is_own_target(&request.uri) {
            return Err(ProxyError::ForbiddenTarget);
        }
        // HTTP/2 carries the host in :authority (the URI); HTTP/1 in Host.
        let authority = request.uri.authority().map(|a| a.as_str().as_bytes());
        for name in [host.map(HeaderValue::as_bytes), authority]
            .into_iter()
            .flatten()
        {
            if !self.hosts.accepts_bytes(name) {
                return Err(forbidden_host(name));
            }
        }
        Ok(())
    }
}

/// The request's one `Host` header: HTTP/1.1 needs exactly one (RFC 9112 section 3.2), and no
/// request may carry several (which one would a guard judge, which one the next hop?). HTTP/1.0
/// and HTTP/2 may carry none. Shared by the data plane and the admin listener.
pub(crate) fn single_host(
    version: Version,
    headers: &http::HeaderMap,
) -> Result<Option<&HeaderValue>, ProxyError> {
    let mut values = headers.get_all(header::HOST).iter();
    let first = values.next();
    if values.next().is_some() {
        return Err(ProxyError::BadRequest(
            "the request carries several Host headers; send exactly one",
        ));
    }
    if first.is_none() && version == Version::HTTP_11 {
        return Err(ProxyError::BadRequest(
            "an HTTP/1.1 request needs a Host header (RFC 9112 section 3.2)",
        ));
    }
    Ok(first)
}

/// The refusal of a `Host` that is not accepted, showing at most 100 characters of it, escaped:
/// the refusal is logged, and goes back in the error body.
pub(crate) fn forbidden_host(value: &[u8]) -> ProxyError {
    let shown: String = String::from_utf8_lossy(value).chars().take(100).collect();
    ProxyError::ForbiddenHost(crate::escape::for_log(&shown).into_owned())
}
