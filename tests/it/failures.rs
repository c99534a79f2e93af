//! Failing peers: the STS rejecting, down, unreachable or answering garbage; the upstream down,
//! slow, or stalling mid-body. Each gets the status of README.md's error table ("Errors the proxy returns
//! itself") and a JSON error body.

use std::time::{Duration, Instant};

use crate::support::tokio;
use crate::support::{Proxy, closed_port, simulator};
use azure_costs_proxy::simulator::StsFault;

async fn error_body(r: reqwest::Response) -> serde_json::Value {
    assert_eq!(r.headers()["content-type"], "application/json");
    r.json().await.expect("JSON error body")
}

#[tokio::test]
async fn sts_rejection_is_502_naming_the_credential_never_the_secret() {
    let proxy = Proxy::builder().sts_fault(StsFault::Reject).spawn().await;
    let secret = proxy.sim.client_secret();
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&secret), "secret in the error body: {text}");
    let body: serde_json::Value = serde_json::from_str(&text).unwrap();
    assert_eq!(body["error"], "sts_rejected");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("`default`"), "{message}");
    assert!(message.contains("invalid_client"), "{message}");
    assert_eq!(proxy.sim.api_requests(), 0);
}

#[tokio::test]
async fn sts_down_is_503_with_retry_after_and_service_resumes() {
    let proxy = Proxy::builder()
        .sts_fault(StsFault::Unavailable)
        .spawn()
        .await;
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 503);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&retry), "Retry-After {retry}");
    assert_eq!(error_body(r).await["error"], "sts_unavailable");

    // Backing off: more requests do not each hit the STS.
    let calls = proxy.sim.issue_calls();
    for _ in 0..20 {
        let r = proxy.get("/v1/teams").await;
        assert_eq!(r.status(), 503);
    }
    assert!(proxy.sim.issue_calls() <= calls + 1);

    // The STS comes back: after Retry-After, requests succeed again by themselves.
    proxy.sim.set_sts_fault(None);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let r = proxy.get("/v1/teams").await;
        if r.status() == 200 {
            break;
        }
        assert!(Instant::now() < deadline, "no recovery");
        let wait: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        tokio::time::sleep(Duration::from_secs(wait)).await;
    }
}

#[tokio::test]
async fn sts_unreachable_is_503() {
    let proxy = Proxy::builder()
        .set(
            "sts.token_url",
            format!("http://{}/sts/issue/oauth/token", closed_port().await),
        )
        .spawn()
        .await;
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().contains_key("retry-after"));
    assert_eq!(error_body(r).await["error"], "sts_unavailable");
}

#[tokio::test]
async fn sts_answer_that_is_not_json_is_503() {
    let proxy = Proxy::builder().sts_fault(StsFault::NotJson).spawn().await;
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 503);
    let body = error_body(r).await;
    assert_eq!(body["error"], "sts_unavailable");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("not a JSON token")
    );
}

#[tokio::test]
async fn sts_slower_than_its_timeout_is_503() {
    let proxy = Proxy::builder()
        .sts_fault(StsFault::Slow(Duration::from_secs(5)))
        .set("sts.timeout", "300ms")
        .spawn()
        .await;
    let started = Instant::now();
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 503);
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(error_body(r).await["error"], "sts_unavailable");
}

#[tokio::test]
async fn upstream_down_is_502() {
    let proxy = Proxy::builder()
        .set("upstream.url", format!("http://{}", closed_port().await))
        .spawn()
        .await;
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 502);
    assert_eq!(error_body(r).await["error"], "upstream_unavailable");
}

#[tokio::test]
async fn upstream_slower_than_its_timeout_is_504() {
    let sim = simulator().await;
    sim.set_api_delay(Duration::from_secs(5));
    let proxy = Proxy::builder()
        .sim(sim)
        .set("upstream.timeout", "300ms")
        .spawn()
        .await;
    let started = Instant::now();
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 504);
    assert!(started.elapsed() < Duration::from_secs(4));
    assert_eq!(error_body(r).await["error"], "upstream_timeout");
}

