//! The binary as a child process: scratch config directories, the command with a clean
//! environment, and its log lines as they come.

use std::path::PathBuf;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::mpsc;

/// The proxy binary that cargo built for these tests.
pub(crate) const BIN: &str = env!("CARGO_BIN_EXE_azure-costs-proxy");

/// A scratch directory for config files, removed when dropped.
pub(crate) struct Scratch(pub(crate) PathBuf);

impl Scratch {
    /// `$TMP/acp-test-{name}-{pid}`: `name` must be unique among the tests.
    pub(crate) fn new(name: &str) -> Self {
        super::tokio::assert_bounded();
        let dir = std::env::temp_dir().join(format!("acp-test-{name}-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        Scratch(dir)
    }

    /// Writes `text` to the file `name` in the directory and returns its path.
    pub(crate) fn write(&self, name: &str, text: &str) -> PathBuf {
        let path = self.0.join(name);
        std::fs::write(&path, text).unwrap();
        path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The binary with a clean environment, killed when dropped.
pub(crate) fn command() -> Command {
    super::tokio::assert_bounded();
    let mut c = Command::new(BIN);
    c.env_remove("RUST_LOG")
        .env_remove("AZURE_COSTS_PROXY_CONFIG")
        .env_remove("AZURE_COSTS_CLIENT_ID")
        .env_remove("AZURE_COSTS_CLIENT_SECRET")
        // The machine's outbound proxy and trust settings are not the test's.
        .env_remove("SSL_CERT_FILE")
        .env_remove("SSL_CERT_DIR")
        // A test runner under systemd must not hear its children's READY and STOPPING.
        .env_remove("NOTIFY_SOCKET")
        .env_remove("WATCHDOG_USEC")
        .env_remove("WATCHDOG_PID")
        .kill_on_drop(true);
    for name in ["https_proxy", "http_proxy", "all_proxy", "no_proxy"] {
        c.env_remove(name).env_remove(name.to_ascii_uppercase());
    }
    c
}

/// Runs `args` (a command that asks the admin listener, such as `healthcheck` or `status`) with
/// `--config` naming a config whose `[admin]` table holds `admin`, as outside the systemd unit
/// (its secret cannot be read, and need not be). Returns the exit code and stdout then stderr.
pub(crate) async fn admin_command(
    dir: &Scratch,
    admin: &str,
    args: &[&str],
) -> (Option<i32>, String) {
    let config = format!(
        "[admin]\n{admin}\n\n[credentials.default]\nclient_id = \"x\"\n\
         client_secret = {{ credential = \"client_secret\" }}\n"
    );
    let path = dir.write("admin-command.toml", &config);
    let out = command()
        .args(args)
        .arg("--config")
        .arg(path)
        .env_remove("CREDENTIALS_DIRECTORY")
        .output()
        .await
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// Reads a child's stderr line by line into a channel and a transcript.
pub(crate) fn collect_lines(child: &mut Child) -> mpsc::UnboundedReceiver<String> {
    let (tx, rx) = mpsc::unbounded_channel();
    let stderr = child.stderr.take().unwrap();
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// Reads lines into `transcript` until one contains `needle` (20 s at most) and returns it.
pub(crate) async fn wait_for_line(
    rx: &mut mpsc::UnboundedReceiver<String>,
    transcript: &mut Vec<String>,
    needle: &str,
) -> String {
    loop {
        let line = tokio::time::timeout(Duration::from_secs(20), rx.recv())
            .await
            .expect("log line in time")
            .unwrap_or_else(|| panic!("process ended before logging {needle:?}: {transcript:#?}"));
        transcript.push(line.clone());
        if line.contains(needle) {
            return line;
        }
    }
}

/// `azure-costs-proxy run` as a child process, its stderr read line by line.
pub(crate) struct ProxyProcess {
    /// The process.
    pub(crate) child: Child,
    /// Its stderr lines not read yet.
    pub(crate) lines: mpsc::UnboundedReceiver<String>,
    /// Every line read so far.
    pub(crate) transcript: Vec<String>,
    /// The data-plane address it logged.
    pub(crate) addr: String,
}

impl ProxyProcess {
    /// Starts `run --config path` with `env` set and waits for its "listening on" line.
    pub(crate) async fn start(path: &std::path::Path, env: &[(&str, &str)]) -> ProxyProcess {
        ProxyProcess::start_with(&[], path, env).await
    }

    /// [`Self::start`] with extra command-line arguments before `--config`.
    pub(crate) async fn start_with(
        args: &[&str],
        path: &std::path::Path,
        env: &[(&str, &str)],
    ) -> ProxyProcess {
        let mut command = command();
        command
            .args(args)
            .arg("--config")
            .arg(path)
            .envs(env.iter().copied())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped());
        let mut child = command.spawn().unwrap();
        let mut lines = collect_lines(&mut child);
        let mut transcript = Vec::new();
        let line = wait_for_line(&mut lines, &mut transcript, "listening on http://").await;
        let addr = line
            .split("listening on http://")
            .nth(1)
            // The address ends at a space (text) or a quote (JSON).
            .and_then(|rest| rest.split([' ', '"']).next())
            .unwrap()
            .to_string();
        ProxyProcess {
            child,
            lines,
            transcript,
            addr,
        }
    }

    /// `http://ADDR{path}`.
    pub(crate) fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Waits for a log line containing `needle` and returns it.
    pub(crate) async fn wait_for(&mut self, needle: &str) -> String {
        wait_for_line(&mut self.lines, &mut self.transcript, needle).await
    }

    /// Sends the process a signal (`"HUP"`, `"TERM"`, ...).
    #[cfg(unix)]
    pub(crate) async fn signal(&self, name: &str) {
        let pid = self.child.id().unwrap().to_string();
        let sent = Command::new("kill")
            .args([&format!("-{name}"), &pid])
            .status()
            .await
            .unwrap();
        assert!(sent.success(), "kill -{name} {pid}");
    }

    /// Ends the process at once (Windows has no SIGTERM to send a child; the service test
    /// covers the drain there) and reads the rest of its log.
    #[cfg(windows)]
    pub(crate) async fn kill(&mut self) {
        self.child.kill().await.unwrap();
        while let Some(line) = self.lines.recv().await {
            self.transcript.push(line);
        }
    }

    /// Waits for the process to exit and returns its exit code; reads the rest of its log.
    #[cfg(unix)]
    pub(crate) async fn exit_code(&mut self) -> Option<i32> {
        let status = tokio::time::timeout(Duration::from_secs(40), self.child.wait())
            .await
            .expect("the process exits in time")
            .unwrap();
        while let Some(line) = self.lines.recv().await {
            self.transcript.push(line);
        }
        status.code()
    }
}

/// The name and text of today's file of the log `file` (`[log] file`: `dir/name.ext` is
/// written as `dir/name.YYYY-MM-DD.ext`), once it holds `needle`: the proxy writes each line
/// there right after stderr, with no event to wait on, so the file is read again every 50 ms,
/// 30 s at most.
pub(crate) async fn log_file_with(file: &std::path::Path, needle: &str) -> (String, String) {
    let dir = file.parent().unwrap();
    let stem = format!("{}.", file.file_stem().unwrap().to_string_lossy());
    let read = async {
        loop {
            let names = std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
                        .filter(|name| name.starts_with(&stem))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default();
            if let [name] = names.as_slice() {
                let text = std::fs::read_to_string(dir.join(name)).unwrap_or_default();
                if text.contains(needle) {
                    return (name.clone(), text);
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(30), read)
        .await
        .unwrap_or_else(|_| panic!("no {needle:?} in a log file {}", file.display()))
}
