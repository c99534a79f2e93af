//! [`TokenSource`]: hands out tokens by route policy, with a moka cache keyed by (credential,
//! delegate, transaction), single flight, refresh ahead of expiry and the 401 refusal rule; the
//! STS calls that issue a token and update it for a delegate are its fetch path (`fetch.rs`).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, SystemTime};

use moka::future::Cache;
use moka::ops::compute::Op;

use super::TokenMode;
use super::backoff::{Backoff, Refusal};
use super::budget::StsBudget;
use super::cache::TokenCaches;
use super::config::{Credential, TokenConfig};
use super::error::{Step, TokenError};
use super::history::History;
use super::key::TokenKey;
use super::schedule;
use super::sts::StsClient;
use super::token::Token;
use crate::metrics::Metrics;

/// What `/readyz` says about a route's token.
#[derive(Debug, Clone)]
pub enum TokenState {
    /// A usable token is cached.
    Valid {
        /// When the proxy stops sending it.
        expires_at: SystemTime,
    },
    /// No usable token yet (start-up, or the last one ran out).
    Missing,
    /// The STS failed; no attempt before `retry_in`.
    BackingOff {
        /// Time to the next attempt.
        retry_in: Duration,
        /// What failed (names the credential and delegate, never a secret).
        error: String,
    },
    /// `per_request` / `per_transaction`: tokens are fetched when requests come.
    OnDemand,
}

impl TokenState {
    /// Whether a request could be served now without waiting for a failing STS.
    pub fn is_ready(&self) -> bool {
        matches!(self, TokenState::Valid { .. } | TokenState::OnDemand)
    }
}

/// Which base token a delegate token is updated from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum BaseToken {
    /// The credential's cached token (fetched once on a miss): the shared interval token.
    Cached,
    /// A token fetched for this update alone: per-request and per-transaction tokens, so that a
    /// permission change takes effect for them.
    Fresh,
}

/// What the clones of a token source share (`fetch.rs` reads it too).
pub(super) struct Inner {
    pub(super) sts: StsClient,
    pub(super) credentials: HashMap<Arc<str>, Credential>,
    pub(super) max_age: Duration,
    pub(super) refresh_before: Duration,
    pub(super) caches: TokenCaches,
    pub(super) backoff: Backoff,
    /// The STS calls clients can cause at will, per credential.
    pub(super) budget: StsBudget,
    /// What the status page shows of each key: last token, last error, fetches under way.
    pub(super) history: History,
    pub(super) metrics: Arc<Metrics>,
}

/// Hands out tokens by route policy. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct TokenSource {
    pub(super) inner: Arc<Inner>,
}

impl fmt::Debug for TokenSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TokenSource")
            .field("caches", &self.inner.caches)
            .finish()
    }
}

impl TokenSource {
    /// A token source for `config`'s credentials and token lifetimes, fetching from `sts`; STS
    /// calls and token expiries are counted in `metrics`.
    pub fn new(config: TokenConfig, sts: StsClient, metrics: Arc<Metrics>) -> Self {
        let credentials: HashMap<Arc<str>, Credential> = config
            .credentials
            .into_iter()
            .map(|(name, c)| (Arc::from(name.as_str()), c))
            .collect();
        let budget = StsBudget::new(credentials.keys(), config.sts_budget);
        TokenSource {
            inner: Arc::new(Inner {
                sts,
                credentials,
                max_age: config.max_age,
                refresh_before: config.refresh_before_expiry,
                caches: TokenCaches::new(),
                backoff: Backoff::new(),
                budget,
                history: History::default(),
                metrics,
            }),
        }
    }

    /// Takes over from `previous` (the source of the config before a reload) the shared tokens,
    /// backoff and 401 refusals of the credentials `unchanged` accepts, so that a reload costs no
    /// STS call for them and does not reset a backoff. Tokens of other credentials stay behind
    /// and end with the requests still using them; so do transaction tokens (a reload starts new
    /// transactions) and tokens already due for refresh. Returns how many tokens it took.
    pub async fn adopt(&self, previous: &TokenSource, unchanged: impl Fn(&str) -> bool) -> usize {
        let mut kept = 0;
        let entries = previous.inner.caches.iter();
        for (key, token) in entries {
            if key.transaction.is_none()
                && unchanged(&key.credential)
                && token.is_usable()
                && !token.refresh_due()
            {
                self.cache(&key).insert((*key).clone(), token).await;
                kept += 1;
            }
        }
        self.inner
            .backoff
            .adopt(&previous.inner.backoff, &unchanged);
        self.inner
            .history
            .adopt(&previous.inner.history, &unchanged);
        kept
    }

