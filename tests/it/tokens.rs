//! Token engine in interval mode: one STS call for many requests, single flight at cold start,
//! refresh ahead of expiry without ever sending an expired token, CSP delegation.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::Poll;
use std::time::{Duration, Instant};

use crate::support::tokio;
use crate::support::{Proxy, TestConfig, client, route, simulator};
use azure_costs_proxy::simulator::StsFault;
use azure_costs_proxy::token::TokenMode;
use azure_costs_proxy::token::{StsClient, Token, TokenError, TokenKey, TokenSource};

#[tokio::test]
async fn many_sequential_requests_cause_one_sts_call() {
    let proxy = Proxy::builder().spawn().await;
    for _ in 0..50 {
        let r = proxy.get("/v1/teams").await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(proxy.sim.issue_calls(), 1);
    assert_eq!(proxy.sim.api_requests(), 50);
    let tokens: std::collections::HashSet<_> = proxy
        .sim
        .requests()
        .iter()
        .map(|r| r.headers["authorization"].clone())
        .collect();
    assert_eq!(tokens.len(), 1);
}

#[tokio::test]
async fn hundred_concurrent_requests_at_cold_start_cause_one_sts_call() {
    // A slow STS keeps the first call in flight while all requests arrive.
    let proxy = Proxy::builder()
        .sts_fault(StsFault::Slow(Duration::from_millis(300)))
        .spawn()
        .await;
    let c = client();
    // Distinct queries: identical requests would share one upstream request (coalescing).
    let requests = (0..100).map(|i| {
        let c = c.clone();
        let url = proxy.url(&format!("/v1/costs/by-service?n={i}"));
        tokio::spawn(async move { c.get(url).send().await.map(|r| r.status()) })
    });
    for r in futures_join(requests).await {
        assert_eq!(r.unwrap().unwrap(), 200);
    }
    assert_eq!(proxy.sim.issue_calls(), 1);
    assert_eq!(proxy.sim.api_requests(), 100);
}

async fn futures_join<T>(
    handles: impl Iterator<Item = tokio::task::JoinHandle<T>>,
) -> Vec<Result<T, tokio::task::JoinError>> {
    let mut out = Vec::new();
    for h in handles.collect::<Vec<_>>() {
        out.push(h.await);
    }
    out
}

#[tokio::test]
async fn short_lived_tokens_are_refreshed_ahead_and_never_sent_expired() {
    let proxy = Proxy::builder()
        .token_ttl(Duration::from_secs(3))
        .set("token.refresh_before_expiry", "2s")
        .spawn()
        .await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    // From now on every STS call takes a second. A refresh that made requests wait would show
    // up as a request slower than that; a refresh ahead of time is invisible to them.
    proxy
        .sim
        .set_sts_fault(Some(StsFault::Slow(Duration::from_secs(1))));
    let until = Instant::now() + Duration::from_secs(7);
    let mut slowest = Duration::ZERO;
    let mut sent = 0;
    while Instant::now() < until {
        let started = Instant::now();
        let r = proxy.get("/v1/teams").await;
        assert_eq!(r.status(), 200, "request {sent} failed");
        slowest = slowest.max(started.elapsed());
        sent += 1;
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(
        slowest < Duration::from_millis(800),
        "a request waited {slowest:?} for the STS"
    );
    assert_eq!(
        proxy.sim.bad_token_requests(),
        0,
        "an expired token reached the API"
    );
    let issued = proxy.sim.issued_tokens();
    assert!(
        issued.len() >= 3,
        "only {} tokens in 7 s of 3 s tokens",
        issued.len()
    );
    for pair in issued.windows(2) {
        assert!(
            pair[1].issued_at < pair[0].expires_at,
            "the next token came only after the previous one expired"
        );
    }
    // Refreshing ahead is not refreshing per request.
    assert!(
        issued.len() <= 8,
        "{} tokens for {sent} requests",
        issued.len()
    );
}

#[tokio::test]
async fn concurrent_misses_wait_for_one_held_sts_call() {
    let sim = simulator().await;
    sim.hold_sts();
    let cfg = TestConfig::new().parse(&sim);
    let metrics = Arc::new(azure_costs_proxy::metrics::Metrics::new());
    let tls = cfg.outbound.trust.client_config().unwrap();
    let sts = StsClient::new(&cfg.sts_client_config(), &tls).unwrap();
    let tokens = TokenSource::new(cfg.token_config(), sts, metrics);
    let key = TokenKey::new(Arc::from("default"), None);
    type Pending = Pin<Box<dyn Future<Output = Result<Arc<Token>, TokenError>> + Send>>;
    let mut waiting: Vec<Pending> = (0..100)
        .map(|_| {
            let (tokens, key) = (tokens.clone(), key.clone());
            Box::pin(async move { tokens.get(&key, TokenMode::Interval).await }) as Pending
        })
        .collect();
    // Poll every caller once while the STS holds the first call: all 100 are now waiting.
    std::future::poll_fn(|cx| {
        for f in &mut waiting {
            assert!(f.as_mut().poll(cx).is_pending());
        }
        Poll::Ready(())
    })
    .await;
    sim.wait_for_sts_calls(1).await;
    sim.release_sts();
    let mut bearers = std::collections::HashSet::new();
    for f in waiting {
        bearers.insert(f.await.unwrap().bearer().clone());
    }
    assert_eq!(bearers.len(), 1);
    assert_eq!(sim.sts_calls(), 1);
}

#[tokio::test]
async fn token_is_warmed_at_start_up() {
    let proxy = Proxy::builder().spawn().await;
    // No request yet: the warm-up alone must reach the STS.
    tokio::time::timeout(Duration::from_secs(5), proxy.sim.wait_for_sts_calls(1))
        .await
        .expect("no warm-up call within 5 s");
    assert_eq!(proxy.sim.issue_calls(), 1);
    assert_eq!(proxy.sim.api_requests(), 0);
}

#[tokio::test]
async fn token_is_kept_fresh_without_traffic() {
    let proxy = Proxy::builder()
        .token_ttl(Duration::from_secs(2))
        .spawn()
        .await;
    // No request at all: the warm-up and two refreshes ahead of expiry.
    tokio::time::timeout(Duration::from_secs(10), proxy.sim.wait_for_sts_calls(3))
        .await
        .expect("tokens were not refreshed without traffic");
    let issued = proxy.sim.issued_tokens();
    for pair in issued.windows(2) {
        assert!(pair[1].issued_at < pair[0].expires_at);
    }
    // A request now gets a token that is still valid, at once.
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 200);
    assert_eq!(proxy.sim.bad_token_requests(), 0);
}

#[tokio::test]
async fn upstream_401_drops_the_token_and_retries_once_with_a_fresh_one() {
    let proxy = Proxy::builder().spawn().await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    assert_eq!(proxy.sim.issue_calls(), 1);

    // Permissions changed: the API refuses the cached token.
    proxy.sim.revoke_tokens();
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 200, "the client never sees the refused token");
    assert_eq!(proxy.sim.issue_calls(), 2, "one extra STS call");
    assert_eq!(proxy.sim.bad_token_requests(), 1);
    let seen = proxy.sim.requests();
    assert_eq!(seen.len(), 3);
    assert_ne!(
        seen[1].headers["authorization"],
        seen[2].headers["authorization"]
    );
    // The retry is the same request with the new token.
    assert_eq!(seen[1].path_and_query, seen[2].path_and_query);
    assert_eq!(
        seen[1].headers["x-request-id"],
        seen[2].headers["x-request-id"]
    );

    // The fresh token is cached: no further STS call.
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    assert_eq!(proxy.sim.issue_calls(), 2);
}

