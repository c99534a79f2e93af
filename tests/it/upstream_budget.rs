//! The upstream connection budget: at most `upstream.max_connections` connections to the API
//! however many client connections or HTTP/2 streams ask; a request that finds none free within
//! `upstream.connect_timeout` gets 503 `upstream_busy` with `Retry-After`.

use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body::Frame;
use hyper_util::rt::{TokioExecutor, TokioIo};

use crate::support::Proxy;
use crate::support::tokio;
use tokio::net::TcpStream;

/// An upload body fed by a channel: open until its sender is dropped.
struct Upload(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for Upload {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Self::Error>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

#[tokio::test]
async fn http1_clients_wait_for_a_free_connection_then_get_503() {
    let proxy = Proxy::builder()
        .set("upstream.max_connections", 2)
        .set("upstream.connect_timeout", "500ms")
        .spawn()
        .await;
    proxy.sim.hold_exports();
    // Two exports hold both upstream connections: their heads came, their bodies wait.
    let a = proxy.get("/v1/costs/export?bytes=10000000").await;
    let b = proxy.get("/v1/costs/export?bytes=10000000").await;
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));

    let started = Instant::now();
    let busy = proxy.get("/v1/teams").await;
    assert_eq!(busy.status(), 503);
    assert!(
        started.elapsed() >= Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(busy.headers()["retry-after"], "1");
    let body: serde_json::Value = busy.json().await.unwrap();
    assert_eq!(body["error"], "upstream_busy");
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("upstream.max_connections")
    );
    assert_eq!(proxy.sim.api_connections(), 2);

    // An export that ends gives its connection back, and the next request takes it.
    proxy.sim.release_exports();
    a.bytes().await.unwrap();
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    b.bytes().await.unwrap();
    assert_eq!(proxy.sim.api_connections(), 2);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains("status=\"503\",client=\"-\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn http2_streams_with_open_bodies_share_the_budget() {
    let proxy = Proxy::builder()
        .set("upstream.max_connections", 3)
        .set("upstream.connect_timeout", "300ms")
        .spawn()
        .await;
    let tcp = TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, connection) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(connection);

    // Ten uploads on one client connection, each sending a first chunk and then nothing: every
    // one that gets an upstream connection keeps it.
    let (answers, mut answered) = tokio::sync::mpsc::unbounded_channel();
    let mut bodies = Vec::new();
    for _ in 0..10 {
        let (body, chunks) = tokio::sync::mpsc::channel(1);
        body.send(Bytes::from_static(b"first chunk")).await.unwrap();
        bodies.push(body);
        let request = http::Request::post("http://localhost/v1/echo")
            .body(Upload(chunks))
            .unwrap();
        let mut sender = sender.clone();
        let answers = answers.clone();
        tokio::spawn(async move {
            let response = sender.send_request(request).await;
            let _ = answers.send(response.map(|r| (r.status(), r.headers().clone())));
        });
    }
    // Seven find the budget spent and get 503 once connect_timeout is over; three wait on
    // their uploads.
    for _ in 0..7 {
        let (status, headers) = tokio::time::timeout(Duration::from_secs(10), answered.recv())
            .await
            .expect("seven answers within 10 s")
            .unwrap()
            .unwrap();
        assert_eq!(status, 503);
        assert_eq!(headers["retry-after"], "1");
    }
    assert!(answered.try_recv().is_err(), "more than seven answers");
    assert!(
        proxy.sim.api_connections() <= 3,
        "{} upstream connections",
        proxy.sim.api_connections()
    );
    drop(bodies);
}