    /// A token for `key` under `mode`. In `per_transaction` mode the key names the transaction
    /// ([`TokenKey::for_transaction`]); its first request fetches the token, the others share it.
    pub async fn get(&self, key: &TokenKey, mode: TokenMode) -> Result<Arc<Token>, TokenError> {
        match mode {
            TokenMode::Interval | TokenMode::PerTransaction => self.cached(key).await,
            TokenMode::PerRequest => {
                self.inner.backoff.check(key)?;
                // Boxed, as every STS call is: see `cached_or_fetch`.
                Box::pin(self.fetch(key, BaseToken::Fresh)).await
            }
        }
    }

    /// The state of the token `key` under `mode`, for readiness; changes nothing.
    pub async fn state(&self, key: &TokenKey, mode: TokenMode) -> TokenState {
        if mode == TokenMode::Interval
            && let Some(token) = self.cache(key).get(key).await
            && token.is_usable()
        {
            return TokenState::Valid {
                expires_at: token.expires_at(),
            };
        }
        // A failing base token is what holds a delegate back.
        for k in [key, &key.base()] {
            if let Err(e) = self.inner.backoff.check(k) {
                return TokenState::BackingOff {
                    retry_in: e.retry_after.unwrap_or_default(),
                    error: e.to_string(),
                };
            }
        }
        match mode {
            TokenMode::Interval => TokenState::Missing,
            TokenMode::PerRequest | TokenMode::PerTransaction => TokenState::OnDemand,
        }
    }

    /// Forgets the token of `key` (a transaction that ended).
    pub async fn forget(&self, key: &TokenKey) {
        self.cache(key).invalidate(key).await;
        self.inner.caches.dropped(key);
    }

    /// Forgets the tokens of transaction `ended` of the route `key` belongs to: on a `{delegate}`
    /// route, those of every team (each team's token of a transaction is its own entry).
    pub async fn forget_transaction(&self, key: &TokenKey, ended: u64) {
        self.inner.caches.forget_transaction(key, ended).await;
    }

    /// The cache that holds `key`'s token.
    fn cache(&self, key: &TokenKey) -> &Cache<TokenKey, Arc<Token>> {
        self.inner.caches.of(key)
    }

    /// Keeps the interval-mode token of `key` warm for as long as the returned future runs: fetches
    /// it now (again after the backoff when the STS fails) and looks at it whenever it is due, which
    /// starts its refresh in the background, so requests find a fresh token even after a quiet hour.
    pub async fn keep_warm(&self, key: TokenKey) {
        loop {
            let wait = match self.cached(&key).await {
                // Not due yet: sleep until it is. Due: `cached` has just started the refresh (or
                // the backoff holds it back); look again shortly.
                Ok(token) => match token.until_refresh() {
                    Duration::ZERO => schedule::BACKOFF_MIN,
                    wait => wait,
                },
                Err(e) => e.retry_after.unwrap_or(schedule::BACKOFF_MIN),
            };
            tokio::time::sleep(wait).await;
        }
    }

    /// The upstream answered 401 to `token`: returns whether to retry with a fresh token, having
    /// dropped this one so that the next [`TokenSource::get`] fetches it. For a delegate token,
    /// the cached base token it was updated from goes too: what made the API refuse one
    /// (revocation, a permission change) holds for the other.
    ///
    /// No retry while the STS is backing off (the token is kept: it may still serve other
    /// requests), nor when the token was fetched after a refusal less than
    /// [`REFUSAL_WINDOW`](super::REFUSAL_WINDOW) ago: a fresh token refused again means the request
    /// is refused, not the token, and fetching on every such request would turn the API's 401s
    /// into a tight STS loop. Of many requests refused with the same token, only the first drops
    /// anything; the others find its replacement.
    pub async fn refused(&self, key: &TokenKey, token: &Arc<Token>) -> bool {
        if self.inner.backoff.check(key).is_err() {
            return false;
        }
        match self.inner.backoff.note_refusal(key, token.sent_at) {
            Refusal::Again => return false,
            Refusal::Replaced => return true,
            Refusal::New => {}
        }
        if self.evict(key, token).await && key.delegate.is_some() && key.transaction.is_none() {
            self.cache(&key.base()).invalidate(&key.base()).await;
            self.inner.caches.dropped(&key.base());
        }
        true
    }

