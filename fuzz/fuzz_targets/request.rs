//! The request-target, route and header sanitising path: a request head (as hyper's parser,
//! httparse, accepts it) goes through `Proxy::plan` (CONNECT, absolute-form target, the strict
//! Host parser and guard, API key, the path-segment rule, route, upstream URI) and
//! `headers::rewrite_request`. Invariants: no panic; a planned request carries exactly one
//! well-formed Host on HTTP/1.1 and a path with no refused segment, and goes to the configured
//! upstream only, under its base path, with the query byte for byte and no refused segment; the
//! forwarded headers carry exactly the proxy's bearer and request id and no hop-by-hop, Host,
//! Cookie or client credential header; an error answer never echoes the API key.
#![no_main]

use std::sync::{Arc, OnceLock};

use azure_costs_proxy::config;
use azure_costs_proxy::metrics::Metrics;
use azure_costs_proxy::parts::Proxy;
use azure_costs_proxy::parts::headers::{self, RequestIds};
use azure_costs_proxy::parts::parse_host;
use azure_costs_proxy::parts::respond;
use azure_costs_proxy::parts::routes::has_refused_segment;
use http::header::{self, HeaderName, HeaderValue};
use http::{Method, Version};
use libfuzzer_sys::fuzz_target;

const KEY: &str = "fuzz-api-key-5c2e";
const UPSTREAM: &str = "api.example.test";

const CONFIG: &str = r#"
[listen]
address = "127.0.0.1:8080"
allowed_hosts = ["bi.internal"]
[upstream]
url = "https://api.example.test/base"
[sts]
token_url = "https://sts.example.test/token"
[credentials.default]
client_id = "id"
client_secret = { env = "S" }
[[routes]]
prefix = "/"
[[routes]]
prefix = "/contoso"
delegate = "CONTOSO"
upstream_path = "/api/v2"
[[routes]]
prefix = "/a/b"
token_mode = "per_transaction"
[[routes]]
prefix = "/teams/{delegate}"
delegates = ["CONTOSO", "FABRIKAM"]
[[routes]]
prefix = "/any/{delegate}"
delegates = ["*"]
upstream_path = "/v3"
"#;

/// The teams `/teams/{delegate}` may act for.
const LISTED: [&str; 2] = ["CONTOSO", "FABRIKAM"];

struct Fixture {
    _runtime: tokio::runtime::Runtime,
    open: Proxy,
    keyed: Proxy,
}

fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let _guard = runtime.enter();
        // The client secret (S) and the API key (K); no proxy variables.
        let env = |name: &str| matches!(name, "S" | "K").then(|| KEY.to_string());
        let open = config::from_toml(CONFIG, "fuzz.toml", &env).unwrap();
        let keyed_text = CONFIG.replace(
            "allowed_hosts",
            "api_keys = [{ env = \"K\" }]\nallowed_hosts",
        );
        let keyed = config::from_toml(&keyed_text, "fuzz.toml", &env).unwrap();
        let local = "127.0.0.1:8080".parse().unwrap();
        let metrics = Arc::new(Metrics::new());
        Fixture {
            open: azure_costs_proxy::parts::proxy(&open, local, &metrics).unwrap(),
            keyed: azure_costs_proxy::parts::proxy(&keyed, local, &metrics).unwrap(),
            _runtime: runtime,
        }
    })
}

