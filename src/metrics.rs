//! Prometheus metrics (prometheus-client): requests by route, status and client, refusals by
//! client and reason, request durations, STS calls by outcome, token expiry, 401 retries, open
//! connections, config reloads. Served on the admin listener's
//! `/metrics`.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::AtomicU64;
use std::sync::{Arc, PoisonError, RwLock};
use std::time::{Duration, SystemTime};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry};
use rustc_hash::FxBuildHasher;

/// Labels of a proxied request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: Arc<str>,
    status: u16,
    client: Arc<str>,
}

/// Labels of a refused request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DenialLabels {
    client: Arc<str>,
    reason: &'static str,
}

/// Labels of an STS call.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StsLabels {
    credential: Arc<str>,
    kind: &'static str,
    outcome: &'static str,
}

/// Labels of a token.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    credential: Arc<str>,
    delegate: Arc<str>,
}

/// Labels of a route.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: Arc<str>,
}

/// Labels of a request head that hyper refused before the proxy saw a request.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HeadLabels {
    reason: &'static str,
}

/// `requests_total`'s counters, each found once in its family and then by the addresses of its
/// route and client labels: a request's label strings are the config's, shared by `Arc`, so
/// neither hashing nor cloning them is needed. The map holds the labels, so no other string can
/// take their addresses while it does; it forgets everything past [`MAX_RESOLVED`] entries (after
/// many reloads), and the counters stay in the family.
struct RequestCounters {
    family: Family<RequestLabels, Counter>,
    resolved: RwLock<HashMap<LabelAddresses, (RequestLabels, Counter), FxBuildHasher>>,
}

/// Where a request's route and client labels live, and its status.
type LabelAddresses = (usize, u16, usize);

/// Most label sets [`RequestCounters`] keeps resolved.
const MAX_RESOLVED: usize = 4096;

impl RequestCounters {
    fn new(family: Family<RequestLabels, Counter>) -> Self {
        RequestCounters {
            family,
            resolved: RwLock::default(),
        }
    }

    fn inc(&self, route: &Arc<str>, status: u16, client: &Arc<str>) {
        let key = (
            Arc::as_ptr(route).cast::<u8>() as usize,
            status,
            Arc::as_ptr(client).cast::<u8>() as usize,
        );
        if let Some((_, counter)) = self
            .resolved
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&key)
        {
            counter.inc();
            return;
        }
        let labels = RequestLabels {
            route: route.clone(),
            status,
            client: client.clone(),
        };
        let counter = self.family.get_or_create(&labels).clone();
        counter.inc();
        let mut resolved = self
            .resolved
            .write()
            .unwrap_or_else(PoisonError::into_inner);
        if resolved.len() >= MAX_RESOLVED {
            resolved.clear();
        }
        resolved.insert(key, (labels, counter));
    }
}

/// Labels of a config reload.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReloadLabels {
    outcome: &'static str,
    trigger: &'static str,
}

/// The process's metrics. Cheap to update from any task; shared by `Arc`.
pub struct Metrics {
    registry: Registry,
    requests: RequestCounters,
    duration: Histogram,
    sts: Family<StsLabels, Counter>,
    expiry: Family<TokenLabels, Gauge<f64, AtomicU64>>,
    per_route: RouteFamilies,
    connections: Gauge,
    heads: Family<HeadLabels, Counter>,
    reloads: Family<ReloadLabels, Counter>,
    denials: Family<DenialLabels, Counter>,
    /// The route label of requests no route matched, and the client label where no clients are
    /// set: made once rather than per request.
    unmatched: Arc<str>,
    /// The client label of a request that named no known client.
    unknown: Arc<str>,
}

impl fmt::Debug for Metrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Metrics").finish_non_exhaustive()
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

