//! The proxy's own HTTP/1.1 client towards the API (requests without a body): every framing an
//! API may use arrives whole, a connection the API closed while idle costs no request, and an
//! answer whose framing is ambiguous or broken is a 502, never passed on. The API here is a raw
//! socket that answers each request with the bytes a test gives it.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;

use crate::support::tokio;
use crate::support::{Proxy, client};

/// What the raw API does after it has answered a request.
#[derive(Clone, Copy, PartialEq)]
enum Then {
    /// Waits for the next request on the connection.
    KeepOpen,
    /// Closes the connection and reports it on `closed`.
    Close,
}

/// A raw API: each request head gets the bytes `answer` returns for it (given the head and the
/// number of the request on its connection), then the connection stays open or closes.
struct RawApi {
    addr: SocketAddr,
    connections: Arc<AtomicUsize>,
    closed: mpsc::UnboundedReceiver<()>,
}

impl RawApi {
    async fn start(answer: fn(&str, usize) -> (Vec<u8>, Then)) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let connections = Arc::new(AtomicUsize::new(0));
        let (tell, closed) = mpsc::unbounded_channel();
        let counted = connections.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                counted.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(serve(stream, answer, tell.clone()));
            }
        });
        RawApi {
            addr,
            connections,
            closed,
        }
    }

    async fn proxy(&self) -> Proxy {
        Proxy::builder()
            .set("upstream.url", format!("http://{}", self.addr))
            .spawn()
            .await
    }

    fn connections(&self) -> usize {
        self.connections.load(Ordering::SeqCst)
    }
}

async fn serve(
    mut stream: TcpStream,
    answer: fn(&str, usize) -> (Vec<u8>, Then),
    closed: mpsc::UnboundedSender<()>,
) {
    let mut buf = Vec::new();
    let mut nth = 0;
    loop {
        let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
            let mut chunk = [0u8; 4096];
            match stream.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
            continue;
        };
        let head = String::from_utf8_lossy(&buf[..end]).into_owned();
        buf.drain(..end + 4);
        let (bytes, then) = answer(&head, nth);
        nth += 1;
        if stream.write_all(&bytes).await.is_err() {
            return;
        }
        if then == Then::Close {
            let _ = stream.shutdown().await;
            drop(stream);
            let _ = closed.send(());
            return;
        }
    }
}

async fn get(proxy: &Proxy, method: reqwest::Method, path: &str) -> (u16, String) {
    let r = client()
        .request(method, proxy.url(path))
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (
        status,
        r.text().await.unwrap_or_else(|e| format!("CUT OFF: {e}")),
    )
}

#[tokio::test]
async fn every_framing_arrives_whole_and_the_connection_is_reused() {
    let api = RawApi::start(|head, _| {
        let path = head.split_whitespace().nth(1).unwrap_or("");
        let answer: &[u8] = if path.ends_with("/chunked") {
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n"
        } else if path.ends_with("/informational") {
            b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\nHTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nafter"
        } else if path.ends_with("/empty") {
            b"HTTP/1.1 204 No Content\r\n\r\n"
        } else if head.starts_with("HEAD ") {
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nContent-Length: 11\r\n\r\nhello world"
        };
        (answer.to_vec(), Then::KeepOpen)
    })
    .await;
    let proxy = api.proxy().await;
    for _ in 0..2 {
        assert_eq!(
            get(&proxy, reqwest::Method::GET, "/v1/chunked").await,
            (200, "hello world".into())
        );
        assert_eq!(
            get(&proxy, reqwest::Method::GET, "/v1/sized").await,
            (200, "hello world".into())
        );
        assert_eq!(
            get(&proxy, reqwest::Method::GET, "/v1/informational").await,
            (200, "after".into())
        );
        assert_eq!(
            get(&proxy, reqwest::Method::GET, "/v1/empty").await,
            (204, String::new())
        );
        let head = client().head(proxy.url("/v1/sized")).send().await.unwrap();
        assert_eq!(head.status(), 200);
        assert_eq!(head.headers()["content-length"], "11");
    }
    assert_eq!(
        api.connections(),
        1,
        "one request after another: one connection"
    );
}

#[tokio::test]
async fn a_body_that_runs_until_the_close_arrives_whole_on_a_connection_of_its_own() {
    let api = RawApi::start(|_, _| {
        (
            b"HTTP/1.1 200 OK\r\n\r\nuntil the end".to_vec(),
            Then::Close,
        )
    })
    .await;
    let proxy = api.proxy().await;
    assert_eq!(
        get(&proxy, reqwest::Method::GET, "/v1/a").await,
        (200, "until the end".into())
    );
    assert_eq!(
        get(&proxy, reqwest::Method::GET, "/v1/a").await,
        (200, "until the end".into())
    );
    assert_eq!(api.connections(), 2);
}

