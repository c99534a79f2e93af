//! Connection limits: silent and half-open connections are closed by the header timeout, and a
//! client that pauses reading is not mistaken for a stalled upstream.

use std::time::{Duration, Instant};

use crate::support::Proxy;
use crate::support::tokio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads until the server closes the connection; returns how long that took.
async fn time_until_closed(mut stream: TcpStream) -> Duration {
    let started = Instant::now();
    let mut sink = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), stream.read_to_end(&mut sink))
        .await
        .expect("the proxy kept a silent connection open past 20 s")
        .ok();
    started.elapsed()
}

#[tokio::test]
async fn silent_and_half_open_connections_are_closed() {
    let proxy = Proxy::builder().spawn().await;
    // One client says nothing at all; one starts the HTTP/2 preface and stops; one sends half
    // a request head (slowloris).
    let silent = TcpStream::connect(proxy.addr).await.unwrap();
    let mut preface = TcpStream::connect(proxy.addr).await.unwrap();
    preface.write_all(b"PRI * HTTP/2.0\r\n").await.unwrap();
    let mut slow = TcpStream::connect(proxy.addr).await.unwrap();
    slow.write_all(b"GET /v1/teams HTTP/1.1\r\nHost: localh")
        .await
        .unwrap();

    let (a, b, c) = tokio::join!(
        time_until_closed(silent),
        time_until_closed(preface),
        time_until_closed(slow)
    );
    for took in [a, b, c] {
        assert!(took < Duration::from_secs(15), "closed only after {took:?}");
    }
    // The proxy still serves everyone else.
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 200);
    assert_eq!(proxy.sim.api_requests(), 1);
}

#[tokio::test]
async fn a_client_that_pauses_reading_is_not_cut_off() {
    let proxy = Proxy::builder()
        .set("upstream.timeout", "300ms")
        .spawn()
        .await;
    let size = 50 * 1024 * 1024u64;
    let mut r = proxy.get(&format!("/v1/costs/export?bytes={size}")).await;
    let mut total = r.chunk().await.unwrap().unwrap().len() as u64;
    // The BI tool is busy for a while (far longer than upstream.timeout); the upstream is not
    // to blame, so the answer must go on when the client reads again.
    tokio::time::sleep(Duration::from_millis(1200)).await;
    while let Some(chunk) = r.chunk().await.unwrap() {
        total += chunk.len() as u64;
    }
    assert_eq!(total, size);
}

#[tokio::test]
async fn many_small_headers_under_64_kib_are_served() {
    let proxy = Proxy::builder().spawn().await;
    // 101 headers of about 10 bytes got 431 with hyper's default count limit; 3,000 (about
    // 40 KiB) are still under the byte limit.
    for count in [101, 3000] {
        let headers: String = (0..count).map(|i| format!("X-H{i}: {i}\r\n")).collect();
        let request = format!(
            "GET /v1/teams HTTP/1.1\r\nHost: localhost\r\n{headers}Connection: close\r\n\r\n"
        );
        assert!(request.len() < 64 * 1024);
        let answer = crate::support::raw(proxy.addr, &request).await;
        assert_eq!(crate::support::raw_status(&answer), 200, "{count} headers");
    }
    assert_eq!(proxy.sim.api_requests(), 2);
}

#[tokio::test]
async fn heads_hyper_refuses_itself_are_counted() {
    let proxy = Proxy::builder().spawn().await;
    let malformed = "GET /v1/teams HTTP/1.1\r\nHost localhost\r\n\r\n";
    let answer = crate::support::raw(proxy.addr, malformed).await;
    assert_eq!(crate::support::raw_status(&answer), 400, "{answer}");
    proxy
        .wait_for_metric("azure_costs_proxy_rejected_heads_total{reason=\"malformed\"} 1")
        .await;

    let big = "a".repeat(70 * 1024);
    let request = format!("GET /v1/teams HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\n\r\n");
    let answer = crate::support::raw(proxy.addr, &request).await;
    assert_eq!(crate::support::raw_status(&answer), 431);
    proxy
        .wait_for_metric("azure_costs_proxy_rejected_heads_total{reason=\"too_large\"} 1")
        .await;
    assert_eq!(proxy.sim.api_requests(), 0);
}
