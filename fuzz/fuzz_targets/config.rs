//! Config parsing: any text either becomes a valid config or a ConfigError; never a panic, and
//! neither the error, the warnings, `check`'s summary nor `Debug` shows a secret read from the
//! environment.
#![no_main]

use libfuzzer_sys::fuzz_target;

const SECRET: &str = "FUZZ-SECRET-7d1f9a";

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Device and process files (`file = "/dev/stdin"`) would block or never end: they exercise
    // the operating system, not the parser.
    if ["/dev", "/proc", "/sys"].iter().any(|p| text.contains(p)) {
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
            e.to_string()
        }
    };
    if !text.contains(SECRET) {
        assert!(!shown.contains(SECRET), "a secret was shown:\n{shown}");
    }
});
