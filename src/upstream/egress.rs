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

impl Egress {
    /// The way out as `check` and the status page say it: `direct (why)`, or the proxy with
    /// where it came from and whether it gets credentials (never the credentials).
    pub fn describe(&self) -> String {
        match self {
            Egress::Direct(why) => format!("direct ({why})"),
            Egress::Via(proxy) => format!(
                "via {} (from {}), auth: {}, CONNECT tunnel",
                proxy.shown,
                proxy.source,
                if proxy.authorization.is_some() {
                    "yes"
                } else {
                    "no"
                }
            ),
        }
    }
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
