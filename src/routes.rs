//! Route table: longest-prefix matching on whole path segments, prefix stripping, upstream paths.

use std::sync::Arc;

use crate::config::{self, TokenMode, TokenPolicy};
use crate::token::TokenKey;
use crate::token::transaction::Transactions;

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
}

impl Route {
    /// The key of the route's shared token (before any transaction).
    pub fn token_key(&self) -> TokenKey {
        TokenKey::new(self.credential.clone(), self.delegate.clone())
    }
}

/// Routes ordered so that the first match is the longest prefix.
#[derive(Debug)]
pub struct RouteTable {
    routes: Vec<Arc<Route>>,
}

impl RouteTable {
    /// Builds the table from validated config routes; `policy` gives the transaction rule of
    /// `per_transaction` routes.
    pub fn new(routes: &[config::RouteConfig], policy: &TokenPolicy) -> Self {
        let mut routes: Vec<Arc<Route>> = routes
            .iter()
            .map(|r| {
                let transactions = (r.token_mode == TokenMode::PerTransaction).then(|| {
                    Transactions::new(policy.transaction_idle, policy.transaction_header.clone())
                });
                Arc::new(Route {
                    prefix: r.prefix.as_str().into(),
                    credential: r.credential.as_str().into(),
                    delegate: r.delegate.as_deref().map(Arc::from),
                    token_mode: r.token_mode,
                    upstream_path: r.upstream_path.clone(),
                    transactions,
                })
            })
            .collect();
        // Longest first; `/` (length 1) always last.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        RouteTable { routes }
    }

    /// All routes, longest prefix first.
    pub fn routes(&self) -> &[Arc<Route>] {
        &self.routes
    }

    /// The route for a request path, and the rest of the path after its prefix.
    pub fn find<'p>(&self, path: &'p str) -> Option<(&Arc<Route>, &'p str)> {
        self.routes
            .iter()
            .find_map(|r| strip_prefix(path, &r.prefix).map(|rest| (r, rest)))
    }
}

/// Matches `prefix` against `path` on whole segments and returns the rest of the path:
/// `/contoso` matches `/contoso` and `/contoso/x` but not `/contosox`. The `/` prefix matches every
/// path and strips nothing.
pub fn strip_prefix<'p>(path: &'p str, prefix: &str) -> Option<&'p str> {
    if prefix == "/" {
        return path.starts_with('/').then_some(path);
    }
    let rest = path.strip_prefix(prefix)?;
    (rest.is_empty() || rest.starts_with('/')).then_some(rest)
}

/// Builds the upstream path-and-query: `{base_path}{upstream_path}{rest}` followed by the query,
/// all bytes passed through unchanged; an empty path becomes `/`.
pub fn upstream_path_and_query(
    base_path: &str,
    upstream_path: &str,
    rest: &str,
    query: Option<&str>,
) -> String {
    let mut out = String::with_capacity(
        base_path.len() + upstream_path.len() + rest.len() + query.map_or(0, |q| q.len() + 1) + 1,
    );
    out.push_str(base_path);
    out.push_str(upstream_path);
    out.push_str(rest);
    if out.is_empty() {
        out.push('/');
    }
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    out
}

/// Whether a raw path holds a `.` or `..` segment, also percent-encoded (`%2e`). Such a path could
/// climb out of a route's `upstream_path` once the upstream normalises it, so it is refused.
pub fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(is_dot_segment)
}

/// `.` or `..`, each dot written as `.`, `%2e` or `%2E`. Allocates nothing: it runs on every
/// request.
fn is_dot_segment(segment: &str) -> bool {
    let mut rest = segment.as_bytes();
    let mut dots = 0;
    while !rest.is_empty() {
        rest = match rest {
            [b'.', tail @ ..] => tail,
            [b'%', b'2', b'e' | b'E', tail @ ..] => tail,
            _ => return false,
        };
        dots += 1;
        if dots > 2 {
            return false;
        }
    }
    dots > 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(prefixes: &[&str]) -> RouteTable {
        let routes: Vec<config::RouteConfig> = prefixes
            .iter()
            .map(|p| config::RouteConfig {
                prefix: (*p).into(),
                credential: "default".into(),
                delegate: None,
                token_mode: TokenMode::Interval,
                upstream_path: String::new(),
            })
            .collect();
        let policy = TokenPolicy {
            mode: TokenMode::Interval,
            max_age: std::time::Duration::from_secs(3300),
            refresh_before_expiry: std::time::Duration::from_secs(300),
            transaction_idle: std::time::Duration::from_secs(30),
            transaction_header: http::HeaderName::from_static("x-transaction-id"),
        };
        RouteTable::new(&routes, &policy)
    }

    #[test]
    fn longest_prefix_wins_on_segment_boundaries() {
        let t = table(&["/", "/contoso", "/contoso/eu"]);
        let m = |p| {
            t.find(p)
                .map(|(r, rest)| (r.prefix.to_string(), rest.to_string()))
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
    fn no_root_route_means_no_match_outside_prefixes() {
        let t = table(&["/contoso"]);
        assert!(t.find("/other").is_none());
        assert!(t.find("/contosox").is_none());
        assert!(t.find("*").is_none());
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
    fn dot_segments_are_detected_also_encoded() {
        assert!(has_dot_segment("/a/../b"));
        assert!(has_dot_segment("/a/%2e%2E/b"));
        assert!(has_dot_segment("/a/./b"));
        assert!(has_dot_segment("/.."));
        assert!(!has_dot_segment("/a/..b/c.d"));
        assert!(!has_dot_segment("/"));
        assert!(has_dot_segment("/a/.%2e"));
        assert!(has_dot_segment("/a/%2E"));
        assert!(!has_dot_segment("/a/.../b"));
        assert!(!has_dot_segment("/a/%2e%2e%2e"));
        assert!(!has_dot_segment("/a/%2f/b"));
        assert!(!has_dot_segment("/a/%2"));
        assert!(!has_dot_segment("//a//"));
    }
}
