//! `azure-costs-proxy token`: fetch one token for a route, exactly as a request on that route
//! would (issue, then update for a delegate), and describe it without revealing it.

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::{Config, TokenMode};
use crate::routes::{Route, RouteTable};
use crate::token::{Token, TokenError, TokenSource};

/// Why no token could be shown.
#[derive(Debug, thiserror::Error)]
pub enum InspectError {
    /// `--route` names no configured route (a usage error: exit 2).
    #[error("no route has the prefix `{prefix}`; configured prefixes: {known}")]
    UnknownRoute {
        /// The prefix asked for.
        prefix: String,
        /// The configured prefixes, comma-separated.
        known: String,
    },
    /// The STS clients could not be built.
    #[error("{0}")]
    Setup(String),
    /// The STS refused or failed (exit 1). Names the credential and delegate, never a secret.
    #[error(transparent)]
    Token(#[from] TokenError),
}

/// A freshly fetched token and the route it is for.
#[derive(Debug)]
pub struct Fetched {
    /// The route.
    pub route: Arc<Route>,
    /// The token.
    pub token: Arc<Token>,
}

/// Fetches a fresh token for the route whose prefix is `prefix` (`/contoso/` = `/contoso`).
pub async fn fetch(config: &Config, prefix: &str) -> Result<Fetched, InspectError> {
    let table = RouteTable::new(&config.routes, &config.token);
    let wanted = match prefix.trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    let Some(route) = table.routes().iter().find(|r| &*r.prefix == wanted) else {
        let mut known: Vec<&str> = table.routes().iter().map(|r| &*r.prefix).collect();
        known.sort_unstable();
        return Err(InspectError::UnknownRoute {
            prefix: prefix.to_string(),
            known: known.join(", "),
        });
    };
    let tls = config
        .outbound
        .trust
        .client_config()
        .map_err(InspectError::Setup)?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let tokens = TokenSource::new(config, tls, metrics).map_err(InspectError::Setup)?;
    // A token for this command alone, whatever the route's mode: never one from a cache.
    let token = tokens
        .get(&route.token_key(), TokenMode::PerRequest)
        .await?;
    Ok(Fetched {
        route: route.clone(),
        token,
    })
}

impl Fetched {
    /// What `token` prints: route, credential, delegate, type, expiry and fingerprint; never the
    /// token itself.
    pub fn describe(&self, now: SystemTime) -> String {
        let expires = self.token.expires_at();
        let left = expires.duration_since(now).unwrap_or_default();
        let left = humantime::format_duration(std::time::Duration::from_secs(left.as_secs()));
        format!(
            "route        {route}\n\
             credential   {credential}\n\
             delegate     {delegate}\n\
             type         {kind}\n\
             expires      {at} (in {left}; the proxy stops sending it then)\n\
             fingerprint  {fingerprint}\n",
            route = self.route.prefix,
            credential = self.route.credential,
            delegate = self.route.delegate.as_deref().unwrap_or("-"),
            kind = self.token.token_type(),
            at = humantime::format_rfc3339_seconds(expires),
            fingerprint = self.token.fingerprint(),
        )
    }
}
