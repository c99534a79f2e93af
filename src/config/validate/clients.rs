//! `[[clients]]`: the named clients of a central gateway. Each has a name, one way to be
//! recognised (`key`, `key_sha256` or `cert`), the routes and teams it may use, and optional
//! limits. Also the warning for a remote listener that lets anyone in.

use std::collections::HashMap;

use toml::Spanned;

use super::fields::{count, rate};
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawClient;
use crate::config::secret::resolve_secret;
use crate::config::{ListenConfig, RouteConfig, plausible_team};
use crate::inbound::{
    ClientIdentity, ClientLimits, ClientSpec, MAX_CLIENT_NAME as MAX_NAME, Scope, key_digest,
    valid_client_name,
};

/// Longest client key accepted (as for `listen.api_keys`).
const MAX_KEY: usize = 512;
/// Shorter client keys are accepted with a warning.
const MIN_KEY: usize = 16;
/// Highest `max_in_flight` accepted.
const MAX_IN_FLIGHT: usize = 1 << 20;

/// Checks every `[[clients]]` entry: names and identities unique, routes among the configured
/// prefixes, teams plausible, limits positive.
pub(super) fn clients(
    ctx: &Ctx<'_>,
    raw: &[Spanned<RawClient>],
    listen: &ListenConfig,
    routes: &[RouteConfig],
    warnings: &mut Vec<String>,
) -> Result<Vec<ClientSpec>, ConfigError> {
    let mut specs: Vec<ClientSpec> = Vec::with_capacity(raw.len());
    // Who holds each key digest and certificate name so far: no two clients may share one.
    let mut digests: HashMap<[u8; 32], String> = listen
        .api_keys
        .iter()
        .map(|k| (key_digest(k.expose().as_bytes()), "api_keys".to_string()))
        .collect();
    let mut certs: HashMap<String, String> = HashMap::new();
    let mut names: HashMap<String, ()> = HashMap::with_capacity(raw.len());
    for entry in raw {
        let c = entry.get_ref();
        let name = name(ctx, &c.name)?;
        if names.insert(name.clone(), ()).is_some() {
            return Err(ctx.error(
                Some(c.name.span()),
                "clients.name",
                format!("client `{name}` appears twice"),
                "give every [[clients]] entry its own name",
            ));
        }
        let identity = identity(ctx, entry, listen, warnings)?;
        let (held_by, kind, span) = match &identity {
            ClientIdentity::Key(key) => (
                digests.insert(key_digest(key.expose().as_bytes()), name.clone()),
                "key",
                c.key.as_ref().map(Spanned::span),
            ),
            ClientIdentity::KeyDigest(digest) => (
                digests.insert(*digest, name.clone()),
                "key",
                c.key_sha256.as_ref().map(Spanned::span),
            ),
            ClientIdentity::Cert(cert) => (
                certs.insert(crate::inbound::cert_name(cert), name.clone()),
                "certificate name",
                c.cert.as_ref().map(Spanned::span),
            ),
        };
        if let Some(other) = held_by {
            return Err(ctx.error(
                span,
                "clients",
                format!("clients `{other}` and `{name}` have the same {kind}"),
                "give every client its own key (`azure-costs-proxy client-key` makes one) or \
                 certificate",
            ));
        }
        specs.push(ClientSpec {
            name,
            identity,
            routes: route_scope(ctx, &c.routes, routes)?,
            delegates: delegate_scope(ctx, &c.delegates)?,
            limits: ClientLimits {
                rate: rate(ctx, &c.rate, "clients.rate")?,
                max_in_flight: match &c.max_in_flight {
                    None => None,
                    some => Some(count(
                        ctx,
                        some,
                        "clients.max_in_flight",
                        1,
                        MAX_IN_FLIGHT,
                        " of concurrent requests",
                    )?),
                },
            },
        });
    }
    Ok(specs)
}

/// A remote listener that lets anyone in (no `[[clients]]`, no `api_keys`, no required client
/// certificate) works, with this warning at start, after each reload and in `check`.
pub(super) fn open_listener_warning(
    ctx: &Ctx<'_>,
    listen: &ListenConfig,
    clients: &[ClientSpec],
    warnings: &mut Vec<String>,
) {
    let certificate_required = listen
        .tls
        .as_ref()
        .is_some_and(|t| t.client_ca_file.is_some() && t.client_auth_required);
    if !listen.address.ip().is_loopback()
        && listen.api_keys.is_empty()
        && clients.is_empty()
        && !certificate_required
    {
        warnings.push(format!(
            "{}: listen.address {} accepts remote clients without any client authentication \
             (no [[clients]], no api_keys, no required client certificate in [listen.tls]): \
             anyone who can reach the port can spend the proxy's credential; add [[clients]] \
             (`azure-costs-proxy client-key` makes a key) or protect the port",
            ctx.origin, listen.address
        ));
    }
}

