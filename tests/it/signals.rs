//! The binary under a service manager: SIGHUP reloads (a rotated secret file, a broken config),
//! SIGTERM drains a request in flight and exits 0, systemd's notify protocol, and the
//! `healthcheck` command's exit codes.

use std::time::Duration;

use crate::support::process::{ProxyProcess, Scratch, admin_command};
use crate::support::tokio;
use crate::support::{Proxy, TestConfig, client, simulator};
use azure_costs_proxy::simulator::StsFault;

#[tokio::test]
async fn sighup_applies_a_rotated_secret_file_and_keeps_a_broken_config_out() {
    let sim = simulator().await;
    let dir = Scratch::new("sighup");
    // Only the signal reloads here (the file watch has its own tests in watch.rs).
    let good = TestConfig::new()
        .set("reload.watch", false)
        .secret_file(dir.write("secret", &sim.client_secret()));
    let path = dir.write("proxy.toml", &good.text(&sim));
    let mut proxy = ProxyProcess::start(&path, &[]).await;
    // One pooled client: its keep-alive connection stays open across the reloads.
    let c = client();
    assert_eq!(
        c.get(proxy.url("/v1/teams")).send().await.unwrap().status(),
        200
    );

    sim.rotate_secret("rotated-secret-value");
    dir.write("secret", "rotated-secret-value");
    proxy.signal("HUP").await;
    proxy.wait_for("config reloaded").await;
    let r = c.get(proxy.url("/v1/teams")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let tokens = sim.issued_tokens();
    assert_eq!(tokens.len(), 2, "a new token after the reload");
    let seen = sim.requests();
    assert_eq!(
        seen.last().unwrap().headers["authorization"],
        format!("Bearer {}", tokens[1].token).as_str(),
        "the token issued with the new secret goes upstream"
    );

    dir.write("proxy.toml", &good.set("upstream.url", 5).text(&sim));
    proxy.signal("HUP").await;
    let line = proxy.wait_for("config reload failed").await;
    assert!(line.contains("upstream.url"), "{line}");
    assert_eq!(
        c.get(proxy.url("/v1/teams")).send().await.unwrap().status(),
        200
    );
    assert_eq!(sim.issued_tokens().len(), 2);

    proxy.signal("TERM").await;
    assert_eq!(proxy.exit_code().await, Some(0));
    let log = proxy.transcript.join("\n");
    assert!(
        !log.contains("rotated-secret-value"),
        "the secret is in the log"
    );
}

#[tokio::test]
async fn sigterm_lets_a_request_in_flight_finish_refuses_new_connections_and_exits_0() {
    let sim = simulator().await;
    sim.hold_exports();
    let dir = Scratch::new("sigterm");
    let config = TestConfig::new().set("listen.shutdown_grace", "20s");
    let path = dir.write("proxy.toml", &config.text(&sim));
    let secret = sim.client_secret();
    let mut proxy = ProxyProcess::start(&path, &[("SIM_SECRET", &secret)]).await;
    let mut export = client()
        .get(proxy.url("/v1/costs/export?rows=20000"))
        .send()
        .await
        .unwrap();
    assert_eq!(export.status(), 200);
    let mut received = export.chunk().await.unwrap().unwrap().len();

    proxy.signal("TERM").await;
    proxy.wait_for("no longer accepting connections").await;
    let refused = tokio::net::TcpStream::connect(&proxy.addr).await;
    assert!(
        refused.is_err(),
        "a new connection was accepted while draining"
    );

    sim.release_exports();
    while let Some(chunk) = export.chunk().await.unwrap() {
        received += chunk.len();
    }
    assert!(received > 100_000, "only {received} bytes");
    assert_eq!(sim.exports_finished(), 1, "the export ran to its end");
    assert_eq!(proxy.exit_code().await, Some(0));
    let log = proxy.transcript.join("\n");
    assert!(log.contains("all connections closed"), "{log}");
}

/// What the proxy sends to `NOTIFY_SOCKET`, in order, watchdog pings counted apart.
struct Notifications {
    socket: tokio::net::UnixDatagram,
    pings: usize,
}

impl Notifications {
    /// The next message that is not a watchdog ping.
    async fn next(&mut self) -> String {
        loop {
            let text = self.receive().await;
            if text.trim() != "WATCHDOG=1" {
                return text;
            }
            self.pings += 1;
        }
    }

    /// Waits until `count` pings have come, with nothing else between.
    async fn wait_for_pings(&mut self, count: usize) {
        while self.pings < count {
            let text = self.receive().await;
            assert_eq!(text.trim(), "WATCHDOG=1", "unexpected notification");
            self.pings += 1;
        }
    }

    async fn receive(&mut self) -> String {
        let mut buf = vec![0u8; 4096];
        let n = tokio::time::timeout(Duration::from_secs(20), self.socket.recv(&mut buf))
            .await
            .expect("a notification in time")
            .unwrap();
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }
}

#[tokio::test]
async fn a_second_sigterm_exits_at_once_and_sighup_while_draining_reloads_nothing() {
    let sim = simulator().await;
    sim.hold_exports();
    let dir = Scratch::new("second-signal");
    let config = TestConfig::new().secret_file(dir.write("secret", &sim.client_secret()));
    let path = dir.write("proxy.toml", &config.text(&sim));
    let mut proxy = ProxyProcess::start(&path, &[]).await;
    let mut export = client()
        .get(proxy.url("/v1/costs/export?rows=20000"))
        .send()
        .await
        .unwrap();
    assert!(export.chunk().await.unwrap().is_some());

    proxy.signal("TERM").await;
    proxy.wait_for("no longer accepting connections").await;
    proxy.signal("HUP").await;
    proxy.signal("TERM").await;
    assert_eq!(
        proxy.exit_code().await,
        Some(130),
        "the export is still held"
    );
    let log = proxy.transcript.join("\n");
    assert!(log.contains("second shutdown signal"), "{log}");
    assert!(
        !log.contains("reloading the config"),
        "a reload ran while draining: {log}"
    );
    // The client sees its response cut off, not completed.
    let mut rest = Ok(None);
    for _ in 0..1000 {
        rest = export.chunk().await;
        if !matches!(rest, Ok(Some(_))) {
            break;
        }
    }
    assert!(rest.is_err(), "the cut-off export looked complete");
    sim.release_exports();
}

#[tokio::test]
async fn systemd_hears_ready_reloading_watchdog_and_stopping() {
    let sim = simulator().await;
    let dir = Scratch::new("notify");
    let socket_path = dir.0.join("notify.sock");
    let socket = tokio::net::UnixDatagram::bind(&socket_path).unwrap();
    let path = dir.write("proxy.toml", &TestConfig::new().text(&sim));
    let secret = sim.client_secret();
    let socket_env = socket_path.display().to_string();
    let mut proxy = ProxyProcess::start(
        &path,
        &[
            ("SIM_SECRET", &secret),
            ("NOTIFY_SOCKET", &socket_env),
            ("WATCHDOG_USEC", "400000"),
        ],
    )
    .await;

    let mut notes = Notifications { socket, pings: 0 };
    let ready = notes.next().await;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");
    assert!(ready.contains("STATUS=listening on http://"), "{ready}");

    proxy.signal("HUP").await;
    let reloading = notes.next().await;
    assert!(reloading.lines().any(|l| l == "RELOADING=1"), "{reloading}");
    assert!(reloading.contains("MONOTONIC_USEC="), "{reloading}");
    let ready = notes.next().await;
    assert!(ready.lines().any(|l| l == "READY=1"), "{ready}");

    // A watchdog of 400 ms gets a ping every 200 ms: wait for two.
    notes.wait_for_pings(notes.pings + 2).await;
    proxy.signal("TERM").await;
    let stopping = notes.next().await;
    assert!(stopping.lines().any(|l| l == "STOPPING=1"), "{stopping}");
    assert_eq!(proxy.exit_code().await, Some(0));
}

/// Runs `healthcheck` with a config whose `[admin]` table holds `admin`.
async fn healthcheck(dir: &Scratch, admin: &str) -> (Option<i32>, String) {
    admin_command(dir, admin, &["healthcheck", "--timeout", "5s"]).await
}

#[tokio::test]
async fn healthcheck_exits_0_when_ready_and_1_otherwise() {
    let dir = Scratch::new("healthcheck");
    // Ready: a proxy holding its token.
    let ready = Proxy::builder().spawn().await;
    ready.sim.wait_for_sts_calls(1).await;
    let section = format!(r#"address = "{}""#, ready.admin);
    let (code, text) = healthcheck(&dir, &section).await;
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains("\"status\":\"ready\""), "{text}");

    // Not ready: the STS refuses the credential, so there is no token.
    let refused = Proxy::builder().sts_fault(StsFault::Reject).spawn().await;
    // The STS call has reached the simulator; wait until the proxy has taken the refusal.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let body = client()
            .get(refused.admin_url("/readyz"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if body.contains("backing_off") {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "never backing off: {body}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let section = format!(r#"address = "{}""#, refused.admin);
    let (code, text) = healthcheck(&dir, &section).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(
        text.contains("503") && text.contains("backing_off"),
        "{text}"
    );

    // Nothing listening.
    let closed = crate::support::closed_port().await;
    let (code, text) = healthcheck(&dir, &format!(r#"address = "{closed}""#)).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("cannot connect"), "{text}");

    // Admin disabled, and a config error: 1 as well (Docker reserves 2).
    let (code, text) = healthcheck(&dir, "enabled = false").await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("disabled"), "{text}");
    let (code, text) = healthcheck(&dir, r#"adress = "x""#).await;
    assert_eq!(code, Some(1), "{text}");
    assert!(text.contains("admin.adress"), "{text}");
}
