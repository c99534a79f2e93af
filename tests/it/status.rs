//! The status page (`GET /` on the admin listener), `/status.json` and the `status` command:
//! every route, credential and delegate named; requests, latency and the last errors after real
//! traffic, an STS failure and a reload; the headers and the Host guard; never a secret byte;
//! the command's three exit codes.

use std::time::Duration;

use crate::support::config::client as client_entry;
use crate::support::process::{Scratch, admin_command};
use crate::support::sha256_hex;
use crate::support::tokio;
use crate::support::{Proxy, TestConfig, client, route};
use azure_costs_proxy::simulator::StsFault;

const KEY: &str = "status-page-client-key-3f9a1c";

/// A gateway: the partner's own routes, one fixed to Contoso, one per team listed, one for any
/// team, one `per_request`; one client.
fn gateway() -> TestConfig {
    TestConfig::new()
        .route(route("/"))
        .route(route("/contoso").delegate("TEAM-CONTOSO"))
        .route(route("/teams/{delegate}").delegates(&["TEAM-CONTOSO", "TEAM-FABRIKAM"]))
        .route(route("/any/{delegate}").delegates(&["*"]))
        .route(route("/fresh").token_mode("per_request"))
        .client(client_entry("contoso-bi").key_sha256(&sha256_hex(KEY)))
}

async fn get(proxy: &Proxy, path: &str) -> u16 {
    let r = client()
        .get(proxy.url(path))
        .bearer_auth(KEY)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    r.bytes().await.unwrap();
    status
}

