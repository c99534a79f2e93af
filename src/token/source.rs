//! [`TokenSource`]: hands out tokens by route policy, with a moka cache keyed by (credential,
//! delegate, transaction), single flight, refresh ahead of expiry, the 401 refusal rule and the
//! STS calls that issue a token and update it for a delegate.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use moka::future::Cache;
use moka::ops::compute::Op;

use super::TokenMode;
use super::backoff::Backoff;
use super::cache::TokenCaches;
use super::config::{Credential, TokenConfig};
use super::error::{Step, StsFailure, TokenError};
use super::key::TokenKey;
use super::schedule;
use super::sts::{Issued, StsClient};
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
enum BaseToken {
    /// The credential's cached token (fetched once on a miss): the shared interval token.
    Cached,
    /// A token fetched for this update alone: per-request and per-transaction tokens, so that a
    /// permission change takes effect for them.
    Fresh,
}

/// An STS answer and the moment its request was sent (a token's life counts from then).
type StsAnswer = Result<(Issued, Instant, SystemTime), StsFailure>;

struct Inner {
    sts: StsClient,
    credentials: HashMap<Arc<str>, Credential>,
    max_age: Duration,
    refresh_before: Duration,
    caches: TokenCaches,
    backoff: Backoff,
    metrics: Arc<Metrics>,
}

