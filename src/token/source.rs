//! [`TokenSource`]: hands out tokens by route policy, with a moka cache keyed by (credential,
//! delegate, transaction), single flight, refresh ahead of expiry, the 401 refusal rule and the
//! STS calls that issue a token and update it for a delegate.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant, SystemTime};

use moka::Expiry;
use moka::future::Cache;
use moka::ops::compute::Op;

use super::backoff::Backoff;
use super::error::{Step, StsFailure, TokenError};
use super::key::TokenKey;
use super::schedule;
use super::sts::{Issued, StsClient};
use super::token::Token;
use crate::config::{Config, CredentialConfig, TokenMode};
use crate::metrics::{Metrics, StsOutcome};

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

struct Inner {
    sts: StsClient,
    credentials: HashMap<Arc<str>, CredentialConfig>,
    max_age: Duration,
    refresh_before: Duration,
    cache: Cache<TokenKey, Arc<Token>>,
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
            .field("cached", &self.inner.cache.entry_count())
            .finish()
    }
}

impl TokenSource {
    /// A token source for the config's credentials and token policy; STS calls and token
    /// expiries are counted in `metrics`.
    pub fn new(
        config: &Config,
        tls: rustls::ClientConfig,
        metrics: Arc<Metrics>,
    ) -> Result<Self, String> {
        let sts = StsClient::new(
            &config.sts.token_url,
            config.sts.timeout,
            config.upstream.connect_timeout,
            tls,
        )?;
        let credentials = config
            .credentials
            .iter()
            .map(|(name, c)| (Arc::from(name.as_str()), c.clone()))
            .collect();
        let cache = Cache::builder()
            .max_capacity(100_000)
            .expire_after(TokenExpiry)
            .build();
        Ok(TokenSource {
            inner: Arc::new(Inner {
                sts,
                credentials,
                max_age: config.token.max_age,
                refresh_before: config.token.refresh_before_expiry,
                cache,
                backoff: Backoff::new(),
                metrics,
            }),
        })
    }

    /// Takes over from `previous` (the source of the config before a reload) the shared tokens,
    /// backoff and 401 refusals of the credentials `unchanged` accepts, so that a reload costs no
    /// STS call for them and does not reset a backoff. Tokens of other credentials stay behind
    /// and end with the requests still using them; so do transaction tokens (a reload starts new
    /// transactions) and tokens already due for refresh. Returns how many tokens it took.
    pub async fn adopt(&self, previous: &TokenSource, unchanged: impl Fn(&str) -> bool) -> usize {
        let mut kept = 0;
        for (key, token) in previous.inner.cache.iter() {
            if key.transaction.is_none()
                && unchanged(&key.credential)
                && token.is_usable()
                && !token.refresh_due()
            {
                self.inner.cache.insert((*key).clone(), token).await;
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
                self.fetch(key, BaseToken::Fresh).await
            }
        }
    }

    /// The state of the token `key` under `mode`, for readiness; changes nothing.
    pub async fn state(&self, key: &TokenKey, mode: TokenMode) -> TokenState {
        if mode == TokenMode::Interval
            && let Some(token) = self.inner.cache.get(key).await
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
        self.inner.cache.invalidate(key).await;
    }

    /// Interval mode: the cached token while usable (refreshing it in the background once due),
    /// else one fetch shared by every concurrent caller.
    async fn cached(&self, key: &TokenKey) -> Result<Arc<Token>, TokenError> {
        if let Some(token) = self.inner.cache.get(key).await {
            if token.is_usable() {
                // A transaction's token is not refreshed ahead: the transaction may be over by
                // then. One that outlives its token fetches the next when it runs out.
                if key.transaction.is_none() && token.refresh_due() {
                    self.refresh_in_background(key, &token);
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
        let this = self.clone();
        let owned = key.clone();
        let fetch = async move {
            let base = match owned.transaction {
                None => BaseToken::Cached,
                Some(_) => BaseToken::Fresh,
            };
            match tokio::spawn(async move { this.fetch(&owned, base).await }).await {
                Ok(result) => result,
                Err(e) => Err(TokenError::unavailable(
                    key,
                    Step::Issue,
                    format!("the token fetch was interrupted ({e})"),
                )),
            }
        };
        self.inner
            .cache
            .try_get_with_by_ref(key, fetch)
            .await
            .map_err(|e| (*e).clone())
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

    /// Drops `token` from the cache if it is still the one cached for `key` (when it outlived its
    /// use); returns whether it did.
    async fn evict(&self, key: &TokenKey, token: &Arc<Token>) -> bool {
        let result = self
            .inner
            .cache
            .entry_by_ref(key)
            .and_compute_with(|entry| async move {
                match entry {
                    Some(e) if Arc::ptr_eq(e.value(), token) => Op::Remove,
                    _ => Op::Nop,
                }
            })
            .await;
        matches!(result, moka::ops::compute::CompResult::Removed(_))
    }

    /// The upstream answered 401 to `token`: returns whether to retry with a fresh token, having
    /// dropped this one so that the next [`TokenSource::get`] fetches it. For a delegate token,
    /// the cached base token it was updated from goes too: what made the API refuse one
    /// (revocation, a permission change) holds for the other.
    ///
    /// No retry while the STS is backing off (the token is kept: it may still serve other
    /// requests), nor when the token was fetched after a refusal less than [`REFUSAL_WINDOW`](super::REFUSAL_WINDOW) ago:
    /// a fresh token refused again means the request is refused, not the token, and fetching on
    /// every such request would turn the API's 401s into a tight STS loop. Of many requests
    /// refused with the same token, only the first drops anything; the others find its
    /// replacement.
    pub async fn refused(&self, key: &TokenKey, token: &Arc<Token>) -> bool {
        if self.inner.backoff.check(key).is_err() {
            return false;
        }
        if !self.inner.backoff.note_refusal(key, token.sent_at) {
            return false;
        }
        if self.evict(key, token).await && key.delegate.is_some() && key.transaction.is_none() {
            self.inner.cache.invalidate(&key.base()).await;
        }
        true
    }

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
                Ok(new) => this.inner.cache.insert(key, new).await,
                // The old token keeps serving until its end; the next request after the backoff
                // tries again.
                Err(_) => old.refreshing.store(false, Ordering::Release),
            }
        });
    }

