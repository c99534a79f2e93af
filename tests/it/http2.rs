//! HTTP/2 limits, seen on the wire with hand-made frames: at most 100 concurrent streams per
//! connection, and a client that stops answering PINGs is closed within 20 s.

use std::time::{Duration, Instant};

use crate::support::Proxy;
use crate::support::tokio;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";
const SETTINGS: u8 = 0x4;
const PING: u8 = 0x6;
const HEADERS: u8 = 0x1;
const SETTINGS_MAX_CONCURRENT_STREAMS: u16 = 0x3;

/// One frame: 24-bit length, type, flags, stream id, payload.
fn frame(kind: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let len = payload.len() as u32;
    let mut out = len.to_be_bytes()[1..].to_vec();
    out.extend([kind, flags]);
    out.extend(stream.to_be_bytes());
    out.extend(payload);
    out
}

/// Reads one frame: (type, flags, payload).
async fn read_frame(stream: &mut TcpStream) -> (u8, u8, Vec<u8>) {
    let mut head = [0u8; 9];
    stream.read_exact(&mut head).await.expect("a frame head");
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    stream
        .read_exact(&mut payload)
        .await
        .expect("a frame payload");
    (head[3], head[4], payload)
}

/// A connection that has said the preface and empty SETTINGS.
async fn h2c(proxy: &Proxy) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    let mut hello = PREFACE.to_vec();
    hello.extend(frame(SETTINGS, 0, 0, &[]));
    stream.write_all(&hello).await.unwrap();
    stream
}

#[tokio::test]
async fn clients_may_open_at_most_100_streams_at_once() {
    let proxy = Proxy::builder().spawn().await;
    let mut stream = h2c(&proxy).await;
    let (kind, _, payload) = read_frame(&mut stream).await;
    assert_eq!(kind, SETTINGS, "the server speaks first with its SETTINGS");
    let limit = payload
        .chunks(6)
        .find(|s| u16::from_be_bytes([s[0], s[1]]) == SETTINGS_MAX_CONCURRENT_STREAMS)
        .map(|s| u32::from_be_bytes([s[2], s[3], s[4], s[5]]));
    assert_eq!(limit, Some(100), "SETTINGS {payload:?}");
}

#[tokio::test]
async fn a_client_that_stops_answering_pings_is_closed_within_20_s() {
    let proxy = Proxy::builder().spawn().await;
    let mut stream = h2c(&proxy).await;
    // GET /v1/teams on stream 1 (HPACK: :method GET, :scheme http, then :path and :authority
    // as literals with indexed names), END_STREAM | END_HEADERS.
    let mut block = vec![0x82, 0x86, 0x04, 9];
    block.extend(b"/v1/teams");
    block.extend([0x01, 9]);
    block.extend(b"localhost");
    stream
        .write_all(&frame(HEADERS, 0x5, 1, &block))
        .await
        .unwrap();
    // From now on the client reads, but never answers (no SETTINGS ack, no PING ack).
    let silent_since = Instant::now();
    let mut pinged = false;
    let closed = tokio::time::timeout(Duration::from_secs(25), async {
        let mut head = [0u8; 9];
        loop {
            match stream.read_exact(&mut head).await {
                Ok(_) => {
                    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
                    pinged |= head[3] == PING && head[4] & 1 == 0;
                    let mut payload = vec![0u8; len];
                    if stream.read_exact(&mut payload).await.is_err() {
                        return;
                    }
                }
                Err(_) => return,
            }
        }
    })
    .await;
    assert!(
        closed.is_ok(),
        "the silent client was still connected after 25 s"
    );
    let took = silent_since.elapsed();
    assert!(pinged, "the server never sent a PING");
    assert!(
        took <= Duration::from_secs(20),
        "closed only after {took:?}"
    );
    // The request itself was served.
    assert_eq!(proxy.sim.api_requests(), 1);
}
