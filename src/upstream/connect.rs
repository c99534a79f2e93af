//! Opening a connection to the target (the API or the STS): directly, or through a `CONNECT`
//! tunnel of the outbound proxy for every target, https and http alike, so that the proxy never
//! sees a request or a token in clear text (SECURITY.md). The target's name goes to the outbound
//! proxy as written and is resolved there. TLS, when the target is https, runs inside the tunnel
//! (`hyper_rustls` wraps this connector).
//!
//! Why not hyper-util's `client::legacy::connect::proxy::Tunnel`: its error type is not exported
//! and drops the proxy's status line and `Proxy-Authenticate`, so a 403, a 407 that asks for
//! NTLM, or an answer that is not HTTP could not be reported naming the proxy, the target and
//! what it answered (README, "Errors the proxy returns itself"); it discards bytes sent before
//! the tunnel is open (we refuse them), has no timeout for the answer, defaults every port to
//! 443 (wrong for an http target), and keeps the Basic credentials in buffers it does not
//! overwrite. Adopting it would save about 90 lines of handshake and keep the rest of this file.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use http::Uri;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tower_service::Service;

use super::egress::ProxyEndpoint;
use crate::cause::innermost;

/// Largest answer head to `CONNECT` read.
const MAX_CONNECT_ANSWER: usize = 16 * 1024;

type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// TCP to the target, or to the outbound proxy and then `CONNECT` to the target.
#[derive(Clone)]
pub(super) struct Connector {
    http: HttpConnector,
    via: Option<Arc<ProxyEndpoint>>,
    /// Time allowed for the proxy's connection and its answer to `CONNECT` together.
    timeout: Duration,
}

impl Connector {
    pub(super) fn new(http: HttpConnector, via: Option<ProxyEndpoint>, timeout: Duration) -> Self {
        Connector {
            http,
            via: via.map(Arc::new),
            timeout,
        }
    }
}

impl Service<Uri> for Connector {
    type Response = TokioIo<TcpStream>;
    type Error = BoxError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, BoxError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxError>> {
        self.http.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, target: Uri) -> Self::Future {
        let mut http = self.http.clone();
        match self.via.clone() {
            None => Box::pin(async move { http.call(target).await.map_err(Into::into) }),
            Some(proxy) => {
                let timeout = self.timeout;
                Box::pin(async move {
                    tunnel(http, &proxy, &target, timeout)
                        .await
                        .map_err(Into::into)
                })
            }
        }
    }
}

/// Why a tunnel could not be opened: one sentence that names the outbound proxy (never its
/// credentials), says what it answered and what to do. It has no source on purpose: the upstream
/// client shows the innermost error, and this is the one that says it all.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(super) struct TunnelError(String);

async fn tunnel(
    mut http: HttpConnector,
    proxy: &ProxyEndpoint,
    target: &Uri,
    timeout: Duration,
) -> Result<TokioIo<TcpStream>, TunnelError> {
    let authority = target_authority(target)
        .ok_or_else(|| TunnelError(format!("the target {target} names no host")))?;
    let proxy_uri = Uri::builder()
        .scheme("http")
        .authority(proxy.authority.clone())
        .path_and_query("/")
        .build()
        .map_err(|e| TunnelError(format!("the outbound proxy {}: {e}", proxy.shown)))?;
    let open = async {
        let io = http.call(proxy_uri).await.map_err(|e| {
            TunnelError(format!(
                "cannot reach the outbound proxy {} ({}); check {}, or add the host to \
                 no_proxy if it can be reached directly",
                proxy.shown,
                innermost(&e),
                proxy.source
            ))
        })?;
        let mut stream = io.into_inner();
        handshake(&mut stream, proxy, &authority).await?;
        Ok(TokioIo::new(stream))
    };
    match tokio::time::timeout(timeout, open).await {
        Ok(result) => result,
        Err(_) => Err(TunnelError(format!(
            "the outbound proxy {} did not open a tunnel to {authority} within {}",
            proxy.shown,
            humantime::format_duration(timeout)
        ))),
    }
}

/// `host:port` of a target URI, the port always written (`CONNECT` needs it).
fn target_authority(target: &Uri) -> Option<String> {
    let host = target.host().filter(|h| !h.is_empty())?;
    let port = target
        .port_u16()
        .unwrap_or_else(|| crate::host::default_port(target.scheme()));
    Some(format!("{host}:{port}"))
}

