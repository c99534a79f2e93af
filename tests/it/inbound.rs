//! Who may talk to the proxy: inbound API keys (Bearer or Basic password, stripped before
//! forwarding), HTTPS towards clients with an optional client-certificate check and a certificate
//! that a reload renews, and the cap on concurrent connections.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use crate::support::pki::{Ca, Leaf};
use crate::support::process::Scratch;
use crate::support::tokio;
use crate::support::{Proxy, TestConfig, client, file, simulator};
use base64::Engine as _;
use http::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const KEY_ONE: &str = "bi-key-0123456789abcdef";
const KEY_TWO: &str = "tableau:key/with+odd=chars";

#[tokio::test]
async fn api_keys_admit_bearer_and_basic_and_are_never_forwarded() {
    let dir = Scratch::new("api-keys");
    let one = dir.write("one", &format!("{KEY_ONE}\n"));
    let two = dir.write("two", KEY_TWO);
    let proxy = Proxy::builder()
        .set("listen.api_keys", vec![file(&one), file(&two)])
        .spawn()
        .await;
    let http = client();
    let url = proxy.url("/v1/teams");

    // No key, a wrong key, a key in the wrong place: 401 before any route is looked up.
    for request in [
        http.get(&url),
        http.get(proxy.url("/no/such/route")),
        http.get(&url).bearer_auth("bi-key-0123456789abcde"),
        http.get(&url).basic_auth(KEY_ONE, None::<&str>),
        http.get(&url)
            .header("Proxy-Authorization", format!("Bearer {KEY_ONE}")),
        http.get(&url).header("X-Api-Key", KEY_ONE),
    ] {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        let challenges: Vec<_> = r
            .headers()
            .get_all("www-authenticate")
            .iter()
            .map(|v| v.to_str().unwrap().to_string())
            .collect();
        assert!(
            challenges.iter().any(|c| c.starts_with("Bearer ")),
            "{challenges:?}"
        );
        assert!(
            challenges.iter().any(|c| c.starts_with("Basic ")),
            "{challenges:?}"
        );
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["error"], "unauthorized");
        assert!(body["request_id"].as_str().is_some_and(|id| !id.is_empty()));
        let text = body.to_string();
        assert!(!text.contains(KEY_ONE) && !text.contains("abcde"), "{text}");
    }
    assert_eq!(
        proxy.sim.api_requests(),
        0,
        "a refused request reached the API"
    );
    // A refused client does not keep its connection: the proxy closes it after the 401
    // (long before the 10 s keep-alive limit).
    let answer = tokio::time::timeout(
        Duration::from_secs(5),
        crate::support::raw(
            proxy.addr,
            "GET /v1/teams HTTP/1.1\r\nHost: localhost\r\n\r\n",
        ),
    )
    .await
    .expect("the connection of a refused client was kept open");
    assert_eq!(crate::support::raw_status(&answer), 401);
    assert!(
        answer.to_ascii_lowercase().contains("connection: close"),
        "{answer}"
    );

    // Both schemes, both keys.
    for request in [
        http.get(&url).bearer_auth(KEY_ONE),
        http.get(&url).basic_auth("powerbi", Some(KEY_TWO)),
        http.get(&url).basic_auth("", Some(KEY_ONE)),
    ] {
        let r = request.send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        assert!(r.text().await.unwrap().contains("teams"));
    }

    // The upstream saw the proxy's token only: no key in any header.
    let seen = proxy.sim.requests();
    assert_eq!(seen.len(), 3);
    let issued = proxy.sim.issued_tokens();
    let basic = base64::engine::general_purpose::STANDARD;
    for request in &seen {
        let auth: Vec<_> = request.headers.get_all("authorization").iter().collect();
        assert_eq!(auth.len(), 1);
        assert_eq!(
            auth[0].to_str().unwrap(),
            format!("Bearer {}", issued[0].token)
        );
        for (name, value) in &request.headers {
            let value = String::from_utf8_lossy(value.as_bytes());
            for secret in [
                KEY_ONE.to_string(),
                KEY_TWO.to_string(),
                basic.encode(format!("powerbi:{KEY_TWO}")),
            ] {
                assert!(!value.contains(&secret), "{name} carried a key upstream");
            }
        }
    }
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("status=\"401\""), "{metrics}");
}

/// A client trusting only `ca`, with an optional client certificate, that reaches `localhost`
/// at the proxy's address.
fn tls_client(ca: &Ca, identity: Option<&Leaf>, addr: SocketAddr) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(ca.client_config(identity))
        .resolve("localhost", addr)
        .build()
        .unwrap()
}

/// GET `url` through a TLS client trusting only `ca`.
async fn https_get(ca: &Ca, addr: SocketAddr, url: &str) -> reqwest::Result<reqwest::Response> {
    tls_client(ca, None, addr).get(url).send().await
}

/// Writes a certificate for localhost signed by `ca` to `dir/cert.pem` and `dir/key.pem`.
fn write_server_cert(dir: &Scratch, ca: &Ca) {
    let leaf = ca.leaf("localhost");
    dir.write("cert.pem", &leaf.cert_pem);
    dir.write("key.pem", &leaf.key_pem);
}

/// HTTPS towards clients with the certificate and key that [`write_server_cert`] puts in `dir`.
fn listen_tls(dir: &Scratch) -> TestConfig {
    let file = |name: &str| dir.0.join(name).display().to_string();
    TestConfig::new()
        .set("listen.tls.cert_file", file("cert.pem"))
        .set("listen.tls.key_file", file("key.pem"))
}

