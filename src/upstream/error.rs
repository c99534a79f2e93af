//! The upstream client's own error: what can go wrong between the proxy and the Azure Costs API.
//! The request path wraps it (`ProxyError::Upstream`) and answers with a status of its choosing.

use std::time::Duration;

/// Why the upstream client could not deliver a response head.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The connection failed or was reset.
    #[error("the Azure Costs API is unreachable: {0}")]
    Unavailable(String),
    /// The upstream did not answer in `upstream.timeout`.
    #[error("the Azure Costs API did not answer within {0:?}")]
    Timeout(Duration),
    /// Every connection the budget allows stayed busy for the whole wait.
    #[error(
        "all {max} connections to the Azure Costs API stayed busy for {waited:?} \
         (upstream.max_connections); try again shortly"
    )]
    Busy {
        /// `upstream.max_connections`.
        max: usize,
        /// How long the request waited (`upstream.connect_timeout`).
        waited: Duration,
    },
    /// The path cannot be made into a URI towards the upstream.
    #[error("the request path cannot be forwarded")]
    InvalidPath,
}