#[tokio::test]
async fn a_second_401_reaches_the_client() {
    let proxy = Proxy::builder().spawn().await;
    proxy.sim.wait_for_sts_calls(1).await;
    proxy.sim.refuse_all_tokens(true);
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token", "the upstream's own answer");
    assert_eq!(proxy.sim.api_requests(), 2, "sent once, retried once");
    assert_eq!(proxy.sim.issue_calls(), 2);

    // The fresh token was refused too: the refusal is about the requests, not the token.
    // Further 401s go straight to the client instead of becoming an STS loop.
    for _ in 0..10 {
        assert_eq!(proxy.get("/v1/teams").await.status(), 401);
    }
    assert_eq!(proxy.sim.api_requests(), 12);
    assert_eq!(proxy.sim.issue_calls(), 2);
}

#[tokio::test]
async fn a_request_with_a_body_is_not_replayed() {
    let proxy = Proxy::builder().spawn().await;
    proxy.sim.wait_for_sts_calls(1).await;
    proxy.sim.refuse_all_tokens(true);
    let r = client()
        .post(proxy.url("/v1/echo"))
        .body("payload")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(proxy.sim.api_requests(), 1);
    assert_eq!(
        proxy.sim.issue_calls(),
        1,
        "no new token for a request it cannot resend"
    );
}

