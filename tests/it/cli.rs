//! The binary as an operator meets it: config errors and exit codes, `check`, `demo`, logs that
//! never hold a secret or a token, and a clean exit on SIGTERM.

use std::process::Stdio;
use std::time::Duration;

use base64::Engine as _;

use crate::support::connect_proxy::{ConnectProxy, ConnectProxyOptions};
use crate::support::process::{ProxyProcess, Scratch, collect_lines, command, wait_for_line};
use crate::support::tokio;
use crate::support::{TestConfig, client, closed_port, env, route, simulator};
use azure_costs_proxy::simulator::StsFault;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Runs the binary with `args` then `--config path`, the config's secret variable `S` set.
async fn with_config(args: &[&str], path: &std::path::Path) -> std::process::Output {
    command()
        .args(args)
        .arg("--config")
        .arg(path)
        .env("S", "x")
        .output()
        .await
        .unwrap()
}

#[tokio::test]
async fn unknown_config_key_exits_2_naming_key_and_line() {
    let dir = Scratch::new("unknown-key");
    let config = r#"[credentials.default]
client_id = "a"
client_secret = { env = "S" }

[upstream]
url = "https://api.azure-costs.com"
timout = "5s"
"#;
    let path = dir.write("proxy.toml", config);
    let out = with_config(&["check"], &path).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 7"), "{err}");
    assert!(err.contains("upstream.timout"), "{err}");
    assert!(err.contains(path.to_str().unwrap()), "{err}");
    assert!(err.contains("hint:"), "{err}");

    // `run` refuses the same file the same way, before binding anything.
    let out = with_config(&[], &path).await;
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn non_loopback_listen_is_refused_with_a_pointer_to_allow_remote() {
    let dir = Scratch::new("remote");
    let config = r#"[listen]
address = "0.0.0.0:8080"

[credentials.default]
client_id = "a"
client_secret = { env = "S" }
"#;
    let path = dir.write("proxy.toml", config);
    let out = with_config(&[], &path).await;
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("allow_remote"), "{err}");
    assert!(err.contains("line 2"), "{err}");
}

#[tokio::test]
async fn environment_only_config_without_secret_exits_2() {
    let dir = Scratch::new("env-only");
    let out = command()
        .arg("check")
        .current_dir(&dir.0)
        .env("AZURE_COSTS_CLIENT_ID", "abc")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AZURE_COSTS_CLIENT_SECRET"));

    let out = command()
        .arg("check")
        .current_dir(&dir.0)
        .env("AZURE_COSTS_CLIENT_ID", "abc")
        .env("AZURE_COSTS_CLIENT_SECRET", "env-secret-value")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("config:      environment"), "{text}");
    assert!(!text.contains("env-secret-value"));
}

#[tokio::test]
async fn check_prints_the_summary_without_secrets() {
    let dir = Scratch::new("check");
    let secret_file = dir.write("secret", "file-secret-value\n");
    let config = format!(
        r#"[credentials.default]
client_id = "id-default"
client_secret = {{ env = "S" }}

[credentials.csp]
client_id = "id-csp"
client_secret = {{ file = '{}' }}

[[routes]]
prefix = "/"

[[routes]]
prefix = "/customers/contoso"
credential = "csp"
delegate = "TEAM-CONTOSO"
"#,
        secret_file.display()
    );
    let path = dir.write("proxy.toml", &config);
    let out = command()
        .args(["check", "--config"])
        .arg(&path)
        .env("S", "env-secret-value")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    for expected in [
        "127.0.0.1:8080",
        "https://api.azure-costs.com",
        "id-default",
        "secret from env S",
        "/customers/contoso",
        "TEAM-CONTOSO",
        &format!(
            "reload:      on SIGHUP, or a change to {}, {}",
            path.display(),
            secret_file.display()
        ),
        "config OK",
    ] {
        assert!(text.contains(expected), "missing {expected}: {text}");
    }
    let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(!all.contains("env-secret-value"));
    assert!(!all.contains("file-secret-value"));
}