/// `rejected_heads_total`, each reason there from the start (at 0), so that `increase()` sees
/// the first.
fn rejected_heads(registry: &mut Registry) -> Family<HeadLabels, Counter> {
    let heads = Family::<HeadLabels, Counter>::default();
    registry.register(
        "rejected_heads",
        "Request heads the HTTP library answered itself, before any request reached the proxy, \
         by reason: malformed (400), too_large (431: over 64 KiB), timeout (not complete \
         within 10 s; closed without an answer)",
        heads.clone(),
    );
    for reason in ["malformed", "too_large", "timeout"] {
        drop(heads.get_or_create(&HeadLabels { reason }));
    }
    heads
}

/// The families counted per route.
struct RouteFamilies {
    retries: Family<RouteLabels, Counter>,
    cooldowns: Family<RouteLabels, Counter>,
    queues: Family<RouteLabels, Gauge>,
    cache: Family<CacheLabels, Counter>,
}

/// Labels of a request's coalescing (and, with a cache, caching) result.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CacheLabels {
    route: Arc<str>,
    result: &'static str,
}

/// Registers the families counted per route: token retries, cool-downs, waiting requests,
/// cache results.
fn route_families(registry: &mut Registry) -> RouteFamilies {
    let retries = registered(
        registry,
        "token_retries",
        "Requests sent again with a fresh token after the upstream answered 401",
        Family::<RouteLabels, Counter>::default(),
    );
    let cooldowns = registered(
        registry,
        "upstream_cooldowns",
        "Cool-downs started by the API's rate limit (a 429, or a 503 with Retry-After), by \
         route: its requests for that token identity get 429 upstream_rate_limited until then",
        Family::<RouteLabels, Counter>::default(),
    );
    let queues = registered(
        registry,
        "route_queue",
        "Requests waiting for a place within their route's max_in_flight, by route",
        Family::<RouteLabels, Gauge>::default(),
    );
    let cache = registered(
        registry,
        "cache",
        "Proxied requests by route and what X-Cache says of them: miss (went upstream), \
         coalesced (shared an identical request's), bypass (could share nothing)",
        Family::<CacheLabels, Counter>::default(),
    );
    RouteFamilies {
        retries,
        cooldowns,
        queues,
        cache,
    }
}

/// Registers `metric` in `registry` and returns it, to be updated.
fn registered<M: Metric + Clone>(registry: &mut Registry, name: &str, help: &str, metric: M) -> M {
    registry.register(name, help, metric.clone());
    metric
}

