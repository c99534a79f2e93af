//! Differential: the lean HTTP/1.1 server's head parser (`http1::parse`) against hyper's server.
//! The same bytes go to both, as the first bytes of a connection. The lean parser takes requests
//! off the front until it waits for more (`Partial`) or hands the connection to hyper
//! (`HandOff`); hyper serves the whole input. Fails unless:
//! - every request the lean path took, hyper served too, in the same order, as the same request
//!   (method, target, version, every field in order, byte for byte) with an empty body: the
//!   request boundaries agree, so no byte the lean path read as one request is another's body;
//! - where the lean parser stopped at `Partial`, hyper served nothing more either. Where it
//!   stopped at a request that asks to close the connection (the lean server closes it after the
//!   answer), hyper may go on: the lean server reads `close` in any `Connection` field, hyper only
//!   in valid UTF-8 and the last field decides (`close` then `keep-alive` keeps it open), so the
//!   lean server closes in cases where hyper does not. Closing is the safe side; the opposite
//!   (the lean server serving a request after one hyper closes on) fails the first rule;
//! - a hand-off leaves the lean parser's buffer exactly at the start of what it did not take.
#![no_main]

use std::convert::Infallible;
use std::sync::{Arc, Mutex, OnceLock};

use azure_costs_proxy::http1::{Parsed, parse};
use bytes::BytesMut;
use http::{Request, Response};
use http_body_util::{BodyExt as _, Empty};
use hyper::body::{Bytes, Incoming};
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use libfuzzer_sys::fuzz_target;
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};

/// The proxy's head limit (`server::MAX_HEADER_BYTES`).
const MAX_HEAD: usize = 64 * 1024;

/// What both sides agree a request is.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    method: String,
    target: String,
    version: http::Version,
    fields: Vec<(String, Vec<u8>)>,
    /// Whether the body was empty.
    empty: bool,
}

fn seen(parts: &http::request::Parts, empty: bool) -> Seen {
    Seen {
        method: parts.method.to_string(),
        target: parts.uri.to_string(),
        version: parts.version,
        fields: parts
            .headers
            .iter()
            .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
            .collect(),
        empty,
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        // Paused time: a sleep ends only once every task waits on something else, i.e. when
        // hyper has served all it can from the bytes it has.
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("runtime")
    })
}

/// The requests hyper's server, set up as the proxy sets it up, serves from `data`.
fn hyper_serves(data: &[u8]) -> Vec<Seen> {
    let served = Arc::new(Mutex::new(Vec::new()));
    let record = served.clone();
    runtime().block_on(async move {
        let (mut client, server) = tokio::io::duplex(4 * 1024 * 1024);
        let service = service_fn(move |request: Request<Incoming>| {
            let record = record.clone();
            async move {
                let (parts, body) = request.into_parts();
                let body = body.collect().await.map(|b| b.to_bytes());
                let empty = matches!(&body, Ok(b) if b.is_empty());
                record.lock().expect("lock").push(seen(&parts, empty));
                Ok::<_, Infallible>(Response::new(Empty::<Bytes>::new()))
            }
        });
        let connection = hyper::server::conn::http1::Builder::new()
            .timer(TokioTimer::new())
            .max_buf_size(MAX_HEAD)
            .max_headers(MAX_HEAD / 4)
            .keep_alive(true)
            .serve_connection(TokioIo::new(server), service);
        let feed = async move {
            client.write_all(data).await.expect("write");
            // Not closed at once: hyper drops a request whose client is gone before its answer.
            tokio::time::sleep(std::time::Duration::from_secs(1)).await;
            client.shutdown().await.expect("shutdown");
            let mut sink = Vec::new();
            let _ = client.read_to_end(&mut sink).await;
        };
        let (served, ()) = tokio::join!(connection, feed);
        if std::env::var_os("HTTP1_HEAD_DEBUG").is_some() {
            eprintln!("hyper's connection ended: {served:?}");
        }
    });
    Arc::try_unwrap(served)
        .ok()
        .and_then(|m| m.into_inner().ok())
        .unwrap_or_default()
}

fuzz_target!(|data: &[u8]| {
    let mut buf = BytesMut::from(data);
    let mut fields = Vec::new();
    let mut lean = Vec::new();
    // Whether hyper must have stopped where the lean parser did: it waits for more bytes.
    let partial = loop {
        let before = buf.len();
        match parse(&mut buf, MAX_HEAD, &mut fields) {
            Parsed::Request { parts, close } => {
                assert!(buf.len() < before, "a request took no bytes");
                lean.push(seen(&parts, true));
                if close {
                    break false;
                }
            }
            Parsed::Partial => break true,
            Parsed::HandOff => {
                assert_eq!(buf.len(), before, "a hand-off must leave the buffer whole");
                assert_eq!(&buf[..], &data[data.len() - before..]);
                break false;
            }
        }
    };
    if lean.is_empty() && !partial {
        return; // hyper's alone from the first byte: nothing to compare
    }
    let hyper = hyper_serves(data);
    assert!(
        hyper.len() >= lean.len(),
        "the lean parser took {} requests, hyper served {}:\nlean {lean:#?}\nhyper {hyper:#?}",
        lean.len(),
        hyper.len()
    );
    assert_eq!(&hyper[..lean.len()], &lean[..], "the requests differ");
    if partial {
        assert_eq!(
            hyper.len(),
            lean.len(),
            "the lean parser waited for more where hyper served another request: {hyper:#?}"
        );
    }
});
