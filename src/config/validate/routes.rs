//! `[[routes]]`: path prefixes, each with its credential, delegate (or `{delegate}` team segment
//! and its `delegates`), token mode, `refresh_on` and upstream path. Without any, one `/` route on
//! credential `default`.

use std::collections::BTreeMap;
use std::time::Duration;

use toml::Spanned;

use super::fields::{duration, number, refresh_on, token_mode};
use crate::config::diagnostics::{ConfigError, Ctx};
use crate::config::raw::RawRoute;
use crate::config::{
    CredentialConfig, DELEGATE_SEGMENT, DelegateSet, RouteConcurrency, RouteConfig, TokenPolicy,
    plausible_team,
};

/// Checks every `[[routes]]` entry in file order, adds the implicit `/` route when there is none,
/// and warns about credentials no route uses.
pub(super) fn routes(
    ctx: &Ctx<'_>,
    raw: &[Spanned<RawRoute>],
    credentials: &BTreeMap<String, CredentialConfig>,
    policy: &TokenPolicy,
    warnings: &mut Vec<String>,
) -> Result<Vec<RouteConfig>, ConfigError> {
    let mut routes: Vec<RouteConfig> = Vec::new();
    for r in raw {
        let route = route(ctx, r.get_ref(), &routes, credentials, policy)?;
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
            delegates: None,
            token_mode: policy.mode,
            upstream_path: String::new(),
            refresh_on: policy.refresh_on,
            concurrency: None,
            coalesce: true,
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
    policy: &TokenPolicy,
) -> Result<RouteConfig, ConfigError> {
    let prefix = route_prefix(ctx, &r.prefix, "routes.prefix", true)?;
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
    let delegates = delegates(ctx, r, &prefix)?;
    let token_mode = token_mode(ctx, &r.token_mode, "routes.token_mode", policy.mode)?;
    let upstream_path = match &r.upstream_path {
        None => String::new(),
        Some(p) => {
            let clean = route_prefix(ctx, p, "routes.upstream_path", false)?;
            if clean == "/" { String::new() } else { clean }
        }
    };
    Ok(RouteConfig {
        prefix,
        credential: credential.to_string(),
        delegate,
        delegates,
        token_mode,
        upstream_path,
        refresh_on: refresh_on(ctx, &r.refresh_on, "routes.refresh_on", policy.refresh_on)?,
        concurrency: concurrency(ctx, r)?,
        coalesce: r.coalesce.unwrap_or(true),
    })
}

/// What `max_in_flight` and `queue` of a route may be.
const LIMITS: std::ops::RangeInclusive<usize> = 0..=100_000;

/// `max_in_flight` (0 or absent: no limit), `queue` (default 256, 0: none wait) and
/// `queue_timeout` (default 30 s).
fn concurrency(ctx: &Ctx<'_>, r: &RawRoute) -> Result<Option<RouteConcurrency>, ConfigError> {
    let max_in_flight = number(ctx, &r.max_in_flight, "routes.max_in_flight", 0, LIMITS, "")?;
    let queue = number(ctx, &r.queue, "routes.queue", 256, LIMITS, "")?;
    let queue_timeout = duration(
        ctx,
        &r.queue_timeout,
        "routes.queue_timeout",
        Duration::from_secs(30),
    )?;
    Ok((max_in_flight > 0).then_some(RouteConcurrency {
        max_in_flight,
        queue,
        queue_timeout,
    }))
}

/// `delegates`: required by a `{delegate}` prefix, refused elsewhere and next to `delegate`;
/// `["*"]` or a list of plausible team ids.
fn delegates(
    ctx: &Ctx<'_>,
    r: &RawRoute,
    prefix: &str,
) -> Result<Option<DelegateSet>, ConfigError> {
    let team_route = prefix.ends_with(DELEGATE_SEGMENT);
    let Some(list) = &r.delegates else {
        if team_route {
            return Err(ctx.error(
                Some(r.prefix.span()),
                "routes.delegates",
                format!("route `{prefix}` takes its team from the path but lists no delegates"),
                "add delegates = [\"TEAM-A\", \"TEAM-B\"], or [\"*\"] for any team the STS accepts",
            ));
        }
        return Ok(None);
    };
    if !team_route {
        return Err(ctx.error(
            Some(list.span()),
            "routes.delegates",
            format!("route `{prefix}` has no {DELEGATE_SEGMENT} segment for delegates to fill"),
            "end the prefix with /{delegate}, or use delegate = \"TEAM-ID\" for one team",
        ));
    }
    if let Some(d) = &r.delegate {
        return Err(ctx.error(
            Some(d.span()),
            "routes.delegate",
            "a {delegate} route takes its team from the path, not from delegate",
            "remove delegate, and list the teams in delegates",
        ));
    }
    let items = list.get_ref();
    if items.is_empty() {
        return Err(ctx.error(
            Some(list.span()),
            "routes.delegates",
            "the list is empty: the route could act for no team",
            "list the team ids, or write [\"*\"] for any team the STS accepts",
        ));
    }
    if items.iter().any(|t| t.get_ref() == "*") {
        if items.len() > 1 {
            return Err(ctx.error(
                Some(list.span()),
                "routes.delegates",
                "\"*\" stands for every team and cannot be mixed with team ids",
                "write either [\"*\"] or a list of team ids",
            ));
        }
        return Ok(Some(DelegateSet::Any));
    }
    let mut teams = Vec::with_capacity(items.len());
    for item in items {
        let team = item.get_ref().trim();
        if !plausible_team(team) {
            return Err(ctx.error(
                Some(item.span()),
                "routes.delegates",
                format!("`{team}` cannot be a team id in a path"),
                "team ids are 1 to 64 letters, digits, '-', '_' or '.'",
            ));
        }
        teams.push(team.to_string());
    }
    teams.sort();
    teams.dedup();
    Ok(Some(DelegateSet::Listed(teams)))
}

/// Validates a path prefix: `/` or `/seg[/seg...]`, no trailing slash, no query, no dot segments;
/// with `team_segment`, `{delegate}` may be its last segment.
fn route_prefix(
    ctx: &Ctx<'_>,
    value: &Spanned<String>,
    key: &str,
    team_segment: bool,
) -> Result<String, ConfigError> {
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
    let segments: Vec<&str> = trimmed[1..].split('/').collect();
    for (i, seg) in segments.iter().enumerate() {
        if seg.contains('{') || seg.contains('}') {
            if *seg != DELEGATE_SEGMENT {
                return Err(bad("`{delegate}` must be a whole segment, spelled so"));
            }
            if !team_segment {
                return Err(bad("`{delegate}` belongs in a route's prefix only"));
            }
            if i + 1 != segments.len() {
                return Err(bad(
                    "`{delegate}` must be the last segment, and appear once",
                ));
            }
        }
        if seg.is_empty() {
            return Err(bad("it has an empty segment (`//`)"));
        }
        if *seg == "." || *seg == ".." {
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
    use crate::config::{DelegateSet, RefreshOn, RouteConcurrency};
    use std::time::Duration;

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

    #[test]
    fn delegate_routes_need_a_last_team_segment_and_a_list() {
        let route = |body: &str| parse(&format!("{MINIMAL}[[routes]]\n{body}\n"));
        let ok =
            route("prefix = \"/teams/{delegate}\"\ndelegates = [\"B\", \"A\", \"A\"]").unwrap();
        assert_eq!(
            ok.routes[0].delegates,
            Some(DelegateSet::Listed(vec!["A".into(), "B".into()]))
        );
        assert_eq!(ok.routes[0].fixed_prefix(), "/teams");
        let any = route("prefix = \"/{delegate}\"\ndelegates = [\"*\"]").unwrap();
        assert_eq!(any.routes[0].delegates, Some(DelegateSet::Any));
        assert_eq!(any.routes[0].fixed_prefix(), "/");
        for (body, key, line) in [
            (
                "prefix = \"/teams/{delegate}/x\"\ndelegates = [\"*\"]",
                "routes.prefix",
                5,
            ),
            (
                "prefix = \"/{delegate}/{delegate}\"\ndelegates = [\"*\"]",
                "routes.prefix",
                5,
            ),
            (
                "prefix = \"/teams/x{delegate}\"\ndelegates = [\"*\"]",
                "routes.prefix",
                5,
            ),
            (
                "prefix = \"/teams/{team}\"\ndelegates = [\"*\"]",
                "routes.prefix",
                5,
            ),
            ("prefix = \"/teams/{delegate}\"", "routes.delegates", 5),
            (
                "prefix = \"/teams\"\ndelegates = [\"A\"]",
                "routes.delegates",
                6,
            ),
            (
                "prefix = \"/t/{delegate}\"\ndelegates = [\"*\", \"A\"]",
                "routes.delegates",
                6,
            ),
            (
                "prefix = \"/t/{delegate}\"\ndelegates = []",
                "routes.delegates",
                6,
            ),
            (
                "prefix = \"/t/{delegate}\"\ndelegates = [\"A B\"]",
                "routes.delegates",
                6,
            ),
            (
                "prefix = \"/t/{delegate}\"\ndelegates = [\"A\"]\ndelegate = \"A\"",
                "routes.delegate",
                7,
            ),
            (
                "prefix = \"/t\"\nupstream_path = \"/{delegate}\"",
                "routes.upstream_path",
                6,
            ),
            (
                "prefix = \"/t\"\nrefresh_on = [401, 500]",
                "routes.refresh_on",
                6,
            ),
        ] {
            let e = route(body).unwrap_err();
            assert_eq!((e.key.as_str(), e.line), (key, Some(line)), "{body}: {e}");
        }
    }

    #[test]
    fn refresh_on_defaults_to_401_and_routes_override_it() {
        let c = parse(&format!(
            "{MINIMAL}[token]\nrefresh_on = [401, 403]\n[[routes]]\nprefix = \"/\"\n\
             [[routes]]\nprefix = \"/strict\"\nrefresh_on = [401]\n"
        ))
        .unwrap();
        assert!(c.token.refresh_on.forbidden);
        assert!(c.routes[0].refresh_on.forbidden);
        assert!(!c.routes[1].refresh_on.forbidden && c.routes[1].refresh_on.unauthorized);
        assert_eq!(
            parse(MINIMAL).unwrap().routes[0].refresh_on,
            RefreshOn::DEFAULT
        );
    }

    #[test]
    fn a_route_queue_needs_max_in_flight_and_has_defaults() {
        let c = parse(&format!(
            "{MINIMAL}[[routes]]\nprefix = \"/\"\nqueue = 5\n\
             [[routes]]\nprefix = \"/q\"\nmax_in_flight = 4\n"
        ))
        .unwrap();
        assert_eq!(c.routes[0].concurrency, None, "queue alone limits nothing");
        for (body, key) in [
            ("max_in_flight = -1", "routes.max_in_flight"),
            ("queue = 100001", "routes.queue"),
            ("queue_timeout = \"0s\"", "routes.queue_timeout"),
        ] {
            let e = parse(&format!("{MINIMAL}[[routes]]\nprefix = \"/t\"\n{body}\n")).unwrap_err();
            assert_eq!((e.key.as_str(), e.line), (key, Some(6)), "{body}: {e}");
        }
        assert_eq!(
            c.routes[1].concurrency,
            Some(RouteConcurrency {
                max_in_flight: 4,
                queue: 256,
                queue_timeout: Duration::from_secs(30),
            })
        );
    }
}