/// The `CONNECT` request head for `authority`, with the proxy's credentials when it has some.
/// Sized up front, so that no reallocation leaves a copy of the credentials behind; overwritten
/// when dropped.
fn connect_request(proxy: &ProxyEndpoint, authority: &str) -> zeroize::Zeroizing<String> {
    let auth_len = proxy.authorization.as_ref().map_or(0, |a| a.expose().len());
    let mut request =
        zeroize::Zeroizing::new(String::with_capacity(2 * authority.len() + auth_len + 128));
    request.push_str("CONNECT ");
    request.push_str(authority);
    request.push_str(" HTTP/1.1\r\nHost: ");
    request.push_str(authority);
    request.push_str(concat!(
        "\r\nUser-Agent: azure-costs-proxy/",
        env!("CARGO_PKG_VERSION"),
        "\r\n"
    ));
    if let Some(auth) = &proxy.authorization {
        request.push_str("Proxy-Authorization: ");
        request.push_str(auth.expose());
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request
}

/// Sends `CONNECT authority` and reads the answer head; `Ok` once the tunnel is open.
async fn handshake<S>(
    stream: &mut S,
    proxy: &ProxyEndpoint,
    authority: &str,
) -> Result<(), TunnelError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let failed = |what: String| TunnelError(format!("the outbound proxy {} {what}", proxy.shown));
    let request = connect_request(proxy, authority);
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| failed(format!("dropped the connection ({e})")))?;
    let mut buf = vec![0u8; MAX_CONNECT_ANSWER];
    let mut len = 0;
    loop {
        let n = stream
            .read(&mut buf[len..])
            .await
            .map_err(|e| failed(format!("dropped the connection ({e})")))?;
        if n == 0 {
            return Err(failed(format!(
                "closed the connection instead of answering CONNECT {authority}"
            )));
        }
        len += n;
        let mut headers = [httparse::EMPTY_HEADER; 64];
        let mut answer = httparse::Response::new(&mut headers);
        match answer.parse(&buf[..len]) {
            Ok(httparse::Status::Complete(head)) => {
                let code = answer.code.unwrap_or_default();
                if (200..300).contains(&code) {
                    // Nothing may come before the target speaks (TLS: after our hello).
                    if head != len {
                        return Err(failed(format!(
                            "sent data before the tunnel to {authority} was open"
                        )));
                    }
                    return Ok(());
                }
                let status = format!("{code} {}", printable(answer.reason.unwrap_or_default()));
                let hint = if code == 407 {
                    proxy_auth_hint(proxy, answer.headers)
                } else {
                    format!(
                        "ask its operator to allow {authority}, or add the host to no_proxy if \
                         it can be reached directly"
                    )
                };
                return Err(failed(format!(
                    "answered {} to CONNECT {authority}; {hint}",
                    status.trim_end()
                )));
            }
            Ok(httparse::Status::Partial) if len < buf.len() => continue,
            Ok(httparse::Status::Partial) => {
                return Err(failed(format!(
                    "answered CONNECT with a head larger than {} KiB",
                    MAX_CONNECT_ANSWER / 1024
                )));
            }
            Err(e) => {
                return Err(failed(format!(
                    "answered CONNECT with something that is not HTTP ({e})"
                )));
            }
        }
    }
}