/// `name`: letters, digits, `.`, `_`, `-`; not a name the proxy uses itself.
fn name(ctx: &Ctx<'_>, raw: &Spanned<String>) -> Result<String, ConfigError> {
    let name = raw.get_ref();
    if !valid_client_name(name) {
        return Err(ctx.error(
            Some(raw.span()),
            "clients.name",
            format!(
                "`{}` cannot be a client name",
                name.chars().take(MAX_NAME).collect::<String>()
            ),
            format!(
                "use 1 to {MAX_NAME} letters, digits, '.', '_' or '-' (not `api_keys` or \
                 `unknown`, which the proxy uses itself)"
            ),
        ));
    }
    Ok(name.clone())
}

/// Exactly one of `key`, `key_sha256` and `cert`.
fn identity(
    ctx: &Ctx<'_>,
    entry: &Spanned<RawClient>,
    listen: &ListenConfig,
    warnings: &mut Vec<String>,
) -> Result<ClientIdentity, ConfigError> {
    let c = entry.get_ref();
    let how = "give each client one of key = { env = \"VAR\" } (or { file = \"/path\" }), \
               key_sha256 = \"<64 hex digits>\" or cert = \"CN=name\"";
    match (&c.key, &c.key_sha256, &c.cert) {
        (Some(key), None, None) => key_secret(ctx, key, c.name.get_ref(), warnings),
        (None, Some(hex), None) => hex_digest(hex.get_ref())
            .map(ClientIdentity::KeyDigest)
            .ok_or_else(|| {
                ctx.error(
                    Some(hex.span()),
                    "clients.key_sha256",
                    "key_sha256 is not 64 hexadecimal digits",
                    "paste the key_sha256 line `azure-costs-proxy client-key` printed, or \
                     `printf %s KEY | sha256sum`",
                )
            }),
        (None, None, Some(cert)) => {
            let name = cert.get_ref();
            let bare = crate::inbound::cert_name(name);
            let printable = bare.bytes().all(|b| (b' '..=b'~').contains(&b));
            if bare.is_empty() || bare.len() > 255 || !printable {
                return Err(ctx.error(
                    Some(cert.span()),
                    "clients.cert",
                    "cert is not a certificate name",
                    "write the client certificate's subject CN or a DNS name of it (printable \
                     ASCII, at most 255 characters), as \"CN=contoso-bi\" or \
                     \"bi.contoso.example\"",
                ));
            }
            if listen
                .tls
                .as_ref()
                .is_none_or(|t| t.client_ca_file.is_none())
            {
                return Err(ctx.error(
                    Some(cert.span()),
                    "clients.cert",
                    "a client identified by its certificate needs [listen.tls] client_ca, the \
                     CA the certificates are checked against",
                    "add cert_file, key_file and client_ca to [listen.tls]",
                ));
            }
            Ok(ClientIdentity::Cert(name.clone()))
        }
        _ => Err(ctx.error(
            Some(entry.span()),
            "clients",
            format!(
                "client `{}` needs exactly one way to be recognised",
                c.name.get_ref()
            ),
            how,
        )),
    }
}

/// `key`: a secret a client can type (visible ASCII); short or inline keys warn.
fn key_secret(
    ctx: &Ctx<'_>,
    key: &Spanned<toml::Value>,
    name: &str,
    warnings: &mut Vec<String>,
) -> Result<ClientIdentity, ConfigError> {
    let secret = resolve_secret(ctx, key, "clients.key")?;
    let text = secret.expose();
    if text.len() > MAX_KEY || !text.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ctx.error(
            Some(key.span()),
            "clients.key",
            format!(
                "a client key must be 1-{MAX_KEY} visible ASCII characters, without spaces or \
                 line breaks"
            ),
            "make one with `azure-costs-proxy client-key`",
        ));
    }
    if text.len() < MIN_KEY {
        warnings.push(ctx.warning(
            Some(key.span()),
            format_args!(
                "client `{name}`'s key is shorter than {MIN_KEY} characters; make a long random \
                 one with `azure-costs-proxy client-key`"
            ),
        ));
    }
    if matches!(key.get_ref(), toml::Value::String(_)) {
        warnings.push(ctx.warning(
            Some(key.span()),
            "a client key is written in the config file; keep only its digest there \
             (key_sha256, which `azure-costs-proxy client-key` prints) or refer to it: \
             { env = \"VAR\" } or { file = \"/path\" }",
        ));
    }
    Ok(ClientIdentity::Key(secret))
}

/// 64 hexadecimal digits, either case.
fn hex_digest(text: &str) -> Option<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = u8::from_str_radix(text.get(2 * i..2 * i + 2)?, 16).ok()?;
    }
    Some(out)
}

