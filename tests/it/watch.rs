//! Reloads with no signal (`[reload] watch`): a secret file renamed over or rewritten in place, a
//! Kubernetes volume swapped under the proxy, a broken file (refused with its place, applied once
//! fixed), a burst of writes (one reload), the watched files following the config, the polling
//! fallback; with `watch = false`, nothing until a signal; and nothing left after shutdown.

use std::path::Path;
use std::time::Duration;

use crate::support::process::{ProxyProcess, Scratch};
use crate::support::tokio;
use crate::support::{Proxy, TestConfig, client, route, simulator};
use azure_costs_proxy::simulator::Simulator;
use azure_costs_proxy::watch::WatchTiming;

/// Writes `text` under a temporary name beside `path` and renames it over `path`, as an editor,
/// `mv` or a secret manager's agent replaces a file.
///
/// Windows refuses the rename (access denied) while another process holds the file open in a
/// way that forbids it, as Wine did once while the proxy process read the config it was
/// reloading; editors try again, and so does this, for 5 s at most. Nothing signals the close
/// of another process's handle, so this polls.
fn replace(path: &Path, text: &str) {
    let tmp = path.with_extension("new~");
    std::fs::write(&tmp, text).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        match std::fs::rename(&tmp, path) {
            Ok(()) => return,
            Err(e)
                if e.kind() == std::io::ErrorKind::PermissionDenied
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(20));
            }
            Err(e) => panic!(
                "cannot rename {} over {}: {e}",
                tmp.display(),
                path.display()
            ),
        }
    }
}

/// The bearer token the API saw on its latest request.
fn last_bearer(sim: &Simulator) -> String {
    let requests = sim.requests();
    let last = requests.last().expect("the API saw a request");
    last.headers["authorization"].to_str().unwrap().to_string()
}

/// The config with a second route, `/contoso`, acting for TEAM-CONTOSO: 404 before it applies.
fn with_contoso(config: TestConfig) -> TestConfig {
    config
        .route(route("/"))
        .route(route("/contoso").delegate("TEAM-CONTOSO"))
}

/// Waits (20 s at most) until `path` answers `status` through the proxy.
async fn wait_for_status(proxy: &Proxy, path: &str, status: u16) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let now = proxy.get(path).await.status().as_u16();
        if now == status {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{path} still answers {now}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_rotated_secret_file_is_used_by_the_next_token_fetch_without_a_signal() {
    let dir = Scratch::new("watch-rotate");
    let proxy = Proxy::builder().config_file_in(&dir).spawn().await;
    proxy.sim.wait_for_sts_calls(1).await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);

    // The vendor rotates the secret; an agent renames the new file over the old one.
    proxy.sim.rotate_secret("rotated-by-rename");
    replace(proxy.secret_path(), "rotated-by-rename\n");
    proxy.wait_for_reloads("ok", "file", 1).await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    let tokens = proxy.sim.issued_tokens();
    assert_eq!(tokens.len(), 2, "one new token, issued for the new secret");
    assert_eq!(
        last_bearer(&proxy.sim),
        format!("Bearer {}", tokens[1].token)
    );

    // Rewritten in place (same path, same inode): a change too; the credential's tokens go.
    proxy.sim.rotate_secret("rotated-in-place");
    std::fs::write(proxy.secret_path(), "rotated-in-place\n").unwrap();
    proxy.wait_for_reloads("ok", "file", 2).await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    let tokens = proxy.sim.issued_tokens();
    assert_eq!(tokens.len(), 3);
    assert_eq!(
        last_bearer(&proxy.sim),
        format!("Bearer {}", tokens[2].token)
    );
    assert_eq!(proxy.reloads("ok", "signal").await, 0, "no signal was sent");
}

/// A Kubernetes Secret or ConfigMap volume as the kubelet lays it out: the files of each version
/// in a `..TIMESTAMP` directory, `..data` pointing at the current one, and each key a symlink
/// through `..data`.
#[cfg(unix)]
struct KubeVolume<'a>(&'a Path);