/// What to do about a 407: set credentials, fix them, or bridge a scheme this proxy cannot speak.
fn proxy_auth_hint(proxy: &ProxyEndpoint, headers: &[httparse::Header<'_>]) -> String {
    let schemes: Vec<String> = headers
        .iter()
        .filter(|h| h.name.eq_ignore_ascii_case("proxy-authenticate"))
        .filter_map(|h| std::str::from_utf8(h.value).ok())
        .filter_map(|v| v.split_whitespace().next())
        .map(str::to_ascii_lowercase)
        .collect();
    if !schemes.is_empty() && !schemes.iter().any(|s| s == "basic") {
        return format!(
            "it asks for {} authentication, which this proxy does not speak; put a local \
             bridge such as CNTLM or px in between (docs/bi-tools.md)",
            printable(&schemes.join("/"))
        );
    }
    if proxy.authorization.is_some() {
        "the user name or password of [outbound] proxy_auth is not accepted".into()
    } else {
        "set [outbound] proxy_auth".into()
    }
}

/// A peer's text made safe for a message: printable ASCII, at most 60 characters.
fn printable(text: &str) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(60)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secret::Secret;

    fn proxy(auth: bool) -> ProxyEndpoint {
        ProxyEndpoint {
            authority: "proxy.test:3128".parse().unwrap(),
            shown: "http://proxy.test:3128".into(),
            source: "[outbound] proxy".into(),
            authorization: auth.then(|| Secret::new("Basic dTpodW50ZXIy")),
        }
    }

    /// Runs the handshake against a fake proxy that answers `answer`; returns the outcome and
    /// what the proxy was sent.
    async fn exchange(auth: bool, answer: &'static [u8]) -> (Result<(), TunnelError>, String) {
        let (mut ours, mut theirs) = tokio::io::duplex(64 * 1024);
        let peer = tokio::spawn(async move {
            let mut seen = Vec::new();
            let mut buf = [0u8; 1024];
            while !seen.ends_with(b"\r\n\r\n") {
                let n = theirs.read(&mut buf).await.unwrap();
                assert!(n > 0);
                seen.extend_from_slice(&buf[..n]);
            }
            theirs.write_all(answer).await.unwrap();
            String::from_utf8(seen).unwrap()
        });
        let result = handshake(&mut ours, &proxy(auth), "api.example:443").await;
        (result, peer.await.unwrap())
    }

    #[tokio::test]
    async fn connect_names_the_target_and_sends_basic_auth() {
        let (result, sent) = exchange(true, b"HTTP/1.1 200 Connection established\r\n\r\n").await;
        result.unwrap();
        assert!(
            sent.starts_with("CONNECT api.example:443 HTTP/1.1\r\n"),
            "{sent}"
        );
        assert!(sent.contains("\r\nHost: api.example:443\r\n"), "{sent}");
        assert!(sent.contains("\r\nProxy-Authorization: Basic dTpodW50ZXIy\r\n"));
        let (result, sent) = exchange(false, b"HTTP/1.0 200 OK\r\n\r\n").await;
        result.unwrap();
        assert!(!sent.contains("Proxy-Authorization"), "{sent}");
    }

    #[tokio::test]
    async fn refusals_say_what_the_proxy_answered_and_what_to_do() {
        let (e, _) = exchange(
            false,
            b"HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic realm=x\r\n\r\n",
        )
        .await;
        let e = e.unwrap_err().to_string();
        assert_eq!(
            e,
            "the outbound proxy http://proxy.test:3128 answered 407 Proxy Authentication \
             Required to CONNECT api.example:443; set [outbound] proxy_auth"
        );
        let (e, _) = exchange(true, b"HTTP/1.1 407 No\r\n\r\n").await;
        assert!(e.unwrap_err().to_string().contains("is not accepted"));
        let (e, _) = exchange(
            false,
            b"HTTP/1.1 407 Auth\r\nProxy-Authenticate: NTLM\r\nProxy-Authenticate: Negotiate\r\n\r\n",
        )
        .await;
        assert!(e.unwrap_err().to_string().contains("ntlm/negotiate"));
        let (e, _) = exchange(
            false,
            b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n",
        )
        .await;
        let e = e.unwrap_err().to_string();
        assert!(e.contains("answered 403 Forbidden"), "{e}");
        assert!(e.contains("no_proxy"), "{e}");
        assert!(!e.contains("dTpodW50ZXIy"));
    }

    #[tokio::test]
    async fn garbage_and_early_data_are_errors() {
        let (e, _) = exchange(false, b"SSH-2.0-OpenSSH\r\n\r\n").await;
        assert!(e.unwrap_err().to_string().contains("not HTTP"));
        let (e, _) = exchange(false, b"HTTP/1.1 200 OK\r\n\r\nextra").await;
        assert!(e.unwrap_err().to_string().contains("sent data before"));
    }

    #[test]
    fn targets_always_carry_a_port() {
        let t = |u: &str| target_authority(&u.parse().unwrap());
        assert_eq!(
            t("https://api.example/x").as_deref(),
            Some("api.example:443")
        );
        assert_eq!(t("http://api.example/x").as_deref(), Some("api.example:80"));
        assert_eq!(t("https://[::1]:8443/").as_deref(), Some("[::1]:8443"));
    }
}
