//! `[log] file`: the same lines as stderr, in a file named with the day, without secrets; what
//! a request sends reaches a line escaped, never as characters a terminal would obey.

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

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

/// Sends `head` (a request's head, its blank line included) as raw bytes and returns the status
/// line of the answer.
async fn send_raw(addr: &str, head: &[u8]) -> String {
    let mut stream = TcpStream::connect(addr).await.unwrap();
    stream.write_all(head).await.unwrap();
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).await.unwrap();
    let answer = String::from_utf8_lossy(&answer);
    answer.lines().next().unwrap_or_default().to_string()
}

/// A C1 control (U+009B, a terminal's CSI) and a bidi override (U+202E), as UTF-8.
const RAW: &[u8] = b"\xc2\x9b\xe2\x80\xae";

#[tokio::test]
async fn control_and_bidi_characters_from_a_request_are_logged_escaped() {
    let sim = simulator().await;
    let dir = Scratch::new("escaped-path");
    let path = dir.write("proxy.toml", &TestConfig::new().text(&sim));
    for format in ["text", "json"] {
        let env = [("SIM_SECRET", sim.client_secret())];
        let env: Vec<_> = env.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let mut proxy = ProxyProcess::start_with(&["--log-format", format], &path, &env).await;
        // hyper and http let UTF-8 through in a path: the request is forwarded.
        let mut head = b"GET /v1/teams/".to_vec();
        head.extend_from_slice(RAW);
        head.extend_from_slice(b"/%C2%9B%E2%80%AE HTTP/1.1\r\nHost: localhost\r\n");
        head.extend_from_slice(b"X-Request-Id: raw-path\r\nConnection: close\r\n\r\n");
        let status = send_raw(&proxy.addr, &head).await;
        assert!(status.starts_with("HTTP/1.1 "), "{status}");
        let line = proxy.wait_for("raw-path").await;
        assert!(
            !line.contains('\u{9b}') && !line.contains('\u{202e}'),
            "{line:?}"
        );
        // The percent-encoded forms stay as sent.
        let path = if format == "text" {
            line.split(" path=")
                .nth(1)
                .unwrap()
                .split(' ')
                .next()
                .unwrap()
                .to_string()
        } else {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            event["path"].as_str().unwrap().to_string()
        };
        assert_eq!(path, "/v1/teams/\\u{9b}\\u{202e}/%C2%9B%E2%80%AE", "{line}");

        // A Host that is not accepted is shown in the refusal's reason, escaped too.
        let mut head = b"GET /v1/teams HTTP/1.1\r\nHost: evil".to_vec();
        head.extend_from_slice(RAW);
        head.extend_from_slice(b".example\r\nConnection: close\r\n\r\n");
        let status = send_raw(&proxy.addr, &head).await;
        assert!(status.starts_with("HTTP/1.1 403"), "{status}");
        let line = proxy.wait_for("request refused").await;
        assert!(
            !line.contains('\u{9b}') && !line.contains('\u{202e}'),
            "{line:?}"
        );
        let reason = if format == "text" {
            // A string field is quoted as `Debug` quotes it: its backslashes doubled.
            line.split(" reason=").nth(1).unwrap().replace("\\\\", "\\")
        } else {
            let event: serde_json::Value = serde_json::from_str(&line).unwrap();
            event["reason"].as_str().unwrap().to_string()
        };
        assert!(reason.contains("`evil\\u{9b}\\u{202e}.example`"), "{line}");
    }
}
