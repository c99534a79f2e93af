//! A route's `max_in_flight`: at most so many of its requests upstream at once, the rest waiting
//! in arrival order, within `queue` and `queue_timeout`; beyond, 503 `route_busy`.

use std::time::{Duration, Instant};

use crate::support::tokio;
use crate::support::{Proxy, client, route};

const WAITING_1: &str = "azure_costs_proxy_route_queue{route=\"/\"} 1";
const WAITING_2: &str = "azure_costs_proxy_route_queue{route=\"/\"} 2";

/// Sends `GET /v1/teams?n={n}` through `proxy` in a task of its own; the status comes back.
fn send(proxy: &Proxy, n: usize) -> tokio::task::JoinHandle<u16> {
    let url = proxy.url(&format!("/v1/teams?n={n}"));
    tokio::spawn(async move { client().get(url).send().await.unwrap().status().as_u16() })
}

#[tokio::test]
async fn waiting_requests_go_in_arrival_order_and_the_queue_is_bounded() {
    let proxy = Proxy::builder()
        .route(route("/").set("max_in_flight", 1).set("queue", 2))
        .spawn()
        .await;
    proxy
        .wait_for_metric("azure_costs_proxy_route_queue{route=\"/\"} 0")
        .await;
    // Long enough to hold the one place while the others line up.
    proxy.sim.set_api_delay(Duration::from_millis(400));
    let first = send(&proxy, 0);
    proxy.wait_for_api_requests(1).await;
    let second = send(&proxy, 1);
    proxy.wait_for_metric(WAITING_1).await;
    let third = send(&proxy, 2);
    proxy.wait_for_metric(WAITING_2).await;

    // A fourth finds the queue full: refused at once, never sent.
    let r = proxy.get("/v1/teams?n=3").await;
    assert_eq!(r.status(), 503);
    assert_eq!(r.headers()["retry-after"], "1");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "route_busy");

    for task in [first, second, third] {
        assert_eq!(task.await.unwrap(), 200);
    }
    let order: Vec<String> = proxy
        .sim
        .requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(order, ["/v1/teams?n=0", "/v1/teams?n=1", "/v1/teams?n=2"]);
    proxy
        .wait_for_metric("azure_costs_proxy_route_queue{route=\"/\"} 0")
        .await;
}

#[tokio::test]
async fn a_wait_past_queue_timeout_is_503_route_busy() {
    let proxy = Proxy::builder()
        .route(
            route("/")
                .set("max_in_flight", 1)
                .set("queue_timeout", "200ms"),
        )
        .spawn()
        .await;
    proxy.sim.set_api_delay(Duration::from_secs(2));
    let first = send(&proxy, 0);
    proxy.wait_for_api_requests(1).await;
    let started = Instant::now();
    let r = proxy.get("/v1/teams?n=1").await;
    assert_eq!(r.status(), 503);
    let waited = started.elapsed();
    assert!(waited >= Duration::from_millis(200), "{waited:?}");
    assert!(
        waited < Duration::from_secs(2),
        "{waited:?}: it did not wait for the API"
    );
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "route_busy");
    assert!(
        body["message"].as_str().unwrap().contains("200ms"),
        "{body}"
    );
    assert_eq!(first.await.unwrap(), 200);
    assert_eq!(proxy.sim.requests().len(), 1);
}

#[tokio::test]
async fn a_route_without_max_in_flight_has_no_queue() {
    let proxy = Proxy::builder().spawn().await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    assert!(!proxy.metrics().await.contains("route_queue{"));
}
