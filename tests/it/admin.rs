//! The admin listener: `/healthz`, `/readyz` before and after the first token and during
//! shutdown, `/metrics` parsed back after some traffic.

use std::time::{Duration, SystemTime};

use crate::support::tokio;
use crate::support::{Proxy, client, simulator};

async fn json(url: String) -> (u16, serde_json::Value) {
    let r = client().get(url).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn readyz_waits_for_the_first_token_and_turns_503_on_shutdown() {
    let sim = simulator().await;
    sim.hold_sts();
    let mut proxy = Proxy::builder().sim(sim).spawn().await;
    let (status, _) = json(proxy.admin_url("/healthz")).await;
    assert_eq!(status, 200);

    // The warm-up call is held by the STS: alive, not ready.
    proxy.sim.wait_for_sts_calls(1).await;
    let (status, body) = json(proxy.admin_url("/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(body["status"], "not_ready");
    assert_eq!(body["routes"][0]["prefix"], "/");
    assert_eq!(body["routes"][0]["token"], "missing");

    // A request joins the warm-up fetch and returns once the token is cached.
    proxy.sim.release_sts();
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    let (status, body) = json(proxy.admin_url("/readyz")).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["status"], "ready");
    assert_eq!(body["routes"][0]["token"], "valid");
    assert!(body["routes"][0]["expires_in_s"].as_u64().unwrap() > 3000);
    let token = &proxy.sim.issued_tokens()[0].token;
    assert!(
        !body.to_string().contains(token.as_str()),
        "a token in /readyz"
    );

    // Shutting down with an export in flight: not ready while it drains.
    proxy.sim.hold_exports();
    let mut export = client()
        .get(proxy.url("/v1/costs/export?rows=100000"))
        .send()
        .await
        .unwrap();
    assert!(export.chunk().await.unwrap().is_some());
    proxy.begin_stop();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = json(proxy.admin_url("/readyz")).await;
        if body["status"] == "shutting_down" {
            assert_eq!(status, 503);
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never shutting_down"
        );
        tokio::task::yield_now().await;
    }
    proxy.sim.release_exports();
    while export.chunk().await.unwrap().is_some() {}
}

#[tokio::test]
async fn readyz_names_a_failing_credential_and_never_the_secret() {
    let proxy = Proxy::builder()
        .sts_fault(azure_costs_proxy::simulator::StsFault::Reject)
        .spawn()
        .await;
    proxy.sim.wait_for_sts_calls(1).await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 502);
    let (status, body) = json(proxy.admin_url("/readyz")).await;
    assert_eq!(status, 503);
    assert_eq!(body["routes"][0]["token"], "backing_off");
    let error = body["routes"][0]["error"].as_str().unwrap();
    assert!(error.contains("`default`"), "{error}");
    assert!(!body.to_string().contains(&proxy.sim.client_secret()));
}

#[tokio::test]
async fn metrics_count_requests_sts_calls_and_token_expiry() {
    let proxy = Proxy::builder().spawn().await;
    let c = client();
    for _ in 0..5 {
        let r = proxy.get("/v1/teams").await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    let r = c.get(proxy.admin_url("/metrics")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert!(
        r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    let text = r.text().await.unwrap();
    // Parse "name{labels} value" lines back into a lookup.
    let value = |series: &str| -> f64 {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    assert_eq!(
        value("azure_costs_proxy_requests_total{route=\"/\",status=\"200\",client=\"-\"}"),
        5.0
    );
    assert_eq!(
        value("azure_costs_proxy_request_duration_seconds_count"),
        5.0
    );
    assert!(value("azure_costs_proxy_request_duration_seconds_sum") > 0.0);
    assert_eq!(
        value(
            "azure_costs_proxy_sts_requests_total{credential=\"default\",kind=\"issue\",outcome=\"ok\"}"
        ),
        1.0
    );
    let expiry = value(
        "azure_costs_proxy_token_expiry_timestamp_seconds{credential=\"default\",delegate=\"-\"}",
    );
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .unwrap()
        .as_secs_f64();
    assert!(
        expiry > now + 3000.0 && expiry < now + 3600.0,
        "{expiry} vs {now}"
    );
    assert!(text.contains("azure_costs_proxy_connections_open"));
    assert!(text.ends_with("# EOF\n"));
}
