//! Token modes other than interval: `per_request` (a token per request) and `per_transaction`
//! (a token per burst on a route, by idle gap or by header value).

use std::collections::HashSet;
use std::time::Duration;

use crate::support::tokio;
use crate::support::{Proxy, ProxyBuilder, client, route};
use azure_costs_proxy::simulator::StsFault;

/// The bearer value of every API request so far, in order.
fn bearers(proxy: &Proxy) -> Vec<String> {
    proxy
        .sim
        .requests()
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_string())
        .collect()
}

fn distinct(values: &[String]) -> usize {
    values.iter().collect::<HashSet<_>>().len()
}

/// A proxy in `per_transaction` mode, a transaction ending after `idle` without requests.
fn per_transaction(idle: &str) -> ProxyBuilder {
    Proxy::builder()
        .set("token.mode", "per_transaction")
        .set("token.transaction_idle", idle)
}

#[tokio::test]
async fn per_request_gives_every_request_its_own_token() {
    let proxy = Proxy::builder()
        .set("token.mode", "per_request")
        .spawn()
        .await;
    for _ in 0..10 {
        let r = proxy.get("/v1/teams").await;
        assert_eq!(r.status(), 200);
    }
    let seen = bearers(&proxy);
    assert_eq!(seen.len(), 10);
    assert_eq!(distinct(&seen), 10, "{seen:?}");
    // No warm-up token in this mode: exactly one STS call per request.
    assert_eq!(proxy.sim.issue_calls(), 10);
}

#[tokio::test]
async fn per_request_with_a_delegate_updates_a_fresh_base_token_each_time() {
    let proxy = Proxy::builder()
        .route(
            route("/")
                .delegate("TEAM-FABRIKAM")
                .token_mode("per_request"),
        )
        .spawn()
        .await;
    for _ in 0..5 {
        let r = proxy.get("/v1/teams").await;
        assert_eq!(r.status(), 200);
    }
    assert_eq!(proxy.sim.issue_calls(), 5);
    assert_eq!(proxy.sim.update_calls(), 5);
    let issued = proxy.sim.issued_tokens();
    let bases: HashSet<_> = issued
        .iter()
        .filter(|t| t.delegate.is_some())
        .map(|t| t.updated_from.clone().unwrap())
        .collect();
    assert_eq!(
        bases.len(),
        5,
        "each update carried a base token of its own"
    );
    assert_eq!(distinct(&bearers(&proxy)), 5);
}

#[tokio::test]
async fn per_transaction_starts_a_new_token_after_an_idle_gap() {
    let proxy = per_transaction("1s").spawn().await;
    let get = async || {
        let r = proxy.get("/v1/teams").await;
        assert_eq!(r.status(), 200);
        r.text().await.unwrap();
    };
    for _ in 0..5 {
        get().await;
    }
    // The idle gap is the behaviour under test: nothing to wait on but time.
    tokio::time::sleep(Duration::from_millis(2500)).await;
    for _ in 0..5 {
        get().await;
    }
    let seen = bearers(&proxy);
    assert_eq!(distinct(&seen[..5]), 1, "first burst shares a token");
    assert_eq!(distinct(&seen[5..]), 1, "second burst shares a token");
    assert_ne!(seen[0], seen[5], "the second burst has a fresh token");
    assert_eq!(proxy.sim.issue_calls(), 2);
}

#[tokio::test]
async fn per_transaction_starts_a_new_token_for_a_new_header_value() {
    let proxy = per_transaction("1h")
        .set("token.transaction_header", "X-Refresh-Id")
        .spawn()
        .await;
    let c = client();
    for id in [Some("a"), Some("a"), None, Some("b"), Some("b"), Some("a")] {
        let mut r = c.get(proxy.url("/v1/costs/by-service"));
        if let Some(id) = id {
            r = r.header("x-refresh-id", id);
        }
        assert_eq!(r.send().await.unwrap().status(), 200);
    }
    let seen = bearers(&proxy);
    assert_eq!(seen[0], seen[1]);
    assert_ne!(seen[1], seen[2], "no header: a transaction of its own");
    assert_ne!(seen[2], seen[3], "new value: new transaction");
    assert_ne!(seen[0], seen[3]);
    assert_eq!(seen[3], seen[4]);
    assert_eq!(
        seen[0], seen[5],
        "`a` is still going: its requests interleave with `b`'s"
    );
    assert_eq!(proxy.sim.issue_calls(), 3);
    // The header is the client's; it reaches the API unchanged.
    assert_eq!(proxy.sim.requests()[0].headers["x-refresh-id"], "a");
}

