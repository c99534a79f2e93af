//! The lean HTTP/1.1 server as a client meets it on the wire: pipelined requests answered in
//! order, a request with a body after them handed to hyper on the same connection, HEAD answers
//! without a body, `date` on the proxy's own answers, and a client that leaves before its answer
//! cancels the upstream request. (The rest of the suite runs on both servers: `.ci/run` runs
//! it again with `ACP_TEST_HTTP1=hyper`.)

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;

use crate::support::tokio;
use crate::support::{Proxy, raw};

/// The status codes of a raw answer stream, in order (a body does not end in a line break, so
/// the next status line follows it on the same line).
fn statuses(answer: &str) -> Vec<&str> {
    answer
        .match_indices("HTTP/1.1 ")
        .map(|(at, _)| &answer[at + 9..at + 12])
        .collect()
}

#[tokio::test]
async fn pipelined_requests_are_answered_in_order_and_a_body_request_after_them_too() {
    let proxy = Proxy::builder().spawn().await;
    let answer = raw(
        proxy.addr,
        "GET /v1/teams HTTP/1.1\r\nHost: localhost\r\n\r\n\
         GET /v1/nothing-here HTTP/1.1\r\nHost: localhost\r\n\r\n\
         POST /v1/echo HTTP/1.1\r\nHost: localhost\r\nContent-Length: 5\r\n\
         Connection: close\r\n\r\nhello",
    )
    .await;
    assert_eq!(statuses(&answer), ["200", "404", "200"], "{answer}");
    assert!(answer.contains("\"no such API endpoint\""), "{answer}");
    assert!(
        answer.contains("\"bytes\":5"),
        "the body went upstream whole: {answer}"
    );
    assert_eq!(proxy.sim.api_requests(), 3);
}

#[tokio::test]
async fn head_answers_carry_no_body_and_the_connection_goes_on() {
    let proxy = Proxy::builder().spawn().await;
    let answer = raw(
        proxy.addr,
        "HEAD /v1/echo HTTP/1.1\r\nHost: localhost\r\n\r\n\
         GET /v1/teams HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let (first, rest) = answer.split_once("\r\n\r\n").unwrap();
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{answer}");
    assert!(
        first.to_ascii_lowercase().contains("content-length: "),
        "{first}"
    );
    assert!(
        rest.starts_with("HTTP/1.1 200 OK"),
        "a body followed the HEAD answer: {rest}"
    );
}

#[tokio::test]
async fn the_proxys_own_answers_carry_a_date() {
    let proxy = Proxy::builder().spawn().await;
    let answer = raw(
        proxy.addr,
        "GET /nowhere HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    let head = answer
        .split("\r\n\r\n")
        .next()
        .unwrap()
        .to_ascii_lowercase();
    let date = head
        .lines()
        .find_map(|line| line.strip_prefix("date: "))
        .unwrap_or_else(|| panic!("no date: {head}"));
    assert!(date.ends_with(" gmt"), "{date}");
    assert!(head.contains("connection: close"), "{head}");
}

#[tokio::test]
async fn a_client_that_leaves_before_its_answer_cancels_the_upstream_request() {
    // An API that takes the request and never answers; it reports when the proxy hangs up.
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api_addr = api.local_addr().unwrap();
    let (got_request, request_seen) = oneshot::channel();
    let (hung_up, upstream_closed) = oneshot::channel();
    tokio::spawn(async move {
        let (mut stream, _) = api.accept().await.unwrap();
        let mut buf = vec![0u8; 4096];
        let _ = stream.read(&mut buf).await;
        let _ = got_request.send(());
        let _ = stream.read(&mut buf).await; // 0: the proxy closed its side
        let _ = hung_up.send(());
    });
    let proxy = Proxy::builder()
        .set("upstream.url", format!("http://{api_addr}"))
        .set("upstream.timeout", "60s")
        .spawn()
        .await;
    let mut client = TcpStream::connect(proxy.addr).await.unwrap();
    client
        .write_all(b"GET /v1/teams HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    request_seen.await.unwrap();
    drop(client);
    ::tokio::time::timeout(Duration::from_secs(10), upstream_closed)
        .await
        .expect("the upstream request outlived its client")
        .unwrap();
}

#[tokio::test]
async fn pipelined_requests_then_a_half_close_get_the_first_answer_whole() {
    // As on hyper's server: the client closing its side while requests wait counts as the
    // client leaving, but not before the request in hand is answered whole.
    let proxy = Proxy::builder().spawn().await;
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    stream
        .write_all(
            b"GET /v1/teams HTTP/1.1\r\nHost: localhost\r\n\r\n\
              GET /v1/costs/by-service HTTP/1.1\r\nHost: localhost\r\n\r\n",
        )
        .await
        .unwrap();
    stream.shutdown().await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert_eq!(statuses(&answer).first(), Some(&"200"), "{answer}");
    assert!(answer.contains("\"teams\":["), "{answer}");
    assert!(
        answer.trim_end().ends_with('}'),
        "an answer was cut off: {answer}"
    );
}
