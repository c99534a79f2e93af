//! The Azure Costs STS calls, exactly as the vendor documents them: client credentials as a form
//! body, `update_token` as JSON with the issued token as Bearer; both answer with a JSON token.

use std::time::Duration;

use serde::Deserialize;

use super::error::StsFailure;
use super::schedule::DEFAULT_EXPIRES_IN;
use crate::config::{CredentialConfig, Secret};

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

/// Talks to one STS token endpoint.
#[derive(Debug, Clone)]
pub struct StsClient {
    http: reqwest::Client,
    url: reqwest::Url,
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
    /// A client for `token_url` with the given TLS settings and per-call timeout. Redirects are
    /// not followed: the form body carries the client secret.
    pub fn new(
        token_url: &http::Uri,
        timeout: Duration,
        connect_timeout: Duration,
        tls: rustls::ClientConfig,
    ) -> Result<Self, String> {
        let url = reqwest::Url::parse(&token_url.to_string()).map_err(|e| e.to_string())?;
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .redirect(reqwest::redirect::Policy::none())
            .timeout(timeout)
            .connect_timeout(connect_timeout.min(timeout))
            .no_proxy()
            .user_agent(concat!("azure-costs-proxy/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(StsClient { http, url })
    }

    /// The client-credentials grant.
    pub async fn issue(&self, credential: &CredentialConfig) -> Result<Issued, StsFailure> {
        let form = [
            ("client_id", credential.client_id.as_str()),
            ("client_secret", credential.client_secret.expose()),
            ("grant_type", "client_credentials"),
        ];
        let request = self.http.post(self.url.clone()).form(&form);
        self.send(request, credential.client_secret.expose()).await
    }

    /// The CSP `update_token` call: the issued token as Bearer, the customer team as delegate.
    pub async fn update(&self, base: &Secret, delegate: &str) -> Result<Issued, StsFailure> {
        let body = serde_json::json!({ "grant_type": "update_token", "delegate": delegate });
        let request = self
            .http
            .post(self.url.clone())
            .bearer_auth(base.expose())
            .json(&body);
        self.send(request, base.expose()).await
    }

    /// Sends one STS request and reads its answer. `secret` (what the request carried) is
    /// removed from every text that leaves this function: an STS may echo what it was sent.
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        secret: &str,
    ) -> Result<Issued, StsFailure> {
        let unavailable = |reason: String| StsFailure::Unavailable {
            reason: scrub(&reason, secret),
            retry_after: None,
        };
        let mut response = request.send().await.map_err(|e| {
            unavailable(if e.is_timeout() {
                "the STS did not answer in time".to_string()
            } else if e.is_connect() {
                format!("cannot connect to the STS ({})", root_cause(&e))
            } else {
                format!("STS request failed ({})", root_cause(&e))
            })
        })?;
        let status = response.status();
        let retry_after = response
            .headers()
            .get(http::header::RETRY_AFTER)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.trim().parse::<u64>().ok())
            .map(Duration::from_secs);
        // The answer holds a token: it is read into one buffer that never grows (so no copy is
        // left behind by a reallocation) and that is overwritten when dropped.
        let mut body = zeroize::Zeroizing::new(Vec::with_capacity(MAX_STS_ANSWER));
        while let Some(chunk) = response.chunk().await.map_err(|e| {
            unavailable(if e.is_timeout() {
                "the STS did not finish its answer in time".to_string()
            } else {
                format!("the STS answer was cut off ({})", root_cause(&e))
            })
        })? {
            if body.len() + chunk.len() > MAX_STS_ANSWER {
                return Err(unavailable(format!(
                    "the STS answer is larger than {} KiB",
                    MAX_STS_ANSWER / 1024
                )));
            }
            body.extend_from_slice(&chunk);
        }
        // 408 and 429 say "not now", not "not you": retry later, as the STS asks.
        if status == http::StatusCode::REQUEST_TIMEOUT
            || status == http::StatusCode::TOO_MANY_REQUESTS
        {
            return Err(StsFailure::Unavailable {
                reason: format!("the STS is busy (HTTP {status})"),
                retry_after,
            });
        }
        if status.is_client_error() {
            let answer: Option<ErrorAnswer> = serde_json::from_slice(&body).ok();
            let code = answer
                .as_ref()
                .and_then(|a| a.error.as_deref())
                .filter(|c| {
                    !c.is_empty() && c.len() <= 64 && c.bytes().all(|b| b.is_ascii_graphic())
                })
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
        let answer: TokenAnswer = serde_json::from_slice(&body)
            .map_err(|_| unavailable("the STS answer is not a JSON token".to_string()))?;
        let expires_in = match answer.expires_in {
            None | Some(serde_json::Value::Null) => DEFAULT_EXPIRES_IN,
            Some(v) => parse_expires_in(&v).ok_or_else(|| {
                unavailable("the STS answer has an unusable expires_in".to_string())
            })?,
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
            .filter(|t| {
                !t.is_empty() && t.len() <= 32 && t.bytes().all(|b| b.is_ascii_alphanumeric())
            })
            .unwrap_or_else(|| "Bearer".to_string());
        Ok(Issued {
            access_token: Secret::new(answer.access_token),
            expires_in,
            token_type,
        })
    }
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

/// The innermost error message, which says what actually happened (refused, reset, DNS).
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
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