/// The key an Authorization value presents, decoded independently of the proxy's code: the
/// Bearer credentials, or the password of Basic credentials.
fn presented(value: &[u8]) -> Option<Vec<u8>> {
    use base64::Engine as _;
    let text = std::str::from_utf8(value).ok()?;
    let (scheme, rest) = text.split_once(' ')?;
    let rest = rest.trim_matches(|c: char| c.is_ascii_whitespace());
    match scheme.to_ascii_lowercase().as_str() {
        "bearer" => Some(rest.as_bytes().to_vec()),
        "basic" => {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(rest)
                .ok()?;
            let colon = decoded.iter().position(|b| *b == b':')?;
            Some(decoded[colon + 1..].to_vec())
        }
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&mode, head)) = data.split_first() else {
        return;
    };
    let mut parsed = [httparse::EMPTY_HEADER; 64];
    let mut request = httparse::Request::new(&mut parsed);
    let Ok(httparse::Status::Complete(_)) = request.parse(head) else {
        return;
    };
    let (Some(method), Some(target)) = (request.method, request.path) else {
        return;
    };
    let Ok(method) = Method::from_bytes(method.as_bytes()) else {
        return;
    };
    let mut builder = http::Request::builder().method(method.clone());
    let mut host = None;
    for h in request.headers.iter() {
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(h.name.as_bytes()),
            HeaderValue::from_bytes(h.value),
        ) else {
            return;
        };
        if name == header::HOST {
            host = Some(h.value);
        }
        builder = builder.header(name, value);
    }
    // Bit 1: HTTP/2 semantics (the authority comes from :authority, i.e. the URI).
    let h2 = mode & 2 != 0;
    let uri = match (h2, host, target.starts_with('/')) {
        (true, Some(host), true) => {
            let Ok(host) = std::str::from_utf8(host) else {
                return;
            };
            format!("http://{host}{target}")
        }
        _ => target.to_string(),
    };
    let Ok(uri) = uri.parse::<http::Uri>() else {
        return;
    };
    let version = if h2 {
        Version::HTTP_2
    } else {
        Version::HTTP_11
    };
    let Ok(request) = builder.uri(uri).version(version).body(()) else {
        return;
    };
    let (mut parts, ()) = request.into_parts();
    let sent: Vec<(HeaderName, HeaderValue)> = parts
        .headers
        .iter()
        .map(|(n, v)| (n.clone(), v.clone()))
        .collect();
    // Bit 0: the proxy that requires an API key.
    let keyed = mode & 1 != 0;
    let fixture = fixture();
    let proxy = if keyed { &fixture.keyed } else { &fixture.open };

    let ids = RequestIds::default();
    let request_id = ids.for_request(&parts.headers);
    assert!(headers::valid_request_id(&request_id));
    let query = parts.uri.query().map(str::to_string);

    // The two parsers on their own: any bytes, no panic; what parse_host accepts is printable
    // ASCII without a space, slash or `@`.
    for value in parts.headers.get_all(header::HOST) {
        if let Some(h) = parse_host(value.as_bytes()) {
            assert!(
                h.host
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !b"/@".contains(&b))
            );
        }
    }
    let _ = has_refused_segment(target);

    match proxy.plan(&parts) {
        Ok((route, key, upstream)) => {
            assert_ne!(method, Method::CONNECT);
            // The token acts for exactly the team the path names on a `{delegate}` route (only a
            // listed one where a list is set), and for the configured delegate elsewhere.
            match &route.team {
                None => assert_eq!(key, route.token_key()),
                Some(rule) => {
                    // The team, found without the code under test: the segment in the place
                    // of `{delegate}` in the configured prefix.
                    let fixed = route
                        .prefix
                        .strip_suffix("{delegate}")
                        .expect("a team route");
                    let team = parts
                        .uri
                        .path()
                        .strip_prefix(fixed)
                        .and_then(|rest| rest.split('/').next())
                        .expect("a team segment");
                    assert_eq!(key.delegate.as_deref(), Some(team));
                    assert!(azure_costs_proxy::config::plausible_team(team), "{team}");
                    if rule.listed.is_some() {
                        // Listed teams only where a list is set.
                        assert!(LISTED.contains(&team), "{team}");
                    }
                    assert_eq!(key.credential, route.credential);
                }
            }
            assert!(
                !has_refused_segment(parts.uri.path()),
                "{}",
                parts.uri.path()
            );
            let hosts: Vec<_> = parts.headers.get_all(header::HOST).iter().collect();
            assert!(hosts.len() <= 1);
            if !h2 {
                assert_eq!(hosts.len(), 1, "HTTP/1.1 planned without exactly one Host");
            }
            for h in hosts {
                assert!(parse_host(h.as_bytes()).is_some(), "{h:?}");
            }
            assert_eq!(upstream.scheme_str(), Some("https"));
            assert_eq!(upstream.authority().map(|a| a.as_str()), Some(UPSTREAM));
            let path = upstream.path();
            assert!(path.starts_with("/base"), "{path}");
            assert!(
                path.starts_with(&format!("/base{}", route.upstream_path)),
                "{path}"
            );
            assert!(!has_refused_segment(path), "{path}");
            assert_eq!(upstream.query(), query.as_deref());
            if keyed {
                // Admitted with a key: exactly one Authorization header, and it presents KEY.
                let auth: Vec<_> = parts
                    .headers
                    .get_all(header::AUTHORIZATION)
                    .iter()
                    .collect();
                assert_eq!(auth.len(), 1);
                assert_eq!(
                    presented(auth[0].as_bytes()).as_deref(),
                    Some(KEY.as_bytes())
                );
            }

            let bearer = headers::bearer_value("fuzz-token").unwrap();
            headers::rewrite_request(&mut parts.headers, &bearer, &request_id);
            let auth: Vec<_> = parts
                .headers
                .get_all(header::AUTHORIZATION)
                .iter()
                .collect();
            assert_eq!(auth, [&bearer]);
            let ids: Vec<_> = parts
                .headers
                .get_all(&headers::X_REQUEST_ID)
                .iter()
                .collect();
            assert_eq!(ids, [&request_id]);
            for name in [
                "connection",
                "keep-alive",
                "proxy-connection",
                "te",
                "trailer",
                "transfer-encoding",
                "upgrade",
                "proxy-authorization",
                "cookie",
                "host",
            ] {
                assert!(!parts.headers.contains_key(name), "{name} forwarded");
            }
            // Nothing else is added or changed: every other forwarded header is one the client
            // sent (the API key, sent as Authorization, is among those replaced).
            for (name, value) in &parts.headers {
                if name == header::AUTHORIZATION || name == headers::X_REQUEST_ID {
                    continue;
                }
                assert!(
                    sent.iter().any(|(n, v)| n == name && v == value),
                    "{name} was forwarded but not sent"
                );
            }
        }
        Err(e) => {
            let (status, code) = respond::status_and_code(&e);
            assert!(
                status.is_client_error() || status.is_server_error(),
                "{status}"
            );
            let response = respond::error_response(e, &request_id, None);
            assert_eq!(response.status(), status);
            assert!(!code.is_empty());
            let shown = format!("{:?}", response.headers());
            assert!(!shown.contains(KEY));
        }
    }
});