    /// Fetches a new token for `key` (for a delegate: the base token, cached or fresh, then its
    /// update) and keeps the backoff state of the key. A fresh base is fetched for per-request and
    /// per-transaction tokens, so that a permission change takes effect for them.
    async fn fetch(&self, key: &TokenKey, base: BaseToken) -> Result<Arc<Token>, TokenError> {
        match self.fetch_uncounted(key, base).await {
            Ok(token) => {
                self.inner.backoff.clear_failures(key);
                self.inner.metrics.token_expiry(
                    &key.credential,
                    key.delegate.as_ref(),
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
            // A failure of the base token was counted (and backed off) under the base key
            // already; counting it again here would double the delay and the log lines.
            Err(e) if e.delegate != key.delegate => Err(e),
            Err(mut e) => {
                e.retry_after = Some(self.inner.backoff.record_failure(key, &e));
                Err(e)
            }
        }
    }

    async fn fetch_uncounted(&self, key: &TokenKey, base: BaseToken) -> Result<Token, TokenError> {
        let inner = &*self.inner;
        let Some(credential) = inner.credentials.get(&key.credential) else {
            let reason = "no such credential in the configuration".to_string();
            return Err(TokenError::unavailable(key, Step::Issue, reason));
        };
        let (step, result) = match &key.delegate {
            None => (
                Step::Issue,
                self.sts_call(key, Step::Issue, inner.sts.issue(credential))
                    .await,
            ),
            Some(delegate) => {
                let base_key = key.base();
                if base == BaseToken::Fresh {
                    self.inner.backoff.check(&base_key)?;
                }
                let base_token = self.base_token(&base_key, base).await?;
                let update = |base: Arc<Token>| async move {
                    let call = inner.sts.update(base.secret(), delegate);
                    self.sts_call(key, Step::Update, call).await
                };
                let mut result = update(base_token.clone()).await;
                if base == BaseToken::Cached
                    && matches!(result, Err(StsFailure::Rejected { status: 401, .. }))
                    && self.evict(&base_key, &base_token).await
                {
                    // The STS no longer accepts the cached base token (revoked before its end):
                    // that says nothing about the delegate. Update a fresh base once before
                    // calling it a rejection.
                    result = update(self.base_token(&base_key, BaseToken::Cached).await?).await;
                }
                (Step::Update, result)
            }
        };
        let (issued, sent_at, sent_wall) = result.map_err(|f| TokenError::new(key, step, f))?;
        Token::new(
            issued,
            sent_at,
            sent_wall,
            inner.max_age,
            inner.refresh_before,
        )
        .ok_or_else(|| {
            let reason = "the token cannot be sent in a header".to_string();
            TokenError::unavailable(key, step, reason)
        })
    }

    /// Makes one STS call for `key`, counts its outcome in the metrics and returns the answer
    /// with the moment the call was sent (a token's life counts from then, so network time only
    /// ever shortens its use).
    async fn sts_call(
        &self,
        key: &TokenKey,
        step: Step,
        call: impl Future<Output = Result<Issued, StsFailure>>,
    ) -> Result<(Issued, Instant, SystemTime), StsFailure> {
        let (sent_at, sent_wall) = (Instant::now(), SystemTime::now());
        let result = call.await;
        let outcome = match &result {
            Ok(_) => StsOutcome::Ok,
            Err(StsFailure::Rejected { .. }) => StsOutcome::Rejected,
            Err(StsFailure::Unavailable { .. }) => StsOutcome::Unavailable,
        };
        self.inner.metrics.sts(&key.credential, step, outcome);
        result.map(|issued| (issued, sent_at, sent_wall))
    }

    /// The base token a delegate token is updated from: cached (interval mode) or fresh. Boxed
    /// with an explicit `Send` because it recurses into [`TokenSource::cached`] /
    /// [`TokenSource::fetch`].
    fn base_token<'a>(
        &'a self,
        base_key: &'a TokenKey,
        base: BaseToken,
    ) -> Pin<Box<dyn Future<Output = Result<Arc<Token>, TokenError>> + Send + 'a>> {
        match base {
            BaseToken::Cached => Box::pin(self.cached(base_key)),
            BaseToken::Fresh => Box::pin(self.fetch(base_key, BaseToken::Fresh)),
        }
    }
}
