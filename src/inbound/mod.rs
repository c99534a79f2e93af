//! Who may talk to the proxy: the TLS server side, the `Host` guard (DNS rebinding), the
//! absolute-form target rule and the API keys. The checks run before anything that reveals the
//! proxy's routes.

mod api_keys;
pub mod host;
mod host_guard;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Method, Version};
use tokio_rustls::TlsAcceptor;

pub use api_keys::{ApiKeys, CHALLENGES};
pub use host_guard::HostGuard;

use crate::error::ProxyError;

/// The inbound side of one configuration: the `Host` guard, the API keys and the TLS acceptor.
pub struct InboundPolicy {
    /// The DNS-rebinding guard.
    pub hosts: HostGuard,
    /// `listen.api_keys`.
    pub keys: ApiKeys,
    /// `[listen.tls]`: new connections are TLS handshakes with this configuration.
    pub tls: Option<TlsAcceptor>,
}

impl std::fmt::Debug for InboundPolicy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InboundPolicy")
            .field("hosts", &self.hosts)
            .field("keys", &self.keys)
            .field("tls", &self.tls.is_some())
            .finish()
    }
}

impl InboundPolicy {
    /// Whether the request may come in at all: not CONNECT, a target and `Host` that name this
    /// proxy, and an accepted API key where keys are set. In that order: a client with no key
    /// learns nothing about the routes, a foreign page not even whether keys are required.
    pub fn check(&self, request: &Parts) -> Result<(), ProxyError> {
        if request.method == Method::CONNECT {
            return Err(ProxyError::MethodNotAllowed);
        }
        self.check_target(request)?;
        if !self.keys.admit(&request.headers) {
            return Err(ProxyError::Unauthorized);
        }
        Ok(())
    }

    /// The DNS-rebinding guard and the absolute-form rule: the token goes only to the configured
    /// upstream, whatever the request names.
    fn check_target(&self, request: &Parts) -> Result<(), ProxyError> {
        let uri_authority = request.uri.authority().map(|a| a.as_str());
        if request.version < Version::HTTP_2
            && let Some(authority) = uri_authority
            && !self.hosts.accepts(authority)
        {
            return Err(ProxyError::ForbiddenTarget);
        }
        // HTTP/2 carries the host in :authority; HTTP/1 in Host.
        let host = match uri_authority {
            Some(a) if request.version >= Version::HTTP_2 => Some(a.as_bytes()),
            _ => request.headers.get(header::HOST).map(HeaderValue::as_bytes),
        };
        match host {
            Some(h) if !self.hosts.accepts_bytes(h) => {
                let shown: String = String::from_utf8_lossy(h).chars().take(100).collect();
                Err(ProxyError::ForbiddenHost(shown))
            }
            _ => Ok(()),
        }
    }
}
