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
