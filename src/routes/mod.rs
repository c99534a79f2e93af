//! Route table: longest-prefix matching on whole path segments (a `{delegate}` route's team
//! segment counts as one), prefix stripping, upstream paths.

mod path;

pub use path::{has_refused_segment, upstream_path_and_query};
pub(crate) use path::{keeps_path, strip_prefix};

use std::collections::HashSet;
use std::sync::{Arc, OnceLock};

use prometheus_client::metrics::counter::Counter;

use crate::config::{self, DelegateSet, RefreshOn, TokenPolicy};
use crate::headers::XCache;
use crate::metrics::Metrics;
use crate::route_queue::RouteQueue;
use crate::tally::{RouteTally, Tally};
use crate::token::TokenMode;
use crate::token::{TeamFrom, TokenKey};
use crate::transaction::Transactions;

/// One route as the request path uses it.
#[derive(Debug)]
pub struct Route {
    /// Prefix as configured (`/` or `/a/b`).
    pub prefix: Arc<str>,
    /// Credential name.
    pub credential: Arc<str>,
    /// CSP delegate team, if any.
    pub delegate: Option<Arc<str>>,
    /// Token mode.
    pub token_mode: TokenMode,
    /// Path prepended upstream after stripping the prefix ("" for none).
    pub upstream_path: String,
    /// `per_transaction` mode: the route's transaction boundaries.
    pub transactions: Option<Arc<Transactions>>,
    /// A `{delegate}` route: its prefix without the team segment, and the teams it may act for.
    pub team: Option<TeamRule>,
    /// Upstream statuses that mean "token refused".
    pub refresh_on: RefreshOn,
    /// Its requests, latencies and last upstream error, for the status page.
    pub tally: Arc<RouteTally>,
    /// `max_in_flight` > 0: its places upstream and the requests waiting for one (the same
    /// across a reload that keeps the route's limits).
    pub queue: Option<Arc<RouteQueue>>,
    /// Identical GET/HEAD requests in flight at once share one upstream request.
    pub coalesce: bool,
    /// Its `cache_total` counters (miss, coalesced, bypass), found once.
    cache_counters: OnceLock<[Counter; 3]>,
}

/// The team segment of a `{delegate}` route.
#[derive(Debug)]
pub struct TeamRule {
    /// The prefix before the team segment (`/teams`, or `/`).
    pub fixed: Arc<str>,
    /// `None`: any team; else the teams listed.
    pub listed: Option<HashSet<Arc<str>>>,
}

/// Why a `{delegate}` route cannot act for the team a path names.
#[derive(Debug, PartialEq, Eq)]
pub enum TeamRefusal {
    /// Not something a team id can be (bad characters, too long, percent-encoded).
    Implausible,
    /// Not in the route's `delegates`.
    NotListed,
}

impl Route {
    /// Counts a request of this route in `cache_total` by what `X-Cache` says of it.
    pub(crate) fn count_cache(&self, metrics: &Metrics, result: XCache) {
        let counters = self
            .cache_counters
            .get_or_init(|| metrics.cache_counters(&self.prefix));
        let index = match result {
            XCache::Miss => 0,
            XCache::Coalesced => 1,
            XCache::Bypass => 2,
        };
        counters[index].inc();
    }

    /// The key of the route's shared token (before any transaction). For a `{delegate}` route
    /// this is the credential's own token: the team comes with each request ([`Self::team_key`]).
    pub fn token_key(&self) -> TokenKey {
        TokenKey::new(self.credential.clone(), self.delegate.clone())
    }

    /// The token key for a request whose path named `team` on this `{delegate}` route, if the
    /// route may act for it. Decides before any STS call.
    pub fn team_key(&self, team: &str) -> Result<TokenKey, TeamRefusal> {
        if !config::plausible_team(team) {
            return Err(TeamRefusal::Implausible);
        }
        let (team, from) = match self.team.as_ref().and_then(|t| t.listed.as_ref()) {
            Some(listed) => (
                listed.get(team).cloned().ok_or(TeamRefusal::NotListed)?,
                TeamFrom::Listed,
            ),
            None => (Arc::from(team), TeamFrom::Any),
        };
        Ok(TokenKey::for_team(self.credential.clone(), team, from))
    }
}

