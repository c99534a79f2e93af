//! The integration tests, one crate: each module is a behaviour of the proxy as a client, an
//! operator or a service manager meets it; `support` spawns the proxy and its fakes.
//!
//! A test starts from `Proxy::builder()` (its own simulator, loopback listeners, the default
//! config), changes what it is about (`.set("upstream.timeout", "300ms")`, `.route(..)`,
//! `.sts_fault(..)`), then asserts. Every module says `use crate::support::tokio;`: its
//! `#[tokio::test]` then runs the test under a 60 s limit (see `support/tokio.rs`).
#![expect(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test that cannot go on fails loudly; these lints guard the proxy's own code"
)]

mod support;

mod admin;
mod cli;
mod clients;
mod coalescing;
mod delegation;
mod failures;
mod forwarding;
mod hosts;
mod http1;
mod http2;
mod inbound;
mod limits;
mod logs;
mod outbound;
mod peers;
mod policies;
mod rate_limits;
mod reload;
mod request_bodies;
mod route_queue;
#[cfg(windows)]
mod service;
#[cfg(unix)]
mod signals;
mod simulator;
mod status;
mod streaming;
mod teams;
mod tls;
mod tokens;
mod upstream_budget;
mod upstream_h1;
mod watch;