    /// Interval and per-transaction mode: the token cached under `key`, fetched once on a miss. A
    /// transaction's delegate token is updated from a fresh base (see [`BaseToken`]).
    async fn cached(&self, key: &TokenKey) -> Result<Arc<Token>, TokenError> {
        let base = match key.transaction {
            None => BaseToken::Cached,
            Some(_) => BaseToken::Fresh,
        };
        self.cached_or_fetch(key, move |this, key| async move {
            // A token the cache does not hold, for a team a path names or a new transaction:
            // clients cause these at will, so they draw on the credential's budget. One draw
            // per fetch, however many requests wait for it.
            if StsBudget::applies(&key) {
                this.inner.budget.take(&key)?;
            }
            this.fetch(&key, base).await
        })
        .await
    }

    /// The cached token of `key` while usable (refreshing it in the background once due), else
    /// one run of `fetch` shared by every concurrent caller. Taking the fetch as an argument is what
    /// lets a delegate's fetch look up its base token here ([`TokenSource::cached_base`]) without
    /// calling back into itself.
    pub(super) async fn cached_or_fetch<F, Fut>(
        &self,
        key: &TokenKey,
        fetch: F,
    ) -> Result<Arc<Token>, TokenError>
    where
        F: FnOnce(TokenSource, TokenKey) -> Fut,
        Fut: Future<Output = Result<Arc<Token>, TokenError>> + Send + 'static,
    {
        if let Some(token) = self.inner.caches.front(key) {
            return Ok(token);
        }
        let generation = self.inner.caches.generation();
        if let Some(token) = self.cache(key).get(key).await {
            if token.is_usable() {
                // A transaction's token is not refreshed ahead: the transaction may be over by
                // then. One that outlives its token fetches the next when it runs out.
                if key.transaction.is_none() && token.refresh_due() {
                    self.refresh_in_background(key, &token);
                } else {
                    self.inner.caches.remember(key, generation, &token);
                }
                return Ok(token);
            }
            // Past its end by the wall clock (the machine slept): drop exactly this entry, not a
            // fresher one another caller may have put in meanwhile.
            self.evict(key, &token).await;
        }
        self.inner.backoff.check(key)?;
        // The shared fetch runs in a task of its own: if the request that started it goes away
        // (the client disconnected), the STS call still completes for everyone waiting on it.
        // Only the caller whose future the cache runs spawns it.
        // Boxed: a fetch's state (tens of KiB, the STS exchanges) would otherwise be part of
        // every caller's future, a request's included, though most requests never fetch.
        let task = Box::pin(fetch(self.clone(), key.clone()));
        let shared = async move {
            match tokio::spawn(task).await {
                Ok(result) => result,
                Err(e) => Err(TokenError::unavailable(
                    key,
                    Step::Issue,
                    format!("the token fetch was interrupted ({e})"),
                )),
            }
        };
        self.cache(key)
            .try_get_with_by_ref(key, shared)
            .await
            .map_err(|e| (*e).clone())
    }

    /// Starts fetching the next token of `key` in a task of its own, unless one is already on its
    /// way or the key is backing off; the cache gets it when it comes.
    fn refresh_in_background(&self, key: &TokenKey, token: &Arc<Token>) {
        if token.refreshing.swap(true, Ordering::AcqRel) {
            return;
        }
        if self.inner.backoff.check(key).is_err() {
            token.refreshing.store(false, Ordering::Release);
            return;
        }
        let this = self.clone();
        let key = key.clone();
        let old = token.clone();
        tokio::spawn(async move {
            // Only the shared interval token (never a transaction's) is refreshed ahead.
            match this.fetch(&key, BaseToken::Cached).await {
                Ok(new) => this.cache(&key).insert(key, new).await,
                // The old token keeps serving until its end; the next request after the backoff
                // tries again.
                Err(_) => old.refreshing.store(false, Ordering::Release),
            }
        });
    }

