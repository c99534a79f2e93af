//! `[log] file`: the same lines as stderr, in a file named with the day, without secrets.

use crate::support::process::{ProxyProcess, Scratch, log_file_with};
use crate::support::tokio;
use crate::support::{TestConfig, client, simulator};

#[tokio::test]
async fn log_file_gets_the_access_line_in_a_dated_file_and_never_the_secret() {
    let sim = simulator().await;
    let secret = sim.client_secret().to_string();
    let dir = Scratch::new("log-file");
    let file = dir.0.join("logs").join("proxy.log");
    let config = TestConfig::new()
        .set("log.file", file.display().to_string())
        .set("log.keep", 2);
    let path = dir.write("proxy.toml", &config.text(&sim));
    let mut proxy =
        ProxyProcess::start(&path, &[("SIM_SECRET", &secret), ("RUST_LOG", "trace")]).await;
    let r = client().get(proxy.url("/v1/teams")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    proxy.wait_for("status=200").await;

    let (name, text) = log_file_with(&file, "status=200").await;
    // proxy.YYYY-MM-DD.log
    let date = name
        .strip_prefix("proxy.")
        .and_then(|n| n.strip_suffix(".log"))
        .unwrap_or_else(|| panic!("{name}"));
    assert!(
        date.len() == 10 && date.chars().filter(|c| *c == '-').count() == 2,
        "{name}"
    );
    assert!(text.contains("listening on http://"), "{text}");
    assert!(text.contains("path=/v1/teams"), "{text}");
    assert!(!text.contains('\u{1b}'), "colour codes in the file");
    assert!(
        !text.contains(&secret),
        "the client secret is in the log file"
    );
    for t in sim.issued_tokens() {
        assert!(!text.contains(&t.token), "a token is in the log file");
    }
}

#[tokio::test]
async fn a_log_file_beside_the_config_does_not_feed_itself_at_trace_level() {
    let sim = simulator().await;
    let secret = sim.client_secret().to_string();
    let dir = Scratch::new("log-feeds-itself");
    // The log in the config's own folder, which the file watch watches.
    let file = dir.0.join("acp.log");
    let config = TestConfig::new().set("log.file", file.display().to_string());
    let path = dir.write("proxy.toml", &config.text(&sim));
    let proxy = ProxyProcess::start(&path, &[("SIM_SECRET", &secret), ("RUST_LOG", "trace")]).await;
    let r = client().get(proxy.url("/v1/teams")).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let (name, _) = log_file_with(&file, "status=200").await;
    let written = dir.0.join(name);
    // Idle now: what the log grows by in the next second is the proxy talking to itself (a
    // feedback loop wrote about 25 MB a second).
    let before = std::fs::metadata(&written).unwrap().len();
    tokio::time::sleep(std::time::Duration::from_secs(1)).await;
    let grown = std::fs::metadata(&written).unwrap().len() - before;
    assert!(
        grown < 20_000,
        "an idle proxy wrote {grown} bytes of log in a second"
    );
    let text = std::fs::read_to_string(&written).unwrap();
    assert!(
        !text.contains("config reloaded"),
        "a log line made the proxy reload"
    );
    drop(proxy);
}
