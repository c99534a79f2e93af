//! Forwarding: exact paths and queries, Host, header hygiene, request ids, prefix routes, h2c,
//! CONNECT and the inbound target checks.

use crate::support::tokio;
use crate::support::{Proxy, client, raw, raw_status, route};

#[tokio::test]
async fn path_and_query_pass_byte_for_byte_and_host_is_the_upstream() {
    let proxy = Proxy::builder().spawn().await;
    let pq = "/v1/echo?b=2&a=%2F%20x&c&d=%C3%A9+e&a=1";
    let r = proxy.get(pq).await;
    assert_eq!(r.status(), 200);
    let seen = proxy.sim.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].path_and_query, pq);
    assert_eq!(
        seen[0].headers["host"],
        proxy.sim.api_addr().to_string().as_str()
    );
    assert_eq!(seen[0].method, "GET");
}

#[tokio::test]
async fn hop_by_hop_and_client_credentials_are_removed_and_bearer_added() {
    let proxy = Proxy::builder().spawn().await;
    let request = format!(
        "GET /v1/echo?x=1 HTTP/1.1\r\n\
         Host: localhost:{port}\r\n\
         Connection: close, X-Hop-Secret\r\n\
         X-Hop-Secret: do-not-forward\r\n\
         Keep-Alive: timeout=5\r\n\
         Proxy-Connection: keep-alive\r\n\
         TE: trailers\r\n\
         Trailer: X-Sum\r\n\
         Upgrade: h2c\r\n\
         Proxy-Authorization: Basic cHJveHk6c2VjcmV0\r\n\
         Authorization: Basic d29ya2Jvb2s6c2VjcmV0\r\n\
         X-Request-Id: bi-refresh-42\r\n\
         Accept: application/json\r\n\
         X-Custom: kept\r\n\r\n",
        port = proxy.addr.port()
    );
    let answer = raw(proxy.addr, &request).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert!(
        answer
            .to_ascii_lowercase()
            .contains("x-request-id: bi-refresh-42"),
        "{answer}"
    );

    let seen = proxy.sim.requests();
    let h = &seen[0].headers;
    for gone in [
        "connection",
        "x-hop-secret",
        "keep-alive",
        "proxy-connection",
        "te",
        "trailer",
        "upgrade",
        "proxy-authorization",
    ] {
        assert!(!h.contains_key(gone), "{gone} was forwarded");
    }
    let auth: Vec<_> = h.get_all("authorization").iter().collect();
    assert_eq!(auth.len(), 1);
    let token = auth[0].to_str().unwrap().strip_prefix("Bearer sim_");
    assert!(token.is_some(), "upstream got {:?}", auth[0]);
    assert_eq!(h["x-request-id"], "bi-refresh-42");
    assert_eq!(h["accept"], "application/json");
    assert_eq!(h["x-custom"], "kept");
    assert!(!h.contains_key("x-forwarded-for"));
}

#[tokio::test]
async fn hop_by_hop_headers_of_the_answer_are_removed() {
    let proxy = Proxy::builder().spawn().await;
    let r = proxy.get("/v1/echo?hop=1").await;
    assert_eq!(r.status(), 200);
    let h = r.headers();
    assert!(
        !h.contains_key("x-sim-hop"),
        "a header named by Connection came through"
    );
    assert!(!h.contains_key("keep-alive"));
    assert!(!h.contains_key("proxy-connection"));
    assert_eq!(h["x-sim-end-to-end"], "1");
}

#[tokio::test]
async fn cookies_go_neither_way() {
    let proxy = Proxy::builder().spawn().await;
    let r = client()
        .get(proxy.url("/v1/echo?cookie=1"))
        .header("cookie", "grafana_session=s3cret; other=1")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(!r.headers().contains_key("set-cookie"), "{:?}", r.headers());
    let sent = proxy.sim.requests();
    assert_eq!(sent.len(), 1);
    assert!(
        !sent[0].headers.contains_key("cookie"),
        "{:?}",
        sent[0].headers
    );
}

