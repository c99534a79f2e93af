//! Peers that misbehave: an STS answering something huge or cut off (an error, never a token nor
//! a big allocation), an upstream resetting mid-answer (the client sees the answer cut off, never
//! a complete-looking one), and clients that go away mid-stream (the upstream request is dropped
//! and the connection count returns to its baseline).

use std::time::Duration;

use crate::support::tokio;
use crate::support::{Proxy, client};
use azure_costs_proxy::simulator::StsFault;

async fn sts_error(proxy: &Proxy) -> (u16, serde_json::Value) {
    let r = proxy.get("/v1/teams").await;
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn sts_answer_over_64_kib_is_unavailable_not_a_token() {
    let proxy = Proxy::builder().sts_fault(StsFault::Huge).spawn().await;
    let (status, body) = sts_error(&proxy).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "sts_unavailable");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("larger than 64 KiB"), "{message}");
    assert_eq!(proxy.sim.api_requests(), 0);

    // The STS heals: the next token is normal.
    proxy.sim.set_sts_fault(None);
    proxy.sim.wait_for_sts_calls(2).await;
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn sts_answer_cut_off_is_unavailable() {
    let proxy = Proxy::builder()
        .sts_fault(StsFault::Truncated)
        .spawn()
        .await;
    let (status, body) = sts_error(&proxy).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "sts_unavailable");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("cut off"), "{message}");
    assert!(!message.contains("sim_truncated"), "{message}");
    assert_eq!(proxy.sim.api_requests(), 0);
}

/// Reads a response to its end; `Err` with the bytes read if it ended in an error.
async fn read_all(mut r: reqwest::Response) -> Result<usize, usize> {
    let mut read = 0;
    loop {
        match r.chunk().await {
            Ok(Some(chunk)) => read += chunk.len(),
            Ok(None) => return Ok(read),
            Err(_) => return Err(read),
        }
    }
}

#[tokio::test]
async fn upstream_reset_mid_answer_cuts_the_response_off_sized_or_chunked_h1_or_h2() {
    let proxy = Proxy::builder().spawn().await;
    let h2 = crate::support::h2_client();
    let reset_after = 300_000;
    for (name, http) in [("http/1.1", client()), ("h2c", h2)] {
        for (kind, query) in [("sized", "bytes=5000000"), ("chunked", "rows=100000")] {
            let url = proxy.url(&format!(
                "/v1/costs/export?{query}&reset_after={reset_after}"
            ));
            let r = http.get(url).send().await.unwrap();
            assert_eq!(r.status(), 200, "{name} {kind}");
            if kind == "sized" {
                assert_eq!(r.content_length(), Some(5_000_000), "{name} {kind}");
            }
            match read_all(r).await {
                Ok(n) => panic!("{name} {kind}: a reset answer ended cleanly after {n} bytes"),
                Err(n) => assert!(
                    (reset_after..5_000_000).contains(&n),
                    "{name} {kind}: {n} bytes before the cut"
                ),
            }
        }
        // The proxy itself is fine: the next request on the same client is answered.
        let r = http.get(proxy.url("/v1/teams")).send().await.unwrap();
        assert_eq!(r.status(), 200, "{name}");
    }
    assert_eq!(proxy.sim.exports_finished(), 0);
}

/// Polls the proxy's open-connection gauge until it shows `n` (no event tells the test that the
/// proxy has closed its side).
async fn wait_for_open_connections(proxy: &Proxy, n: usize) {
    let line = format!("azure_costs_proxy_connections_open {n}\n");
    loop {
        if proxy.metrics().await.contains(&line) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_client_leaving_mid_stream_drops_the_upstream_request_and_its_connection() {
    let proxy = Proxy::builder().spawn().await;
    assert_eq!(proxy.sim.exports_streaming(), 0);
    wait_for_open_connections(&proxy, 0).await;
    let h2 = crate::support::h2_client();
    for (name, http) in [("http/1.1", client()), ("h2c", h2)] {
        // 10 GB: it cannot finish while the test runs.
        let mut r = http
            .get(proxy.url("/v1/costs/export?bytes=10000000000"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        assert!(r.chunk().await.unwrap().is_some());
        assert_eq!(proxy.sim.exports_streaming(), 1, "{name}");
        // The client stops reading: HTTP/1.1 closes the connection, HTTP/2 resets the stream
        // and keeps the connection (the client is still alive). Either way the upstream
        // request goes.
        drop(r);
        proxy.sim.wait_for_exports_streaming(0).await;
        if name == "h2c" {
            assert!(proxy.metrics().await.contains("connections_open 1\n"));
            let r = http.get(proxy.url("/v1/teams")).send().await.unwrap();
            assert_eq!(r.status(), 200, "the HTTP/2 connection survived the reset");
        }
        drop(http);
        wait_for_open_connections(&proxy, 0).await;
    }
    assert_eq!(proxy.sim.exports_finished(), 0);
}

/// Whether a connection is already waiting on `listener` (polled once, without waiting).
async fn has_pending_connection(listener: &tokio::net::TcpListener) -> bool {
    tokio::time::timeout(Duration::ZERO, listener.accept())
        .await
        .is_ok()
}

#[tokio::test]
async fn redirects_go_to_the_client_and_are_never_followed_with_the_token_or_the_secret() {
    // Where a hostile upstream or STS would like the token or the secret to go.
    let catcher = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let steal = format!("http://{}/steal", catcher.local_addr().unwrap());
    let proxy = Proxy::builder().spawn().await;

    for method in [reqwest::Method::GET, reqwest::Method::POST] {
        let r = client()
            .request(
                method.clone(),
                proxy.url(&format!("/v1/redirect?to={steal}")),
            )
            .body(if method == reqwest::Method::POST {
                "{}"
            } else {
                ""
            })
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 302, "{method}");
        assert_eq!(r.headers()["location"], steal.as_str(), "{method}");
        // Had the proxy followed it, the connection would be waiting before the answer came.
        assert!(
            !has_pending_connection(&catcher).await,
            "{method} redirect followed"
        );
    }

    // The STS client follows nothing either: its body carries the client secret.
    let proxy = Proxy::builder()
        .sts_fault(StsFault::Redirect(steal.clone()))
        .spawn()
        .await;
    let (status, body) = sts_error(&proxy).await;
    assert_eq!(status, 503);
    assert_eq!(body["error"], "sts_unavailable");
    assert!(body["message"].as_str().unwrap().contains("307"), "{body}");
    assert!(
        !has_pending_connection(&catcher).await,
        "STS redirect followed"
    );
}