    /// Drops `token` from the cache if it is still the one cached for `key` (when it outlived its
    /// use); returns whether it did.
    pub(super) async fn evict(&self, key: &TokenKey, token: &Arc<Token>) -> bool {
        let result = self
            .cache(key)
            .entry_by_ref(key)
            .and_compute_with(|entry| async move {
                match entry {
                    Some(e) if Arc::ptr_eq(e.value(), token) => Op::Remove,
                    _ => Op::Nop,
                }
            })
            .await;
        let removed = matches!(result, moka::ops::compute::CompResult::Removed(_));
        if removed {
            self.inner.caches.dropped(key);
        }
        removed
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::Simulator;
    use crate::token::StsBudgetLimits;

    const TEAM: &str = "TEAM-WOODGROVE";

    fn source(sim: &Simulator) -> TokenSource {
        source_with(sim, StsBudgetLimits::default())
    }

    /// [`source`] with another STS budget.
    fn source_with(sim: &Simulator, budget: StsBudgetLimits) -> TokenSource {
        let text = format!(
            "[sts]\ntoken_url = \"{}\"\n\
             [credentials.default]\nclient_id = \"{}\"\nclient_secret = {{ env = \"S\" }}\n\
             [[routes]]\nprefix = \"/\"\ndelegate = \"{TEAM}\"\n",
            sim.sts_url(),
            sim.client_id(),
        );
        let secret = sim.client_secret();
        let config =
            crate::config::from_toml(&text, "test.toml", &move |_: &str| Some(secret.clone()))
                .unwrap_or_else(|e| panic!("{e}"));
        let tls = config.outbound.trust.client_config().unwrap();
        let sts = StsClient::new(&config.sts_client_config(), &tls).unwrap();
        let mut token_config = config.token_config();
        token_config.sts_budget = budget;
        TokenSource::new(token_config, sts, Arc::new(Metrics::new()))
    }

    #[tokio::test]
    async fn a_revoked_cached_base_is_replaced_before_a_delegate_update_fails() {
        // Bounded like every test that talks to a server: a hang fails instead of blocking.
        tokio::time::timeout(Duration::from_secs(60), revoked_cached_base())
            .await
            .expect("the test finishes within 60 s");
    }

    async fn revoked_cached_base() {
        let sim = Simulator::builder().spawn().await.unwrap();
        let tokens = source(&sim);
        let base = TokenKey::new(Arc::from("default"), None);
        let delegate = TokenKey::new(Arc::from("default"), Some(Arc::from(TEAM)));
        tokens.get(&base, TokenMode::Interval).await.unwrap();
        sim.revoke_tokens();
        // The STS refuses (401) to update the cached base: that is the base's fault, not the
        // delegate's. One fresh base, one more update, and the delegate has its token.
        let token = tokens.get(&delegate, TokenMode::Interval).await.unwrap();
        assert!(token.is_usable());
        assert_eq!((sim.issue_calls(), sim.update_calls()), (2, 2));
        // The fresh base took the revoked one's place in the cache.
        assert!(tokens.state(&base, TokenMode::Interval).await.is_ready());
        assert!(
            tokens
                .state(&delegate, TokenMode::Interval)
                .await
                .is_ready()
        );
    }

    #[tokio::test]
    async fn tokens_of_any_team_are_bounded() {
        tokio::time::timeout(Duration::from_secs(60), any_team_bound())
            .await
            .expect("the test finishes within 60 s");
    }

    async fn any_team_bound() {
        let sim = Simulator::builder().spawn().await.unwrap();
        sim.accept_any_team(true);
        // The budget is not what this test is about: 1,200 teams at once.
        let unlimited = StsBudgetLimits {
            rate: 1e9,
            burst: 1e9,
        };
        let tokens = source_with(&sim, unlimited);
        let team = |i: usize| {
            TokenKey::for_team(
                Arc::from("default"),
                Arc::from(format!("T-{i}")),
                super::super::TeamFrom::Any,
            )
        };
        for i in 0..1_200 {
            tokens.get(&team(i), TokenMode::Interval).await.unwrap();
        }
        let (main, teams) = tokens.inner.caches.settle().await;
        assert_eq!(main, 1, "the base token");
        assert_eq!(teams, crate::token::MAX_PATH_TEAMS);
        assert_eq!(sim.issue_calls(), 1);
    }
}
