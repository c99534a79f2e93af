//! A central gateway: named clients (`[[clients]]`) recognised by key, key digest or TLS client
//! certificate, each held to its routes, teams and limits before any STS call or API request;
//! reloads that add or revoke a client on open connections.

use std::time::Duration;

use crate::support::pki::{Ca, Leaf};
use crate::support::process::Scratch;
use crate::support::tokio;
use crate::support::{Proxy, TestConfig, client, env, route, sha256_hex};
use azure_costs_proxy::simulator::Simulator;
use http::StatusCode;
use http_body_util::{BodyExt as _, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::support::config::client as client_entry;

const CONTOSO_KEY: &str = "contoso-key-5a1f0c9e77d2";
const FABRIKAM_KEY: &str = "fabrikam-key-0b9e4477aa31";
const OPS_KEY: &str = "ops-key-7d3c55e012ab9f";
const TEAMS: &str = "/teams/{delegate}";

/// Routes: one for every team, one fixed to Contoso, one on the partner's own token.
/// Clients: Contoso (key from the environment; its team on the team route, and its own route),
/// Fabrikam (only the digest of its key; every route, only its team), ops (everything).
fn gateway() -> TestConfig {
    TestConfig::new()
        .route(route(TEAMS).delegates(&["*"]))
        .route(route("/contoso").delegate("TEAM-CONTOSO"))
        .route(route("/partner"))
        .route(route("/listed/{delegate}").delegates(&["TEAM-CONTOSO", "TEAM-FABRIKAM"]))
        .client(
            client_entry("contoso")
                .key(env("CONTOSO_KEY"))
                .routes(&[TEAMS, "/contoso", "/listed/{delegate}"])
                .delegates(&["TEAM-CONTOSO"]),
        )
        .client(
            client_entry("fabrikam")
                .key_sha256(&sha256_hex(FABRIKAM_KEY))
                .delegates(&["TEAM-FABRIKAM"]),
        )
        .client(client_entry("ops").key(env("OPS_KEY")))
        .env_var("CONTOSO_KEY", CONTOSO_KEY)
        .env_var("OPS_KEY", OPS_KEY)
}

/// What the proxy has spent so far: STS calls and API requests.
fn spent(sim: &Simulator) -> (usize, usize) {
    (sim.sts_calls(), sim.api_requests())
}

async fn get(proxy: &Proxy, path: &str, key: Option<&str>) -> (StatusCode, serde_json::Value) {
    let mut request = client().get(proxy.url(path));
    if let Some(key) = key {
        request = request.bearer_auth(key);
    }
    let r = request.send().await.unwrap();
    let status = r.status();
    (status, r.json().await.unwrap_or_default())
}

/// Contoso's refusal on `path`: status, code and message, another team's name made alike.
async fn message(proxy: &Proxy, path: &str) -> (u16, serde_json::Value, String) {
    let (status, body) = get(proxy, path, Some(CONTOSO_KEY)).await;
    let text = body["message"].as_str().unwrap_or_default();
    let text = text
        .replace("WOODGROVE", "OTHER")
        .replace("FABRIKAM", "OTHER");
    (status.as_u16(), body["error"].clone(), text)
}

#[tokio::test]
async fn clients_use_only_their_routes_and_teams_and_refusals_cost_nothing() {
    let proxy = Proxy::builder().config(gateway()).spawn().await;
    // Each client reaches its own: the answer is its team's.
    for (path, key, team) in [
        ("/teams/TEAM-CONTOSO/v1/teams", CONTOSO_KEY, "TEAM-CONTOSO"),
        ("/contoso/v1/teams", CONTOSO_KEY, "TEAM-CONTOSO"),
        (
            "/teams/TEAM-FABRIKAM/v1/teams",
            FABRIKAM_KEY,
            "TEAM-FABRIKAM",
        ),
        ("/teams/TEAM-WOODGROVE/v1/teams", OPS_KEY, "TEAM-WOODGROVE"),
    ] {
        let (status, body) = get(&proxy, path, Some(key)).await;
        assert_eq!(status, StatusCode::OK, "{path}");
        assert_eq!(body["teams"][0]["id"], team, "{path}: {body}");
    }
    // Routes without a team are governed by `routes` alone.
    assert_eq!(
        get(&proxy, "/partner/v1/teams", Some(FABRIKAM_KEY)).await.0,
        200
    );

    let before = spent(&proxy.sim);
    for (path, key, status, code) in [
        // Another customer's team, by the path or by the route's fixed delegate.
        (
            "/teams/TEAM-FABRIKAM/v1/teams",
            Some(CONTOSO_KEY),
            403,
            "forbidden_delegate",
        ),
        (
            "/teams/TEAM-CONTOSO/v1/teams",
            Some(FABRIKAM_KEY),
            403,
            "forbidden_delegate",
        ),
        (
            "/contoso/v1/teams",
            Some(FABRIKAM_KEY),
            403,
            "forbidden_delegate",
        ),
        // A route outside the client's routes.
        (
            "/partner/v1/teams",
            Some(CONTOSO_KEY),
            403,
            "forbidden_route",
        ),
        // No key, a wrong key, the digest in place of the key.
        ("/contoso/v1/teams", None, 401, "unauthorized"),
        (
            "/contoso/v1/teams",
            Some("contoso-key-5a1f0c9e77d3"),
            401,
            "unauthorized",
        ),
        (
            "/teams/TEAM-FABRIKAM/v1/teams",
            Some(&sha256_hex(FABRIKAM_KEY)),
            401,
            "unauthorized",
        ),
    ] {
        let (got, body) = get(&proxy, path, key).await;
        assert_eq!(
            (got.as_u16(), body["error"].as_str()),
            (status, Some(code)),
            "{path}"
        );
    }
    assert_eq!(
        spent(&proxy.sim),
        before,
        "a refused request reached the STS or the API"
    );

    // A scoped client learns nothing beyond its scope: a team the route lists and one it does
    // not get the same answer, and so do a route that exists and a path no route matches.
    assert_eq!(
        message(&proxy, "/listed/TEAM-FABRIKAM/v1/teams").await,
        message(&proxy, "/listed/TEAM-WOODGROVE/v1/teams").await
    );
    let elsewhere = message(&proxy, "/partner/v1/teams").await;
    assert_eq!(elsewhere, message(&proxy, "/nowhere/v1/teams").await);
    assert_eq!(
        (elsewhere.0, elsewhere.1.as_str()),
        (403, Some("forbidden_route"))
    );
    assert!(!elsewhere.2.contains("/partner"), "{}", elsewhere.2);
    // A client with every route is told the truth.
    assert_eq!(get(&proxy, "/nowhere/v1/teams", Some(OPS_KEY)).await.0, 404);

    let metrics = proxy.metrics().await;
    for series in [
        "azure_costs_proxy_requests_total{route=\"/teams/{delegate}\",status=\"200\",client=\"contoso\"} 1",
        "azure_costs_proxy_requests_total{route=\"/partner\",status=\"403\",client=\"contoso\"} 2",
        "azure_costs_proxy_requests_total{route=\"/listed/{delegate}\",status=\"403\",client=\"contoso\"} 2",
        "azure_costs_proxy_requests_total{route=\"-\",status=\"401\",client=\"unknown\"} 3",
        "azure_costs_proxy_client_denials_total{client=\"fabrikam\",reason=\"forbidden_delegate\"} 2",
        "azure_costs_proxy_client_denials_total{client=\"contoso\",reason=\"forbidden_route\"} 3",
        "azure_costs_proxy_client_denials_total{client=\"unknown\",reason=\"unauthorized\"} 3",
    ] {
        assert!(metrics.contains(series), "missing {series} in\n{metrics}");
    }
}

#[tokio::test]
async fn api_keys_are_one_client_with_every_scope_beside_named_ones() {
    let proxy = Proxy::builder()
        .config(gateway())
        .set("listen.api_keys", vec![env("LEGACY_KEY")])
        .env_var("LEGACY_KEY", "legacy-key-0123456789")
        .spawn()
        .await;
    let (status, body) = get(
        &proxy,
        "/teams/TEAM-FABRIKAM/v1/teams",
        Some("legacy-key-0123456789"),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(
        proxy
            .metrics()
            .await
            .contains("status=\"200\",client=\"api_keys\"} 1")
    );
}

#[tokio::test]
async fn limits_hold_one_client_back_and_never_another() {
    let sim = crate::support::simulator().await;
    sim.hold_exports();
    let proxy = Proxy::builder()
        .sim(sim)
        .client(client_entry("storm").key(env("STORM")).rate("2/s"))
        .client(
            client_entry("exporter")
                .key(env("EXPORTER"))
                .max_in_flight(1),
        )
        .client(client_entry("calm").key(env("CALM")))
        .env_var("STORM", "storm-key-0123456789")
        .env_var("EXPORTER", "exporter-key-0123456789")
        .env_var("CALM", "calm-key-0123456789")
        .spawn()
        .await;
    let api_before = proxy.sim.api_requests();

    // A burst of twice the rate passes; beyond it 429 with Retry-After, and the calm client
    // is served all along.
    let started = std::time::Instant::now();
    let mut passed = 0;
    let mut limited = 0;
    for _ in 0..12 {
        let r = client()
            .get(proxy.url("/v1/teams"))
            .bearer_auth("storm-key-0123456789")
            .send()
            .await
            .unwrap();
        match r.status().as_u16() {
            200 => passed += 1,
            429 => {
                limited += 1;
                let retry: u64 = r.headers()["retry-after"]
                    .to_str()
                    .unwrap()
                    .parse()
                    .unwrap();
                // Half a second to the next token, in whole seconds.
                assert_eq!(retry, 1);
                let body: serde_json::Value = r.json().await.unwrap();
                assert_eq!(body["error"], "client_rate_limited");
            }
            other => panic!("unexpected {other}"),
        }
        let calm = get(&proxy, "/v1/teams", Some("calm-key-0123456789"))
            .await
            .0;
        assert_eq!(calm, StatusCode::OK);
    }
    // Four of the burst, and what the rate (2 a second) refilled while the loop ran.
    let refilled = (2.0 * started.elapsed().as_secs_f64()).ceil() as usize;
    assert!((4..=4 + refilled).contains(&passed), "{passed} passed");
    assert_eq!(passed + limited, 12);
    assert_eq!(
        proxy.sim.api_requests() - api_before,
        passed + 12,
        "a limited request reached the API"
    );

    // One export in flight holds the exporter's only place until its body ends.
    let export = client()
        .get(proxy.url("/v1/costs/export?rows=2000"))
        .bearer_auth("exporter-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), StatusCode::OK);
    let second = client()
        .get(proxy.url("/v1/teams"))
        .bearer_auth("exporter-key-0123456789")
        .send()
        .await
        .unwrap();
    assert_eq!(second.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(second.headers()["retry-after"], "1");
    assert_eq!(
        get(&proxy, "/v1/teams", Some("calm-key-0123456789"))
            .await
            .0,
        200
    );
    proxy.sim.release_exports();
    export.bytes().await.unwrap();
    // The place is given back when the body has ended: poll rather than sleep.
    let mut answered = StatusCode::TOO_MANY_REQUESTS;
    for _ in 0..100 {
        answered = get(&proxy, "/v1/teams", Some("exporter-key-0123456789"))
            .await
            .0;
        if answered == StatusCode::OK {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(answered, StatusCode::OK);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(&format!(
            "azure_costs_proxy_client_denials_total{{client=\"storm\",reason=\"client_rate_limited\"}} {limited}"
        )),
        "{metrics}"
    );
}

/// A keep-alive HTTP/1.1 connection to `proxy`, to send several requests on.
async fn connection(proxy: &Proxy) -> hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>> {
    let stream = TcpStream::connect(proxy.addr).await.unwrap();
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    sender
}

async fn send(
    sender: &mut hyper::client::conn::http1::SendRequest<Empty<bytes::Bytes>>,
    key: &str,
) -> StatusCode {
    let request = http::Request::get("/teams/TEAM-CONTOSO/v1/teams")
        .header("host", "localhost")
        .header("authorization", format!("Bearer {key}"))
        .body(Empty::new())
        .unwrap();
    sender.ready().await.unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status();
    response.into_body().collect().await.unwrap();
    status
}

#[tokio::test]
async fn a_reload_revokes_a_key_on_an_open_connection_and_adds_a_client() {
    let dir = Scratch::new("clients-reload");
    let newcomer = "newcomer-key-0123456789";
    // Loaded from a file as `run` loads it: keys as digests (nothing from the environment).
    let with_contoso = TestConfig::new()
        .route(route(TEAMS).delegates(&["*"]))
        .client(client_entry("contoso").key_sha256(&sha256_hex(CONTOSO_KEY)));
    let proxy = Proxy::builder()
        .config(with_contoso)
        .config_file_in(&dir)
        .signal_only()
        .spawn()
        .await;
    let mut open = connection(&proxy).await;
    assert_eq!(send(&mut open, CONTOSO_KEY).await, StatusCode::OK);
    assert_eq!(
        get(&proxy, "/teams/TEAM-CONTOSO/v1/teams", Some(newcomer))
            .await
            .0,
        401
    );

    // Contoso's key is replaced by another client; the connection stays open.
    let without = TestConfig::new()
        .route(route(TEAMS).delegates(&["*"]))
        .client(client_entry("newcomer").key_sha256(&sha256_hex(newcomer)));
    proxy.rewrite_config(without);
    proxy.reload().await.unwrap();
    let spent_before = spent(&proxy.sim);
    assert_eq!(send(&mut open, CONTOSO_KEY).await, StatusCode::UNAUTHORIZED);
    assert_eq!(spent(&proxy.sim), spent_before);
    let (status, body) = get(&proxy, "/teams/TEAM-CONTOSO/v1/teams", Some(newcomer)).await;
    assert_eq!(
        (status, body["teams"][0]["id"].as_str()),
        (StatusCode::OK, Some("TEAM-CONTOSO"))
    );
}

/// A client of the proxy's HTTPS listener trusting `server_ca`, presenting `identity`.
fn tls_client(server_ca: &Ca, identity: Option<&Leaf>, proxy: &Proxy) -> reqwest::Client {
    reqwest::Client::builder()
        .no_proxy()
        .tls_backend_preconfigured(server_ca.client_config(identity))
        .resolve("localhost", proxy.addr)
        .build()
        .unwrap()
}

/// HTTPS towards clients, certificates from `clients` identifying them, `client_auth` as given.
fn mtls(dir: &Scratch, server_ca: &Ca, clients: &Ca, client_auth: &str) -> TestConfig {
    let leaf = server_ca.leaf("localhost");
    let cert = dir.write("cert.pem", &leaf.cert_pem);
    let key = dir.write("key.pem", &leaf.key_pem);
    let ca = dir.write("clients.pem", &clients.pem());
    TestConfig::new()
        .set("listen.tls.cert_file", cert.display().to_string())
        .set("listen.tls.key_file", key.display().to_string())
        .set("listen.tls.client_ca", ca.display().to_string())
        .set("listen.tls.client_auth", client_auth)
        .route(route(TEAMS).delegates(&["*"]))
        .route(route("/partner"))
        .client(
            client_entry("contoso-bi")
                .cert("CN=contoso-bi.example")
                .routes(&[TEAMS])
                .delegates(&["TEAM-CONTOSO"]),
        )
        .client(client_entry("ops").key(env("OPS_KEY")))
        .env_var("OPS_KEY", OPS_KEY)
}

#[tokio::test]
async fn client_certificates_name_clients_when_optional() {
    let dir = Scratch::new("clients-mtls-optional");
    let (server_ca, clients) = (Ca::new(), Ca::new());
    let proxy = Proxy::builder()
        .config(mtls(&dir, &server_ca, &clients, "optional"))
        .spawn()
        .await;
    let url = |path: &str| format!("https://localhost:{}{path}", proxy.addr.port());
    let contoso = clients.leaf("contoso-bi.example");
    let stranger = clients.leaf("stranger.example");

    let with_cert = tls_client(&server_ca, Some(&contoso), &proxy);
    let r = with_cert
        .get(url("/teams/TEAM-CONTOSO/v1/teams"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    let before = spent(&proxy.sim);
    for (path, status) in [
        ("/teams/TEAM-FABRIKAM/v1/teams", 403),
        ("/partner/v1/teams", 403),
    ] {
        let r = with_cert.get(url(path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), status, "{path}");
    }
    // A certificate of no client, and no certificate at all: 401, unless a key names one.
    let unknown = tls_client(&server_ca, Some(&stranger), &proxy);
    let anonymous = tls_client(&server_ca, None, &proxy);
    for c in [&unknown, &anonymous] {
        let r = c.get(url("/partner/v1/teams")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    assert_eq!(
        spent(&proxy.sim),
        before,
        "a refused request cost something"
    );
    let r = anonymous
        .get(url("/partner/v1/teams"))
        .bearer_auth(OPS_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // A key of one client on another client's certificate: refused, whoever it is.
    let r = with_cert
        .get(url("/partner/v1/teams"))
        .bearer_auth(OPS_KEY)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn client_certificates_are_required_unless_optional() {
    let dir = Scratch::new("clients-mtls-required");
    let (server_ca, clients) = (Ca::new(), Ca::new());
    let proxy = Proxy::builder()
        .config(mtls(&dir, &server_ca, &clients, "required"))
        .spawn()
        .await;
    let url = format!(
        "https://localhost:{}/teams/TEAM-CONTOSO/v1/teams",
        proxy.addr.port()
    );
    let contoso = clients.leaf("contoso-bi.example");
    let r = tls_client(&server_ca, Some(&contoso), &proxy)
        .get(&url)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);
    // Without a certificate the handshake fails, key or not.
    let r = tls_client(&server_ca, None, &proxy)
        .get(&url)
        .bearer_auth(OPS_KEY)
        .send()
        .await;
    assert!(r.is_err(), "answered without a client certificate: {r:?}");
    assert_eq!(proxy.sim.api_requests(), 1);
}

#[tokio::test]
async fn a_reload_picks_up_a_new_client_ca() {
    let dir = Scratch::new("clients-mtls-reload");
    let (server_ca, old_ca, new_ca) = (Ca::new(), Ca::new(), Ca::new());
    let leaf = server_ca.leaf("localhost");
    let cert = dir.write("cert.pem", &leaf.cert_pem);
    let key = dir.write("key.pem", &leaf.key_pem);
    let ca = dir.write("clients.pem", &old_ca.pem());
    let config = TestConfig::new()
        .set("listen.tls.cert_file", cert.display().to_string())
        .set("listen.tls.key_file", key.display().to_string())
        .set("listen.tls.client_ca", ca.display().to_string())
        .client(client_entry("contoso-bi").cert("contoso-bi.example"));
    let proxy = Proxy::builder()
        .config(config)
        .config_file_in(&dir)
        .signal_only()
        .spawn()
        .await;
    let url = format!("https://localhost:{}/v1/teams", proxy.addr.port());
    let get = |ca: &Ca| {
        let leaf = ca.leaf("contoso-bi.example");
        let client = tls_client(&server_ca, Some(&leaf), &proxy);
        let url = url.clone();
        async move { client.get(url).send().await.map(|r| r.status()) }
    };
    assert_eq!(get(&old_ca).await.unwrap(), StatusCode::OK);
    assert!(
        get(&new_ca).await.is_err(),
        "a certificate of another CA was let in"
    );

    // The clients' CA is replaced: new connections are checked against the new one.
    dir.write("clients.pem", &new_ca.pem());
    proxy.reload().await.unwrap();
    assert_eq!(get(&new_ca).await.unwrap(), StatusCode::OK);
    assert!(
        get(&old_ca).await.is_err(),
        "the old CA still lets clients in"
    );
}