#[tokio::test]
async fn trace_logs_never_hold_the_secret_or_a_token_and_sigterm_exits_0() {
    let sim = simulator().await;
    let secret = sim.client_secret().to_string();
    let dir = Scratch::new("trace");
    // Everything goes out through an outbound proxy that wants credentials, by a name only it
    // resolves: its password must not reach the logs either.
    let proxy_password = "proxy-pw-0c4e2a";
    let proxy_basic = format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("svc-bi:{proxy_password}"))
    );
    let outbound = ConnectProxy::start(ConnectProxyOptions {
        require_auth: Some(proxy_basic.clone()),
        ..Default::default()
    })
    .await;
    let named = |url: String| url.replacen("127.0.0.1", "sim.costs.test", 1);
    let config = TestConfig::new()
        .set("upstream.url", named(sim.api_url()))
        .set("upstream.allow_insecure_http", true)
        .set("sts.token_url", named(sim.sts_url()))
        .set("sts.allow_insecure_http", true)
        .set("outbound.proxy", outbound.url())
        .set("outbound.proxy_auth.username", "svc-bi")
        .set("outbound.proxy_auth.password", env("PROXY_PW"))
        .set("listen.api_keys", vec![env("BI_KEY")])
        .route(route("/"))
        .route(route("/customers/contoso").delegate("TEAM-CONTOSO"))
        .route(route("/fresh").token_mode("per_request"))
        .client(
            crate::support::config::client("contoso")
                .key(env("CONTOSO_KEY"))
                .routes(&["/customers/contoso"]),
        );
    let path = dir.write("proxy.toml", &config.text(&sim));
    let key = "inbound-key-9f3b2c";
    let wrong_key = "wrong-key-71aa04";
    let contoso_key = "contoso-client-key-5e8d1a";
    let mut proxy = ProxyProcess::start(
        &path,
        &[
            ("SIM_SECRET", &secret),
            ("BI_KEY", key),
            ("CONTOSO_KEY", contoso_key),
            ("PROXY_PW", proxy_password),
            ("RUST_LOG", "trace"),
        ],
    )
    .await;

    let c = client();
    let get = |path: &str| c.get(proxy.url(path)).bearer_auth(key).send();
    assert_eq!(get("/v1/teams").await.unwrap().status(), 200);
    assert_eq!(
        get("/customers/contoso/v1/teams").await.unwrap().status(),
        200
    );
    assert_eq!(get("/fresh/v1/teams").await.unwrap().status(), 200);
    // A wrong inbound key.
    let refused = c
        .get(proxy.url("/v1/teams"))
        .basic_auth("bi", Some(wrong_key));
    assert_eq!(refused.send().await.unwrap().status(), 401);
    // A named client: its own route, and one it may not use.
    let contoso = |path: &str| c.get(proxy.url(path)).bearer_auth(contoso_key).send();
    let r = contoso("/customers/contoso/v1/teams").await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(contoso("/v1/teams").await.unwrap().status(), 403);
    // The upstream refuses the cached token: dropped, a fresh one, one retry.
    sim.revoke_tokens();
    assert_eq!(get("/v1/teams").await.unwrap().status(), 200);
    // An STS that echoes the request (secret included) in its error description.
    sim.set_sts_fault(Some(StsFault::EchoRequest));
    assert_eq!(get("/fresh/v1/teams").await.unwrap().status(), 502);
    // The access line of that last request marks the end of what we need to scan.
    proxy.wait_for("sts_rejected").await;

    #[cfg(unix)]
    {
        proxy.signal("TERM").await;
        assert_eq!(proxy.exit_code().await, Some(0));
    }
    #[cfg(windows)]
    proxy.kill().await;

    let log = proxy.transcript.join("\n");
    let tokens = sim.issued_tokens();
    assert!(tokens.len() >= 4, "{tokens:?}");
    assert!(!log.contains(&secret), "the client secret is in the logs");
    assert!(
        !log.contains(proxy_password) && !log.contains(&proxy_basic[6..]),
        "the outbound proxy's credentials are in the logs"
    );
    assert!(
        outbound
            .lines()
            .iter()
            .any(|l| l.starts_with("CONNECT sim.costs.test:")),
        "the outbound proxy was not used"
    );
    assert!(
        !log.contains(key) && !log.contains(wrong_key) && !log.contains(contoso_key),
        "an API or client key is in the logs"
    );
    // The client is named instead: on its access lines and on its refusal.
    assert!(
        log.contains("client=\"contoso\""),
        "no client on the access line"
    );
    assert!(
        log.lines().any(|l| l.contains("request refused")
            && l.contains("client=\"contoso\"")
            && l.contains("forbidden_route")),
        "the refusal is not logged with its client and reason"
    );
    assert!(
        log.lines()
            .any(|l| l.contains("request refused") && l.contains("client=\"unknown\"")),
        "the 401 is not logged with client unknown"
    );
    assert!(
        tokens.iter().any(|t| t.delegate.is_some()),
        "no delegate update"
    );
    for t in &tokens {
        assert!(!log.contains(&t.token), "token {} is in the logs", t.token);
    }
    assert!(!log.contains("Bearer sim_"));
    // The echoed description was logged, with the secret cut out.
    assert!(
        log.contains("cannot parse") && log.contains("[redacted]"),
        "no scrubbed echo"
    );
    assert!(log.contains("token issued"));
    assert!(
        log.contains("retrying once with a fresh one"),
        "no 401 retry"
    );
    assert!(log.contains("status=200"));
}