/// Hands out tokens by route policy. Cheap to clone; clones share the cache.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<Inner>,
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
        let credentials = config
            .credentials
            .into_iter()
            .map(|(name, c)| (Arc::from(name.as_str()), c))
            .collect();
        TokenSource {
            inner: Arc::new(Inner {
                sts,
                credentials,
                max_age: config.max_age,
                refresh_before: config.refresh_before_expiry,
                caches: TokenCaches::new(),
                backoff: Backoff::new(),
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
        if !self.inner.backoff.note_refusal(key, token.sent_at) {
            return false;
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
        self.cached_or_fetch(
            key,
            move |this, key| async move { this.fetch(&key, base).await },
        )
        .await
    }

    /// The cached token of `key` while usable (refreshing it in the background once due), else
    /// one run of `fetch` shared by every concurrent caller. Taking the fetch as an argument is what
    /// lets a delegate's fetch look up its base token here ([`TokenSource::cached_base`]) without
    /// calling back into itself.
    async fn cached_or_fetch<F, Fut>(
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
    async fn evict(&self, key: &TokenKey, token: &Arc<Token>) -> bool {
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

    /// Fetches a new token for `key`: the credential's own token, or for a delegate the update of
    /// a base token (cached or fresh, as `base` says). Either way the key's backoff, expiry metric
    /// and log line are kept by [`TokenSource::record_outcome`].
    async fn fetch(&self, key: &TokenKey, base: BaseToken) -> Result<Arc<Token>, TokenError> {
        match &key.delegate {
            None => self.fetch_own(key).await,
            Some(delegate) => self.fetch_delegated(key, delegate, base).await,
        }
    }

    /// A credential's own token: one client-credentials grant, recorded under `key`.
    async fn fetch_own(&self, key: &TokenKey) -> Result<Arc<Token>, TokenError> {
        let result = self.issue(key).await;
        self.record_outcome(key, result)
    }

    /// A delegate's token: the base token of the credential, then one `update_token` call for the
    /// delegate (two when the STS refused a cached base), recorded under `key`.
    async fn fetch_delegated(
        &self,
        key: &TokenKey,
        delegate: &str,
        base: BaseToken,
    ) -> Result<Arc<Token>, TokenError> {
        // A credential missing from the configuration is a failure of this key, like any other.
        if let Err(e) = self.credential(key) {
            return self.record_outcome(key, Err(e));
        }
        let base_key = key.base();
        // A failure of the base token was recorded (and backed off) under the base key already;
        // it is returned as it is: recording it again here would double the delay and the logs.
        let mut base_token = match base {
            BaseToken::Cached => self.cached_base(&base_key).await?,
            BaseToken::Fresh => {
                self.inner.backoff.check(&base_key)?;
                self.fetch_own(&base_key).await?
            }
        };
        let mut answer = self.update(key, delegate, &base_token).await;
        if base == BaseToken::Cached
            && matches!(answer, Err(StsFailure::Rejected { status: 401, .. }))
            && self.evict(&base_key, &base_token).await
        {
            // The STS no longer accepts the cached base token (revoked before its end): that says
            // nothing about the delegate. Update a fresh base once before calling it a rejection.
            base_token = self.cached_base(&base_key).await?;
            answer = self.update(key, delegate, &base_token).await;
        }
        let result = self.token_from(key, Step::Update, answer);
        self.record_outcome(key, result)
    }

    /// The credential's own token that delegate tokens are updated from: the cache entry it
    /// shares with the credential's interval token, fetched once on a miss.
    async fn cached_base(&self, base_key: &TokenKey) -> Result<Arc<Token>, TokenError> {
        self.cached_or_fetch(
            base_key,
            |this, key| async move { this.fetch_own(&key).await },
        )
        .await
    }

    /// The client-credentials grant for the credential of `key`.
    async fn issue(&self, key: &TokenKey) -> Result<Token, TokenError> {
        let credential = self.credential(key)?;
        let answer = self
            .sts_call(key, Step::Issue, self.inner.sts.issue(credential))
            .await;
        self.token_from(key, Step::Issue, answer)
    }

    /// The `update_token` call for `delegate` with `base` as Bearer; the STS answer as it is (a
    /// 401 may call for a fresh base rather than an error).
    async fn update(&self, key: &TokenKey, delegate: &str, base: &Token) -> StsAnswer {
        let call = self.inner.sts.update(base.secret(), delegate);
        self.sts_call(key, Step::Update, call).await
    }

    /// Makes one STS call for `key`, counts its outcome in the metrics and returns the answer
    /// with the moment the call was sent (a token's life counts from then, so network time only
    /// ever shortens its use).
    async fn sts_call(
        &self,
        key: &TokenKey,
        step: Step,
        call: impl Future<Output = Result<Issued, StsFailure>>,
    ) -> StsAnswer {
        let (sent_at, sent_wall) = (Instant::now(), SystemTime::now());
        let result = call.await;
        let outcome = match &result {
            Ok(_) => "ok",
            Err(failure) => failure.metric_label(),
        };
        self.inner
            .metrics
            .sts(&key.credential, step.metric_label(), outcome);
        result.map(|issued| (issued, sent_at, sent_wall))
    }

    /// The configuration of the credential of `key`.
    fn credential(&self, key: &TokenKey) -> Result<&Credential, TokenError> {
        self.inner.credentials.get(&key.credential).ok_or_else(|| {
            let reason = "no such credential in the configuration".to_string();
            TokenError::unavailable(key, Step::Issue, reason)
        })
    }

    /// The token in the STS `answer` to `step` for `key`, or the error naming what failed.
    fn token_from(
        &self,
        key: &TokenKey,
        step: Step,
        answer: StsAnswer,
    ) -> Result<Token, TokenError> {
        let (issued, sent_at, sent_wall) = answer.map_err(|f| TokenError::new(key, step, f))?;
        let (max_age, refresh_before) = (self.inner.max_age, self.inner.refresh_before);
        Token::new(issued, sent_at, sent_wall, max_age, refresh_before).ok_or_else(|| {
            let reason = "the token cannot be sent in a header".to_string();
            TokenError::unavailable(key, step, reason)
        })
    }

    /// Keeps the outcome of a fetch for `key`: a new token clears the key's failures, sets its
    /// expiry metric and is logged; a failure is recorded for the backoff, which sets its
    /// `retry_after`.
    fn record_outcome(
        &self,
        key: &TokenKey,
        result: Result<Token, TokenError>,
    ) -> Result<Arc<Token>, TokenError> {
        match result {
            Ok(token) => {
                self.inner.backoff.clear_failures(key);
                self.inner.metrics.token_expiry(
                    &key.credential,
                    key.delegate_label().as_ref(),
                    token.expires_at(),
                );
                tracing::info!(
                    credential = %key.credential,
                    delegate = key.delegate.as_deref().unwrap_or("-"),
                    // 0: the token shared by every request, as this line always said.
                    transaction = key.transaction.unwrap_or(0),
                    valid_for_s = token.schedule.usable_for.as_secs(),
                    "token issued"
                );
                Ok(Arc::new(token))
            }
            Err(mut e) => {
                e.retry_after = Some(self.inner.backoff.record_failure(key, &e));
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simulator::Simulator;

    const TEAM: &str = "TEAM-WOODGROVE";

    fn source(sim: &Simulator) -> TokenSource {
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
        TokenSource::new(config.token_config(), sts, Arc::new(Metrics::new()))
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
        let tokens = source(&sim);
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
