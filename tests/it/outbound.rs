//! The way out through a corporate proxy: the API and the STS reached through `CONNECT` tunnels
//! (http targets too), names resolved by the proxy, `no_proxy` and loopback direct, Basic auth,
//! and errors that name the proxy and say what to do. Targets are named `sim.costs.test`, which
//! only the test proxy resolves (to 127.0.0.1).

use base64::Engine as _;
use http::StatusCode;

use crate::support::connect_proxy::{ConnectProxy, ConnectProxyOptions};
use crate::support::pki::Ca;
use crate::support::process::{Scratch, command};
use crate::support::tokio;
use crate::support::{Proxy, ProxyBuilder, TestConfig, closed_port, env, simulator};
use azure_costs_proxy::simulator::Simulator;

const NAME: &str = "sim.costs.test";

/// `url` with its loopback host replaced by [`NAME`].
fn named(url: &str) -> String {
    url.replacen("127.0.0.1", NAME, 1)
        .replacen("localhost", NAME, 1)
}

/// A builder whose API and STS are reached by name (plain http, allowed explicitly).
fn by_name(sim: &Simulator) -> ProxyBuilder {
    Proxy::builder()
        .set("upstream.url", named(&sim.api_url()))
        .set("upstream.allow_insecure_http", true)
        .set("sts.token_url", named(&sim.sts_url()))
        .set("sts.allow_insecure_http", true)
}

/// A builder whose API only `proxy_url` can reach (by name), its STS direct (loopback).
fn api_via(sim: &Simulator, proxy_url: &str) -> ProxyBuilder {
    by_name(sim)
        .set("sts.token_url", sim.sts_url())
        .set("outbound.proxy", proxy_url)
}

fn port_of(url: &str) -> u16 {
    url.parse::<http::Uri>().unwrap().port_u16().unwrap()
}

fn basic(user: &str, password: &str) -> String {
    let pair = format!("{user}:{password}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

async fn error_of(r: reqwest::Response) -> (StatusCode, String, String, bool) {
    let status = r.status();
    let retry_after = r.headers().contains_key("retry-after");
    let body: serde_json::Value = r.json().await.unwrap();
    (
        status,
        body["error"].as_str().unwrap_or_default().to_string(),
        body["message"].as_str().unwrap_or_default().to_string(),
        retry_after,
    )
}

#[tokio::test]
async fn api_and_sts_go_through_connect_tunnels_resolved_by_the_proxy() {
    let outbound = ConnectProxy::start(ConnectProxyOptions::default()).await;
    let sim = simulator().await;
    let (api_port, sts_port) = (port_of(&sim.api_url()), port_of(&sim.sts_url()));
    let proxy = by_name(&sim)
        .set("outbound.proxy", outbound.url())
        .sim(sim)
        .spawn()
        .await;
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 200);
    let lines = outbound.lines();
    // Plain http targets too: a tunnel, never a request the proxy could read.
    assert!(lines.iter().all(|l| l.starts_with("CONNECT ")), "{lines:?}");
    assert!(lines.contains(&format!("CONNECT {NAME}:{sts_port} HTTP/1.1")));
    assert!(lines.contains(&format!("CONNECT {NAME}:{api_port} HTTP/1.1")));
    for seen in outbound.seen() {
        assert!(seen.header("authorization").is_none(), "{seen:?}");
        assert!(seen.header("proxy-authorization").is_none(), "{seen:?}");
    }
    // The token reached the API through the tunnel.
    assert_eq!(proxy.sim.api_requests(), 1);
    assert_eq!(proxy.sim.bad_token_requests(), 0);
}

#[tokio::test]
async fn sequential_requests_share_one_tunnel() {
    let outbound = ConnectProxy::start(ConnectProxyOptions::default()).await;
    let sim = simulator().await;
    let api = format!("CONNECT {NAME}:{} HTTP/1.1", port_of(&sim.api_url()));
    let proxy = by_name(&sim)
        .set("outbound.proxy", outbound.url())
        .sim(sim)
        .spawn()
        .await;
    for _ in 0..5 {
        assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    }
    let tunnels = outbound.lines().iter().filter(|l| **l == api).count();
    assert_eq!(tunnels, 1, "{:?}", outbound.lines());
    assert_eq!(proxy.sim.api_connections(), 1);
}

#[tokio::test]
async fn the_environment_names_the_proxy_and_no_proxy_bypasses_it() {
    let outbound = ConnectProxy::start(ConnectProxyOptions::default()).await;
    let sim = simulator().await;
    // http targets: HTTP_PROXY (HTTPS_PROXY is for https ones).
    let proxy = by_name(&sim)
        .env_var("HTTPS_PROXY", "http://127.0.0.1:1")
        .env_var("HTTP_PROXY", &outbound.url())
        .sim(sim)
        .spawn()
        .await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    assert_eq!(outbound.lines().len(), 2, "{:?}", outbound.lines());

    // NO_PROXY (any case; a suffix covers subdomains) sends the API direct: the name does not
    // resolve here, so the request fails, and the proxy never hears of it.
    let sim = simulator().await;
    let before = outbound.lines().len();
    let proxy = by_name(&sim)
        .set("sts.token_url", sim.sts_url())
        .env_var("http_proxy", &outbound.url())
        .env_var("no_proxy", "example.org, costs.test")
        .sim(sim)
        .spawn()
        .await;
    let (status, code, _, _) = error_of(proxy.get("/v1/teams").await).await;
    assert_eq!(
        (status.as_u16(), code.as_str()),
        (502, "upstream_unavailable")
    );
    assert_eq!(outbound.lines().len(), before, "{:?}", outbound.lines());

    // `[outbound] no_proxy` does the same with a proxy URL.
    let sim = simulator().await;
    let proxy = api_via(&sim, &outbound.url())
        .set("outbound.no_proxy", vec![".costs.test"])
        .sim(sim)
        .spawn()
        .await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 502);
    assert_eq!(outbound.lines().len(), before, "{:?}", outbound.lines());
}