#[tokio::test]
async fn concurrent_first_requests_of_a_transaction_cause_one_sts_call() {
    // A slow STS keeps the first fetch in flight while the others arrive.
    let proxy = per_transaction("1h")
        .sts_fault(StsFault::Slow(Duration::from_millis(300)))
        .spawn()
        .await;
    let c = client();
    for (round, id) in ["refresh-1", "refresh-2"].into_iter().enumerate() {
        let requests: Vec<_> = (0..40)
            .map(|_| {
                let r = c
                    .get(proxy.url("/v1/teams"))
                    .header("x-transaction-id", id)
                    .send();
                tokio::spawn(r)
            })
            .collect();
        for r in requests {
            assert_eq!(r.await.unwrap().unwrap().status(), 200);
        }
        assert_eq!(proxy.sim.issue_calls(), round + 1, "round {round}");
    }
    let seen = bearers(&proxy);
    assert_eq!(distinct(&seen), 2);
}

#[tokio::test]
async fn per_transaction_keeps_a_route_busy_while_a_response_streams() {
    let proxy = per_transaction("500ms").spawn().await;
    proxy.sim.hold_exports();
    let mut export = proxy.get("/v1/costs/export?rows=100000").await;
    assert_eq!(export.status(), 200);
    assert!(export.chunk().await.unwrap().is_some());
    // Longer than the idle gap since the export started, but the export is still running:
    // the route is busy, not idle.
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    proxy.sim.release_exports();
    while export.chunk().await.unwrap().is_some() {}
    let seen = bearers(&proxy);
    assert_eq!(seen.len(), 2);
    assert_eq!(seen[0], seen[1]);
    assert_eq!(proxy.sim.issue_calls(), 1);
}

#[tokio::test]
async fn per_transaction_routes_do_not_share_transactions() {
    let proxy = per_transaction("1h")
        .route(route("/"))
        .route(route("/b"))
        .spawn()
        .await;
    for path in ["/v1/teams", "/b/v1/teams", "/v1/teams", "/b/v1/teams"] {
        assert_eq!(proxy.get(path).await.status(), 200);
    }
    let seen = bearers(&proxy);
    assert_eq!(seen[0], seen[2]);
    assert_eq!(seen[1], seen[3]);
    assert_ne!(seen[0], seen[1], "each route has its own transaction");
}

#[tokio::test]
async fn new_transactions_share_the_sts_backoff() {
    let proxy = per_transaction("1h")
        .sts_fault(StsFault::Unavailable)
        .spawn()
        .await;
    let c = client();
    // Every request names a transaction of its own, all while the STS is down.
    for i in 0..50 {
        let r = c
            .get(proxy.url("/v1/teams"))
            .header("x-transaction-id", format!("reload-{i}"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 503);
        assert!(r.headers().contains_key("retry-after"));
    }
    assert!(
        proxy.sim.sts_calls() <= 2,
        "{} STS calls: a new transaction must not skip the backoff",
        proxy.sim.sts_calls()
    );
}

#[tokio::test]
async fn new_transactions_at_will_draw_on_the_sts_budget() {
    let proxy = per_transaction("1h")
        .set("token.transaction_header", "X-Refresh-Id")
        .spawn()
        .await;
    let c = client();
    let started = std::time::Instant::now();
    // A client that sends a new transaction id with every request, 100 at once.
    let requests: Vec<_> = (0..100)
        .map(|i| {
            // Distinct queries: identical requests would share one (coalescing).
            let r = c
                .get(proxy.url(&format!("/v1/teams?n={i}")))
                .header("x-refresh-id", format!("refresh-{i}"));
            tokio::spawn(r.send())
        })
        .collect();
    let mut statuses = Vec::new();
    for r in requests {
        let r = r.await.unwrap().unwrap();
        let status = r.status().as_u16();
        if status == 503 {
            assert!(r.headers().contains_key("retry-after"));
            let body: serde_json::Value = r.json().await.unwrap();
            assert_eq!(body["error"], "sts_unavailable");
        }
        statuses.push(status);
    }
    let elapsed = started.elapsed().as_secs_f64();
    let served = statuses.iter().filter(|s| **s == 200).count();
    let allowed = 20 + (10.0 * elapsed).ceil() as usize;
    assert!(
        served >= 20,
        "{served} served: the burst is there for real refreshes"
    );
    assert!(
        served <= allowed,
        "{served} new transactions in {elapsed:.2} s"
    );
    assert_eq!(served + statuses.iter().filter(|s| **s == 503).count(), 100);
    assert_eq!(
        proxy.sim.issue_calls(),
        served,
        "one STS call per transaction served"
    );
}
