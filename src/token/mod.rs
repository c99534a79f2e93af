//! Where bearer tokens come from: [`TokenSource`] applies the route's token mode on top of the STS
//! client, with a moka cache keyed by (credential, delegate), single flight, refresh ahead of
//! expiry, and per-key backoff after STS failures.
//!
//! Policies: `interval` goes through the cache; `per_transaction` too, under a key that names
//! the transaction (`src/transaction.rs`, part of the request path), with a fresh base token for
//! a delegate; `per_request` fetches a token for one request alone. All share the fetch path
//! (issue, then update for a delegate), the error type and the backoff, which is kept per
//! (credential, delegate) whatever the transaction.
//!
//! Files: `config.rs` (what a token source is built from: [`TokenConfig`], [`TokenMode`]),
//! `source.rs` (the policies, the cache in front of the fetch path), `fetch.rs` (the fetch
//! path: issue, update, every outcome recorded), `cache.rs` (the two token caches), `history.rs` (what the status
//! page shows of each key: the last token and STS error, fetches under way), `report.rs` (a key's state for the
//! status page), `key.rs`
//! (the cache key), `token.rs` (a token and its age), `error.rs` (what failed), `backoff.rs`
//! (STS failures and 401 refusals), `budget.rs` (the STS calls clients can cause at will, per
//! credential), `sts.rs` (the HTTP calls), `schedule.rs` (timing rules).

mod backoff;
mod budget;
mod cache;
mod config;
mod error;
mod fetch;
mod history;
mod key;
mod report;
pub mod schedule;
mod source;
pub mod sts;
#[expect(
    clippy::module_inception,
    reason = "named after the type it holds, like its siblings; private, so no token::token path leaks"
)]
mod token;

pub use backoff::REFUSAL_WINDOW;
pub use cache::MAX_PATH_TEAMS;
pub use config::{Credential, StsBudgetLimits, TokenConfig, TokenMode};
pub use error::{Step, StsFailure, TokenError};
pub use key::{TeamFrom, TokenKey};
pub use report::{TokenPhase, TokenReport};
pub use source::{TokenSource, TokenState};
pub use sts::{StsClient, StsClientConfig};
pub use token::Token;