/// A route that matched a path.
#[derive(Debug)]
pub struct Match<'t, 'p> {
    /// The route.
    pub route: &'t Arc<Route>,
    /// The team segment, on a `{delegate}` route.
    pub team: Option<&'p str>,
    /// The path after the prefix (and the team segment).
    pub rest: &'p str,
}

/// Routes ordered so that the first match is the longest prefix: most segments first, and of
/// equal ones a fixed prefix before a `{delegate}` one.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Builds the table from validated config routes; `policy` gives the transaction rule of
    /// `per_transaction` routes.
    pub fn new(routes: &[config::RouteConfig], policy: &TokenPolicy) -> Self {
        Self::tallied(routes, policy, &Tally::default(), None)
    }

    /// [`RouteTable::new`], each route counting in `tally` under its prefix (the figures a
    /// reload keeps).
    /// A route whose `max_in_flight`, `queue` and `queue_timeout` are those it had in
    /// `previous` keeps its queue: the requests in flight still hold their places, and a reload
    /// never lets twice the limit upstream.
    pub fn tallied(
        routes: &[config::RouteConfig],
        policy: &TokenPolicy,
        tally: &Tally,
        previous: Option<&RouteTable>,
    ) -> Self {
        let mut routes: Vec<Arc<Route>> = routes
            .iter()
            .map(|r| {
                let transactions = (r.token_mode == TokenMode::PerTransaction).then(|| {
                    Transactions::new(policy.transaction_idle, policy.transaction_header.clone())
                });
                let team = r.delegates.as_ref().map(|set| TeamRule {
                    fixed: r.fixed_prefix().into(),
                    listed: match set {
                        DelegateSet::Any => None,
                        DelegateSet::Listed(teams) => {
                            Some(teams.iter().map(|t| Arc::from(t.as_str())).collect())
                        }
                    },
                });
                let prefix: Arc<str> = r.prefix.as_str().into();
                Arc::new(Route {
                    tally: tally.route(&prefix),
                    prefix,
                    credential: r.credential.as_str().into(),
                    delegate: r.delegate.as_deref().map(Arc::from),
                    token_mode: r.token_mode,
                    upstream_path: r.upstream_path.clone(),
                    transactions,
                    team,
                    refresh_on: r.refresh_on,
                    coalesce: r.coalesce,
                    cache_counters: OnceLock::new(),
                    queue: r.concurrency.map(|c| queue_for(&r.prefix, c, previous)),
                })
            })
            .collect();
        // Most segments first (`/` has none, so it comes last); of equal ones, fixed first.
        routes.sort_by_key(|r| {
            let segments = r.prefix.split('/').filter(|s| !s.is_empty()).count();
            (std::cmp::Reverse(segments), r.team.is_some())
        });
        RouteTable { routes }
    }

    /// All routes, longest prefix first.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The route for a request path: the team segment of a `{delegate}` route and the rest of
    /// the path after the prefix.
    pub fn find<'p>(&self, path: &'p str) -> Option<Match<'_, 'p>> {
        self.routes.iter().find_map(|route| match &route.team {
            None => strip_prefix(path, &route.prefix).map(|rest| Match {
                route,
                team: None,
                rest,
            }),
            Some(rule) => {
                let after = strip_prefix(path, &rule.fixed)?;
                let after = after.strip_prefix('/')?;
                let (team, rest) = match after.find('/') {
                    Some(i) => after.split_at(i),
                    None => (after, ""),
                };
                (!team.is_empty()).then_some(Match {
                    route,
                    team: Some(team),
                    rest,
                })
            }
        })
    }
}

