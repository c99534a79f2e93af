//! Request bodies that fail on the client's side (bad chunk framing, cut off, stalled) are
//! answered as the client's fault: 400 or 408, never an upstream error or an upstream metric.

use std::time::Duration;

use crate::support::tokio;
use crate::support::{Proxy, raw, raw_status};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Reads the answer until the proxy closes the connection (at most 10 s).
async fn answer(mut stream: TcpStream) -> String {
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut out))
        .await
        .expect("the proxy answered and closed within 10 s")
        .ok();
    String::from_utf8_lossy(&out).into_owned()
}

/// The JSON error code in a raw answer.
fn code(answer: &str) -> String {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    json["error"].as_str().unwrap_or_default().to_string()
}

/// No upstream failure was counted or answered.
async fn no_upstream_blame(proxy: &Proxy) {
    let metrics = proxy.metrics().await;
    for status in ["502", "503", "504"] {
        assert!(
            !metrics.contains(&format!("status=\"{status}\"")),
            "a {status} was counted:\n{metrics}"
        );
    }
}

#[tokio::test]
async fn a_malformed_chunked_body_is_a_bad_request() {
    let proxy = Proxy::builder().spawn().await;
    let answer = raw(
        proxy.addr,
        "POST /v1/echo HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\
         Connection: close\r\n\r\nfffffffffffffffffffff\r\nabc\r\n0\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert_eq!(code(&answer), "bad_request", "{answer}");
    assert!(answer.contains("malformed"), "{answer}");
    no_upstream_blame(&proxy).await;
}

#[tokio::test]
async fn a_body_cut_off_by_the_client_is_a_bad_request() {
    let proxy = Proxy::builder().spawn().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    // The client stops sending: end of its half of the connection, 90 bytes short.
    stream.shutdown().await.unwrap();
    let answer = answer(stream).await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert_eq!(code(&answer), "bad_request", "{answer}");
    assert!(answer.contains("ended before"), "{answer}");
    no_upstream_blame(&proxy).await;
}

#[tokio::test]
async fn a_stalled_body_times_out_as_the_clients_fault() {
    let proxy = Proxy::builder()
        .set("listen.body_timeout", "300ms")
        .set("upstream.timeout", "30s")
        .spawn()
        .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // Ten bytes of a hundred, then nothing (the connection stays open).
    stream
        .write_all(
            b"POST /v1/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 100\r\n\r\n0123456789",
        )
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let answer = answer(stream).await;
    assert_eq!(raw_status(&answer), 408, "{answer}");
    assert_eq!(code(&answer), "request_timeout", "{answer}");
    assert!(answer.contains("listen.body_timeout"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    no_upstream_blame(&proxy).await;
    assert!(proxy.metrics().await.contains("status=\"408\""));
}

#[tokio::test]
async fn a_slow_body_that_keeps_coming_is_not_a_stall() {
    let proxy = Proxy::builder()
        .set("listen.body_timeout", "400ms")
        .spawn()
        .await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"POST /v1/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 10\r\nConnection: close\r\n\r\n",
        )
        .await
        .unwrap();
    // Ten bytes over about a second: longer than body_timeout in all, never that long between two.
    for byte in b"0123456789" {
        tokio::time::sleep(Duration::from_millis(100)).await;
        stream.write_all(&[*byte]).await.unwrap();
    }
    let answer = answer(stream).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
}