impl Metrics {
    /// Registers every series under the `azure_costs_proxy_` prefix.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("azure_costs_proxy");
        let requests = Family::<RequestLabels, Counter>::default();
        registry.register(
            "requests",
            "Requests answered, by route prefix (\"-\" when none matched), status and client \
             (\"-\" when no clients are set, \"unknown\" when none was recognised)",
            requests.clone(),
        );
        // 0.5 ms .. ~65 s: a cached-token request takes about a millisecond, an export minutes.
        let duration = Histogram::new(exponential_buckets(0.0005, 2.0, 18));
        registry.register(
            "request_duration_seconds",
            "Time from a request's arrival to the end of its response body",
            duration.clone(),
        );
        let sts = Family::<StsLabels, Counter>::default();
        registry.register(
            "sts_requests",
            "Calls to the STS, by credential, kind (issue|update) and outcome (ok|rejected|unavailable)",
            sts.clone(),
        );
        let expiry = Family::<TokenLabels, Gauge<f64, AtomicU64>>::default();
        registry.register(
            "token_expiry_timestamp_seconds",
            "Unix time after which the newest token of a credential and delegate (\"-\" for none) is no longer sent",
            expiry.clone(),
        );
        let per_route = route_families(&mut registry);
        let connections = registered(
            &mut registry,
            "connections_open",
            "Client connections open on the data-plane listener",
            Gauge::default(),
        );
        let heads = rejected_heads(&mut registry);
        let reloads = Family::<ReloadLabels, Counter>::default();
        registry.register(
            "config_reloads",
            "Config reloads, by outcome (ok|error: the running config stayed) and trigger \
             (signal|file|service)",
            reloads.clone(),
        );
        let denials = Family::<DenialLabels, Counter>::default();
        registry.register(
            "client_denials",
            "Requests refused, by client (\"unknown\": none recognised; \"-\": no clients) and \
             reason (unauthorized|forbidden_host|forbidden_route|forbidden_delegate|client_rate_limited)",
            denials.clone(),
        );
        Metrics {
            registry,
            denials,
            unknown: Arc::from("unknown"),
            requests: RequestCounters::new(requests),
            duration,
            sts,
            expiry,
            per_route,
            connections,
            heads,
            reloads,
            unmatched: Arc::from("-"),
        }
    }

    /// Reloads may come from `trigger`: both outcomes of it exist from now on, so that
    /// `increase()` sees the first failure.
    pub fn reload_trigger(&self, trigger: &'static str) {
        for outcome in ["ok", "error"] {
            drop(
                self.reloads
                    .get_or_create(&ReloadLabels { outcome, trigger }),
            );
        }
    }

    /// A config reload asked for by `trigger` ended; `ok` false: the running config stayed.
    pub fn reload(&self, trigger: &'static str, ok: bool) {
        let outcome = if ok { "ok" } else { "error" };
        let labels = ReloadLabels { outcome, trigger };
        self.reloads.get_or_create(&labels).inc();
    }

    /// A request of `client` ended with `status` after `elapsed`.
    pub fn request(
        &self,
        route: Option<&Arc<str>>,
        client: &Arc<str>,
        status: u16,
        elapsed: Duration,
    ) {
        let route = route.unwrap_or(&self.unmatched);
        self.requests.inc(route, status, client);
        self.duration.observe(elapsed.as_secs_f64());
    }

    /// The client label where no clients are set: `-`.
    pub fn no_client(&self) -> &Arc<str> {
        &self.unmatched
    }

    /// The client label of a request that named no known client: `unknown`.
    pub fn unknown_client(&self) -> &Arc<str> {
        &self.unknown
    }

    /// A request of `client` was refused with the error code `reason`.
    pub fn denial(&self, client: &Arc<str>, reason: &'static str) {
        let labels = DenialLabels {
            client: client.clone(),
            reason,
        };
        self.denials.get_or_create(&labels).inc();
    }

    /// An STS call of `kind` (`issue` or `update`) for `credential` ended with `outcome` (`ok`,
    /// `rejected` or `unavailable`). The token source names both; metrics only counts them.
    pub fn sts(&self, credential: &Arc<str>, kind: &'static str, outcome: &'static str) {
        let labels = StsLabels {
            credential: credential.clone(),
            kind,
            outcome,
        };
        self.sts.get_or_create(&labels).inc();
    }

    /// A new token of `credential` / `delegate` is sent until `expires_at`.
    pub fn token_expiry(
        &self,
        credential: &Arc<str>,
        delegate: Option<&Arc<str>>,
        expires_at: SystemTime,
    ) {
        let labels = TokenLabels {
            credential: credential.clone(),
            delegate: delegate.cloned().unwrap_or_else(|| Arc::from("-")),
        };
        let at = expires_at
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs_f64();
        self.expiry.get_or_create(&labels).set(at);
    }

    /// Drops the expiry series of a credential and delegate no longer configured (after a
    /// reload), so that alerts on it do not fire for tokens nobody uses.
    pub fn forget_token(&self, credential: &str, delegate: Option<&str>) {
        self.expiry.remove(&TokenLabels {
            credential: Arc::from(credential),
            delegate: Arc::from(delegate.unwrap_or("-")),
        });
    }

    /// The `cache_total` counters of `route`, by result: `miss`, `coalesced`, `bypass` (made
    /// at 0 if new), to keep with the route.
    pub fn cache_counters(&self, route: &Arc<str>) -> [Counter; 3] {
        ["miss", "coalesced", "bypass"].map(|result| {
            let labels = CacheLabels {
                route: route.clone(),
                result,
            };
            self.per_route.cache.get_or_create(&labels).clone()
        })
    }

    /// The gauge of the requests waiting for a place on `route` (made at 0 if new).
    pub fn route_queue(&self, route: &Arc<str>) -> Gauge {
        let labels = RouteLabels {
            route: route.clone(),
        };
        self.per_route.queues.get_or_create(&labels).clone()
    }

    /// The API's rate limit started a cool-down on `route`.
    pub fn cooldown(&self, route: &Arc<str>) {
        self.per_route
            .cooldowns
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .inc();
    }

    /// A request on `route` was sent again with a fresh token.
    pub fn token_retry(&self, route: &Arc<str>) {
        self.per_route
            .retries
            .get_or_create(&RouteLabels {
                route: route.clone(),
            })
            .inc();
    }

    /// A client connection opened (`+1`) or closed (`-1`).
    pub fn connections(&self, delta: i64) {
        self.connections.inc_by(delta);
    }

    /// The HTTP library refused a request head itself, for `reason` (`malformed`, `too_large`
    /// or `timeout`): those answers carry no JSON body and no request id, and write no access
    /// line, so this counter is where they show.
    pub fn rejected_head(&self, reason: &'static str) {
        self.heads.get_or_create(&HeadLabels { reason }).inc();
    }

    /// The Prometheus text exposition of every series.
    pub fn encode(&self) -> String {
        let mut out = String::with_capacity(4096);
        // Writing into a String cannot fail.
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_counters_follow_the_label_strings_not_their_addresses() {
        let m = Metrics::new();
        let client: Arc<str> = Arc::from("c");
        for _ in 0..2 {
            // A reload makes the same route's label anew: one series, counted on.
            let route: Arc<str> = Arc::from("/r");
            m.request(Some(&route), &client, 200, Duration::ZERO);
            m.request(Some(&route), &client, 200, Duration::ZERO);
        }
        let other: Arc<str> = Arc::from("/s");
        m.request(Some(&other), &client, 200, Duration::ZERO);
        let text = m.encode();
        assert!(
            text.contains("requests_total{route=\"/r\",status=\"200\",client=\"c\"} 4"),
            "{text}"
        );
        assert!(
            text.contains("requests_total{route=\"/s\",status=\"200\",client=\"c\"} 1"),
            "{text}"
        );
    }

    #[test]
    fn series_carry_the_names_and_labels_operators_query() {
        let m = Metrics::new();
        let route: Arc<str> = Arc::from("/customers/contoso");
        let contoso: Arc<str> = Arc::from("contoso");
        m.request(Some(&route), &contoso, 200, Duration::from_millis(3));
        m.request(None, m.no_client(), 404, Duration::from_millis(1));
        m.denial(m.unknown_client(), "unauthorized");
        m.sts(&Arc::from("default"), "update", "rejected");
        m.token_expiry(
            &Arc::from("default"),
            None,
            SystemTime::UNIX_EPOCH + Duration::from_secs(1_800_000_000),
        );
        m.token_retry(&route);
        m.connections(2);
        m.connections(-1);
        m.rejected_head("too_large");
        let text = m.encode();
        for line in [
            "azure_costs_proxy_requests_total{route=\"/customers/contoso\",status=\"200\",client=\"contoso\"} 1",
            "azure_costs_proxy_requests_total{route=\"-\",status=\"404\",client=\"-\"} 1",
            "azure_costs_proxy_client_denials_total{client=\"unknown\",reason=\"unauthorized\"} 1",
            "azure_costs_proxy_request_duration_seconds_count 2",
            "azure_costs_proxy_sts_requests_total{credential=\"default\",kind=\"update\",outcome=\"rejected\"} 1",
            "azure_costs_proxy_token_expiry_timestamp_seconds{credential=\"default\",delegate=\"-\"} 1800000000",
            "azure_costs_proxy_token_retries_total{route=\"/customers/contoso\"} 1",
            "azure_costs_proxy_connections_open 1",
            "azure_costs_proxy_rejected_heads_total{reason=\"too_large\"} 1",
            "azure_costs_proxy_rejected_heads_total{reason=\"malformed\"} 0",
        ] {
            assert!(text.contains(line), "missing {line} in\n{text}");
        }
        assert!(text.ends_with("# EOF\n"));
    }
}
