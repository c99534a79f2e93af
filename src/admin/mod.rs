//! The admin listener: `/healthz` (the process runs), `/readyz` (tokens in hand and not shutting
//! down, with each route's token state), `/metrics` (Prometheus text), `/` (the status page) and
//! `/status.json` (its facts; filled by `status.rs`). HTTP/1.1, GET and HEAD only, on its own
//! address so probes and scrapers never share a port with BI traffic, behind its own
//! DNS-rebinding guard (IP literals and the data plane's names only). Read-only by construction.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use http::{HeaderValue, Method, Request, Response, StatusCode, header};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use tokio::net::TcpListener;

use crate::error::ProxyError;
use crate::inbound::{forbidden_host, single_host};
use crate::live::Live;
use crate::readiness::{Delegates, Readiness, RouteReadiness, TokenReadiness};
use crate::respond::{self, AdminError, admin_answer};
use crate::token::TokenMode;
use crate::token::TokenState;

mod status;

/// The status page's policy: its one inline style sheet, nothing else (no script, no image, no
/// form target, no frame).
const PAGE_CSP: &str = "default-src 'none'; style-src 'unsafe-inline'";

/// Time a probe or scraper gets to send its request head.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(5);

/// What the admin endpoints look at.
#[derive(Debug)]
pub struct Admin {
    live: Arc<Live>,
    shutting_down: AtomicBool,
    /// The address [`serve`] listens on.
    address: OnceLock<SocketAddr>,
    /// Whether this process reloads its config (not `demo`, nor a caller without a reloader).
    reloads: bool,
}

impl Admin {
    /// Admin state for the running proxy (whatever config it has after reloads); `reloads`:
    /// whether anything reloads its config.
    pub fn new(live: Arc<Live>, reloads: bool) -> Arc<Self> {
        Arc::new(Admin {
            live,
            shutting_down: AtomicBool::new(false),
            address: OnceLock::new(),
            reloads,
        })
    }

    /// The address the admin listener listens on, once [`serve`] runs.
    fn address(&self) -> Option<SocketAddr> {
        self.address.get().copied()
    }

    /// From now on `/readyz` answers 503: the process is draining.
    pub fn shutting_down(&self) {
        self.shutting_down.store(true, Ordering::SeqCst);
    }

    /// `/readyz`: each route's token state (never a token). Ready once the `/` route, or every
    /// route when there is none, holds a valid token (or fetches on demand without a failing
    /// STS), and the process is not shutting down.
    pub(crate) async fn readiness(&self) -> Readiness {
        let proxy = self.live.proxy();
        let routes = proxy.routes().routes();
        let has_root = routes.iter().any(|r| &*r.prefix == "/");
        let mut listed = Vec::with_capacity(routes.len());
        for route in routes {
            // A `{delegate}` route holds no token of its own: each team's comes with its first
            // request. It is on demand, unless its credential's own token is backing off.
            let mode = match &route.team {
                Some(_) => TokenMode::PerRequest,
                None => route.token_mode,
            };
            let mut entry = RouteReadiness {
                credential: route.credential.to_string(),
                delegate: route.delegate.as_deref().map(str::to_string),
                delegates: route.team.as_ref().map(|t| match &t.listed {
                    None => Delegates::Any("*".to_string()),
                    Some(listed) => {
                        let mut teams: Vec<String> = listed.iter().map(|t| t.to_string()).collect();
                        teams.sort_unstable();
                        Delegates::Listed(teams)
                    }
                }),
                error: None,
                expires_at: None,
                expires_in_s: None,
                mode: route.token_mode.as_str().to_string(),
                prefix: route.prefix.to_string(),
                required: !has_root || &*route.prefix == "/",
                retry_in_s: None,
                token: TokenReadiness::Missing,
            };
            match proxy.tokens().state(&route.token_key(), mode).await {
                TokenState::Valid { expires_at } => entry.valid(expires_at, SystemTime::now()),
                TokenState::Missing => entry.token = TokenReadiness::Missing,
                TokenState::OnDemand => entry.token = TokenReadiness::OnDemand,
                TokenState::BackingOff { retry_in, error } => entry.backing_off(retry_in, error),
            }
            listed.push(entry);
        }
        Readiness::new(listed, self.shutting_down.load(Ordering::SeqCst))
    }

    /// The admin listener's DNS-rebinding guard (README, "Admin listener"): exactly one `Host`
    /// on HTTP/1.1, and it is an IP literal or a name the data plane accepts. A web page that
    /// rebinds its own name to this address cannot read `/readyz` or `/metrics`.
    fn admit<B>(&self, request: &Request<B>) -> Result<(), ProxyError> {
        let host = single_host(request.version(), request.headers())?;
        let authority = request.uri().authority().map(|a| a.as_str().as_bytes());
        let proxy = self.live.proxy();
        for name in [host.map(HeaderValue::as_bytes), authority]
            .into_iter()
            .flatten()
        {
            if !proxy.hosts().admits_probe(name) {
                return Err(forbidden_host(name));
            }
        }
        Ok(())
    }

