//! `azure-costs-proxy status`: asks the running proxy's admin listener for `/status.json` and
//! prints a short report (or, with `--json`, the JSON as it came). Exit codes: 0 ready, 1 not
//! ready (or shutting down), 2 no answer: the report then names the address it tried and how to
//! point the command elsewhere. Reads only `[admin]` of the config, so it works where the
//! secrets are not readable.

use std::path::Path;
use std::time::Duration;

use crate::config::{self, ConfigSource};
use crate::status::Status;

/// Exit code: the proxy answered and is ready.
pub const READY: u8 = 0;
/// Exit code: the proxy answered and is not ready (or shutting down).
pub const NOT_READY: u8 = 1;
/// Exit code: no status from the proxy.
pub const UNREACHABLE: u8 = 2;

/// Runs `status` for the config at `path` (or the usual lookup); prints to stdout, problems to
/// stderr; returns the exit code.
pub async fn run(path: Option<&Path>, json: bool, timeout: Duration) -> u8 {
    let source = ConfigSource::locate(path, &config::process_env);
    let whence = match &source {
        ConfigSource::File(file) => format!("[admin] address in {}", file.display()),
        ConfigSource::Environment => "AZURE_COSTS_PROXY_ADMIN (no config file found)".to_string(),
    };
    let hint = "start the proxy, or pass --config FILE for the config of the proxy you mean \
                (its [admin] address is asked)";
    let address = match source.admin_address(&config::process_env) {
        Ok(Some(address)) => address,
        Ok(None) => {
            eprintln!(
                "no status: the admin listener is disabled ([admin] enabled = false in the \
                 config), so there is nothing to ask; enable it, or pass --config FILE"
            );
            return UNREACHABLE;
        }
        Err(e) => {
            eprintln!("no status: cannot read the admin address: {e}");
            return UNREACHABLE;
        }
    };
    let answer = match crate::admin::get(address, "/status.json", timeout).await {
        Ok(answer) if answer.status == http::StatusCode::OK => answer,
        Ok(answer) => {
            eprintln!(
                "no status: the admin listener at {address} (from {whence}) answered {} to \
                 /status.json; is it an azure-costs-proxy of this version?",
                answer.status
            );
            return UNREACHABLE;
        }
        Err(e) => {
            eprintln!("no status: {e} (the address is from {whence}); {hint}");
            return UNREACHABLE;
        }
    };
    // The verdict is read on its own, so that a proxy of another version (a field or a state
    // this one does not know) still gets its exit code, and --json its JSON as it came.
    let value: serde_json::Value = match serde_json::from_str(&answer.body) {
        Ok(value) => value,
        Err(e) => {
            eprintln!("no status: /status.json at {address} is not JSON: {e}");
            return UNREACHABLE;
        }
    };
    let verdict = value["status"].as_str().unwrap_or("unknown").to_string();
    if json {
        println!("{}", answer.body);
    } else {
        match serde_json::from_value::<Status>(value) {
            Ok(status) => print!("{}", crate::status::text::render(&status)),
            Err(_) => println!(
                "azure-costs-proxy at {address}: {verdict} (its status has fields this version \
                 of the command does not read; --json prints them all)"
            ),
        }
    }
    if verdict == "ready" { READY } else { NOT_READY }
}