#[tokio::test]
async fn a_connection_the_api_closed_while_idle_costs_no_request() {
    // The API answers once per connection as if it would keep it, then closes it.
    let mut api = RawApi::start(|_, _| {
        (
            b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec(),
            Then::Close,
        )
    })
    .await;
    let proxy = api.proxy().await;
    for method in [
        reqwest::Method::GET,
        reqwest::Method::POST,
        reqwest::Method::DELETE,
    ] {
        assert_eq!(
            get(&proxy, method.clone(), "/v1/a").await,
            (200, "ok".into()),
            "{method}"
        );
        // The close has reached the proxy's side before the next request goes.
        api.closed.recv().await.unwrap();
    }
    assert_eq!(api.connections(), 3);
}

#[tokio::test]
async fn bytes_after_an_answer_are_never_read_as_the_next_answer() {
    let api = RawApi::start(|_, nth| {
        let answer = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nanswer\
             HTTP/1.1 200 OK\r\nContent-Length: 8\r\n\r\nsmuggled{nth}"
        );
        (answer.into_bytes(), Then::KeepOpen)
    })
    .await;
    let proxy = api.proxy().await;
    for _ in 0..3 {
        assert_eq!(
            get(&proxy, reqwest::Method::GET, "/v1/a").await,
            (200, "answer".into())
        );
    }
    assert_eq!(
        api.connections(),
        3,
        "a connection with stray bytes is not reused"
    );
}

#[tokio::test]
async fn ambiguous_or_broken_answer_heads_are_502() {
    let api = RawApi::start(|head, _| {
        let path = head.split_whitespace().nth(1).unwrap_or("");
        let answer: &[u8] = match path {
            "/v1/both" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
            "/v1/differing" => b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
            "/v1/negative" => b"HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "/v1/switch" => b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: x\r\n\r\n",
            "/v1/folded" => b"HTTP/1.1 200 OK\r\nX-A: 1\r\n folded\r\nContent-Length: 0\r\n\r\n",
            "/v1/garbage" => b"SSH-2.0-OpenSSH_9.2\r\n\r\n",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok",
        };
        (answer.to_vec(), Then::Close)
    })
    .await;
    let proxy = api.proxy().await;
    for path in [
        "/v1/both",
        "/v1/differing",
        "/v1/negative",
        "/v1/switch",
        "/v1/folded",
        "/v1/garbage",
    ] {
        let r = client().get(proxy.url(path)).send().await.unwrap();
        assert_eq!(r.status(), 502, "{path}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "upstream_unavailable", "{path}");
    }
    assert_eq!(
        get(&proxy, reqwest::Method::GET, "/v1/fine").await,
        (200, "ok".into())
    );
}

#[tokio::test]
async fn a_broken_or_cut_off_body_reaches_the_client_cut_off() {
    let api = RawApi::start(|head, _| {
        let path = head.split_whitespace().nth(1).unwrap_or("");
        let answer: &[u8] = match path {
            "/v1/bad-chunk" => b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhelloXX",
            _ => b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly part",
        };
        (answer.to_vec(), Then::Close)
    })
    .await;
    let proxy = api.proxy().await;
    for path in ["/v1/bad-chunk", "/v1/short"] {
        // The head may not have left the proxy when the body fails: then the client sees the
        // connection close with no answer, which is cut off too.
        let Ok(r) = client().get(proxy.url(path)).send().await else {
            continue;
        };
        assert_eq!(r.status(), 200, "{path}");
        assert!(
            r.bytes().await.is_err(),
            "{path}: the client must see the body cut off"
        );
    }
}

#[tokio::test]
async fn a_length_named_in_connection_still_frames_the_body_and_head_answers_keep_their_size() {
    let api = RawApi::start(|head, _| {
        let answer: &[u8] = if head.starts_with("HEAD ") {
            // A resource the API would send chunked: HEAD says nothing of its size.
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
        } else {
            b"HTTP/1.1 200 OK\r\nConnection: content-length\r\nContent-Length: 5\r\n\r\nhello"
        };
        (answer.to_vec(), Then::KeepOpen)
    })
    .await;
    let proxy = api.proxy().await;
    // Framed by its length: the answer ends without the API closing the connection.
    assert_eq!(
        get(&proxy, reqwest::Method::GET, "/v1/a").await,
        (200, "hello".into())
    );
    let answer = crate::support::raw(
        proxy.addr,
        "HEAD /v1/a HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await
    .to_ascii_lowercase();
    assert!(answer.starts_with("http/1.1 200"), "{answer}");
    assert!(
        !answer.contains("content-length: 0"),
        "a HEAD answer claimed an empty resource: {answer}"
    );
}
