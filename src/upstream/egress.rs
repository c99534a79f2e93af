//! How the client reaches its origin ([`Egress`]): directly, or through a `CONNECT` tunnel of
//! the outbound proxy ([`ProxyEndpoint`]). Decided once per target when the config is loaded
//! (`config/validate/outbound.rs`), so that a request never judges `NO_PROXY` again.

use crate::secret::Secret;

/// How one target is reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Egress {
    /// A direct connection; the reason, for `check` ("loopback target", "matches no_proxy", ...).
    Direct(&'static str),
    /// A `CONNECT` tunnel through the outbound proxy.
    Via(ProxyEndpoint),
}

/// An outbound HTTP proxy. Its credentials are a [`Secret`]: they never print.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyEndpoint {
    /// `host:port` to connect to.
    pub authority: http::uri::Authority,
    /// The proxy as messages name it: `http://host:port`, never with credentials.
    pub shown: String,
    /// Where the proxy was set: `[outbound] proxy` or the environment variable's name.
    pub source: String,
    /// The `Proxy-Authorization` value (`Basic ...`), when credentials are set.
    pub authorization: Option<Secret>,
}