#[tokio::test]
async fn upstream_stalling_mid_body_cuts_the_response_off() {
    let sim = simulator().await;
    sim.hold_exports();
    let proxy = Proxy::builder()
        .sim(sim)
        .set("upstream.timeout", "500ms")
        .spawn()
        .await;
    let r = proxy.get("/v1/costs/export?bytes=10000000").await;
    assert_eq!(r.status(), 200);
    // The first chunk arrives, then nothing: the proxy must end the response with an error
    // rather than hang or pretend it is complete.
    let result = r.bytes().await;
    assert!(result.is_err(), "a stalled body was reported complete");
    assert_eq!(proxy.sim.exports_finished(), 0);
}

#[tokio::test]
async fn sts_rate_limit_is_503_and_its_retry_after_is_honoured() {
    let proxy = Proxy::builder()
        .sts_fault(StsFault::RateLimited(Duration::from_secs(7)))
        .spawn()
        .await;
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 503);
    let retry: u64 = r.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(
        (5..=7).contains(&retry),
        "Retry-After {retry}, the STS asked for 7"
    );
    let body = error_body(r).await;
    assert_eq!(body["error"], "sts_unavailable");
    assert!(body["message"].as_str().unwrap().contains("429"), "{body}");
    // Not a configuration error: no "check client_id" advice.
    assert!(!body["message"].as_str().unwrap().contains("client_secret"));
}

#[tokio::test]
async fn sts_echoing_the_request_does_not_leak_the_secret() {
    let proxy = Proxy::builder()
        .sts_fault(StsFault::EchoRequest)
        .spawn()
        .await;
    let secret = proxy.sim.client_secret();
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 502);
    let text = r.text().await.unwrap();
    assert!(!text.contains(&secret), "{text}");
    assert!(text.contains("sts_rejected"), "{text}");
}

#[tokio::test]
async fn sts_outage_costs_a_handful_of_calls_and_heals_by_itself() {
    let proxy = Proxy::builder()
        .sts_fault(StsFault::Unavailable)
        .spawn()
        .await;
    // 200 requests over 3 s, all while the STS is down.
    let mut ticks = tokio::time::interval(Duration::from_millis(15));
    for _ in 0..200 {
        ticks.tick().await;
        let r = proxy.get("/v1/teams").await;
        assert_eq!(r.status(), 503);
        let retry: u64 = r.headers()["retry-after"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!((1..=60).contains(&retry), "Retry-After {retry}");
    }
    let during = proxy.sim.sts_calls();
    // Backoff 1 s, 2 s, 4 s ... (with jitter): at most five attempts fit in 3 s.
    assert!(
        (1..=5).contains(&during),
        "{during} STS calls for 200 requests"
    );
    assert_eq!(proxy.sim.api_requests(), 0);

    // The STS returns; nobody sends a request: the proxy fetches a token by itself after
    // its backoff, and the next request is served with it.
    proxy.sim.set_sts_fault(None);
    proxy.sim.wait_for_sts_calls(during + 1).await;
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 200);
    assert_eq!(proxy.sim.issued_tokens().len(), 1);
}

#[tokio::test]
async fn a_still_valid_token_keeps_serving_while_the_sts_is_down() {
    // 4 s tokens: refreshed in the background from 1.8 s of age, never sent after 3.6 s.
    let proxy = Proxy::builder()
        .token_ttl(Duration::from_secs(4))
        .spawn()
        .await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    proxy.sim.set_sts_fault(Some(StsFault::Unavailable));
    // The refresh ahead of expiry fails...
    proxy.sim.wait_for_sts_calls(2).await;
    // ...and requests are still served with the first token, which has not run out.
    for _ in 0..5 {
        assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    }
    let issued = proxy.sim.issued_tokens();
    assert_eq!(issued.len(), 1);
    let first = format!("Bearer {}", issued[0].token);
    for seen in proxy.sim.requests() {
        assert_eq!(seen.headers["authorization"], first.as_str());
    }
    assert_eq!(proxy.sim.bad_token_requests(), 0);
}
