//! The `Host` rules on both listeners: one strict `host[:port]` parser (`[::1]evil` and `[::1`
//! are foreign hosts), exactly one `Host` on HTTP/1.1, and the admin listener's own
//! DNS-rebinding guard (IP literals and the data plane's names only).

use crate::support::tokio;
use crate::support::{Proxy, raw, raw_status};

/// The JSON error code in a raw answer.
fn code(answer: &str) -> String {
    let body = answer.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json: serde_json::Value = serde_json::from_str(body).unwrap_or_default();
    json["error"].as_str().unwrap_or_default().to_string()
}

/// A raw GET of `/v1/teams` with these header lines.
fn get(version: &str, headers: &str) -> String {
    format!("GET /v1/teams HTTP/{version}\r\n{headers}Connection: close\r\n\r\n")
}

#[tokio::test]
async fn malformed_host_values_are_foreign_hosts() {
    let proxy = Proxy::builder()
        .set("listen.allowed_hosts", vec!["*"])
        .spawn()
        .await;
    // Even with every name allowed, a value that is not host[:port] names no host.
    for host in ["[::1]evil.example", "[::1", "localhost:99999", "local host"] {
        let answer = raw(proxy.addr, &get("1.1", &format!("Host: {host}\r\n"))).await;
        assert_eq!(raw_status(&answer), 403, "{host}: {answer}");
        assert_eq!(code(&answer), "forbidden_host", "{host}: {answer}");
    }
    assert_eq!(proxy.sim.api_requests(), 0);
    let answer = raw(proxy.addr, &get("1.1", "Host: [::1]:8080\r\n")).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
}

#[tokio::test]
async fn http11_needs_exactly_one_host() {
    let proxy = Proxy::builder().spawn().await;
    for headers in [
        "",
        "Host: localhost\r\nHost: localhost\r\n",
        "Host: localhost\r\nHost: evil.example\r\n",
    ] {
        let answer = raw(proxy.addr, &get("1.1", headers)).await;
        assert_eq!(raw_status(&answer), 400, "{headers:?}: {answer}");
        assert_eq!(code(&answer), "bad_request", "{headers:?}: {answer}");
        assert!(answer.contains("Host"), "{answer}");
    }
    assert_eq!(proxy.sim.api_requests(), 0);
    // HTTP/1.0 has no Host requirement.
    let answer = raw(proxy.addr, &get("1.0", "")).await;
    assert_eq!(raw_status(&answer), 200, "{answer}");
}

#[tokio::test]
async fn the_admin_listener_refuses_rebound_names() {
    let proxy = Proxy::builder()
        .set("listen.allowed_hosts", vec!["bi.internal"])
        .spawn()
        .await;
    for path in ["/readyz", "/metrics", "/healthz"] {
        for host in ["evil.example", "evil.example:9090", "[::1]evil"] {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let answer = raw(proxy.admin, &request).await;
            assert_eq!(raw_status(&answer), 403, "{path} {host}: {answer}");
            assert_eq!(code(&answer), "forbidden_host", "{answer}");
            assert!(!answer.contains("default"), "{answer}");
        }
        let answer = raw(
            proxy.admin,
            &format!("GET {path} HTTP/1.1\r\nConnection: close\r\n\r\n"),
        )
        .await;
        assert_eq!(raw_status(&answer), 400, "{path} without Host: {answer}");
        // IP literals (probes, scrapers) and the data plane's names are served.
        for host in [
            proxy.admin.to_string(),
            "10.0.0.7:9090".into(),
            "[fd00::7]".into(),
            "localhost".into(),
            "bi.internal:9090".into(),
        ] {
            let request =
                format!("GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n");
            let answer = raw(proxy.admin, &request).await;
            assert_ne!(raw_status(&answer), 403, "{path} {host}: {answer}");
            assert_ne!(raw_status(&answer), 400, "{path} {host}: {answer}");
        }
    }
}
