//! Coalescing: identical GET/HEAD requests in flight at once share one upstream request; the
//! rest (other query, team or `Accept`, a body, `no-cache`, answers above `max_entry`) do not,
//! and no request that leaves cancels another.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use ::tokio::io::AsyncWriteExt;
use ::tokio::net::TcpStream;

use crate::support::tokio;
use crate::support::{Proxy, client, route};

/// Sends `request` (a reqwest builder) in a task of its own: status, `X-Cache`, request id,
/// body.
fn send(
    request: reqwest::RequestBuilder,
) -> tokio::task::JoinHandle<(u16, String, String, Vec<u8>)> {
    tokio::spawn(async move {
        let r = request.send().await.unwrap();
        let header = |name: &str| {
            r.headers()
                .get(name)
                .map_or(String::new(), |v| v.to_str().unwrap().to_string())
        };
        let (cache, id) = (header("x-cache"), header("x-request-id"));
        let status = r.status().as_u16();
        (status, cache, id, r.bytes().await.unwrap().to_vec())
    })
}

#[tokio::test]
async fn twenty_identical_gets_are_one_upstream_request() {
    let proxy = Proxy::builder().spawn().await;
    // The first answer takes long enough for the others to arrive while it is in flight.
    proxy.sim.set_api_delay(Duration::from_millis(300));
    let c = client();
    let tasks: Vec<_> = (0..20)
        .map(|_| send(c.get(proxy.url("/v1/costs/by-service?month=2026-10"))))
        .collect();
    let mut answers = Vec::new();
    for task in tasks {
        answers.push(task.await.unwrap());
    }
    assert_eq!(proxy.sim.requests().len(), 1, "one upstream request");
    let ids: HashSet<_> = answers.iter().map(|a| a.2.clone()).collect();
    assert_eq!(ids.len(), 20, "each its own request id");
    let misses = answers.iter().filter(|a| a.1 == "MISS").count();
    let coalesced = answers.iter().filter(|a| a.1 == "COALESCED").count();
    assert_eq!((misses, coalesced), (1, 19));
    for (status, _, _, body) in &answers {
        assert_eq!(*status, 200);
        assert_eq!(body, &answers[0].3, "the same body");
    }
    // Later requests go upstream again: nothing is kept once the flight landed.
    proxy.sim.set_api_delay(Duration::ZERO);
    let again = send(c.get(proxy.url("/v1/costs/by-service?month=2026-10"))).await;
    assert_eq!(again.unwrap().1, "MISS");
    assert_eq!(proxy.sim.requests().len(), 2);
    let metrics = proxy.metrics().await;
    for line in [
        "azure_costs_proxy_cache_total{route=\"/\",result=\"miss\"} 2",
        "azure_costs_proxy_cache_total{route=\"/\",result=\"coalesced\"} 19",
        "azure_costs_proxy_cache_total{route=\"/\",result=\"bypass\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in\n{metrics}");
    }
}

#[tokio::test]
async fn requests_differing_in_query_team_or_accept_are_separate() {
    let proxy = Proxy::builder()
        .route(route("/teams/{delegate}").delegates(&["TEAM-CONTOSO", "TEAM-FABRIKAM"]))
        .route(route("/"))
        .spawn()
        .await;
    proxy.sim.set_api_delay(Duration::from_millis(300));
    let c = client();
    let tasks = [
        send(c.get(proxy.url("/v1/teams?a"))),
        send(c.get(proxy.url("/v1/teams?b"))),
        send(c.get(proxy.url("/v1/teams?a")).header("accept", "text/csv")),
        send(
            c.get(proxy.url("/v1/teams?a"))
                .header("accept-language", "de"),
        ),
        send(c.get(proxy.url("/teams/TEAM-CONTOSO/v1/teams?a"))),
        send(c.get(proxy.url("/teams/TEAM-FABRIKAM/v1/teams?a"))),
        send(c.head(proxy.url("/v1/teams?a"))),
    ];
    // The simulator knows no HEAD: 404, from the API all the same.
    let statuses = [200, 200, 200, 200, 200, 200, 404];
    for (task, want) in tasks.into_iter().zip(statuses) {
        let (status, cache, ..) = task.await.unwrap();
        assert_eq!((status, cache.as_str()), (want, "MISS"));
    }
    assert_eq!(proxy.sim.requests().len(), 7);
}