/// The queue of the route `prefix` with limits `c`: its queue in `previous` if the limits are
/// the same, else a new one.
fn queue_for(
    prefix: &str,
    c: config::RouteConcurrency,
    previous: Option<&RouteTable>,
) -> Arc<RouteQueue> {
    let limits = (c.max_in_flight, c.queue, c.queue_timeout);
    previous
        .and_then(|table| table.routes.iter().find(|r| &*r.prefix == prefix))
        .and_then(|r| r.queue.clone())
        .filter(|q| q.limits() == limits)
        .unwrap_or_else(|| Arc::new(RouteQueue::new(limits.0, limits.1, limits.2)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(prefixes: &[&str]) -> RouteTable {
        RouteTable::new(&configs(prefixes), &policy())
    }

    fn configs(prefixes: &[&str]) -> Vec<config::RouteConfig> {
        prefixes
            .iter()
            .map(|p| config::RouteConfig {
                prefix: (*p).into(),
                credential: "default".into(),
                delegate: None,
                delegates: match *p {
                    "/any/{delegate}" | "/{delegate}" => Some(DelegateSet::Any),
                    p if p.ends_with("{delegate}") => {
                        Some(DelegateSet::Listed(vec!["T-A".into(), "T-B".into()]))
                    }
                    _ => None,
                },
                token_mode: TokenMode::Interval,
                upstream_path: String::new(),
                refresh_on: RefreshOn::DEFAULT,
                concurrency: None,
                coalesce: true,
            })
            .collect()
    }

    fn policy() -> TokenPolicy {
        TokenPolicy {
            mode: TokenMode::Interval,
            max_age: std::time::Duration::from_secs(3300),
            refresh_before_expiry: std::time::Duration::from_secs(300),
            transaction_idle: std::time::Duration::from_secs(30),
            transaction_header: http::HeaderName::from_static("x-transaction-id"),
            refresh_on: RefreshOn::DEFAULT,
            sts_budget: 10.0,
        }
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = table(&["/", "/contoso", "/contoso/eu"]);
        let m = |p| {
            t.find(p)
                .map(|m| (m.route.prefix.to_string(), m.rest.to_string()))
        };
        assert_eq!(
            m("/contoso/eu/x"),
            Some(("/contoso/eu".into(), "/x".into()))
        );
        assert_eq!(m("/contoso/x"), Some(("/contoso".into(), "/x".into())));
        assert_eq!(m("/contoso"), Some(("/contoso".into(), "".into())));
        assert_eq!(m("/contosox/y"), Some(("/".into(), "/contosox/y".into())));
        assert_eq!(
            m("/contoso/europe"),
            Some(("/contoso".into(), "/europe".into()))
        );
    }

    #[test]
    fn team_segments_match_as_one_segment_and_fixed_prefixes_win_ties() {
        let t = table(&[
            "/",
            "/teams",
            "/teams/{delegate}",
            "/teams/special",
            "/any/{delegate}",
        ]);
        let m = |p| {
            t.find(p).map(|m| {
                (
                    m.route.prefix.to_string(),
                    m.team.map(str::to_string),
                    m.rest.to_string(),
                )
            })
        };
        let found = |prefix: &str, team: Option<&str>, rest: &str| {
            Some((
                prefix.to_string(),
                team.map(str::to_string),
                rest.to_string(),
            ))
        };
        assert_eq!(
            m("/teams/T-A/v1/teams"),
            found("/teams/{delegate}", Some("T-A"), "/v1/teams")
        );
        assert_eq!(m("/teams/T-A"), found("/teams/{delegate}", Some("T-A"), ""));
        assert_eq!(m("/teams/special/x"), found("/teams/special", None, "/x"));
        assert_eq!(m("/teams"), found("/teams", None, ""));
        assert_eq!(m("/teams/"), found("/teams", None, "/"));
        assert_eq!(m("/teamsx/T-A"), found("/", None, "/teamsx/T-A"));
        let route = |p| t.find(p).unwrap().route.clone();
        let listed = route("/teams/T-A/x");
        assert_eq!(
            listed.team_key("T-A").unwrap().delegate.as_deref(),
            Some("T-A")
        );
        assert_eq!(listed.team_key("T-C"), Err(TeamRefusal::NotListed));
        assert_eq!(listed.team_key("t-a"), Err(TeamRefusal::NotListed));
        assert_eq!(listed.team_key("T%2DA"), Err(TeamRefusal::Implausible));
        let any = route("/any/T-Z");
        assert_eq!(any.team_key("T-Z").unwrap().team_from, TeamFrom::Any);
        assert_eq!(any.team_key(&"X".repeat(65)), Err(TeamRefusal::Implausible));
        let root = table(&["/{delegate}"]);
        let m = root.find("/T-Q/v1").unwrap();
        assert_eq!((m.team, m.rest), (Some("T-Q"), "/v1"));
        assert!(root.find("/").is_none());
    }

    #[test]
    fn no_root_route_means_no_match_outside_prefixes() {
        let t = table(&["/contoso"]);
        assert!(t.find("/other").is_none());
        assert!(t.find("/contosox").is_none());
        assert!(t.find("*").is_none());
    }

    #[test]
    fn a_reload_that_keeps_a_routes_limits_keeps_its_queue() {
        let policy = policy();
        let with = |max_in_flight| {
            let mut r = configs(&["/q"]).remove(0);
            r.concurrency = Some(config::RouteConcurrency {
                max_in_flight,
                queue: 8,
                queue_timeout: std::time::Duration::from_secs(1),
            });
            r
        };
        let first = RouteTable::tallied(&[with(2)], &policy, &Tally::default(), None);
        let same = RouteTable::tallied(&[with(2)], &policy, &Tally::default(), Some(&first));
        let other = RouteTable::tallied(&[with(3)], &policy, &Tally::default(), Some(&first));
        let queue = |t: &RouteTable| t.routes[0].queue.clone().unwrap();
        assert!(Arc::ptr_eq(&queue(&first), &queue(&same)));
        assert!(!Arc::ptr_eq(&queue(&first), &queue(&other)));
        assert_eq!(queue(&other).limits().0, 3);
    }

    #[test]
    fn a_path_kept_is_the_path_built() {
        for (base, up, rest, path) in [
            ("", "", "/v1/x", "/v1/x"),
            ("", "/v1", "/x", "/v1/x"),
            ("/base", "/v1", "", "/base/v1"),
            ("", "/v2", "/x", "/v1/x"),
            ("/b", "", "/x", "/x"),
            ("", "/teams/c", "", "/teams/c/x"),
        ] {
            let built = upstream_path_and_query(base, up, rest, None);
            assert_eq!(keeps_path(base, up, rest, path), built == path, "{path}");
        }
    }

    #[test]
    fn upstream_path_is_composed_byte_for_byte() {
        assert_eq!(
            upstream_path_and_query("", "", "/api/v1/x", Some("y=1&z=%2F")),
            "/api/v1/x?y=1&z=%2F"
        );
        assert_eq!(
            upstream_path_and_query("/base", "/teams/c", "/x%20y", None),
            "/base/teams/c/x%20y"
        );
        assert_eq!(upstream_path_and_query("", "", "", Some("a")), "/?a");
        assert_eq!(upstream_path_and_query("", "/v2", "", None), "/v2");
    }

    #[test]
    fn dot_segments_are_refused_also_encoded() {
        for refused in [
            "/a/../b",
            "/a/%2e%2E/b",
            "/a/./b",
            "/..",
            "/a/.%2e",
            "/a/%2E",
        ] {
            assert!(has_refused_segment(refused), "{refused}");
        }
        for fine in [
            "/a/..b/c.d",
            "/",
            "/a/.../b",
            "/a/%2e%2e%2e",
            "/a/%2",
            "//a//",
            "/a/%25%32%65",
            "/a/.;b",
        ] {
            assert!(!has_refused_segment(fine), "{fine}");
        }
    }

    #[test]
    fn encoded_separators_and_tomcat_dots_are_refused() {
        for refused in [
            "/customers/contoso/..%2Ffabrikam/v1/teams",
            "/a/..%2fb",
            "/a/%2F",
            "/a/x%5cy",
            "/a/..%5C",
            "/a/..\\b",
            "/a\\b",
            "/a/..;/b",
            "/a/..;jsessionid=1",
            "/a/%2e%2e;x",
        ] {
            assert!(has_refused_segment(refused), "{refused}");
        }
        // Decoded once: a double-encoded separator is a literal `%2F` to the upstream.
        for fine in [
            "/a/%252F", "/a/%255c", "/a/x;y", "/a/.;", "/a/;..", "/a/b..;",
        ] {
            assert!(!has_refused_segment(fine), "{fine}");
        }
    }
}