#[tokio::test]
async fn loopback_targets_go_direct_whatever_the_proxy() {
    let outbound = ConnectProxy::start(ConnectProxyOptions::default()).await;
    let proxy = Proxy::builder()
        .set("outbound.proxy", outbound.url())
        .spawn()
        .await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    assert!(outbound.lines().is_empty(), "{:?}", outbound.lines());
}

#[tokio::test]
async fn proxy_auth_is_sent_and_a_407_says_to_set_it() {
    let wanted = basic("svc-bi", "corp-pw-5e1d");
    let outbound = ConnectProxy::start(ConnectProxyOptions {
        require_auth: Some(wanted.clone()),
        ..Default::default()
    })
    .await;
    // Without credentials: the STS path is 503 with Retry-After, naming the proxy and the fix.
    let sim = simulator().await;
    let mut proxy = by_name(&sim)
        .set("outbound.proxy", outbound.url())
        .sim(sim)
        .spawn()
        .await;
    let (status, code, message, retry_after) = error_of(proxy.get("/v1/teams").await).await;
    assert_eq!((status.as_u16(), code.as_str()), (503, "sts_unavailable"));
    assert!(retry_after);
    assert!(message.contains(&outbound.url()), "{message}");
    assert!(message.contains("407"), "{message}");
    assert!(message.contains("set [outbound] proxy_auth"), "{message}");
    assert_eq!(proxy.sim.sts_calls(), 0);
    // Stopped, so that its token retries cannot reach the proxy after the authenticated ones.
    proxy.stop().await;

    // The API path (STS direct): 502, the same story.
    let sim = simulator().await;
    let mut proxy = api_via(&sim, &outbound.url()).sim(sim).spawn().await;
    let (status, code, message, _) = error_of(proxy.get("/v1/teams").await).await;
    assert_eq!(
        (status.as_u16(), code.as_str()),
        (502, "upstream_unavailable")
    );
    assert!(
        message.contains("407") && message.contains("proxy_auth"),
        "{message}"
    );
    proxy.stop().await;

    // With proxy_auth, both go through; the credentials went only to the proxy.
    let sim = simulator().await;
    let proxy = by_name(&sim)
        .set("outbound.proxy", outbound.url())
        .set("outbound.proxy_auth.username", "svc-bi")
        .set("outbound.proxy_auth.password", env("PROXY_PW"))
        .env_var("PROXY_PW", "corp-pw-5e1d")
        .sim(sim)
        .spawn()
        .await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    let last = outbound.seen().pop().unwrap();
    assert_eq!(last.header("proxy-authorization"), Some(wanted));
    for seen in proxy.sim.requests() {
        assert!(seen.headers.get("proxy-authorization").is_none());
    }

    // Credentials in the proxy URL work the same, and the messages never show them.
    let sim = simulator().await;
    let with_creds = outbound
        .url()
        .replace("http://", "http://svc-bi:wrong-pw-77@");
    let proxy = by_name(&sim)
        .set("outbound.proxy", with_creds)
        .sim(sim)
        .spawn()
        .await;
    let (_, _, message, _) = error_of(proxy.get("/v1/teams").await).await;
    assert!(message.contains("is not accepted"), "{message}");
    assert!(!message.contains("wrong-pw-77"), "{message}");
}

