//! The Azure Costs STS calls, exactly as the vendor documents them: client credentials as a form
//! body, `update_token` as JSON with the issued token as Bearer; both answer with a JSON token.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::Uri;
use http::header::{self, HeaderValue};
use http_body_util::{BodyExt, Either, Full};
use serde::Deserialize;

use super::config::Credential;
use super::error::StsFailure;
use super::schedule::DEFAULT_EXPIRES_IN;
use crate::cause::innermost;
use crate::secret::Secret;
use crate::upstream::{Egress, Limits, OriginConfig, PooledBody, Upstream, UpstreamError};

/// `User-Agent` of the STS calls.
const USER_AGENT: &str = concat!("azure-costs-proxy/", env!("CARGO_PKG_VERSION"));

/// Largest STS answer read; a bigger one is an error, not an allocation.
pub const MAX_STS_ANSWER: usize = 64 * 1024;
/// Shortest token lifetime accepted: a token that ends before a request could use it is no token.
pub const MIN_EXPIRES_IN: Duration = Duration::from_secs(2);

/// A token as the STS issued it.
#[derive(Debug)]
pub struct Issued {
    /// The access token (redacted in `Debug`).
    pub access_token: Secret,
    /// Lifetime the STS announced (`expires_in`, default 3600 s).
    pub expires_in: Duration,
    /// `token_type` as the STS named it (`Bearer` when it did not, or named something odd).
    pub token_type: String,
}

/// What an [`StsClient`] is built from (`[sts]`, with the connection limits of `[upstream]`
/// and the way out of `[outbound]`).
#[derive(Debug, Clone, PartialEq)]
pub struct StsClientConfig {
    /// The token endpoint, reached within these limits (connect timeout at most `timeout`),
    /// the way its egress says.
    pub origin: OriginConfig,
    /// Time allowed for one call, answer included.
    pub timeout: Duration,
}

impl StsClientConfig {
    /// The client config for `token_url`: `timeout` per call, connections within
    /// `connect_timeout` (never longer than a call) and `max_connections`, reached via `egress`.
    pub fn new(
        token_url: Uri,
        timeout: Duration,
        connect_timeout: Duration,
        max_connections: usize,
        egress: Egress,
    ) -> Self {
        let limits = Limits {
            timeout,
            connect_timeout: connect_timeout.min(timeout),
            max_connections,
        };
        StsClientConfig {
            origin: OriginConfig {
                url: token_url,
                limits,
                egress,
            },
            timeout,
        }
    }
}

/// Talks to one STS token endpoint, through the same pooled client (and outbound proxy tunnel)
/// as the API: connections are reused, HTTP/2 where the STS offers it.
#[derive(Debug, Clone)]
pub struct StsClient {
    http: Upstream,
    /// Path and query of the token URL.
    path: String,
    /// Time allowed for one call, answer included.
    timeout: Duration,
}

#[derive(Deserialize)]
struct TokenAnswer {
    access_token: String,
    #[serde(default)]
    expires_in: Option<serde_json::Value>,
    #[serde(default)]
    token_type: Option<serde_json::Value>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    error: Option<String>,
    error_description: Option<String>,
}

impl StsClient {
    /// A client for the token endpoint of `config`, trusting the roots of `tls`. Redirects are
    /// not followed (the client never does): the form body carries the client secret.
    pub fn new(config: &StsClientConfig, tls: &Arc<rustls::ClientConfig>) -> Result<Self, String> {
        let http = Upstream::new(&config.origin, tls)?;
        let path = config
            .origin
            .url
            .path_and_query()
            .map_or("/", |pq| pq.as_str())
            .to_string();
        Ok(StsClient {
            http,
            path,
            timeout: config.timeout,
        })
    }

    /// The client-credentials grant.
    pub async fn issue(&self, credential: &Credential) -> Result<Issued, StsFailure> {
        // Sized up front (percent-encoding at most triples a byte), so that no reallocation
        // leaves a copy of the secret behind; the buffer itself becomes the body, uncopied.
        let secret = credential.client_secret.expose();
        let capacity = 3 * (credential.client_id.len() + secret.len()) + 64;
        let form = form_urlencoded::Serializer::new(String::with_capacity(capacity))
            .append_pair("client_id", &credential.client_id)
            .append_pair("client_secret", secret)
            .append_pair("grant_type", "client_credentials")
            .finish();
        let body = Bytes::from(form);
        self.send(
            "application/x-www-form-urlencoded",
            None,
            body,
            credential.client_secret.expose(),
        )
        .await
    }

