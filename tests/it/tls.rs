//! TLS towards the STS and the API: `ca_file` adds trust roots, HTTP/2 is used where the upstream
//! offers it by ALPN, and an unknown certificate is refused (verification cannot be turned off).

use crate::support::Proxy;
use crate::support::pki::Ca;
use crate::support::tokio;
use azure_costs_proxy::simulator::Simulator;

/// A throwaway CA and a server configuration for `localhost` signed by it.
struct TestPki {
    ca_pem: String,
    server: rustls::ServerConfig,
}

fn pki() -> TestPki {
    let ca = Ca::new();
    TestPki {
        ca_pem: ca.pem(),
        server: ca.server_config(),
    }
}

fn write_ca(pem: &str) -> std::path::PathBuf {
    let path = std::env::temp_dir().join(format!(
        "acp-test-ca-{}-{:?}.pem",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::write(&path, pem).unwrap();
    path
}

#[tokio::test]
async fn https_upstream_and_sts_with_ca_file_speak_h2_where_offered() {
    let pki = pki();
    let sim = Simulator::builder()
        .api_tls(pki.server.clone())
        .sts_tls(pki.server)
        .spawn()
        .await
        .unwrap();
    assert!(sim.api_url().starts_with("https://localhost:"));
    let ca = write_ca(&pki.ca_pem);
    let proxy = Proxy::builder()
        .sim(sim)
        .set("upstream.ca_file", ca.display().to_string())
        .spawn()
        .await;
    let r = proxy.get("/v1/costs/by-service").await;
    assert_eq!(r.status(), 200);
    let seen = proxy.sim.requests();
    assert_eq!(
        seen[0].version,
        http::Version::HTTP_2,
        "ALPN did not pick h2"
    );
    assert_eq!(seen[0].path_and_query, "/v1/costs/by-service");
    assert_eq!(proxy.sim.issue_calls(), 1);
    // Concurrent requests share the one HTTP/2 connection.
    let (a, b, c, d) = tokio::join!(
        proxy.get("/v1/teams"),
        proxy.get("/v1/teams"),
        proxy.get("/v1/costs/by-service"),
        proxy.get("/v1/teams"),
    );
    for r in [a, b, c, d] {
        assert_eq!(r.status(), 200);
    }
    assert_eq!(proxy.sim.api_connections(), 1);
    // HTTP/2 names the upstream in :authority; no Host header goes along.
    for seen in proxy.sim.requests() {
        assert_eq!(seen.version, http::Version::HTTP_2);
        assert!(seen.headers.get("host").is_none(), "{:?}", seen.headers);
    }
    let _ = std::fs::remove_file(ca);
}

#[tokio::test]
async fn unknown_certificate_is_refused_without_ca_file() {
    let pki = pki();
    // The STS is plain loopback HTTP; only the API presents the untrusted certificate.
    let sim = Simulator::builder()
        .api_tls(pki.server)
        .spawn()
        .await
        .unwrap();
    let proxy = Proxy::builder().sim(sim).spawn().await;
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "upstream_unavailable");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("certificate"), "{message}");
    assert_eq!(proxy.sim.api_requests(), 0);
}

#[tokio::test]
async fn sts_with_unknown_certificate_is_unavailable() {
    let pki = pki();
    let sim = Simulator::builder()
        .sts_tls(pki.server)
        .spawn()
        .await
        .unwrap();
    let proxy = Proxy::builder().sim(sim).spawn().await;
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 503);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "sts_unavailable");
    assert_eq!(
        proxy.sim.issue_calls(),
        0,
        "the STS answered without a trusted handshake"
    );
}