async fn status_json(proxy: &Proxy) -> serde_json::Value {
    let r = client()
        .get(proxy.admin_url("/status.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.json().await.unwrap()
}

async fn page(proxy: &Proxy) -> String {
    let r = client().get(proxy.admin_url("/")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    r.text().await.unwrap()
}

/// Every secret the test knows: the client secret, each token the STS issued, the client key.
fn assert_no_secret(proxy: &Proxy, text: &str, what: &str) {
    let mut secrets = vec![proxy.sim.client_secret(), KEY.to_string()];
    secrets.extend(proxy.sim.issued_tokens().into_iter().map(|t| t.token));
    for secret in secrets {
        assert!(!text.contains(&secret), "a secret in {what}");
    }
}

/// The token row of `default` / `delegate` in `mode` in `/status.json`.
fn token<'a>(
    status: &'a serde_json::Value,
    delegate: Option<&str>,
    mode: &str,
) -> &'a serde_json::Map<String, serde_json::Value> {
    status["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t.as_object().unwrap())
        .find(|t| {
            t["credential"] == "default" && t["delegate"].as_str() == delegate && t["mode"] == mode
        })
        .unwrap_or_else(|| panic!("no {mode} token for {delegate:?} in {status}"))
}

#[tokio::test]
async fn the_page_and_json_name_everything_and_never_a_secret_through_failure_and_reload() {
    let dir = Scratch::new("status-page");
    let proxy = Proxy::builder()
        .config(gateway())
        .config_file_in(&dir)
        .signal_only()
        .spawn()
        .await;
    proxy.sim.wait_for_sts_calls(1).await;
    // `/fresh` fetches a new token for each request: a refresh.
    for path in [
        "/v1/teams",
        "/contoso/v1/teams",
        "/teams/TEAM-FABRIKAM/v1/teams",
        "/any/TEAM-WOODGROVE/v1/teams",
        "/fresh/v1/teams",
    ] {
        assert_eq!(get(&proxy, path).await, 200, "{path}");
    }
    assert_eq!(get(&proxy, "/v1/nope").await, 404);
    let json = status_json(&proxy).await;
    assert_eq!(json["status"], "ready");
    let prefixes: Vec<&str> = json["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["prefix"].as_str().unwrap())
        .collect();
    assert_eq!(
        prefixes,
        [
            "/teams/{delegate}",
            "/any/{delegate}",
            "/contoso",
            "/fresh",
            "/"
        ],
        "in the order they are matched"
    );
    let root = &json["routes"][4];
    assert!(root["requests"]["2xx"].as_u64().unwrap() >= 1, "{root}");
    assert!(root["p50_ms"].as_f64().unwrap() > 0.0, "{root}");
    assert_eq!(token(&json, None, "interval")["state"], "valid");
    assert_eq!(
        token(&json, Some("TEAM-CONTOSO"), "interval")["state"],
        "valid"
    );
    assert_eq!(
        token(&json, Some("TEAM-FABRIKAM"), "interval")["state"],
        "valid"
    );
    // A team a `["*"]` route fetched for a path: its token, from the cache such teams live in.
    let woodgrove = token(&json, Some("TEAM-WOODGROVE"), "interval");
    assert_eq!(woodgrove["state"], "valid", "{json}");
    assert!(woodgrove["expires_in_s"].as_u64().unwrap() > 3000);
    // Fetched per request, however many there were: on demand, never "refreshing".
    assert_eq!(token(&json, None, "per_request")["state"], "on_demand");
    let fingerprint = token(&json, None, "interval")["fingerprint"]
        .as_str()
        .unwrap();
    assert!(fingerprint.starts_with("sha256:"), "{fingerprint}");
    let contoso = &json["clients"][0];
    assert_eq!(contoso["name"], "contoso-bi");
    assert!(contoso["requests"].as_u64().unwrap() >= 5, "{contoso}");
    assert_no_secret(&proxy, &json.to_string(), "/status.json");
    let html = page(&proxy).await;
    for needle in [
        "/contoso",
        "/teams/{delegate}",
        "/fresh",
        "TEAM-CONTOSO",
        "TEAM-FABRIKAM",
        "contoso-bi",
        fingerprint,
    ] {
        assert!(html.contains(needle), "{needle} not on the page");
    }
    assert_no_secret(&proxy, &html, "the page");

    // The STS goes down: the per-request route fails, the shared token stays and is sent.
    proxy.sim.set_sts_fault(Some(StsFault::Unavailable));
    assert_eq!(get(&proxy, "/fresh/v1/teams").await, 503);
    let json = status_json(&proxy).await;
    let shared = token(&json, None, "interval");
    assert_eq!(shared["state"], "backing_off", "{json}");
    assert_eq!(token(&json, None, "per_request")["state"], "failing");
    let error = shared["last_error"]["message"].as_str().unwrap();
    assert!(error.contains("default"), "{error}");
    assert!(page(&proxy).await.contains("backing off"));

    // Back, and a reload that adds a route: its time, trigger and result.
    proxy.sim.set_sts_fault(None);
    proxy.rewrite_config(gateway().route(route("/added")));
    proxy.reload().await.unwrap();
    let json = status_json(&proxy).await;
    assert_eq!(json["config"]["last_reload"]["result"], "ok");
    assert_eq!(json["config"]["last_reload"]["trigger"], "signal");
    assert!(json["routes"].to_string().contains("/added"));
    assert_eq!(json["routes"][5]["requests"], root["requests"], "kept");
    let html = page(&proxy).await;
    assert!(html.contains("/added"));
    assert_no_secret(&proxy, &json.to_string(), "/status.json");
    assert_no_secret(&proxy, &html, "the page");
}

#[tokio::test]
async fn a_rejected_reload_and_an_upstream_failure_are_shown_with_their_reasons() {
    let dir = Scratch::new("status-errors");
    let closed = crate::support::closed_port().await;
    let proxy = Proxy::builder()
        .config_file_in(&dir)
        .signal_only()
        .spawn()
        .await;
    proxy.rewrite_config(TestConfig::new().set("sts.timout", "5s"));
    proxy.reload().await.unwrap_err();
    let json = status_json(&proxy).await;
    let reload = &json["config"]["last_reload"];
    assert_eq!(reload["result"], "rejected", "{json}");
    let error = reload["error"].as_str().unwrap();
    assert!(
        error.contains("sts.timout") && error.contains("line "),
        "{error}"
    );
    assert!(page(&proxy).await.contains("sts.timout"));

    // The API cannot be reached: 502, and the route says why.
    proxy.rewrite_config(TestConfig::new().set("upstream.url", format!("http://{closed}")));
    proxy.reload().await.unwrap();
    assert_eq!(proxy.get("/v1/teams").await.status(), 502);
    let json = status_json(&proxy).await;
    let route = &json["routes"][0];
    assert_eq!(route["requests"]["5xx"], 1, "{route}");
    let message = route["last_upstream_error"]["message"].as_str().unwrap();
    assert!(message.contains("unreachable"), "{message}");
}

#[tokio::test]
async fn the_page_has_its_headers_and_the_host_guard() {
    let proxy = Proxy::builder().spawn().await;
    let r = client().get(proxy.admin_url("/")).send().await.unwrap();
    let h = r.headers();
    assert_eq!(h["content-type"], "text/html; charset=utf-8");
    assert_eq!(
        h["content-security-policy"],
        "default-src 'none'; style-src 'unsafe-inline'"
    );
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["cache-control"], "no-store");
    let html = r.text().await.unwrap();
    assert!(html.contains("<meta http-equiv=\"refresh\" content=\"10\">"));
    for absent in ["<script", "<form", "<img", "<link", "src=", "href="] {
        assert!(!html.contains(absent), "{absent} on the page");
    }
    assert!(
        html.contains("<th scope=\"col\">"),
        "tables with header cells"
    );
    for path in ["/", "/status.json"] {
        let r = client()
            .get(proxy.admin_url(path))
            .header("host", "rebound.example")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
        assert_eq!(
            r.json::<serde_json::Value>().await.unwrap()["error"],
            "forbidden_host"
        );
    }
    let r = client()
        .post(proxy.admin_url("/status.json"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 405);
}

/// Runs `status` (plus `extra`) for the admin listener at `address`.
async fn status_command(dir: &Scratch, address: &str, extra: &[&str]) -> (Option<i32>, String) {
    let admin = format!("address = \"{address}\"");
    let args: Vec<&str> = ["status", "--timeout", "5s"]
        .iter()
        .chain(extra)
        .copied()
        .collect();
    admin_command(dir, &admin, &args).await
}

#[tokio::test]
async fn the_status_command_exits_0_ready_1_not_ready_2_unreachable() {
    let dir = Scratch::new("status-command");
    let ready = Proxy::builder().spawn().await;
    ready.sim.wait_for_sts_calls(1).await;
    assert_eq!(ready.get("/v1/teams").await.status(), 200);
    let (code, text) = status_command(&dir, &ready.admin.to_string(), &[]).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("READY"), "{text}");
    assert!(text.contains("default") && text.contains("valid"), "{text}");
    let (code, text) = status_command(&dir, &ready.admin.to_string(), &["--json"]).await;
    assert_eq!(code, Some(0), "{text}");
    let json: serde_json::Value = serde_json::from_str(text.trim()).unwrap();
    assert_eq!(json["routes"][0]["prefix"], "/");

    let refused = Proxy::builder().sts_fault(StsFault::Reject).spawn().await;
    refused.sim.wait_for_sts_calls(1).await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    let text = loop {
        let (code, text) = status_command(&dir, &refused.admin.to_string(), &[]).await;
        if code == Some(1) && text.contains("failing") {
            break text;
        }
        assert!(tokio::time::Instant::now() < deadline, "{code:?} {text}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(
        text.contains("NOT READY") && text.contains("last STS error"),
        "{text}"
    );
    assert!(!text.contains(&refused.sim.client_secret()));

    let closed = crate::support::closed_port().await;
    let (code, text) = status_command(&dir, &closed.to_string(), &[]).await;
    assert_eq!(code, Some(2), "{text}");
    assert!(
        text.contains(&closed.to_string()),
        "names the address: {text}"
    );
    assert!(
        text.contains("[admin] address in") && text.contains("--config"),
        "{text}"
    );
}