    /// The CSP `update_token` call: the issued token as Bearer, the customer team as delegate.
    pub async fn update(&self, base: &Secret, delegate: &str) -> Result<Issued, StsFailure> {
        let body = serde_json::json!({ "grant_type": "update_token", "delegate": delegate });
        let bearer =
            crate::headers::bearer_value(base.expose()).ok_or_else(|| StsFailure::Unavailable {
                reason: "the base token cannot be sent in a header".into(),
                retry_after: None,
            })?;
        self.send(
            "application/json",
            Some(bearer),
            Bytes::from(body.to_string()),
            base.expose(),
        )
        .await
    }

    /// Sends one STS request and reads its answer, all within the STS timeout. `secret` (what
    /// the request carried) is removed from every text that leaves this function: an STS may
    /// echo what it was sent.
    async fn send(
        &self,
        content_type: &'static str,
        authorization: Option<HeaderValue>,
        body: Bytes,
        secret: &str,
    ) -> Result<Issued, StsFailure> {
        let call = self.call(content_type, authorization, body, secret);
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => result,
            Err(_) => Err(StsFailure::Unavailable {
                reason: "the STS did not answer in time".into(),
                retry_after: None,
            }),
        }
    }

    /// One call: the request out, the answer read (capped), judged by its status, and the
    /// token taken from its JSON.
    async fn call(
        &self,
        content_type: &'static str,
        authorization: Option<HeaderValue>,
        body: Bytes,
        secret: &str,
    ) -> Result<Issued, StsFailure> {
        let response = self.post(content_type, authorization, body, secret).await?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        let body = read_answer(response.into_body(), secret).await?;
        judge_status(status, retry_after, &body, secret)?;
        issued(&body, secret)
    }

    /// Sends the POST and waits for the answer's head.
    async fn post(
        &self,
        content_type: &'static str,
        authorization: Option<HeaderValue>,
        body: Bytes,
        secret: &str,
    ) -> Result<http::Response<PooledBody>, StsFailure> {
        let unavailable = |reason: String| unavailable(reason, secret);
        let uri = self
            .http
            .uri(&self.path)
            .map_err(|e| unavailable(e.to_string()))?;
        let mut request = http::Request::post(uri)
            .header(header::CONTENT_TYPE, content_type)
            .header(header::ACCEPT, "application/json")
            .header(header::USER_AGENT, USER_AGENT)
            .body(Either::Right(Full::new(body)))
            .map_err(|e| unavailable(format!("STS request failed ({e})")))?;
        if let Some(value) = authorization {
            request.headers_mut().insert(header::AUTHORIZATION, value);
        }
        self.http.send(request).await.map_err(|e| {
            unavailable(match e {
                UpstreamError::Timeout(_) => "the STS did not answer in time".to_string(),
                UpstreamError::Unavailable(why) => format!("cannot reach the STS: {why}"),
                UpstreamError::InvalidPath => "the token URL cannot be sent".to_string(),
                UpstreamError::Busy { max, .. } => {
                    format!("all {max} connections to the STS stayed busy")
                }
            })
        })
    }
}

/// A failure to wait and retry after, its reason without `secret`.
fn unavailable(reason: String, secret: &str) -> StsFailure {
    StsFailure::Unavailable {
        reason: scrub(&reason, secret),
        retry_after: None,
    }
}

