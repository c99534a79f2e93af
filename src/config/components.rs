//! The small config of each component, made from the validated [`Config`]: the token source,
//! the STS client, the API client and the inbound policy each take a type of their own (defined
//! beside the component), so that none of them reads the whole configuration.

use std::sync::Arc;

use super::Config;
use crate::inbound::InboundConfig;
use crate::token::{Credential, StsBudgetLimits, StsClientConfig, TokenConfig};
use crate::upstream::{Limits, OriginConfig};

impl Config {
    /// The token source's credentials and token lifetimes.
    pub fn token_config(&self) -> TokenConfig {
        TokenConfig {
            credentials: self
                .credentials
                .iter()
                .map(|(name, c)| {
                    let credential = Credential {
                        client_id: c.client_id.clone(),
                        client_secret: c.client_secret.clone(),
                    };
                    (name.clone(), credential)
                })
                .collect(),
            max_age: self.token.max_age,
            refresh_before_expiry: self.token.refresh_before_expiry,
            sts_budget: StsBudgetLimits {
                rate: self.token.sts_budget,
                burst: crate::bucket::burst_of(self.token.sts_budget),
            },
        }
    }

    /// The STS client: `[sts]`, reached the way `[outbound]` says, with a connection budget of
    /// its own as large as the API's (STS calls are single-flight, except in per_request mode,
    /// where one goes with each request).
    pub fn sts_client_config(&self) -> StsClientConfig {
        StsClientConfig::new(
            self.sts.token_url.clone(),
            self.sts.timeout,
            self.upstream.connect_timeout,
            self.upstream.max_connections,
            self.outbound.sts.clone(),
        )
    }

    /// The API client: `[upstream]`, reached the way `[outbound]` says.
    pub(crate) fn api_client_config(&self) -> OriginConfig {
        OriginConfig {
            url: self.upstream.url.clone(),
            limits: Limits {
                timeout: self.upstream.timeout,
                connect_timeout: self.upstream.connect_timeout,
                max_connections: self.upstream.max_connections,
            },
            egress: self.outbound.api.clone(),
        }
    }

    /// Who may talk to the proxy: `listen.allowed_hosts`, `listen.api_keys`, `[[clients]]`,
    /// `[listen.tls]`.
    pub(crate) fn inbound_config(&self) -> InboundConfig {
        InboundConfig {
            allowed_hosts: self.listen.allowed_hosts.clone(),
            api_keys: self.listen.api_keys.clone(),
            clients: self.clients.clone(),
            tls: self.listen.tls.as_ref().map(|t| Arc::clone(&t.server)),
        }
    }
}