#[tokio::test]
async fn https_listener_speaks_h1_and_h2_and_a_reload_renews_its_certificate() {
    let dir = Scratch::new("listen-tls");
    let first = Ca::new();
    write_server_cert(&dir, &first);
    let proxy = Proxy::builder()
        .config(listen_tls(&dir))
        .config_file_in(&dir)
        .signal_only()
        .spawn()
        .await;
    let url = format!("https://localhost:{}/v1/teams", proxy.addr.port());

    let h2 = tls_client(&first, None, proxy.addr);
    let r = h2.get(&url).send().await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    assert_eq!(r.version(), http::Version::HTTP_2, "ALPN did not pick h2");
    assert!(r.text().await.unwrap().contains("teams"));
    let h1 = reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured({
            let mut c = first.client_config(None);
            c.alpn_protocols = vec![b"http/1.1".to_vec()];
            c
        })
        .resolve("localhost", proxy.addr)
        .http1_only()
        .build()
        .unwrap();
    let r = h1.get(&url).send().await.unwrap();
    assert_eq!(
        (r.status(), r.version()),
        (StatusCode::OK, http::Version::HTTP_11)
    );

    // Plain HTTP on the TLS port gets no answer from the proxy, let alone a proxied one.
    let plain = client().get(proxy.url("/v1/teams")).send().await;
    assert!(plain.is_err(), "plain HTTP was answered: {plain:?}");
    assert_eq!(proxy.sim.api_requests(), 2);

    // A renewed certificate from another CA: new connections present it after SIGHUP.
    let second = Ca::new();
    write_server_cert(&dir, &second);
    proxy.reload().await.unwrap();
    let r = https_get(&second, proxy.addr, &url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let stale = https_get(&first, proxy.addr, &url).await;
    assert!(stale.is_err(), "the old certificate is still presented");

    // Turning HTTPS off in place is refused: the port stays HTTPS until a restart.
    proxy.rewrite_config(TestConfig::new());
    let refused = proxy.reload().await.unwrap_err();
    assert!(refused.contains("[listen.tls]"), "{refused}");
    let r = https_get(&second, proxy.addr, &url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    proxy.rewrite_config(listen_tls(&dir));

    // A broken key file on reload keeps the running certificate.
    dir.write("key.pem", "not a key");
    let refused = proxy.reload().await.unwrap_err();
    assert!(refused.contains("listen.tls.key_file"), "{refused}");
    let r = https_get(&second, proxy.addr, &url).await.unwrap();
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn client_ca_file_requires_a_client_certificate_from_that_ca() {
    let dir = Scratch::new("listen-mtls");
    let server_ca = Ca::new();
    write_server_cert(&dir, &server_ca);
    let clients = Ca::new();
    let client_ca = dir.write("clients.pem", &clients.pem());
    let tls = listen_tls(&dir).set("listen.tls.client_ca_file", client_ca.display().to_string());
    let proxy = Proxy::builder().config(tls).spawn().await;
    let url = format!("https://localhost:{}/v1/teams", proxy.addr.port());

    let good = clients.leaf("powerbi-gateway");
    let r = tls_client(&server_ca, Some(&good), proxy.addr)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let stranger = Ca::new().leaf("powerbi-gateway");
    for identity in [None, Some(&stranger)] {
        let r = tls_client(&server_ca, identity, proxy.addr)
            .get(&url)
            .send()
            .await;
        assert!(
            r.is_err(),
            "answered without a trusted client certificate: {r:?}"
        );
    }
    assert_eq!(proxy.sim.api_requests(), 1);
}

/// Sends a GET on a fresh connection and returns the stream, without reading the answer.
async fn send_get(addr: SocketAddr, path: &str) -> TcpStream {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    let request = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await.unwrap();
    stream
}

#[tokio::test]
async fn connections_beyond_max_connections_wait_and_those_in_flight_finish() {
    let sim = simulator().await;
    sim.hold_exports();
    let proxy = Arc::new(
        Proxy::builder()
            .sim(sim)
            .set("listen.max_connections", 2)
            .spawn()
            .await,
    );
    let rows = 3000;
    let export = format!("/v1/costs/export?rows={rows}");
    let mut first = client().get(proxy.url(&export)).send().await.unwrap();
    let mut second = client().get(proxy.url(&export)).send().await.unwrap();
    let mut received = Vec::new();
    for export in [&mut first, &mut second] {
        received.push(export.chunk().await.unwrap().unwrap().to_vec());
    }

    // Both slots are taken: a third client is accepted by the kernel but not served.
    let mut third = send_get(proxy.addr, "/v1/teams").await;
    let mut byte = [0u8; 1];
    let early = tokio::time::timeout(Duration::from_millis(300), third.read(&mut byte)).await;
    assert!(
        early.is_err(),
        "a third connection was served beyond the cap"
    );
    // The admin listener is not behind the cap.
    let health = client()
        .get(proxy.admin_url("/healthz"))
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    assert!(proxy.metrics().await.contains("connections_open 2\n"));

    // The two in flight finish whole; then the third is served.
    proxy.sim.release_exports();
    for (mut export, mut body) in [first, second].into_iter().zip(received) {
        while let Some(chunk) = export.chunk().await.unwrap() {
            body.extend_from_slice(&chunk);
        }
        let lines = body.iter().filter(|b| **b == b'\n').count();
        assert_eq!(lines, rows + 1, "an export in flight was cut short");
    }
    let mut answer = Vec::new();
    third.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
}