#[tokio::test]
async fn a_refusing_or_unreachable_proxy_is_named_in_the_error() {
    let outbound = ConnectProxy::start(ConnectProxyOptions {
        refuse: true,
        ..Default::default()
    })
    .await;
    let sim = simulator().await;
    let proxy = api_via(&sim, &outbound.url()).sim(sim).spawn().await;
    let (status, code, message, _) = error_of(proxy.get("/v1/teams").await).await;
    assert_eq!(
        (status.as_u16(), code.as_str()),
        (502, "upstream_unavailable")
    );
    assert!(message.contains("answered 403 Forbidden"), "{message}");
    assert!(message.contains(&format!("CONNECT {NAME}:")), "{message}");

    let down = closed_port().await;
    let sim = simulator().await;
    let proxy = by_name(&sim)
        .set("outbound.proxy", format!("http://{down}"))
        .sim(sim)
        .spawn()
        .await;
    let (status, code, message, retry_after) = error_of(proxy.get("/v1/teams").await).await;
    assert_eq!((status.as_u16(), code.as_str()), (503, "sts_unavailable"));
    assert!(retry_after);
    assert!(
        message.contains(&format!("cannot reach the outbound proxy http://{down}")),
        "{message}"
    );
}

#[tokio::test]
async fn a_proxy_that_never_answers_connect_times_out_with_connect_timeout() {
    let outbound = ConnectProxy::start(ConnectProxyOptions {
        hang: true,
        ..Default::default()
    })
    .await;
    let sim = simulator().await;
    let proxy = api_via(&sim, &outbound.url())
        .set("upstream.connect_timeout", "1s")
        .sim(sim)
        .spawn()
        .await;
    let (status, code, message, _) = error_of(proxy.get("/v1/teams").await).await;
    assert_eq!(
        (status.as_u16(), code.as_str()),
        (502, "upstream_unavailable")
    );
    assert!(
        message.contains(&format!(
            "{} did not open a tunnel to {NAME}:",
            outbound.url()
        )),
        "{message}"
    );
    assert!(message.contains("within 1s"), "{message}");
}

#[tokio::test]
async fn tls_upstream_through_the_tunnel_speaks_h2() {
    let ca = Ca::new();
    let sim = Simulator::builder()
        .api_tls(ca.server_config_for(NAME))
        .spawn()
        .await
        .unwrap();
    let dir = Scratch::new("outbound-tls");
    let ca_file = dir.write("ca.pem", &ca.pem());
    let outbound = ConnectProxy::start(ConnectProxyOptions::default()).await;
    let proxy = Proxy::builder()
        .set("upstream.url", named(&sim.api_url()))
        .set("outbound.proxy", outbound.url())
        .set("outbound.ca_file", ca_file.display().to_string())
        .sim(sim)
        .spawn()
        .await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    // Once the upstream has spoken HTTP/2, concurrent requests share its one connection.
    let (a, b) = tokio::join!(proxy.get("/v1/teams"), proxy.get("/v1/costs/by-service"));
    assert_eq!((a.status().as_u16(), b.status().as_u16()), (200, 200));
    let seen = proxy.sim.requests();
    assert!(seen.iter().all(|r| r.version == http::Version::HTTP_2));
    assert_eq!(proxy.sim.api_connections(), 1);
    let tunnels: Vec<String> = outbound.lines();
    assert_eq!(tunnels.len(), 1, "{tunnels:?}");
    assert!(tunnels[0].starts_with(&format!("CONNECT {NAME}:")));
}

