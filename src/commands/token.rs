//! `azure-costs-proxy token`: fetch one token for a route, exactly as a request on that route
//! would (issue, then update for a delegate), and describe it without revealing it.

use std::sync::Arc;
use std::time::SystemTime;

use crate::config::Config;
use crate::routes::{Route, RouteTable};
use crate::token::TokenMode;
use crate::token::{StsClient, Token, TokenError, TokenKey, TokenSource};

/// Why no token could be shown.
#[derive(Debug, thiserror::Error)]
pub enum TokenCommandError {
    /// `--route` names no configured route (a usage error: exit 2).
    #[error(
        "no route has the prefix `{prefix}`; configured prefixes: {known} (for a {{delegate}} \
         route, name the team: --route /teams/TEAM-ID)"
    )]
    UnknownRoute {
        /// The prefix asked for.
        prefix: String,
        /// The configured prefixes, comma-separated.
        known: String,
    },
    /// `--route` names a team its `{delegate}` route does not act for (a usage error: exit 2).
    #[error(
        "route `{route}` does not act for team `{team}`: it is not in the route's delegates, or not a team id"
    )]
    NotADelegate {
        /// The route's prefix.
        route: String,
        /// The team asked for.
        team: String,
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
    /// The token's key: credential and delegate (a `{delegate}` route's team included).
    pub key: TokenKey,
    /// The token.
    pub token: Arc<Token>,
}

/// Fetches a fresh token for the route whose prefix is `prefix` (`/contoso/` = `/contoso`), or,
/// on a `{delegate}` route, for the team a path names (`/teams/TEAM-X`).
pub async fn fetch(config: &Config, prefix: &str) -> Result<Fetched, TokenCommandError> {
    let table = RouteTable::new(&config.routes, &config.token);
    let wanted = match prefix.trim_end_matches('/') {
        "" => "/",
        p => p,
    };
    let (route, key) = find(&table, wanted)?;
    let tls = config
        .outbound
        .trust
        .client_config()
        .map_err(TokenCommandError::Setup)?;
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let sts =
        StsClient::new(&config.sts_client_config(), &tls).map_err(TokenCommandError::Setup)?;
    let tokens = TokenSource::new(config.token_config(), sts, metrics);
    // A token for this command alone, whatever the route's mode: never one from a cache.
    let token = tokens.get(&key, TokenMode::PerRequest).await?;
    Ok(Fetched { route, key, token })
}

/// The route `wanted` names, and the key of its token: a fixed route by its prefix, or a
/// `{delegate}` route by its fixed part and a team.
fn find(table: &RouteTable, wanted: &str) -> Result<(Arc<Route>, TokenKey), TokenCommandError> {
    if let Some(route) = table
        .routes()
        .iter()
        .find(|r| r.team.is_none() && &*r.prefix == wanted)
    {
        return Ok((route.clone(), route.token_key()));
    }
    if let Some(found) = table.find(wanted)
        && let Some(team) = found.team
        && found.rest.is_empty()
    {
        let key = found
            .route
            .team_key(team)
            .map_err(|_| TokenCommandError::NotADelegate {
                route: found.route.prefix.to_string(),
                team: team.chars().take(64).collect(),
            })?;
        return Ok((found.route.clone(), key));
    }
    let mut known: Vec<&str> = table.routes().iter().map(|r| &*r.prefix).collect();
    known.sort_unstable();
    Err(TokenCommandError::UnknownRoute {
        prefix: wanted.to_string(),
        known: known.join(", "),
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
            delegate = self.key.delegate.as_deref().unwrap_or("-"),
            kind = self.token.token_type(),
            at = humantime::format_rfc3339_seconds(expires),
            fingerprint = self.token.fingerprint(),
        )
    }
}