    async fn handle(&self, request: Request<Incoming>) -> Response<Full<Bytes>> {
        if let Err(e) = self.admit(&request) {
            return respond::admin_error(AdminError::Refused(e));
        }
        if request.method() != Method::GET && request.method() != Method::HEAD {
            return respond::admin_error(AdminError::MethodNotAllowed);
        }
        match request.uri().path() {
            "/healthz" => admin_answer(
                StatusCode::OK,
                "application/json",
                json!({"status": "ok"}).to_string(),
            ),
            "/readyz" => {
                let readiness = self.readiness().await;
                let body = serde_json::to_string(&readiness).unwrap_or_default();
                admin_answer(readiness.http_status(), "application/json", body)
            }
            "/metrics" => admin_answer(
                StatusCode::OK,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
                self.live.metrics().encode(),
            ),
            "/" => {
                let status = self.status().await;
                let mut page = admin_answer(
                    StatusCode::OK,
                    "text/html; charset=utf-8",
                    crate::status::html::render(&status),
                );
                let headers = page.headers_mut();
                headers.insert(
                    header::CONTENT_SECURITY_POLICY,
                    HeaderValue::from_static(PAGE_CSP),
                );
                headers.insert(
                    header::REFERRER_POLICY,
                    HeaderValue::from_static("no-referrer"),
                );
                page
            }
            "/status.json" => {
                let status = self.status().await;
                let body = serde_json::to_string(&status).unwrap_or_default();
                admin_answer(StatusCode::OK, "application/json", body)
            }
            _ => respond::admin_error(AdminError::NotFound),
        }
    }
}

/// Serves the admin endpoints on `listener` until the task is dropped.
pub async fn serve(listener: TcpListener, admin: Arc<Admin>) {
    if let Ok(address) = listener.local_addr() {
        let _ = admin.address.set(address);
    }
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "admin accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let admin = admin.clone();
        tokio::spawn(async move {
            let service = service_fn(move |request| {
                let admin = admin.clone();
                async move { Ok::<_, Infallible>(admin.handle(request).await) }
            });
            let connection = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_READ_TIMEOUT)
                .max_buf_size(16 * 1024)
                .serve_connection(TokioIo::new(stream), service);
            if let Err(e) = connection.await {
                tracing::debug!(error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// What the `healthcheck` and `status` commands learned from the admin listener.
#[derive(Debug)]
pub struct Probe {
    /// The HTTP status it answered.
    pub status: StatusCode,
    /// Its body (JSON; never a token).
    pub body: String,
}

impl Probe {
    /// Whether the proxy said it is ready.
    pub fn is_ready(&self) -> bool {
        self.status == StatusCode::OK
    }
}

/// GETs `/readyz` on the admin listener at `address` (an unspecified address such as 0.0.0.0 is
/// asked on loopback), all within `timeout`. Errors say why there is no answer.
pub async fn probe(address: SocketAddr, timeout: Duration) -> Result<Probe, String> {
    get(address, "/readyz", timeout).await
}

/// GETs `path` on the admin listener at `address` (an unspecified address such as 0.0.0.0 is
/// asked on loopback), all within `timeout`. Errors say why there is no answer.
pub async fn get(address: SocketAddr, path: &str, timeout: Duration) -> Result<Probe, String> {
    let mut target = address;
    if target.ip().is_unspecified() {
        target.set_ip(match target {
            std::net::SocketAddr::V4(_) => std::net::Ipv4Addr::LOCALHOST.into(),
            std::net::SocketAddr::V6(_) => std::net::Ipv6Addr::LOCALHOST.into(),
        });
    }
    let ask = async {
        let stream = tokio::net::TcpStream::connect(target)
            .await
            .map_err(|e| format!("cannot connect to the admin listener at {target}: {e}"))?;
        let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| format!("admin listener at {target}: {e}"))?;
        tokio::spawn(connection);
        let request = Request::get(path)
            .header(header::HOST, target.to_string())
            .body(http_body_util::Empty::<Bytes>::new())
            .map_err(|e| format!("building the request: {e}"))?;
        let response = sender
            .send_request(request)
            .await
            .map_err(|e| format!("admin listener at {target}: {e}"))?;
        let status = response.status();
        // The body is JSON of a few kilobytes (a gateway's status maybe a few hundred); cap what
        // is read all the same.
        let limited = http_body_util::Limited::new(response.into_body(), 4 * 1024 * 1024);
        let body = http_body_util::BodyExt::collect(limited)
            .await
            .map_err(|e| format!("reading {path} from {target}: {e}"))?
            .to_bytes();
        Ok(Probe {
            status,
            body: String::from_utf8_lossy(&body).into_owned(),
        })
    };
    tokio::time::timeout(timeout, ask)
        .await
        .map_err(|_| format!("no answer from the admin listener at {target} within {timeout:?}"))?
}
