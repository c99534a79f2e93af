//! Micro-benchmarks of the pure functions every proxied request runs through: route match, path
//! checks, header rewrites, the `Host` guard, API-key check and request ids. No sockets, no
//! runtime: a regression here shows up without the noise of a load test.
//!
//! `cargo bench --bench hot_path` (divan). `bench/run.sh` measures the whole proxy against nginx.

use std::time::Duration;

use azure_costs_proxy::Secret;
use azure_costs_proxy::config::{RefreshOn, RouteConfig, TokenPolicy};
use azure_costs_proxy::parts::headers::{self, RequestIds};
use azure_costs_proxy::parts::routes::{self, RouteTable};
use azure_costs_proxy::parts::{
    ClientIdentity, ClientLimits, ClientSpec, Clients, HostGuard, Scope,
};
use azure_costs_proxy::token::TokenMode;
use divan::{Bencher, black_box};
use http::header::{self, HeaderMap, HeaderName, HeaderValue};

fn main() {
    divan::main();
}

/// A table like a CSP deployment's: a root route and a few customer teams, some nested.
fn table() -> RouteTable {
    let prefixes = [
        "/",
        "/contoso",
        "/contoso/eu",
        "/fabrikam",
        "/northwind",
        "/tailspin",
        "/tailspin/us",
        "/wingtip",
    ];
    let routes: Vec<RouteConfig> = prefixes
        .iter()
        .map(|p| RouteConfig {
            prefix: (*p).into(),
            credential: "default".into(),
            delegate: (*p != "/").then(|| p.trim_start_matches('/').replace('/', "-")),
            delegates: None,
            token_mode: TokenMode::Interval,
            upstream_path: String::new(),
            refresh_on: RefreshOn::DEFAULT,
            concurrency: None,
            coalesce: true,
        })
        .collect();
    let policy = TokenPolicy {
        mode: TokenMode::Interval,
        max_age: Duration::from_secs(3300),
        refresh_before_expiry: Duration::from_secs(300),
        transaction_idle: Duration::from_secs(30),
        transaction_header: HeaderName::from_static("x-transaction-id"),
        refresh_on: RefreshOn::DEFAULT,
        sts_budget: 10.0,
    };
    RouteTable::new(&routes, &policy)
}

/// The headers a BI tool sends with a typical API call.
fn client_headers() -> HeaderMap {
    let mut h = HeaderMap::new();
    h.insert(header::HOST, HeaderValue::from_static("127.0.0.1:8080"));
    h.insert(
        header::USER_AGENT,
        HeaderValue::from_static(
            "Microsoft.Data.Mashup (https://go.microsoft.com/fwlink/?LinkID=304225)",
        ),
    );
    h.insert(header::ACCEPT, HeaderValue::from_static("application/json"));
    h.insert(
        header::ACCEPT_ENCODING,
        HeaderValue::from_static("gzip, deflate"),
    );
    h.insert(header::CONNECTION, HeaderValue::from_static("keep-alive"));
    h
}

#[divan::bench(args = ["/v1/costs/daily", "/contoso/eu/v1/costs/daily", "/wingtip/v1/exports/42"])]
fn route_find(bencher: Bencher, path: &str) {
    let table = table();
    bencher.bench_local(|| {
        black_box(
            table
                .find(black_box(path))
                .map(|m| (m.route.prefix.len(), m.rest.len())),
        )
    });
}

#[divan::bench]
fn has_refused_segment() {
    black_box(routes::has_refused_segment(black_box(
        "/contoso/eu/v1/costs/daily/2026-11-01/services",
    )));
}

#[divan::bench]
fn upstream_path_and_query() {
    black_box(routes::upstream_path_and_query(
        black_box("/api"),
        black_box("/teams/contoso"),
        black_box("/v1/costs/daily"),
        black_box(Some("from=2026-11-01&to=2026-11-30&groupBy=service")),
    ));
}

#[divan::bench]
fn rewrite_request(bencher: Bencher) {
    let bearer = headers::bearer_value(&"t".repeat(1200)).unwrap_or(HeaderValue::from_static("x"));
    let id = HeaderValue::from_static("0123456789abcdef");
    bencher
        .with_inputs(client_headers)
        .bench_local_refs(|h| headers::rewrite_request(h, &bearer, &id));
}

#[divan::bench]
fn rewrite_response(bencher: Bencher) {
    let id = HeaderValue::from_static("0123456789abcdef");
    let response = || {
        let mut h = HeaderMap::new();
        h.insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        h.insert(header::CONTENT_LENGTH, HeaderValue::from_static("1024"));
        h.insert(
            header::DATE,
            HeaderValue::from_static("Wed, 25 Nov 2026 10:00:00 GMT"),
        );
        h.insert(header::SERVER, HeaderValue::from_static("upstream"));
        h
    };
    bencher
        .with_inputs(response)
        .bench_local_refs(|h| headers::rewrite_response(h, &id));
}

#[divan::bench]
fn host_guard(bencher: Bencher) {
    let guard = HostGuard::new(
        "127.0.0.1:8080"
            .parse()
            .unwrap_or(std::net::SocketAddr::from(([127, 0, 0, 1], 8080))),
        &["bi.internal".into()],
    );
    bencher.bench_local(|| black_box(guard.accepts_bytes(black_box(b"LocalHost:8080"))));
}

/// Finding the client of a key: one hash lookup, whatever the number of clients.
#[divan::bench(args = [1, 100, 10_000])]
fn client_lookup(bencher: Bencher, clients: usize) {
    let specs: Vec<ClientSpec> = (0..clients)
        .map(|i| ClientSpec {
            name: format!("client-{i}"),
            identity: ClientIdentity::Key(Secret::new(format!("key-{i}-0123456789abcdef"))),
            routes: Scope::All,
            delegates: Scope::All,
            limits: ClientLimits::default(),
        })
        .collect();
    let clients = Clients::new(&specs, &[], None);
    let mut h = client_headers();
    h.insert(
        header::AUTHORIZATION,
        HeaderValue::from_static("Bearer key-0-0123456789abcdef"),
    );
    bencher.bench_local(|| black_box(clients.identify(black_box(&h), None).is_ok()));
}

#[divan::bench]
fn request_id(bencher: Bencher) {
    let ids = RequestIds::default();
    let h = client_headers();
    bencher.bench_local(|| black_box(ids.for_request(black_box(&h))));
}