/// `routes`: `["*"]` (the default) or prefixes of configured routes, exactly as written there.
fn route_scope(
    ctx: &Ctx<'_>,
    raw: &Option<Spanned<Vec<Spanned<String>>>>,
    routes: &[RouteConfig],
) -> Result<Scope, ConfigError> {
    scope(ctx, raw, "clients.routes", |prefix, span| {
        if routes.iter().any(|r| r.prefix == prefix) {
            return Ok(());
        }
        let known: Vec<&str> = routes.iter().map(|r| r.prefix.as_str()).collect();
        Err(ctx.error(
            Some(span),
            "clients.routes",
            format!("`{prefix}` is not the prefix of a route"),
            format!(
                "list route prefixes exactly as [[routes]] writes them ({}), or [\"*\"]",
                known.join(", ")
            ),
        ))
    })
}

/// `delegates`: `["*"]` (the default) or team ids.
fn delegate_scope(
    ctx: &Ctx<'_>,
    raw: &Option<Spanned<Vec<Spanned<String>>>>,
) -> Result<Scope, ConfigError> {
    scope(ctx, raw, "clients.delegates", |team, span| {
        if plausible_team(team) {
            return Ok(());
        }
        Err(ctx.error(
            Some(span),
            "clients.delegates",
            format!("`{team}` cannot be a team id"),
            "team ids are 1 to 64 letters, digits, '-', '_' or '.'",
        ))
    })
}

