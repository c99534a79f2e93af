//! `[[routes]]`: path prefixes, each with its credential, delegate, token mode and upstream path.
//! Without any, one `/` route on credential `default`.

use std::collections::BTreeMap;

use toml::Spanned;

use super::fields::token_mode;
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawRoute;
use crate::config::{CredentialConfig, RouteConfig, TokenMode};

/// Checks every `[[routes]]` entry in file order, adds the implicit `/` route when there is none,
/// and warns about credentials no route uses.
pub(super) fn routes(
    ctx: &Ctx<'_>,
    raw: &[Spanned<RawRoute>],
    credentials: &BTreeMap<String, CredentialConfig>,
    default_mode: TokenMode,
    warnings: &mut Vec<String>,
) -> Result<Vec<RouteConfig>, ConfigError> {
    let mut routes: Vec<RouteConfig> = Vec::new();
    for r in raw {
        let route = route(ctx, r.get_ref(), &routes, credentials, default_mode)?;
        routes.push(route);
    }
    if routes.is_empty() {
        if !credentials.contains_key("default") {
            return Err(ctx.error(
                None,
                "credentials.default",
                "there is no [[routes]] entry and no [credentials.default] for the implicit `/` route",
                "add [credentials.default] with client_id and client_secret",
            ));
        }
        routes.push(RouteConfig {
            prefix: "/".into(),
            credential: "default".into(),
            delegate: None,
            token_mode: default_mode,
            upstream_path: String::new(),
        });
    }
    for name in credentials.keys() {
        if !routes.iter().any(|r| &r.credential == name) {
            warnings.push(format!(
                "{}: credential `{name}` is not used by any route",
                ctx.origin
            ));
        }
    }
    Ok(routes)
}

/// One `[[routes]]` entry; `earlier` are the entries before it (a prefix may appear once).
fn route(
    ctx: &Ctx<'_>,
    r: &RawRoute,
    earlier: &[RouteConfig],
    credentials: &BTreeMap<String, CredentialConfig>,
    default_mode: TokenMode,
) -> Result<RouteConfig, ConfigError> {
    let prefix = route_prefix(ctx, &r.prefix, "routes.prefix")?;
    if let Some(dup) = earlier.iter().find(|x| x.prefix == prefix) {
        return Err(ctx.error(
            Some(r.prefix.span()),
            "routes.prefix",
            format!("prefix `{}` appears twice", dup.prefix),
            "give every [[routes]] entry its own prefix",
        ));
    }
    let credential = r
        .credential
        .as_ref()
        .map_or("default", |c| c.get_ref().as_str());
    if !credentials.contains_key(credential) {
        return Err(ctx.error(
            r.credential
                .as_ref()
                .map_or(Some(r.prefix.span()), |c| Some(c.span())),
            "routes.credential",
            format!("route `{prefix}` uses credential `{credential}`, which is not defined"),
            format!("add a [credentials.{credential}] table with client_id and client_secret"),
        ));
    }
    let delegate = match &r.delegate {
        None => None,
        Some(d) => {
            let team = d.get_ref().trim();
            if team.is_empty() || team.chars().any(char::is_control) {
                return Err(ctx.error(
                    Some(d.span()),
                    "routes.delegate",
                    "the delegate team id is empty or holds control characters",
                    "write the customer team id from the Azure Costs CSP portal",
                ));
            }
            Some(team.to_string())
        }
    };
    let token_mode = token_mode(ctx, &r.token_mode, "routes.token_mode", default_mode)?;
    let upstream_path = match &r.upstream_path {
        None => String::new(),
        Some(p) => {
            let clean = route_prefix(ctx, p, "routes.upstream_path")?;
            if clean == "/" { String::new() } else { clean }
        }
    };
    Ok(RouteConfig {
        prefix,
        credential: credential.to_string(),
        delegate,
        token_mode,
        upstream_path,
    })
}

/// Validates a path prefix: `/` or `/seg[/seg...]`, no trailing slash, no query, no dot segments.
fn route_prefix(ctx: &Ctx<'_>, value: &Spanned<String>, key: &str) -> Result<String, ConfigError> {
    let p = value.get_ref().trim();
    let bad = |why: &str| {
        ctx.error(
            Some(value.span()),
            key,
            format!("`{p}` is not a valid path prefix: {why}"),
            "write \"/\" or a path such as \"/contoso\" or \"/customers/contoso\"",
        )
    };
    if !p.starts_with('/') {
        return Err(bad("it must start with '/'"));
    }
    if p == "/" {
        return Ok("/".into());
    }
    let trimmed = p.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok("/".into());
    }
    for seg in trimmed[1..].split('/') {
        if seg.is_empty() {
            return Err(bad("it has an empty segment (`//`)"));
        }
        if seg == "." || seg == ".." {
            return Err(bad("dot segments are not allowed"));
        }
        if !seg
            .bytes()
            .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#'))
        {
            return Err(bad("it holds a space, '?', '#' or a non-ASCII character"));
        }
    }
    Ok(trimmed.to_string())
}

#[cfg(test)]
mod tests {
    use crate::config::testing::{MINIMAL, parse};

    #[test]
    fn routes_are_validated() {
        let route = |body: &str| parse(&format!("{MINIMAL}[[routes]]\n{body}\n"));
        assert!(route("prefix = \"/contoso\"").is_ok());
        assert_eq!(
            route("prefix = \"/contoso/\"").unwrap().routes[0].prefix,
            "/contoso"
        );
        assert!(route("prefix = \"contoso\"").is_err());
        assert!(route("prefix = \"/a//b\"").is_err());
        assert!(route("prefix = \"/a/../b\"").is_err());
        let e = route("prefix = \"/x\"\ncredential = \"other\"").unwrap_err();
        assert_eq!(e.key, "routes.credential");
        assert!(e.hint.unwrap().contains("[credentials.other]"));
        let dup = parse(&format!(
            "{MINIMAL}[[routes]]\nprefix = \"/a\"\n[[routes]]\nprefix = \"/a\"\n"
        ))
        .unwrap_err();
        assert_eq!(dup.line, Some(7));
    }
}
