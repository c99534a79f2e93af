//! A small outbound HTTP proxy for the tests, as a corporate network has one: it answers
//! `CONNECT host:port` and relays bytes both ways. Host names under `.test` resolve to 127.0.0.1
//! here (they resolve nowhere else), so a test can prove that the proxy, not the sidecar,
//! resolved the target. It records every request head, can demand Basic credentials (407), and
//! can refuse every tunnel (403).

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with a `CONNECT`.
#[derive(Clone, Default)]
pub(crate) struct ConnectProxyOptions {
    /// The `Proxy-Authorization` value it demands; others get 407.
    pub(crate) require_auth: Option<String>,
    /// Answer 403 to every tunnel.
    pub(crate) refuse: bool,
    /// Read the request and never answer it.
    pub(crate) hang: bool,
}

/// One request head the proxy received.
#[derive(Clone, Debug)]
pub(crate) struct Seen {
    /// The request line, e.g. `CONNECT api.costs.test:443 HTTP/1.1`.
    pub(crate) line: String,
    /// The header lines, as sent.
    pub(crate) headers: Vec<String>,
}

impl Seen {
    /// The value of header `name` (case-insensitive), if sent.
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.headers.iter().find_map(|h| {
            let (n, v) = h.split_once(':')?;
            n.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

/// A running test proxy; stops with the test's runtime.
pub(crate) struct ConnectProxy {
    pub(crate) addr: SocketAddr,
    seen: Arc<Mutex<Vec<Seen>>>,
}

impl ConnectProxy {
    /// Starts a proxy on 127.0.0.1:0.
    pub(crate) async fn start(options: ConnectProxyOptions) -> ConnectProxy {
        super::tokio::assert_bounded();
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let log = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, options.clone(), log.clone()));
            }
        });
        ConnectProxy { addr, seen }
    }

    /// `http://127.0.0.1:PORT`.
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request head received so far, in order.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }

    /// The request lines received so far.
    pub(crate) fn lines(&self) -> Vec<String> {
        self.seen().into_iter().map(|s| s.line).collect()
    }
}

async fn serve(mut client: TcpStream, options: ConnectProxyOptions, log: Arc<Mutex<Vec<Seen>>>) {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    // Byte by byte: nothing after the head may be swallowed (it belongs to the tunnel).
    while !head.ends_with(b"\r\n\r\n") {
        match client.read(&mut byte).await {
            Ok(1) => head.push(byte[0]),
            _ => return,
        }
        if head.len() > 64 * 1024 {
            return;
        }
    }
    let text = String::from_utf8_lossy(&head).into_owned();
    let mut lines = text.split("\r\n").filter(|l| !l.is_empty());
    let seen = Seen {
        line: lines.next().unwrap_or_default().to_string(),
        headers: lines.map(str::to_string).collect(),
    };
    log.lock().unwrap().push(seen.clone());
    if options.hang {
        // Keep the connection open, silent, until the client gives up.
        let _ = client.read(&mut byte).await;
        return;
    }
    let answer = |status: &str| format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\n\r\n");
    let mut parts = seen.line.split(' ');
    let (Some("CONNECT"), Some(target)) = (parts.next(), parts.next()) else {
        let _ = client
            .write_all(answer("405 Method Not Allowed").as_bytes())
            .await;
        return;
    };
    if let Some(wanted) = &options.require_auth
        && seen.header("proxy-authorization").as_ref() != Some(wanted)
    {
        let refusal = "HTTP/1.1 407 Proxy Authentication Required\r\n\
                       Proxy-Authenticate: Basic realm=\"test\"\r\nContent-Length: 0\r\n\r\n";
        let _ = client.write_all(refusal.as_bytes()).await;
        return;
    }
    if options.refuse {
        let _ = client.write_all(answer("403 Forbidden").as_bytes()).await;
        return;
    }
    let Some((host, port)) = target.rsplit_once(':') else {
        let _ = client.write_all(answer("400 Bad Request").as_bytes()).await;
        return;
    };
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let ip = if host.ends_with(".test") {
        "127.0.0.1"
    } else {
        host
    };
    let Ok(mut target) = TcpStream::connect(format!("{ip}:{port}")).await else {
        let _ = client.write_all(answer("502 Bad Gateway").as_bytes()).await;
        return;
    };
    if client
        .write_all(b"HTTP/1.1 200 Connection established\r\n\r\n")
        .await
        .is_ok()
    {
        let _ = tokio::io::copy_bidirectional(&mut client, &mut target).await;
    }
}