#[cfg(unix)]
impl KubeVolume<'_> {
    /// Publishes `files` as version `version`, the way the kubelet's atomic writer does: a new
    /// directory, a `..data_tmp` symlink to it renamed over `..data`, the old version removed.
    fn publish(&self, version: &str, files: &[(&str, &str)]) {
        use std::os::unix::fs::symlink;
        let old = std::fs::read_link(self.0.join("..data")).ok();
        std::fs::create_dir(self.0.join(version)).unwrap();
        for (name, text) in files {
            std::fs::write(self.0.join(version).join(name), text).unwrap();
            let link = self.0.join(name);
            if std::fs::symlink_metadata(&link).is_err() {
                symlink(Path::new("..data").join(name), &link).unwrap();
            }
        }
        symlink(version, self.0.join("..data_tmp")).unwrap();
        std::fs::rename(self.0.join("..data_tmp"), self.0.join("..data")).unwrap();
        if let Some(old) = old {
            std::fs::remove_dir_all(self.0.join(old)).unwrap();
        }
    }
}

#[cfg(unix)]
#[tokio::test]
async fn a_kubernetes_volume_swapped_atomically_applies_the_new_config_and_secret() {
    let sim = simulator().await;
    let dir = Scratch::new("watch-kubernetes");
    let volume = KubeVolume(&dir.0);
    let config = TestConfig::new().secret_file(dir.0.join("client_secret"));
    let first = config.text(&sim);
    volume.publish(
        "..2026_01_01_00_00_00.000000001",
        &[
            ("proxy.toml", &first),
            ("client_secret", &sim.client_secret()),
        ],
    );
    let proxy = Proxy::builder()
        .sim(sim)
        .config_path(dir.0.join("proxy.toml"))
        .spawn()
        .await;
    proxy.sim.wait_for_sts_calls(1).await;
    assert_eq!(proxy.get("/contoso/v1/teams").await.status(), 404);

    // A new version of the Secret: a new client secret, and a config with a Contoso route.
    proxy.sim.rotate_secret("rotated-by-the-kubelet");
    let second = with_contoso(config).text(&proxy.sim);
    volume.publish(
        "..2026_01_02_00_00_00.000000002",
        &[
            ("proxy.toml", &second),
            ("client_secret", "rotated-by-the-kubelet"),
        ],
    );
    proxy.wait_for_reloads("ok", "file", 1).await;
    // The STS takes only the new secret now: the route's token proves it was read.
    assert_eq!(proxy.get("/contoso/v1/teams").await.status(), 200);
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    assert_eq!(proxy.reloads("error", "file").await, 0);
}

#[tokio::test]
async fn a_broken_file_seen_by_the_watch_is_refused_with_its_place_and_fixing_it_applies() {
    let sim = simulator().await;
    let dir = Scratch::new("watch-broken");
    let good = TestConfig::new().secret_file(dir.write("secret", &sim.client_secret()));
    let path = dir.write("proxy.toml", &good.text(&sim));
    let mut proxy = ProxyProcess::start(&path, &[]).await;
    let c = client();
    let base = proxy.url("");
    let get = |path: &str| c.get(format!("{base}{path}")).send();
    assert_eq!(get("/v1/teams").await.unwrap().status(), 200);

    // A typo saved by an editor: refused, named by file, line and key; the old config serves.
    replace(&path, &good.clone().set("sts.timout", "5s").text(&sim));
    let line = proxy.wait_for("reloading the config").await;
    assert!(line.contains("trigger=file"), "{line}");
    let line = proxy.wait_for("config reload failed").await;
    let place = format!("{}, line ", path.display());
    assert!(
        line.contains(&place) && line.contains("sts.timout"),
        "{line}"
    );
    assert_eq!(get("/v1/teams").await.unwrap().status(), 200);
    assert_eq!(get("/contoso/v1/teams").await.unwrap().status(), 404);

    // Fixed (with a new route to show it): applied, no signal needed.
    replace(&path, &with_contoso(good).text(&sim));
    let line = proxy.wait_for("config reloaded").await;
    assert!(line.contains("trigger=file"), "{line}");
    assert_eq!(get("/contoso/v1/teams").await.unwrap().status(), 200);
}