#[tokio::test]
async fn demo_prints_curl_lines_that_return_each_teams_data() {
    let mut child = command()
        .args(["demo", "--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let mut urls = Vec::new();
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("demo output in time")
            .unwrap()
            .expect("demo printed its curl lines");
        if let Some(rest) = line.trim().strip_prefix("curl -s '") {
            urls.push(rest.split('\'').next().unwrap().to_string());
        }
        if line.contains("Ctrl-C") {
            break;
        }
    }
    assert!(urls[0].contains("/v1/costs/by-service"), "{urls:?}");
    let r = client().get(&urls[0]).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["currency"], "USD");
    assert_eq!(body["items"].as_array().unwrap().len(), 8);
    assert_eq!(body["team"]["id"], "TEAM-PARTNER");

    // The CSP lines act for their customer teams.
    for (part, team) in [
        ("/customers/contoso/", "TEAM-CONTOSO"),
        ("/customers/fabrikam/", "TEAM-FABRIKAM"),
        ("/teams/TEAM-WOODGROVE/", "TEAM-WOODGROVE"),
    ] {
        let url = urls.iter().find(|u| u.contains(part)).expect(part);
        let r = client().get(url).send().await.unwrap();
        assert_eq!(r.status(), 200, "{url}");
        let body: serde_json::Value = r.json().await.unwrap();
        assert!(body.to_string().contains(team), "{url}: {body}");
    }
}

#[tokio::test]
async fn the_example_config_is_valid() {
    let example = concat!(env!("CARGO_MANIFEST_DIR"), "/proxy.toml.example");
    let out = command()
        .args(["check", "--config", example])
        .env("AZURE_COSTS_CLIENT_SECRET", "example-secret")
        .output()
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains("config OK"));
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_the_access_fields() {
    let sim = simulator().await;
    let dir = Scratch::new("json-logs");
    let path = dir.write("proxy.toml", &TestConfig::new().text(&sim));
    let mut child = command()
        .args(["--log-format", "json", "--config"])
        .arg(&path)
        .env("SIM_SECRET", sim.client_secret())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut rx = collect_lines(&mut child);
    let mut transcript = Vec::new();
    let line = wait_for_line(&mut rx, &mut transcript, "listening on").await;
    let start: serde_json::Value = serde_json::from_str(&line).unwrap();
    let addr = start["address"].as_str().unwrap().to_string();

    let r = client()
        .get(format!("http://{addr}/v1/costs/by-service?month=2026-10"))
        .header("x-request-id", "json-log-test")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let line = wait_for_line(&mut rx, &mut transcript, "json-log-test").await;
    for l in &transcript {
        serde_json::from_str::<serde_json::Value>(l)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {l}"));
    }
    let access: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(access["target"], "access");
    assert_eq!(access["method"], "GET");
    assert_eq!(
        access["path"], "/v1/costs/by-service",
        "the query string must not be logged"
    );
    assert_eq!(access["route"], "/");
    assert_eq!(access["status"], 200);
    assert_eq!(access["request_id"], "json-log-test");
    assert!(access["bytes"].as_u64().unwrap() > 100);
    assert!(access["duration_ms"].as_f64().is_some());
    assert_eq!(access["outcome"], "complete");
}

#[tokio::test]
async fn lines_inside_a_request_carry_its_request_id_method_and_route() {
    let sim = simulator().await;
    let dir = Scratch::new("request-span");
    let dead = format!("http://{}", closed_port().await);
    let config = TestConfig::new().set("upstream.url", dead).text(&sim);
    let path = dir.write("proxy.toml", &config);
    // The request path logging at warn only must still name the request (the start-up line
    // that gives the address stays at info).
    let warn_only =
        "azure_costs_proxy=info,azure_costs_proxy::proxy=warn,azure_costs_proxy::access_log=warn";
    for (format, filter) in [("text", "info"), ("json", "info"), ("text", warn_only)] {
        let secret = sim.client_secret();
        let env = [("SIM_SECRET", secret.as_str()), ("RUST_LOG", filter)];
        let mut proxy = ProxyProcess::start_with(&["--log-format", format], &path, &env).await;
        let r = client()
            .get(proxy.url("/v1/teams"))
            .header("x-request-id", "span-test")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
        // The warning about the dead upstream names none of the request's fields itself.
        let line = proxy.wait_for("unreachable").await;
        if format == "text" {
            assert!(
                line.contains("request{request_id=span-test method=GET route=/}:"),
                "{line}"
            );
        } else {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            let span = &event["spans"][0];
            assert_eq!(span["name"], "request", "{line}");
            assert_eq!(span["request_id"], "span-test", "{line}");
            assert_eq!(span["method"], "GET", "{line}");
            assert_eq!(span["route"], "/", "{line}");
        }
        #[cfg(unix)]
        {
            proxy.signal("TERM").await;
            assert_eq!(proxy.exit_code().await, Some(0));
        }
        #[cfg(windows)]
        proxy.kill().await;
    }
}

