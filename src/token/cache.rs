//! The token caches: moka, keyed by [`TokenKey`], each entry living until its token stops being
//! usable. Two of them: one for the tokens the config names (and the teams `{delegate}` routes
//! list), bounded by the config; one of at most [`MAX_PATH_TEAMS`] for the teams clients name on
//! routes that accept any team, the least recently used evicted first.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use moka::Expiry;
use moka::future::Cache;
use rustc_hash::FxBuildHasher;

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
    front: Front,
}

/// Whether `key`'s token may be held by the front: not a transaction's, not a team's that a
/// client named on a route accepting any team.
fn in_front(key: &TokenKey) -> bool {
    key.transaction.is_none() && !key.any_team()
}

/// In front of the main cache, for what nearly every request asks: the shared interval token of
/// a key the config names. A map behind a read lock costs a fraction of a moka lookup (which
/// records each read for its eviction policy). It holds copies of what the main cache returned
/// and serves one only while it is not due for refresh (so, usable): a token due for refresh goes
/// to the cache, which starts the refresh and returns the new token once it is in. Whatever drops
/// a token from the caches empties the front and moves its generation on, so that a lookup that
/// raced with the drop cannot put the dropped token back.
#[derive(Default)]
struct Front {
    /// FxHash: the keys are the config's (see [`in_front`]), no client can choose them.
    tokens: RwLock<HashMap<TokenKey, Arc<Token>, FxBuildHasher>>,
    generation: AtomicU64,
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
            front: Front::default(),
        }
    }

    /// The front's copy of `key`'s token while it is not due for refresh.
    pub(super) fn front(&self, key: &TokenKey) -> Option<Arc<Token>> {
        if !in_front(key) {
            return None;
        }
        let tokens = self.front.tokens.read().ok()?;
        tokens.get(key).filter(|t| !t.refresh_due()).cloned()
    }

    /// The front's generation, to pass to [`TokenCaches::remember`] after a cache lookup.
    pub(super) fn generation(&self) -> u64 {
        self.front.generation.load(Ordering::Acquire)
    }

    /// Copies `token`, which the main cache returned for `key` in `generation`, to the front,
    /// unless a token was dropped since. Only keys of the main cache outside a transaction go
    /// there: the config bounds their number.
    pub(super) fn remember(&self, key: &TokenKey, generation: u64, token: &Arc<Token>) {
        if !in_front(key) {
            return;
        }
        if let Ok(mut tokens) = self.front.tokens.write()
            && self.front.generation.load(Ordering::Acquire) == generation
        {
            tokens.insert(key.clone(), token.clone());
        }
    }

    /// The token of `key` was dropped from a cache: if the front may hold it, the front forgets
    /// everything it holds (drops are rare; a transaction's or any team's never touch it).
    pub(super) fn dropped(&self, key: &TokenKey) {
        if !in_front(key) {
            return;
        }
        if let Ok(mut tokens) = self.front.tokens.write() {
            self.front.generation.fetch_add(1, Ordering::AcqRel);
            tokens.clear();
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

#[cfg(test)]
mod tests {
    use std::time::{Instant, SystemTime};

    use super::*;
    use crate::secret::Secret;
    use crate::token::sts::Issued;

    /// A token of one hour sent at `sent_at`: due for refresh 50 minutes later.
    fn token(sent_at: Instant) -> Arc<Token> {
        let issued = Issued {
            access_token: Secret::new("t"),
            expires_in: Duration::from_secs(3600),
            token_type: "Bearer".into(),
        };
        let hour = Duration::from_secs(3600);
        let token = Token::new(issued, sent_at, SystemTime::now(), hour, hour / 12);
        Arc::new(token.expect("a plain token fits a header"))
    }

    fn key() -> TokenKey {
        TokenKey::new(Arc::from("default"), None)
    }

    #[test]
    fn the_front_serves_what_it_was_given_until_refresh_is_due() {
        let caches = TokenCaches::new();
        let fresh = token(Instant::now());
        assert!(caches.front(&key()).is_none());
        caches.remember(&key(), caches.generation(), &fresh);
        let served = caches.front(&key()).expect("the front holds it");
        assert!(Arc::ptr_eq(&served, &fresh));
        // Due for refresh (sent 59 minutes ago, refresh after 50): the front lets it pass.
        let old = Instant::now() - Duration::from_secs(59 * 60);
        caches.remember(&key(), caches.generation(), &token(old));
        assert!(caches.front(&key()).is_none());
    }

    #[test]
    fn a_drop_empties_the_front_and_a_lookup_from_before_it_is_not_kept() {
        let caches = TokenCaches::new();
        let before = caches.generation();
        caches.remember(&key(), before, &token(Instant::now()));
        caches.dropped(&key());
        assert!(caches.front(&key()).is_none());
        // A lookup that started before the drop comes back with the dropped token.
        caches.remember(&key(), before, &token(Instant::now()));
        assert!(caches.front(&key()).is_none());
        // Keys of a transaction or of any team stay out: the config does not bound them.
        let now = caches.generation();
        let any = TokenKey::for_team(Arc::from("c"), Arc::from("T"), super::super::TeamFrom::Any);
        caches.remember(&any, now, &token(Instant::now()));
        assert!(caches.front(&any).is_none());
        // Nor does dropping such a key empty the front.
        caches.remember(&key(), now, &token(Instant::now()));
        caches.dropped(&key().for_transaction(1));
        caches.dropped(&any);
        assert!(caches.front(&key()).is_some());
    }
}
