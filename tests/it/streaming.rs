//! Bodies stream through the proxy in both directions and are never buffered whole.

use std::pin::Pin;
use std::task::{Context, Poll};

use crate::support::tokio;
use crate::support::{Proxy, client, simulator};
use azure_costs_proxy::simulator::data::fnv1a;
use bytes::Bytes;
use http_body::{Body, Frame};

const MB: u64 = 1024 * 1024;

#[tokio::test]
async fn hundred_megabyte_answer_streams_first_bytes_before_upstream_finishes() {
    let sim = simulator().await;
    // The export produces its first chunk, then waits for our go.
    sim.hold_exports();
    let proxy = Proxy::builder().sim(sim).spawn().await;
    let mut r = proxy
        .get(&format!("/v1/costs/export?bytes={}", 100 * MB))
        .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["content-type"], "text/csv; charset=utf-8");

    let first = r.chunk().await.unwrap().expect("a first chunk");
    assert!(first.starts_with(b"date,team,service"));
    assert_eq!(
        proxy.sim.exports_finished(),
        0,
        "the client got data only after the upstream had finished"
    );

    proxy.sim.release_exports();
    let mut total = first.len() as u64;
    while let Some(chunk) = r.chunk().await.unwrap() {
        total += chunk.len() as u64;
    }
    assert_eq!(total, 100 * MB);
    assert_eq!(proxy.sim.exports_finished(), 1);
}

#[tokio::test]
async fn ten_megabyte_post_arrives_intact() {
    let proxy = Proxy::builder().spawn().await;
    let body: Vec<u8> = (0..10 * MB).map(|i| (i * 31 % 251) as u8).collect();
    let expected = format!("{:016x}", fnv1a(&body));
    let r = client()
        .post(proxy.url("/v1/echo"))
        .header("content-type", "application/octet-stream")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["bytes"], 10 * MB);
    assert_eq!(answer["fnv1a"], expected.as_str());
    assert_eq!(proxy.sim.requests()[0].method, "POST");
}

#[tokio::test]
async fn chunked_upload_without_length_arrives_intact() {
    let proxy = Proxy::builder().spawn().await;
    // A body of unknown length: reqwest sends it with chunked transfer encoding.
    let chunks: Vec<Bytes> = (0..64u8).map(|i| Bytes::from(vec![i; 16 * 1024])).collect();
    let all: Vec<u8> = chunks.iter().flat_map(|c| c.to_vec()).collect();
    let r = client()
        .post(proxy.url("/v1/echo"))
        .body(reqwest::Body::wrap(Chunks(chunks.into_iter())))
        .send()
        .await
        .unwrap();
    let answer: serde_json::Value = r.json().await.unwrap();
    assert_eq!(answer["bytes"], all.len() as u64);
    assert_eq!(answer["fnv1a"], format!("{:016x}", fnv1a(&all)).as_str());
    let seen = &proxy.sim.requests()[0];
    assert!(!seen.headers.contains_key("content-length"));
}

/// A request body of unknown length, yielding one chunk per poll.
struct Chunks(std::vec::IntoIter<Bytes>);

impl Body for Chunks {
    type Data = Bytes;
    type Error = std::io::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, std::io::Error>>> {
        Poll::Ready(self.0.next().map(|b| Ok(Frame::data(b))))
    }
}
