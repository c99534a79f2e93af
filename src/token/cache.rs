//! The token caches: moka, keyed by [`TokenKey`], each entry living until its token stops being
//! usable. Two of them: one for the tokens the config names (and the teams `{delegate}` routes
//! list), bounded by the config; one of at most [`MAX_PATH_TEAMS`] for the teams clients name on
//! routes that accept any team, the least recently used evicted first.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use moka::Expiry;
use moka::future::Cache;

use super::key::TokenKey;
use super::token::Token;

/// Tokens held at most for teams of `{delegate}` routes that accept any team.
pub const MAX_PATH_TEAMS: u64 = 1_000;

/// Entries live in the cache until their token stops being usable (by the monotonic clock; the
/// wall clock is checked on every read).
struct TokenExpiry;

impl Expiry<TokenKey, Arc<Token>> for TokenExpiry {
    fn expire_after_create(
        &self,
        _key: &TokenKey,
        token: &Arc<Token>,
        _created_at: std::time::Instant,
    ) -> Option<Duration> {
        Some(
            token
                .schedule
                .usable_for
                .saturating_sub(token.sent_at.elapsed()),
        )
    }

    fn expire_after_update(
        &self,
        key: &TokenKey,
        token: &Arc<Token>,
        updated_at: std::time::Instant,
        _duration_until_expiry: Option<Duration>,
    ) -> Option<Duration> {
        self.expire_after_create(key, token, updated_at)
    }
}

/// The two caches, and which one holds a key.
pub(super) struct TokenCaches {
    main: Cache<TokenKey, Arc<Token>>,
    teams: Cache<TokenKey, Arc<Token>>,
}

impl fmt::Debug for TokenCaches {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenCaches")
            .field("main", &self.main.entry_count())
            .field("teams", &self.teams.entry_count())
            .finish()
    }
}

impl TokenCaches {
    /// Two empty caches. Invalidation closures are on: a transaction that ends drops the tokens
    /// of all its teams.
    pub(super) fn new() -> Self {
        TokenCaches {
            main: Cache::builder()
                .max_capacity(100_000)
                .expire_after(TokenExpiry)
                .support_invalidation_closures()
                .build(),
            teams: Cache::builder()
                .max_capacity(MAX_PATH_TEAMS)
                .eviction_policy(moka::policy::EvictionPolicy::lru())
                .expire_after(TokenExpiry)
                .support_invalidation_closures()
                .build(),
        }
    }

    /// The cache that holds `key`'s token: the bounded one for a team of a route that accepts
    /// any team.
    pub(super) fn of(&self, key: &TokenKey) -> &Cache<TokenKey, Arc<Token>> {
        if key.any_team() {
            &self.teams
        } else {
            &self.main
        }
    }

    /// Every entry of both caches.
    pub(super) fn iter(&self) -> impl Iterator<Item = (Arc<TokenKey>, Arc<Token>)> + '_ {
        self.main.iter().chain(self.teams.iter())
    }

    /// Forgets the tokens of transaction `ended` on the route `key` belongs to: of every team,
    /// on a `{delegate}` route.
    pub(super) async fn forget_transaction(&self, key: &TokenKey, ended: u64) {
        if !key.team_from_path() {
            return self.of(key).invalidate(&key.for_transaction(ended)).await;
        }
        let credential = key.credential.clone();
        let dropped = self.of(key).invalidate_entries_if(move |k, _| {
            k.transaction == Some(ended) && k.team_from_path() && k.credential == credential
        });
        if let Err(e) = dropped {
            // Only if the cache were built without closures; the tokens then expire by age.
            tracing::debug!(error = %e, "transaction tokens left to expire");
        }
    }

    /// Runs moka's pending maintenance (evictions), for tests that count entries.
    #[cfg(test)]
    pub(super) async fn settle(&self) -> (u64, u64) {
        self.main.run_pending_tasks().await;
        self.teams.run_pending_tasks().await;
        (self.main.entry_count(), self.teams.entry_count())
    }
}
