//! Live reload, in process: a rotated secret file takes effect for new tokens while an open
//! connection keeps working; an invalid config is refused and the running one keeps serving;
//! tokens of unchanged credentials survive a reload.

use std::net::SocketAddr;

use crate::support::process::Scratch;
use crate::support::tokio;
use crate::support::{Proxy, TestConfig, route};
use bytes::Bytes;
use http_body_util::{BodyExt as _, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// One HTTP/1.1 connection to the proxy, kept open across requests.
async fn connect(addr: SocketAddr) -> SendRequest<Empty<Bytes>> {
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    sender
}

/// GET `path` on that connection: status and body.
async fn get(sender: &mut SendRequest<Empty<Bytes>>, path: &str) -> (u16, Bytes) {
    sender.ready().await.expect("the connection is still open");
    let request = hyper::Request::get(path)
        .header("host", "localhost")
        .body(Empty::new())
        .unwrap();
    let response = sender.send_request(request).await.unwrap();
    let status = response.status().as_u16();
    (
        status,
        response.into_body().collect().await.unwrap().to_bytes(),
    )
}

/// The bearer token the API saw on its latest request.
fn last_bearer(sim: &azure_costs_proxy::simulator::Simulator) -> String {
    let requests = sim.requests();
    let last = requests.last().expect("the API saw a request");
    last.headers["authorization"].to_str().unwrap().to_string()
}

#[tokio::test]
async fn a_rotated_secret_file_is_used_for_new_tokens_and_open_connections_keep_working() {
    let dir = Scratch::new("reload-secret");
    let proxy = Proxy::builder()
        .config_file_in(&dir)
        .signal_only()
        .spawn()
        .await;
    proxy.sim.wait_for_sts_calls(1).await;
    let mut conn = connect(proxy.addr).await;
    assert_eq!(get(&mut conn, "/v1/teams").await.0, 200);
    let first = proxy.sim.issued_tokens();
    assert_eq!(first.len(), 1);
    assert_eq!(
        last_bearer(&proxy.sim),
        format!("Bearer {}", first[0].token)
    );

    // An export in flight across the reload finishes with the config and token it began with.
    proxy.sim.hold_exports();
    let mut export = proxy.get("/v1/costs/export?rows=20000").await;
    assert_eq!(export.status(), 200);
    let mut exported = export.chunk().await.unwrap().unwrap().len();

    // The vendor rotates the secret (the old token stays valid), the operator the file.
    proxy.sim.rotate_secret("rotated-secret-value");
    dir.write("secret", "rotated-secret-value\n");
    let done = proxy.reload().await.expect("the reload succeeds");
    assert_eq!(done.discarded, ["default"]);
    assert_eq!(done.kept_tokens, 0);
    proxy.sim.release_exports();
    while let Some(chunk) = export.chunk().await.unwrap() {
        exported += chunk.len();
    }
    assert!(exported > 100_000, "only {exported} bytes");
    assert_eq!(proxy.sim.exports_finished(), 1);
    assert_eq!(
        last_bearer(&proxy.sim),
        format!("Bearer {}", first[0].token),
        "the export went upstream with the token of its time"
    );

    // Same connection, new token: issued with the new secret (the STS takes no other now).
    let (status, body) = get(&mut conn, "/v1/teams").await;
    assert_eq!(status, 200, "{body:?}");
    let tokens = proxy.sim.issued_tokens();
    assert_eq!(tokens.len(), 2, "exactly one new token");
    assert_eq!(
        last_bearer(&proxy.sim),
        format!("Bearer {}", tokens[1].token)
    );
    // A new connection too.
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);

    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(
            "azure_costs_proxy_config_reloads_total{outcome=\"ok\",trigger=\"signal\"} 1"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn an_invalid_config_is_refused_and_the_running_one_keeps_serving() {
    let dir = Scratch::new("reload-broken");
    let proxy = Proxy::builder()
        .config_file_in(&dir)
        .signal_only()
        .spawn()
        .await;
    proxy.sim.wait_for_sts_calls(1).await;
    let mut conn = connect(proxy.addr).await;
    assert_eq!(get(&mut conn, "/v1/teams").await.0, 200);

    // A typo: the error names the file, line and key.
    proxy.rewrite_config(TestConfig::new().set("sts.timout", "5s"));
    let error = proxy.reload().await.expect_err("a typo is refused");
    assert!(error.contains("sts.timout"), "{error}");
    let path = proxy.config_path().display().to_string();
    assert!(error.contains(&path), "{error}");
    assert!(error.contains("line "), "{error}");
    assert_eq!(get(&mut conn, "/v1/teams").await.0, 200);

    // A secret file that went missing: refused too, nothing printed of the old secret.
    proxy.rewrite_config(TestConfig::new());
    std::fs::remove_file(dir.0.join("secret")).unwrap();
    let error = proxy
        .reload()
        .await
        .expect_err("a missing secret is refused");
    assert!(
        error.contains("credentials.default.client_secret"),
        "{error}"
    );
    assert!(!error.contains(&proxy.sim.client_secret()), "{error}");

    // Still the old config and the old token: no STS call since start-up.
    assert_eq!(get(&mut conn, "/v1/teams").await.0, 200);
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    assert_eq!(proxy.sim.sts_calls(), 1);
    let metrics = proxy.metrics().await;
    assert!(
        metrics.contains(
            "azure_costs_proxy_config_reloads_total{outcome=\"error\",trigger=\"signal\"} 2"
        ),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_reload_adds_routes_and_keeps_the_tokens_of_unchanged_credentials() {
    let dir = Scratch::new("reload-routes");
    let proxy = Proxy::builder()
        .config_file_in(&dir)
        .signal_only()
        .spawn()
        .await;
    proxy.sim.wait_for_sts_calls(1).await;
    let teams = proxy.get("/v1/teams").await.text().await.unwrap();

    let routes = TestConfig::new()
        .route(route("/"))
        .route(route("/customers/contoso").delegate("TEAM-CONTOSO"));
    proxy.rewrite_config(routes);
    let done = proxy.reload().await.expect("the reload succeeds");
    assert!(done.discarded.is_empty(), "{:?}", done.discarded);
    assert_eq!(done.kept_tokens, 1);

    // The new route acts for Contoso: one update of the kept base token, no new issue.
    let r = proxy.get("/customers/contoso/v1/teams").await;
    assert_eq!(r.status(), 200);
    let contoso = r.text().await.unwrap();
    assert_ne!(contoso, teams, "the delegate route sees its team's data");
    assert_eq!(proxy.sim.issue_calls(), 1);
    assert_eq!(proxy.sim.update_calls(), 1);
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    assert_eq!(proxy.sim.issue_calls(), 1);
}

/// `GET /healthz` on the admin listener answers within a second.
#[cfg(unix)]
async fn healthy_within_a_second(proxy: &Proxy) {
    let asked = crate::support::client()
        .get(proxy.admin_url("/healthz"))
        .send();
    let r = tokio::time::timeout(std::time::Duration::from_secs(1), asked)
        .await
        .expect("/healthz answered within a second")
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[cfg(unix)]
#[tokio::test]
async fn a_fifo_a_device_or_a_huge_file_is_a_reload_error_and_serving_goes_on() {
    let dir = Scratch::new("reload-special-files");
    let proxy = Proxy::builder()
        .config_file_in(&dir)
        .signal_only()
        .spawn()
        .await;
    let mut open = connect(proxy.addr).await;
    assert_eq!(get(&mut open, "/v1/teams").await.0, 200);
    let config = proxy.config_path().to_path_buf();
    let original = std::fs::read(&config).unwrap();

    // The secret file replaced by a FIFO (by rename, as an attacker with the folder would):
    // a blocking read would freeze the whole process here.
    let fifo = dir.0.join("secret.fifo");
    assert!(
        std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap()
            .success()
    );
    std::fs::rename(&fifo, proxy.secret_path()).unwrap();
    let refused = proxy.reload().await.unwrap_err();
    assert!(refused.contains("FIFO"), "{refused}");
    healthy_within_a_second(&proxy).await;
    assert_eq!(get(&mut open, "/v1/teams").await.0, 200);

    // The config itself a symlink to an endless device, then 2 MiB of comments.
    std::fs::remove_file(&config).unwrap();
    std::os::unix::fs::symlink("/dev/zero", &config).unwrap();
    let refused = proxy.reload().await.unwrap_err();
    assert!(refused.contains("a device"), "{refused}");
    healthy_within_a_second(&proxy).await;
    std::fs::remove_file(&config).unwrap();
    let mut huge = original.clone();
    huge.extend(std::iter::repeat_n(b"# padding\n".as_slice(), 210_000).flatten());
    std::fs::write(&config, &huge).unwrap();
    let refused = proxy.reload().await.unwrap_err();
    assert!(refused.contains("larger than 1024 KiB"), "{refused}");
    assert_eq!(get(&mut open, "/v1/teams").await.0, 200);
}