#[tokio::test]
async fn request_id_is_generated_when_absent_and_echoed() {
    let proxy = Proxy::builder().spawn().await;
    let r = proxy.get("/v1/teams").await;
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(id.len(), 16);
    assert_eq!(proxy.sim.requests()[0].headers["x-request-id"], id.as_str());
    let other = proxy.get("/v1/teams").await;
    assert_ne!(other.headers()["x-request-id"].to_str().unwrap(), id);
}

#[tokio::test]
async fn prefix_is_stripped_and_upstream_path_prepended() {
    let proxy = Proxy::builder()
        .route(route("/"))
        .route(route("/reports").upstream_path("/v1/costs"))
        .spawn()
        .await;
    let r = proxy.get("/reports/by-service?month=2026-09").await;
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["month"], "2026-09");
    // `/reportsx` is not under `/reports`: it goes to `/` unchanged.
    proxy.get("/reportsx/y").await;
    let seen: Vec<_> = proxy
        .sim
        .requests()
        .into_iter()
        .map(|r| r.path_and_query)
        .collect();
    assert_eq!(seen, ["/v1/costs/by-service?month=2026-09", "/reportsx/y"]);
}

#[tokio::test]
async fn h2c_clients_are_served() {
    let proxy = Proxy::builder().spawn().await;
    let h2 = crate::support::h2_client();
    let r = h2
        .get(proxy.url("/v1/costs/by-month?from=2026-01&to=2026-03"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.version(), reqwest::Version::HTTP_2);
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["months"].as_array().unwrap().len(), 3);
    assert_eq!(
        proxy.sim.requests()[0].path_and_query,
        "/v1/costs/by-month?from=2026-01&to=2026-03"
    );
}

#[tokio::test]
async fn connect_and_trace_are_refused_with_405() {
    let proxy = Proxy::builder().spawn().await;
    for request in [
        "CONNECT api.azure-costs.com:443 HTTP/1.1\r\nHost: api.azure-costs.com:443\r\nConnection: close\r\n\r\n",
        // An API that implements TRACE would echo the injected token back to the client.
        "TRACE /v1/teams HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    ] {
        let answer = raw(proxy.addr, request).await;
        assert_eq!(raw_status(&answer), 405, "{answer}");
        assert!(
            answer.contains("\"error\":\"method_not_allowed\""),
            "{answer}"
        );
        assert!(
            !answer.to_ascii_lowercase().contains("allow: trace"),
            "{answer}"
        );
    }
    assert_eq!(proxy.sim.api_requests(), 0);
}