#[tokio::test]
async fn token_prints_type_expiry_and_fingerprint_and_the_token_only_when_asked() {
    let sim = simulator().await;
    let dir = Scratch::new("token");
    let config = TestConfig::new()
        .route(route("/"))
        .route(route("/customers/contoso").delegate("TEAM-CONTOSO"));
    let path = dir.write("proxy.toml", &config.text(&sim));
    let run = |args: &'static [&'static str]| {
        command()
            .arg("token")
            .args(args)
            .arg("--config")
            .arg(&path)
            .env("SIM_SECRET", sim.client_secret())
            .output()
    };

    let out = run(&[]).await.unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let issued = sim.issued_tokens();
    assert_eq!(issued.len(), 1);
    for expected in [
        "route        /",
        "type         Bearer",
        "expires      20",
        "fingerprint  sha256:",
    ] {
        assert!(text.contains(expected), "missing {expected}: {text}");
    }
    let all = format!("{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(
        !all.contains(&issued[0].token),
        "token printed without --print"
    );
    assert!(!all.contains(&sim.client_secret()));

    let out = run(&["--route", "/customers/contoso/", "--print"])
        .await
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let delegated = sim.issued_tokens().pop().unwrap();
    assert_eq!(delegated.delegate.as_deref(), Some("TEAM-CONTOSO"));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), delegated.token);
    let description = String::from_utf8_lossy(&out.stderr);
    assert!(
        description.contains("delegate     TEAM-CONTOSO"),
        "{description}"
    );
    assert!(!description.contains(&delegated.token));

    let out = run(&["--route", "/nowhere"]).await.unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("/customers/contoso") && err.contains("/nowhere"),
        "{err}"
    );

    sim.set_sts_fault(Some(StsFault::Reject));
    let out = run(&[]).await.unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rejected") && err.contains("`default`"),
        "{err}"
    );
    assert!(!err.contains(&sim.client_secret()));
    assert!(out.stdout.is_empty());
}

#[cfg(not(windows))]
#[tokio::test]
async fn service_commands_exit_2_and_point_to_systemd_outside_windows() {
    for args in [
        &["service", "install"][..],
        &["service", "status", "--name", "other"],
        &["run", "--service"],
    ] {
        let out = command().args(args).output().await.unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("systemd/azure-costs-proxy.service"),
            "{stderr}"
        );
    }
    let out = command()
        .args(["service", "status", "--name", "a b"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
}

#[tokio::test]
async fn client_key_prints_a_key_whose_digest_lines_a_proxy_accepts() {
    let out = command()
        .args(["client-key", "--name", "contoso-dashboards"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    let key = text
        .lines()
        .find(|l| !l.starts_with('#'))
        .unwrap()
        .to_string();
    let entry = text.split_once("\n\n").unwrap().1;

    // The printed lines, pasted into a config, let that key in and no other.
    let dir = Scratch::new("client-key");
    let sim = simulator().await;
    let config = format!("{}{entry}", TestConfig::new().text(&sim));
    assert!(
        !config.contains(&key),
        "the key itself is in the lines to paste"
    );
    let path = dir.write("proxy.toml", &config);
    let secret = sim.client_secret();
    let proxy = ProxyProcess::start(&path, &[("SIM_SECRET", &secret)]).await;
    let c = client();
    let with = |key: &str| c.get(proxy.url("/v1/teams")).bearer_auth(key).send();
    assert_eq!(with(&key).await.unwrap().status(), 200);
    assert_eq!(with("not-the-key").await.unwrap().status(), 401);
    drop(proxy);

    let out = command()
        .args(["client-key", "--name", "two words"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot be a client name"));
}

#[tokio::test]
async fn check_warns_of_a_remote_listener_that_lets_anyone_in() {
    let dir = Scratch::new("check-open");
    let base = "[listen]\naddress = \"0.0.0.0:8080\"\nallow_remote = true\n\n\
                [credentials.default]\nclient_id = \"id\"\nclient_secret = { env = \"S\" }\n";
    let open = dir.write("open.toml", base);
    let out = with_config(&["check"], &open).await;
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("warning:") && text.contains("without any client authentication"),
        "{text}"
    );
    let digest = "ab".repeat(32);
    let closed = dir.write(
        "closed.toml",
        &format!("{base}\n[[clients]]\nname = \"bi\"\nkey_sha256 = \"{digest}\"\n"),
    );
    let out = with_config(&["check"], &closed).await;
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!text.contains("client authentication"), "{text}");
    assert!(text.contains("client:      bi by key (digest)"), "{text}");
}