#[tokio::test]
async fn posts_no_cache_and_coalesce_off_bypass() {
    let proxy = Proxy::builder()
        .route(route("/off").set("coalesce", false))
        .route(route("/"))
        .spawn()
        .await;
    proxy.sim.set_api_delay(Duration::from_millis(200));
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(send(c.post(proxy.url("/v1/echo")).body("{}")));
        tasks.push(send(
            c.get(proxy.url("/v1/teams"))
                .header("cache-control", "no-cache"),
        ));
        tasks.push(send(c.get(proxy.url("/off/v1/teams"))));
        tasks.push(send(
            c.get(proxy.url("/v1/teams"))
                .header("if-none-match", "\"x\""),
        ));
    }
    for task in tasks {
        let (status, cache, ..) = task.await.unwrap();
        assert_eq!((status, cache.as_str()), (200, "BYPASS"));
    }
    assert_eq!(proxy.sim.requests().len(), 12);
}

#[tokio::test]
async fn answers_above_max_entry_stream_to_each_request_on_its_own() {
    let proxy = Proxy::builder()
        .set("cache.max_entry", "4KiB")
        .spawn()
        .await;
    proxy.sim.set_api_delay(Duration::from_millis(300));
    let c = client();
    let url = proxy.url("/v1/costs/export?bytes=100000");
    let tasks: Vec<_> = (0..3).map(|_| send(c.get(&url))).collect();
    for task in tasks {
        let (status, cache, _, body) = task.await.unwrap();
        assert_eq!((status, cache.as_str(), body.len()), (200, "MISS", 100_000));
    }
    assert_eq!(
        proxy.sim.requests().len(),
        3,
        "the followers went on their own"
    );
}

/// Opens a raw connection that sends `GET path` and leaves it unread.
async fn raw_get(proxy: &Proxy, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(proxy.addr).await.unwrap();
    // `Accept` as reqwest sends it: the same request as the others.
    let head = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nAccept: */*\r\n\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn a_follower_leaving_cancels_nobody() {
    let proxy = Proxy::builder().spawn().await;
    proxy.sim.set_api_delay(Duration::from_millis(400));
    let c = client();
    let leader = send(c.get(proxy.url("/v1/teams")));
    proxy.wait_for_api_requests(1).await;
    let leaving = raw_get(&proxy, "/v1/teams").await;
    let staying = send(c.get(proxy.url("/v1/teams")));
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(leaving);
    let (status, cache, ..) = leader.await.unwrap();
    assert_eq!((status, cache.as_str()), (200, "MISS"));
    let (status, cache, ..) = staying.await.unwrap();
    assert_eq!((status, cache.as_str()), (200, "COALESCED"));
    assert_eq!(proxy.sim.requests().len(), 1);
}

#[tokio::test]
async fn a_leader_that_reads_nothing_holds_its_followers_no_longer_than_the_upstream_timeout() {
    let proxy = Proxy::builder()
        .set("cache.max_entry", "64MiB")
        .set("upstream.timeout", "1s")
        .spawn()
        .await;
    proxy.sim.set_api_delay(Duration::from_millis(200));
    // Far more than the sockets between hold: the leader's answer stops half-way.
    let path = "/v1/costs/export?bytes=40000000";
    let _stalled = raw_get(&proxy, path).await;
    proxy.wait_for_api_requests(1).await;
    let started = Instant::now();
    let (status, cache, _, body) = send(client().get(proxy.url(path))).await.unwrap();
    assert_eq!(
        (status, cache.as_str(), body.len()),
        (200, "MISS", 40_000_000)
    );
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "it waited for the leader first"
    );
    assert_eq!(proxy.sim.requests().len(), 2);
}

#[tokio::test]
async fn the_leader_leaving_cancels_nobody() {
    let proxy = Proxy::builder().spawn().await;
    proxy.sim.set_api_delay(Duration::from_millis(400));
    let c = client();
    let leader = raw_get(&proxy, "/v1/teams").await;
    proxy.wait_for_api_requests(1).await;
    let followers: Vec<_> = (0..2)
        .map(|_| send(c.get(proxy.url("/v1/teams"))))
        .collect();
    tokio::time::sleep(Duration::from_millis(50)).await;
    drop(leader);
    for follower in followers {
        let (status, cache, ..) = follower.await.unwrap();
        assert_eq!(status, 200, "a follower is never cancelled by its leader");
        assert_eq!(cache, "MISS", "it went upstream on its own");
    }
    // The leader's request was cancelled with its client; each follower then went alone.
    assert_eq!(proxy.sim.requests().len(), 3);
}