#[tokio::test]
async fn a_refused_delegate_token_is_rebuilt_from_a_fresh_base_token() {
    let proxy = Proxy::builder()
        .route(route("/").delegate("TEAM-WOODGROVE"))
        .spawn()
        .await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    // Revoked: the delegate token and the base it came from.
    proxy.sim.revoke_tokens();
    let r = proxy.get("/v1/costs/by-service").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["team"]["id"], "TEAM-WOODGROVE");
    assert_eq!(proxy.sim.issue_calls(), 2);
    assert_eq!(proxy.sim.update_calls(), 2);
}

#[tokio::test]
async fn many_requests_refused_with_one_token_cause_one_new_fetch() {
    let proxy = Proxy::builder().spawn().await;
    let c = client();
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    proxy.sim.revoke_tokens();
    let requests: Vec<_> = (0..30)
        .map(|_| tokio::spawn(c.get(proxy.url("/v1/teams")).send()))
        .collect();
    for r in requests {
        assert_eq!(r.await.unwrap().unwrap().status(), 200);
    }
    // The first refused request drops the token; the others find the fresh one in the cache
    // or join its fetch.
    assert_eq!(proxy.sim.issue_calls(), 2);
}

#[tokio::test]
async fn clients_looping_on_a_refused_path_share_one_refresh() {
    let proxy = Proxy::builder().spawn().await;
    proxy.sim.wait_for_sts_calls(1).await;
    proxy.sim.refuse_all_tokens(true);
    let c = client();
    // 64 clients, each asking again as soon as it is answered, 10 rounds: late refusals of the
    // token already replaced must not make the replacement look refused for the first time.
    let loops: Vec<_> = (0..64)
        .map(|_| {
            let c = c.clone();
            let url = proxy.url("/v1/teams");
            tokio::spawn(async move {
                for _ in 0..10 {
                    let status = c.get(&url).send().await.unwrap().status();
                    assert_eq!(status, 401);
                }
            })
        })
        .collect();
    for l in loops {
        l.await.unwrap();
    }
    assert_eq!(
        proxy.sim.issue_calls(),
        2,
        "one refresh for all of them, however late their refusals came back"
    );
}

#[tokio::test]
async fn refresh_on_403_replays_once_and_the_default_passes_403_through() {
    let proxy = Proxy::builder()
        .route(route("/strict").delegate("TEAM-CONTOSO"))
        .route(
            route("/lenient")
                .delegate("TEAM-FABRIKAM")
                .refresh_on(&[401, 403]),
        )
        .spawn()
        .await;
    proxy.sim.set_refusal_status(403);
    assert_eq!(proxy.get("/strict/v1/teams").await.status(), 200);
    assert_eq!(proxy.get("/lenient/v1/teams").await.status(), 200);
    // Rights went stale: the API answers 403 to the tokens it knew.
    proxy.sim.revoke_tokens();
    let calls = proxy.sim.sts_calls();
    let r = proxy.get("/strict/v1/teams").await;
    assert_eq!(r.status(), 403, "the default [401] passes a 403 through");
    assert_eq!(proxy.sim.sts_calls(), calls, "no STS call for it");
    let r = proxy.get("/lenient/v1/teams").await;
    assert_eq!(r.status(), 200, "refresh_on = [401, 403] replays once");
    // A fresh base and a fresh update.
    assert_eq!(proxy.sim.sts_calls(), calls + 2);
}
