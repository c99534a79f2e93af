//! The fetch path of a [`TokenSource`]: a credential's own token (issue), or a delegate's
//! (a base token, then an update), each STS call timed and counted, and every outcome recorded
//! in the key's backoff, the expiry metric and one log line.

use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::config::Credential;
use super::error::{Step, StsFailure, TokenError};
use super::key::TokenKey;
use super::source::{BaseToken, TokenSource};
use super::sts::Issued;
use super::token::Token;

/// An STS answer and the moment its request was sent (a token's life counts from then).
type StsAnswer = Result<(Issued, Instant, SystemTime), StsFailure>;

impl TokenSource {
    /// Fetches a new token for `key`: the credential's own token, or for a delegate the update of
    /// a base token (cached or fresh, as `base` says). Either way the key's backoff, expiry metric
    /// and log line are kept by [`TokenSource::record_outcome`].
    pub(super) async fn fetch(
        &self,
        key: &TokenKey,
        base: BaseToken,
    ) -> Result<Arc<Token>, TokenError> {
        match &key.delegate {
            None => self.fetch_own(key).await,
            Some(delegate) => self.fetch_delegated(key, delegate, base).await,
        }
    }

    /// A credential's own token: one client-credentials grant, recorded under `key`.
    async fn fetch_own(&self, key: &TokenKey) -> Result<Arc<Token>, TokenError> {
        let _flight = self.inner.history.flight(key);
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
        let _flight = self.inner.history.flight(key);
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
                self.inner.history.issued(key, &token);
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
                self.inner.history.failed(key, &e.to_string());
                Err(e)
            }
        }
    }
}