#[tokio::test]
async fn absolute_form_for_another_host_is_refused() {
    let proxy = Proxy::builder().spawn().await;
    let answer = raw(
        proxy.addr,
        "GET http://attacker.example/steal HTTP/1.1\r\nHost: attacker.example\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert!(answer.contains("forbidden_target"), "{answer}");
    assert_eq!(proxy.sim.api_requests(), 0);
}

#[tokio::test]
async fn absolute_form_for_another_port_on_this_host_is_refused() {
    // A client that uses the sidecar as its forward proxy names other local programs this way.
    let proxy = Proxy::builder().spawn().await;
    let other = proxy.addr.port().wrapping_add(1).max(1);
    let answer = raw(
        proxy.addr,
        &format!(
            "GET http://127.0.0.1:{other}/v1/teams HTTP/1.1\r\nHost: 127.0.0.1:{other}\r\n\
             Connection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert!(answer.contains("forbidden_target"), "{answer}");
    assert_eq!(proxy.sim.api_requests(), 0);
    // The proxy's own authority in absolute form is served.
    let own = proxy.addr;
    let answer = raw(
        proxy.addr,
        &format!("GET http://{own}/v1/teams HTTP/1.1\r\nHost: {own}\r\nConnection: close\r\n\r\n"),
    )
    .await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
    assert_eq!(proxy.sim.api_requests(), 1);
}

#[tokio::test]
async fn foreign_host_header_is_refused() {
    let proxy = Proxy::builder().spawn().await;
    let r = client()
        .get(proxy.url("/v1/teams"))
        .header("host", "rebind.attacker.example")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "forbidden_host");
    assert_eq!(proxy.sim.api_requests(), 0);
}

#[tokio::test]
async fn unmatched_path_is_no_route_with_json_body() {
    let proxy = Proxy::builder().route(route("/contoso")).spawn().await;
    let r = proxy.get("/contosox/v1").await;
    assert_eq!(r.status(), 404);
    assert_eq!(r.headers()["content-type"], "application/json");
    let id = r.headers()["x-request-id"].to_str().unwrap().to_string();
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "no_route");
    assert_eq!(body["request_id"], id.as_str());
    assert!(body["message"].as_str().unwrap().len() > 5);
}

#[tokio::test]
async fn dot_segments_are_refused() {
    let proxy = Proxy::builder().spawn().await;
    let answer = raw(
        proxy.addr,
        "GET /v1/../admin HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await;
    assert_eq!(raw_status(&answer), 400, "{answer}");
    assert_eq!(proxy.sim.api_requests(), 0);
}

#[tokio::test]
async fn encoded_separators_and_tomcat_dots_are_refused() {
    let proxy = Proxy::builder()
        .route(route("/customers/contoso").upstream_path("/teams/contoso"))
        .spawn()
        .await;
    for path in [
        "/customers/contoso/..%2Ffabrikam/v1/teams",
        "/customers/contoso/..%2ffabrikam/v1/teams",
        "/customers/contoso/..%5cfabrikam/v1/teams",
        "/customers/contoso/..%5Cfabrikam/v1/teams",
        "/customers/contoso/..\\fabrikam/v1/teams",
        "/customers/contoso/..;/fabrikam/v1/teams",
        "/customers/contoso/%2e%2e/fabrikam/v1/teams",
    ] {
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
        let answer = raw(proxy.addr, &request).await;
        assert_eq!(raw_status(&answer), 400, "{path}: {answer}");
    }
    assert_eq!(proxy.sim.api_requests(), 0);
    // Decoded once: a double-encoded slash is a literal `%2F`, forwarded byte for byte (the
    // simulator knows no such path: 404 from the upstream, not 400 from the proxy).
    let r = proxy.get("/customers/contoso/..%252Ffabrikam").await;
    assert_eq!(r.status(), 404);
    assert_eq!(proxy.sim.api_requests(), 1);
}

#[tokio::test]
async fn oversized_request_head_gets_431() {
    let proxy = Proxy::builder().spawn().await;
    let big = "a".repeat(70 * 1024);
    let answer = raw(
        proxy.addr,
        &format!(
            "GET /v1/teams HTTP/1.1\r\nHost: localhost\r\nX-Big: {big}\r\nConnection: close\r\n\r\n"
        ),
    )
    .await;
    assert_eq!(
        raw_status(&answer),
        431,
        "{}",
        &answer[..answer.len().min(200)]
    );
    assert_eq!(proxy.sim.api_requests(), 0);
}

#[tokio::test]
async fn upstream_connections_are_pooled_and_reused() {
    let proxy = Proxy::builder().spawn().await;
    for _ in 0..20 {
        let r = proxy.get("/v1/teams").await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(
        proxy.sim.api_connections(),
        1,
        "one after another: one connection"
    );
    for _ in 0..5 {
        // Two alike would share one upstream request (coalescing).
        let (a, b, c) = tokio::join!(
            proxy.get("/v1/teams"),
            proxy.get("/v1/costs/by-service"),
            proxy.get("/v1/teams?again"),
        );
        for r in [a, b, c] {
            assert_eq!(r.status(), 200);
            r.bytes().await.unwrap();
        }
    }
    let used = proxy.sim.api_connections();
    assert!(
        used <= 3,
        "three at a time: at most three connections, saw {used}"
    );
    assert_eq!(proxy.sim.api_requests(), 35);
}

#[tokio::test]
async fn after_the_upstream_closes_a_connection_requests_go_on_a_new_one() {
    let proxy = Proxy::builder().spawn().await;
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap();
    // The upstream says `Connection: close`: the proxy neither passes that on nor sends the
    // next request on the closing connection.
    let r = proxy.get("/v1/echo?close=1").await;
    assert_eq!(r.status(), 200);
    assert!(r.headers().get("connection").is_none());
    r.bytes().await.unwrap();
    for _ in 0..5 {
        let r = proxy.get("/v1/teams").await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
    }
    assert_eq!(proxy.sim.api_connections(), 2);
    assert_eq!(proxy.sim.api_requests(), 7);
}