/// A scope list: absent or `["*"]` is everything; otherwise each item passes `check`.
fn scope(
    ctx: &Ctx<'_>,
    raw: &Option<Spanned<Vec<Spanned<String>>>>,
    key: &str,
    check: impl Fn(&str, std::ops::Range<usize>) -> Result<(), ConfigError>,
) -> Result<Scope, ConfigError> {
    let Some(list) = raw else {
        return Ok(Scope::All);
    };
    let items = list.get_ref();
    if items.is_empty() {
        return Err(ctx.error(
            Some(list.span()),
            key,
            "the list is empty: the client could use nothing",
            "list what it may use, or write [\"*\"] for everything (the default)",
        ));
    }
    if items.iter().any(|i| i.get_ref() == "*") {
        if items.len() > 1 {
            return Err(ctx.error(
                Some(list.span()),
                key,
                "\"*\" stands for everything and cannot be mixed with names",
                "write either [\"*\"] or a list",
            ));
        }
        return Ok(Scope::All);
    }
    let mut listed = Vec::with_capacity(items.len());
    for item in items {
        let text = item.get_ref().trim();
        check(text, item.span())?;
        listed.push(text.to_string());
    }
    listed.sort();
    listed.dedup();
    Ok(Scope::Listed(listed))
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{MINIMAL, env_with, parse};
    use crate::config::{ConfigError, from_toml};
    use crate::inbound::{ClientIdentity, Scope};

    const ROUTES: &str = "[[routes]]\nprefix = \"/a\"\n[[routes]]\nprefix = \"/teams/{delegate}\"\n\
                          delegates = [\"*\"]\n";

    fn with_clients(clients: &str) -> Result<crate::config::Config, ConfigError> {
        parse(&format!("{MINIMAL}{ROUTES}{clients}"))
    }

    #[test]
    fn clients_are_validated_and_default_to_every_scope() {
        let digest = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08";
        let c = with_clients(&format!(
            "[[clients]]\nname = \"one\"\nkey = {{ env = \"SECRET_KEY\" }}\n\
             [[clients]]\nname = \"two\"\nkey_sha256 = \"{digest}\"\nroutes = [\"/teams/{{delegate}}\"]\n\
             delegates = [\"TEAM-B\", \"TEAM-A\"]\nrate = \"120/m\"\nmax_in_flight = 4\n"
        ));
        let e = c.unwrap_err();
        assert_eq!((e.key.as_str(), e.line), ("clients.key", Some(11)), "{e}");
        let c = from_toml(
            &format!(
                "{MINIMAL}{ROUTES}[[clients]]\nname = \"one\"\nkey = {{ env = \"K\" }}\n\
                 [[clients]]\nname = \"two\"\nkey_sha256 = \"{digest}\"\n\
                 routes = [\"/teams/{{delegate}}\"]\ndelegates = [\"TEAM-B\", \"TEAM-A\"]\n\
                 rate = \"120/m\"\nmax_in_flight = 4\n"
            ),
            "proxy.toml",
            &env_with(&[("SECRET", "s"), ("K", "k-0123456789abcdef")]),
        )
        .unwrap();
        assert_eq!(c.clients.len(), 2);
        assert_eq!(c.clients[0].routes, Scope::All);
        assert_eq!(c.clients[0].delegates, Scope::All);
        assert!(!c.clients[0].limits.is_set());
        let two = &c.clients[1];
        assert!(matches!(two.identity, ClientIdentity::KeyDigest(d) if d[0] == 0x9f));
        assert_eq!(two.routes, Scope::Listed(vec!["/teams/{delegate}".into()]));
        assert_eq!(
            two.delegates,
            Scope::Listed(vec!["TEAM-A".into(), "TEAM-B".into()])
        );
        assert_eq!(two.limits.rate, Some(2.0));
        assert_eq!(two.limits.max_in_flight, Some(4));
    }

    #[test]
    fn mistakes_name_their_line_and_key() {
        let digest = "a".repeat(64);
        let key =
            |extra: &str| format!("[[clients]]\nname = \"c\"\nkey_sha256 = \"{digest}\"\n{extra}");
        // Line 9 is the client's first line (after MINIMAL's 3 and ROUTES' 5).
        for (text, key_name, line) in [
            (
                format!("[[clients]]\nname = \"bad name\"\nkey_sha256 = \"{digest}\"\n"),
                "clients.name",
                10,
            ),
            (
                format!("[[clients]]\nname = \"api_keys\"\nkey_sha256 = \"{digest}\"\n"),
                "clients.name",
                10,
            ),
            (
                "[[clients]]\nname = \"c\"\nkey_sha256 = \"abc\"\n".to_string(),
                "clients.key_sha256",
                11,
            ),
            ("[[clients]]\nname = \"c\"\n".to_string(), "clients", 9),
            (key("routes = [\"/nope\"]\n"), "clients.routes", 12),
            (key("routes = []\n"), "clients.routes", 12),
            (key("routes = [\"*\", \"/a\"]\n"), "clients.routes", 12),
            (key("delegates = [\"bad team\"]\n"), "clients.delegates", 12),
            (key("rate = \"fast\"\n"), "clients.rate", 12),
            (key("rate = \"0/s\"\n"), "clients.rate", 12),
            (key("max_in_flight = 0\n"), "clients.max_in_flight", 12),
            (key("cert = \"CN=x\"\n"), "clients", 9),
            (
                "[[clients]]\nname = \"c\"\ncert = \"CN=x\"\n".to_string(),
                "clients.cert",
                11,
            ),
            (format!("{}{}", key(""), key("")), "clients.name", 13),
            (
                format!(
                    "{}[[clients]]\nname = \"d\"\nkey_sha256 = \"{digest}\"\n",
                    key("")
                ),
                "clients",
                14,
            ),
        ] {
            let e = with_clients(&text).unwrap_err();
            assert_eq!(
                (e.key.as_str(), e.line),
                (key_name, Some(line)),
                "{text}\n{e}"
            );
        }
    }

    #[test]
    fn an_open_remote_listener_warns_and_clients_close_it() {
        let remote = "[listen]\naddress = \"0.0.0.0:8080\"\nallow_remote = true\n";
        let open = parse(&format!("{remote}{MINIMAL}")).unwrap();
        assert!(
            open.warnings
                .iter()
                .any(|w| w.contains("without any client authentication")),
            "{:?}",
            open.warnings
        );
        let closed = parse(&format!(
            "{remote}{MINIMAL}[[clients]]\nname = \"c\"\nkey_sha256 = \"{}\"\n",
            "b".repeat(64)
        ))
        .unwrap();
        assert!(
            !closed
                .warnings
                .iter()
                .any(|w| w.contains("client authentication")),
            "{:?}",
            closed.warnings
        );
    }

    #[test]
    fn errors_and_warnings_never_show_a_key() {
        let inline = parse(&format!(
            "{MINIMAL}[[clients]]\nname = \"c\"\nkey = \"inline-key-0123456789\"\n"
        ))
        .unwrap();
        assert!(
            inline
                .warnings
                .iter()
                .any(|w| w.contains("written in the config"))
        );
        assert!(!inline.warnings.concat().contains("inline-key"));
        let spaced = parse(&format!(
            "{MINIMAL}[[clients]]\nname = \"c\"\nkey = \"two words-0123456789\"\n"
        ))
        .unwrap_err();
        assert!(!spaced.to_string().contains("two words"), "{spaced}");
        let shared = parse(&format!(
            "[listen]\napi_keys = [{{ env = \"SECRET\" }}]\n{MINIMAL}\
             [[clients]]\nname = \"c\"\nkey = {{ env = \"SECRET\" }}\n"
        ))
        .unwrap_err();
        assert!(shared.message.contains("`api_keys` and `c`"), "{shared}");
        assert!(!shared.to_string().contains("s3cr3t"), "{shared}");
    }
}
