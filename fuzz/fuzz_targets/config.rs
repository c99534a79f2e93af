//! Config parsing: any text either becomes a valid config or a ConfigError; never a panic, and
//! neither the error, the warnings, `check`'s summary nor `Debug` shows a secret read from the
//! environment. An error shows no value from the file (a syntax error echoed the raw line, a
//! password included) and stays short however long the input; files the input names (a device,
//! `/proc`, a directory) are refused or read within their cap, never blocking.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SECRET: &str = "FUZZ-SECRET-7d1f9a";
/// Text no key can hold (a space and a `!`): an error that shows it showed a value.
const VALUE_MARKER: &str = "LEAK ME!";
/// Longest error text accepted, whatever the input.
const MAX_ERROR: usize = 2_000;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Standard input is the fuzzer's own; every other device is refused without a read.
    if text.contains("/dev/stdin") || text.contains("/dev/fd") || text.contains("/proc/self/fd") {
        return;
    }
    // Secrets come from the (fake) environment; files and the credential directory are not read
    // unless the input names a path. The outbound proxy variables (HTTPS_PROXY and friends, any
    // case) are not secrets: `check` shows the proxy they name, so they are left unset.
    let env = |name: &str| {
        let proxy_variable = ["https_proxy", "http_proxy", "all_proxy", "no_proxy"]
            .iter()
            .any(|v| name.eq_ignore_ascii_case(v));
        (name != "CREDENTIALS_DIRECTORY" && !proxy_variable).then(|| SECRET.to_string())
    };
    let shown = match azure_costs_proxy::config::from_toml(text, "fuzz.toml", &env) {
        Ok(config) => {
            assert!(!config.routes.is_empty(), "a valid config has a route");
            assert!(config.token.max_age <= azure_costs_proxy::config::MAX_TOKEN_AGE);
            format!(
                "{}\n{:?}\n{}",
                azure_costs_proxy::commands::check::summary(&config),
                config,
                config.warnings.join("\n")
            )
        }
        Err(e) => {
            // A syntax error before any key or table has no key to name, but always a line.
            assert!(
                !e.key.is_empty() || e.line.is_some(),
                "an error names its key or line: {e}"
            );
            assert!(!e.message.is_empty() && e.hint.is_some(), "{e}");
            let shown = e.to_string();
            assert!(!shown.contains(VALUE_MARKER), "an error showed a value:\n{shown}");
            assert!(shown.len() <= MAX_ERROR, "an error of {} bytes", shown.len());
            shown
        }
    };
    if !text.contains(SECRET) {
        assert!(!shown.contains(SECRET), "a secret was shown:\n{shown}");
    }
});
