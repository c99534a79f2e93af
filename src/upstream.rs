//! The pooled HTTP client towards the Azure Costs API: hyper-util's client over rustls, HTTP/2 by
//! ALPN where the upstream offers it, connect and response timeouts.

use std::time::Duration;

use bytes::Bytes;
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{Request, Response, Uri};
use http_body_util::{Either, Empty};
use hyper::body::Incoming;
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};

use crate::config;
use crate::error::ProxyError;

/// A request body sent upstream: the client's, streamed, or none (a request the proxy may replay).
pub type UpstreamBody = Either<Incoming, Empty<Bytes>>;

/// How long an idle pooled connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(90);

/// The upstream API client. Cheap to share; connections are pooled per host.
#[derive(Debug, Clone)]
pub struct Upstream {
    client: Client<HttpsConnector<HttpConnector>, UpstreamBody>,
    scheme: Scheme,
    authority: Authority,
    base_path: String,
    timeout: Duration,
}

impl Upstream {
    /// A client for the configured upstream.
    pub fn new(cfg: &config::Upstream, tls: rustls::ClientConfig) -> Result<Self, String> {
        let scheme = cfg
            .url
            .scheme()
            .cloned()
            .ok_or("upstream URL has no scheme")?;
        let authority = cfg
            .url
            .authority()
            .cloned()
            .ok_or("upstream URL has no host")?;
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        http.set_nodelay(true);
        http.set_connect_timeout(Some(cfg.connect_timeout));
        http.set_keepalive(Some(Duration::from_secs(60)));
        let https = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_all_versions()
            .wrap_connector(http);
        let client = Client::builder(TokioExecutor::new())
            .timer(TokioTimer::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(https);
        Ok(Upstream {
            client,
            scheme,
            authority,
            base_path: cfg.base_path.clone(),
            timeout: cfg.timeout,
        })
    }

    /// Path prefix of the upstream URL ("" for the root).
    pub fn base_path(&self) -> &str {
        &self.base_path
    }

    /// The upstream URI for a path-and-query built by [`crate::routes::upstream_path_and_query`].
    pub fn uri(&self, path_and_query: &str) -> Result<Uri, ProxyError> {
        let pq = PathAndQuery::try_from(path_and_query)
            .map_err(|_| ProxyError::BadRequest("the request path cannot be forwarded"))?;
        Uri::builder()
            .scheme(self.scheme.clone())
            .authority(self.authority.clone())
            .path_and_query(pq)
            .build()
            .map_err(|_| ProxyError::BadRequest("the request path cannot be forwarded"))
    }

    /// Time allowed for the response head and for each gap in the response body.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Sends a request and waits for the response head, at most `upstream.timeout`.
    pub async fn send(
        &self,
        request: Request<UpstreamBody>,
    ) -> Result<Response<Incoming>, ProxyError> {
        match tokio::time::timeout(self.timeout, self.client.request(request)).await {
            Ok(Ok(response)) => Ok(response),
            Ok(Err(e)) => Err(ProxyError::UpstreamUnavailable(describe(&e))),
            Err(_) => Err(ProxyError::UpstreamTimeout(self.timeout)),
        }
    }
}

/// A short, secret-free description of a client error: what failed and the innermost cause.
fn describe(e: &hyper_util::client::legacy::Error) -> String {
    let mut cause: &(dyn std::error::Error + 'static) = e;
    while let Some(next) = cause.source() {
        cause = next;
    }
    if e.is_connect() {
        format!("connection failed ({cause})")
    } else {
        format!("request failed ({cause})")
    }
}