/// `token` goes out the way the proxy does, and trusts what `SSL_CERT_FILE` names by default.
#[tokio::test]
async fn a_root_from_ssl_cert_file_is_trusted_by_default_only() {
    let ca = Ca::new();
    let sim = Simulator::builder()
        .sts_tls(ca.server_config())
        .spawn()
        .await
        .unwrap();
    let dir = Scratch::new("outbound-system-roots");
    let ca_file = dir.write("ca.pem", &ca.pem());
    let config = |trust: &str| {
        format!(
            "[sts]\ntoken_url = \"{}\"\n[outbound]\n{trust}\n\
             [credentials.default]\nclient_id = \"{}\"\nclient_secret = {{ env = \"S\" }}\n",
            sim.sts_url(),
            sim.client_id()
        )
    };
    let run = |file: std::path::PathBuf| {
        let mut c = command();
        c.args(["token", "--config"])
            .arg(file)
            .env("S", sim.client_secret())
            .env("SSL_CERT_FILE", &ca_file);
        c
    };
    let system = dir.write("system.toml", &config(""));
    let out = run(system).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let bundled = dir.write("bundled.toml", &config("trust = [\"bundled\"]"));
    let out = run(bundled).output().await.unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("certificate"), "{stderr}");
    assert_eq!(sim.issue_calls(), 1);
}

#[tokio::test]
async fn check_prints_the_way_out_and_roots_but_never_the_proxy_password() {
    let dir = Scratch::new("outbound-check");
    let path = dir.write(
        "proxy.toml",
        "[sts]\ntoken_url = \"https://sts.corp.example/token\"\n\
         [outbound]\nproxy = \"http://svc:hunter2-pw@proxy.corp.example:3128\"\n\
         no_proxy = [\"corp.example\"]\ntrust = [\"bundled\"]\n\
         [credentials.default]\nclient_id = \"id\"\nclient_secret = { env = \"S\" }\n",
    );
    let out = command()
        .args(["check", "--config"])
        .arg(&path)
        .env("S", "x")
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.contains("via http://proxy.corp.example:3128 (from [outbound] proxy), auth: yes"),
        "{text}"
    );
    // The STS host is in corp.example: direct.
    assert!(text.contains("direct (matches no_proxy)"), "{text}");
    assert!(text.contains("bundled Mozilla roots"), "{text}");
    let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains("hunter2"), "{all}");
}

#[tokio::test]
async fn a_reload_applies_a_new_outbound_proxy_to_new_connections() {
    let refusing = ConnectProxy::start(ConnectProxyOptions {
        refuse: true,
        ..Default::default()
    })
    .await;
    let working = ConnectProxy::start(ConnectProxyOptions::default()).await;
    let sim = simulator().await;
    let config = |proxy: &ConnectProxy| {
        TestConfig::new()
            .set("upstream.url", named(&sim.api_url()))
            .set("upstream.allow_insecure_http", true)
            .set("outbound.proxy", proxy.url())
    };
    let (first, second) = (config(&refusing), config(&working));
    let dir = Scratch::new("outbound-reload");
    let proxy = Proxy::builder()
        .config(first)
        .config_file_in(&dir)
        .signal_only()
        .sim(sim)
        .spawn()
        .await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 502);
    proxy.rewrite_config(second);
    proxy.reload().await.unwrap();
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    assert_eq!(working.lines().len(), 1, "{:?}", working.lines());
    assert_eq!(refusing.lines().len(), 1, "{:?}", refusing.lines());
}

#[tokio::test]
async fn the_status_page_names_the_way_out_but_never_the_proxy_password() {
    let outbound = ConnectProxy::start(ConnectProxyOptions::default()).await;
    let sim = simulator().await;
    let shown = outbound.url();
    let proxy = by_name(&sim)
        .set(
            "outbound.proxy",
            shown.replace("http://", "http://svc-bi:corp-pw-5e1d@"),
        )
        .sim(sim)
        .spawn()
        .await;
    // A request through the tunnel, then the page and its JSON.
    proxy.get("/v1/teams").await;
    for path in ["/", "/status.json"] {
        let text = crate::support::client()
            .get(proxy.admin_url(path))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains(&format!("via {shown}")), "{path}: {text}");
        assert!(text.contains("auth: yes"), "{path}");
        assert!(
            !text.contains("corp-pw-5e1d") && !text.contains("svc-bi:"),
            "{path}"
        );
    }
}