/// Reads the answer's body, at most [`MAX_STS_ANSWER`] bytes. It holds a token: it is read into
/// one buffer that never grows (so no copy is left behind by a reallocation) and that is
/// overwritten when dropped.
async fn read_answer(
    mut answer: PooledBody,
    secret: &str,
) -> Result<zeroize::Zeroizing<Vec<u8>>, StsFailure> {
    let mut body = zeroize::Zeroizing::new(Vec::with_capacity(MAX_STS_ANSWER));
    while let Some(frame) = answer.frame().await {
        let frame = frame.map_err(|e| {
            unavailable(
                format!("the STS answer was cut off ({})", innermost(&*e)),
                secret,
            )
        })?;
        let Ok(chunk) = frame.into_data() else {
            continue;
        };
        if body.len() + chunk.len() > MAX_STS_ANSWER {
            return Err(unavailable(
                format!(
                    "the STS answer is larger than {} KiB",
                    MAX_STS_ANSWER / 1024
                ),
                secret,
            ));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// The status rules: 408 and 429 are "not now" (retried when the STS says), other 4xx a
/// rejection (with the STS's error code when it gives a sane one), anything but 2xx a failure.
fn judge_status(
    status: http::StatusCode,
    retry_after: Option<Duration>,
    body: &[u8],
    secret: &str,
) -> Result<(), StsFailure> {
    // 408 and 429 say "not now", not "not you": retry later, as the STS asks.
    if status == http::StatusCode::REQUEST_TIMEOUT || status == http::StatusCode::TOO_MANY_REQUESTS
    {
        return Err(StsFailure::Unavailable {
            reason: format!("the STS is busy (HTTP {status})"),
            retry_after,
        });
    }
    if status.is_client_error() {
        let answer: Option<ErrorAnswer> = serde_json::from_slice(body).ok();
        let code = answer
            .as_ref()
            .and_then(|a| a.error.as_deref())
            .filter(|c| !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_graphic()))
            .map(|c| scrub(c, secret));
        if let Some(description) = answer.and_then(|a| a.error_description) {
            let description: String = scrub(&description, secret).chars().take(200).collect();
            tracing::debug!(%status, %description, "STS error description");
        }
        return Err(StsFailure::Rejected {
            status: status.as_u16(),
            code,
        });
    }
    if !status.is_success() {
        return Err(StsFailure::Unavailable {
            reason: format!("the STS answered HTTP {status}"),
            retry_after,
        });
    }
    Ok(())
}

/// The token in a successful answer's JSON.
fn issued(body: &[u8], secret: &str) -> Result<Issued, StsFailure> {
    let unavailable = |reason: String| unavailable(reason, secret);
    let answer: TokenAnswer = serde_json::from_slice(body)
        .map_err(|_| unavailable("the STS answer is not a JSON token".to_string()))?;
    let expires_in = match answer.expires_in {
        None | Some(serde_json::Value::Null) => DEFAULT_EXPIRES_IN,
        Some(v) => parse_expires_in(&v)
            .ok_or_else(|| unavailable("the STS answer has an unusable expires_in".to_string()))?,
    };
    if expires_in < MIN_EXPIRES_IN {
        return Err(unavailable(format!(
            "the STS issued a token that expires in {} s; too short to use",
            expires_in.as_secs()
        )));
    }
    if crate::headers::bearer_value(&answer.access_token).is_none() {
        return Err(unavailable(
            "the STS issued a token that cannot be sent in a header".to_string(),
        ));
    }
    // Shown by `azure-costs-proxy token`; a short plain word or nothing, never a blob.
    let token_type = answer
        .token_type
        .and_then(|t| t.as_str().map(str::to_string))
        .filter(|t| !t.is_empty() && t.len() <= 32 && t.bytes().all(|b| b.is_ascii_alphanumeric()))
        .unwrap_or_else(|| "Bearer".to_string());
    Ok(Issued {
        access_token: Secret::new(answer.access_token),
        expires_in,
        token_type,
    })
}

/// `expires_in` as a number of seconds, or a string holding one (some servers quote it).
fn parse_expires_in(v: &serde_json::Value) -> Option<Duration> {
    let secs = match v {
        serde_json::Value::Number(n) => n.as_u64(),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }?;
    Some(Duration::from_secs(secs))
}

/// Removes a secret from a text, also in its form-encoded and JSON-escaped spellings (an STS that
/// echoes its request shows it the way it was sent).
fn scrub(text: &str, secret: &str) -> String {
    if secret.is_empty() {
        return text.to_string();
    }
    let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let json = serde_json::to_string(secret).unwrap_or_default();
    let json = json.trim_matches('"');
    [secret, form.as_str(), json]
        .iter()
        .filter(|s| !s.is_empty())
        .fold(text.to_string(), |t, s| t.replace(s, "[redacted]"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn expires_in_accepts_numbers_and_numeric_strings() {
        assert_eq!(
            parse_expires_in(&serde_json::json!(120)),
            Some(Duration::from_secs(120))
        );
        assert_eq!(
            parse_expires_in(&serde_json::json!("300")),
            Some(Duration::from_secs(300))
        );
        assert_eq!(parse_expires_in(&serde_json::json!(-5)), None);
        assert_eq!(parse_expires_in(&serde_json::json!("soon")), None);
    }

    #[test]
    fn scrub_removes_the_secret_in_every_spelling() {
        let secret = "p@ss w0rd\"+/";
        let form: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
        let text = format!(
            "raw {secret} form {form} json {}",
            serde_json::to_string(secret).unwrap()
        );
        let clean = scrub(&text, secret);
        assert!(!clean.contains(secret), "{clean}");
        assert!(!clean.contains(&form), "{clean}");
        assert!(!clean.contains("w0rd"), "{clean}");
        assert_eq!(scrub("nothing here", secret), "nothing here");
    }
}