#[tokio::test]
async fn ten_rapid_writes_cause_one_reload() {
    let dir = Scratch::new("watch-burst");
    let proxy = Proxy::builder().config_file_in(&dir).spawn().await;
    proxy.sim.wait_for_sts_calls(1).await;
    for n in 0..10 {
        let timeout = format!("{}s", 100 + n);
        proxy.rewrite_config(TestConfig::new().set("upstream.timeout", timeout));
        // Writes 20 ms apart: well inside the one-second settle time.
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    proxy.wait_for_reloads("ok", "file", 1).await;

    // One more write is the second reload; had the burst made two, this one would be the third.
    proxy.rewrite_config(with_contoso(TestConfig::new()));
    wait_for_status(&proxy, "/contoso/v1/teams", 200).await;
    assert_eq!(proxy.reloads("ok", "file").await, 2);
    assert_eq!(proxy.reloads("error", "file").await, 0);
    // Only the config file changed: the token survived both reloads.
    assert_eq!(proxy.sim.issue_calls(), 1);
}

#[tokio::test]
async fn the_watched_files_follow_the_config() {
    let dir = Scratch::new("watch-follow");
    let proxy = Proxy::builder().config_file_in(&dir).spawn().await;
    proxy.sim.wait_for_sts_calls(1).await;

    // The config moves to another secret file (same secret): tokens kept.
    let other = dir.write("other-secret", &proxy.sim.client_secret());
    let moved = TestConfig::new().secret_file(other.clone());
    replace(proxy.config_path(), &moved.text(&proxy.sim));
    proxy.wait_for_reloads("ok", "file", 1).await;
    assert_eq!(proxy.sim.issue_calls(), 1);

    // The new file is watched: rotating it applies.
    proxy.sim.rotate_secret("rotated-in-the-new-file");
    replace(&other, "rotated-in-the-new-file");
    proxy.wait_for_reloads("ok", "file", 2).await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    let tokens = proxy.sim.issued_tokens();
    assert_eq!(tokens.len(), 2);
    assert_eq!(
        last_bearer(&proxy.sim),
        format!("Bearer {}", tokens[1].token)
    );
}

#[tokio::test]
async fn where_no_watch_can_be_set_up_polling_applies_a_change() {
    let dir = Scratch::new("watch-poll");
    let polling = WatchTiming {
        settle: Duration::from_millis(200),
        poll_every: Duration::from_millis(100),
        poll_only: true,
    };
    let proxy = Proxy::builder()
        .config_file_in(&dir)
        .watch_timing(polling)
        .spawn()
        .await;
    proxy.sim.wait_for_sts_calls(1).await;

    proxy.sim.rotate_secret("rotated-while-polling");
    replace(proxy.secret_path(), "rotated-while-polling");
    proxy.wait_for_reloads("ok", "file", 1).await;
    assert_eq!(proxy.get("/v1/teams").await.status(), 200);
    let tokens = proxy.sim.issued_tokens();
    assert_eq!(tokens.len(), 2, "a new token, issued for the new secret");

    // The config file is polled too.
    proxy.rewrite_config(with_contoso(TestConfig::new()));
    wait_for_status(&proxy, "/contoso/v1/teams", 200).await;
    assert_eq!(proxy.reloads("ok", "file").await, 2);
}

#[tokio::test]
async fn with_watch_off_nothing_applies_until_a_signal() {
    let dir = Scratch::new("watch-off");
    let quick = WatchTiming {
        settle: Duration::from_millis(50),
        poll_every: Duration::from_millis(50),
        poll_only: false,
    };
    let proxy = Proxy::builder()
        .config_file_in(&dir)
        .signal_only()
        .watch_timing(quick)
        .spawn()
        .await;
    proxy.sim.wait_for_sts_calls(1).await;

    proxy.rewrite_config(with_contoso(TestConfig::new()));
    proxy.sim.rotate_secret("rotated-unwatched");
    replace(proxy.secret_path(), "rotated-unwatched");
    // Nothing announces that nothing happened: give a watch twenty settle times to act.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(proxy.get("/contoso/v1/teams").await.status(), 404);
    assert_eq!(proxy.reloads("ok", "file").await, 0);
    assert_eq!(proxy.reloads("error", "file").await, 0);
    assert_eq!(proxy.sim.issued_tokens().len(), 1);

    let done = proxy.reload().await.expect("the signal applies it");
    assert_eq!(done.discarded, ["default"]);
    assert_eq!(proxy.get("/contoso/v1/teams").await.status(), 200);
    assert_eq!(proxy.reloads("ok", "signal").await, 1);
}

#[tokio::test]
async fn shutdown_leaves_no_reload_task_or_watch_behind() {
    let dir = Scratch::new("watch-shutdown");
    let mut proxy = Proxy::builder().config_file_in(&dir).spawn().await;
    proxy.sim.wait_for_sts_calls(1).await;
    assert!(!proxy.reloads_closed());
    proxy.stop().await;
    // run_with has returned, and the reload task that owned the file watch went before it: the
    // channel it read reload requests from is closed. (Dropping the watch ends notify's thread:
    // the unit test in src/watch.rs counts the threads.)
    assert!(proxy.reloads_closed(), "the reload task outlived run_with");
}
