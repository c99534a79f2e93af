//! The API's rate limit, as BI tools can live with it: an upstream 429 reaches the client with
//! `Retry-After` in whole seconds (whatever form the API used), and the route's requests for
//! that token identity are held back by the proxy until then, without reaching the API.

use std::time::Duration;

use azure_costs_proxy::simulator::{ApiRateLimit, RetryAfter};

use crate::support::tokio;
use crate::support::{Proxy, client, route};

/// A limit of 0 answers 429 whatever the second, in the form `retry_after`.
fn always_limited(retry_after: RetryAfter) -> Option<ApiRateLimit> {
    Some(ApiRateLimit {
        per_second: 0,
        retry_after,
    })
}

/// The answer's `Retry-After` as whole seconds; fails on any other form.
fn retry_after(r: &reqwest::Response) -> u64 {
    let value = r.headers()["retry-after"].to_str().unwrap();
    assert!(value.bytes().all(|b| b.is_ascii_digit()), "{value:?}");
    value.parse().unwrap()
}

#[tokio::test]
async fn an_api_429_goes_on_in_whole_seconds_and_holds_the_identity_back() {
    for form in [
        RetryAfter::Seconds,
        RetryAfter::HttpDate,
        RetryAfter::Absent,
    ] {
        let proxy = Proxy::builder().spawn().await;
        proxy.sim.set_api_rate_limit(always_limited(form));
        let r = proxy.get("/v1/teams").await;
        assert_eq!(r.status(), 429, "{form:?}");
        // The simulator names the next whole second (or nothing): 1 s either way.
        let wait = retry_after(&r);
        assert_eq!(wait, 1, "{form:?}");
        assert!(r.headers().contains_key("x-request-id"));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "rate_limited", "the API's own answer");
        assert_eq!(proxy.sim.rate_limited_requests(), 1);
        let sent = proxy.sim.requests().len();

        // The API would answer now, but the proxy waits out what it said.
        proxy.sim.set_api_rate_limit(None);
        let r = proxy.get("/v1/teams").await;
        assert_eq!(r.status(), 429, "{form:?}");
        assert!((1..=wait).contains(&retry_after(&r)));
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "upstream_rate_limited");
        assert_eq!(
            proxy.sim.requests().len(),
            sent,
            "{form:?}: not sent to the API"
        );

        // The wait itself is what is tested: after it, requests go through again.
        tokio::time::sleep(Duration::from_secs(wait) + Duration::from_millis(50)).await;
        assert_eq!(proxy.get("/v1/teams").await.status(), 200, "{form:?}");
        let metrics = proxy.metrics().await;
        assert!(
            metrics.contains("azure_costs_proxy_upstream_cooldowns_total{route=\"/\"} 1"),
            "{metrics}"
        );
        // Waiting out the API is no refusal of the client.
        assert!(
            !metrics.contains("reason=\"upstream_rate_limited\""),
            "{metrics}"
        );
    }
}

#[tokio::test]
async fn a_429_to_a_request_with_a_body_gets_whole_seconds_too() {
    // Requests with a body go through hyper's client, whose answers carry a header map.
    let proxy = Proxy::builder().spawn().await;
    proxy
        .sim
        .set_api_rate_limit(always_limited(RetryAfter::Absent));
    let r = client()
        .post(proxy.url("/v1/teams"))
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 429);
    assert_eq!(retry_after(&r), 1);
    proxy.sim.set_api_rate_limit(None);
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "upstream_rate_limited");
}

#[tokio::test]
async fn a_cool_down_holds_back_only_its_route_and_identity() {
    let proxy = Proxy::builder()
        .route(route("/teams/{delegate}").delegates(&["TEAM-CONTOSO", "TEAM-FABRIKAM"]))
        .route(route("/partner"))
        .spawn()
        .await;
    proxy
        .sim
        .set_api_rate_limit(always_limited(RetryAfter::Seconds));
    let contoso = "/teams/TEAM-CONTOSO/v1/teams";
    assert_eq!(proxy.get(contoso).await.status(), 429);
    proxy.sim.set_api_rate_limit(None);
    let sent = proxy.sim.requests().len();
    // Another team on the same route, and another route, are other identities.
    assert_eq!(
        proxy.get("/teams/TEAM-FABRIKAM/v1/teams").await.status(),
        200
    );
    assert_eq!(proxy.get("/partner/v1/teams").await.status(), 200);
    assert_eq!(proxy.sim.requests().len(), sent + 2);
    let r = proxy.get(contoso).await;
    assert_eq!(r.status(), 429);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "upstream_rate_limited");
    assert_eq!(proxy.sim.requests().len(), sent + 2);
}
