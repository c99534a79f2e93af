//! Fills the status model (`status/`) from the running proxy: the readiness of `/readyz`, each
//! token's report from the token source, each route's and client's figures from the tally, and
//! the config's listeners, ways out and warnings. Reads only; costs no STS call.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Instant, SystemTime};

use super::Admin;
use crate::config::Config;
use crate::live::ReloadNote;
use crate::proxy::Proxy;
use crate::readiness::RouteReadiness;
use crate::status::{
    ClientStatus, ConfigStatus, Incident, ListenerStatus, OutboundStatus, ReloadStatus,
    RouteStatus, Status, TokenPhase, TokenStatus, WayOut,
};
use crate::tally::{RouteTally, Tally};
use crate::token::{TeamFrom, TokenKey, TokenMode};

/// Teams that request paths named shown at most (a gateway may see thousands).
const PATH_TEAMS_SHOWN: usize = 50;

fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_seconds(t).to_string()
}

fn incident(at: SystemTime, message: &str) -> Incident {
    Incident {
        at: rfc3339(at),
        message: message.to_string(),
    }
}

impl Admin {
    /// The status of the running proxy, for the page, `/status.json` and the `status` command.
    pub(crate) async fn status(&self) -> Status {
        let readiness = self.readiness().await;
        let proxy = self.live.proxy();
        let (started, uptime) = self.live.started();
        let (tokens, tokens_omitted) = tokens(&proxy).await;
        let routes = routes(&proxy, readiness.routes, self.live.tally());
        let (admin, local) = (self.address(), self.live.local());
        let last_reload = self.live.last_reload();
        let reloads = self.reloads;
        let (config, listeners, outbound, mut warnings, names) = self.live.inspect(|c| {
            let names: Option<Vec<String>> = (!c.clients.is_empty()
                || !c.listen.api_keys.is_empty())
            .then(|| c.clients.iter().map(|s| s.name.clone()).collect());
            (
                config_status(c, reloads, last_reload),
                listeners(c, local, admin),
                OutboundStatus {
                    api: WayOut {
                        url: c.upstream.url.to_string(),
                        via: c.outbound.api.describe(),
                    },
                    sts: WayOut {
                        url: without_query(&c.sts.token_url.to_string()),
                        via: c.outbound.sts.describe(),
                    },
                    trust: c.outbound.trust.describe(),
                },
                c.warnings.clone(),
                names,
            )
        });
        let (clients, clients_omitted) = match names {
            Some(names) => {
                let (shown, omitted) = clients(self.live.tally(), &names);
                (Some(shown), omitted)
            }
            None => (None, 0),
        };
        if let (Some(files), Some(log)) = (self.live.watched_files(), self.live.log_file()) {
            warnings.extend(crate::watch::watched_log_warning(&files, &log));
        }
        Status {
            version: env!("CARGO_PKG_VERSION").to_string(),
            status: readiness.status,
            now: rfc3339(SystemTime::now()),
            started_at: rfc3339(started),
            uptime_s: uptime.as_secs(),
            config,
            listeners,
            outbound,
            tokens,
            tokens_omitted,
            routes,
            clients,
            clients_omitted,
            warnings,
        }
    }
}

/// `url` up to its query string (which may carry a key, and says nothing about the way out).
fn without_query(url: &str) -> String {
    url.split('?').next().unwrap_or(url).to_string()
}

fn config_status(c: &Config, reloads: bool, last_reload: Option<ReloadNote>) -> ConfigStatus {
    ConfigStatus {
        origin: c.origin.clone(),
        reload: if reloads {
            c.reload_summary()
        } else {
            "never in this process (demo): a changed config takes a restart".into()
        },
        last_reload: last_reload.map(|r| ReloadStatus {
            at: rfc3339(r.at),
            trigger: r.trigger.to_string(),
            result: if r.error.is_some() { "rejected" } else { "ok" }.to_string(),
            error: r.error,
        }),
    }
}

fn listeners(
    c: &Config,
    local: std::net::SocketAddr,
    admin: Option<std::net::SocketAddr>,
) -> Vec<ListenerStatus> {
    let mut access = vec![if local.ip().is_loopback() {
        "loopback only".to_string()
    } else {
        "remote clients allowed".to_string()
    }];
    if !c.clients.is_empty() || !c.listen.api_keys.is_empty() {
        access.push("clients need a key or certificate".into());
    }
    if let Some(tls) = &c.listen.tls
        && tls.client_ca_file.is_some()
    {
        let how = if tls.client_auth_required {
            "required"
        } else {
            "optional"
        };
        access.push(format!("client certificates {how}"));
    }
    let scheme = if c.listen.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let mut all = vec![ListenerStatus {
        role: "data".into(),
        url: format!("{scheme}://{local}"),
        access: access.join(", "),
    }];
    if let Some(admin) = admin.or(c.admin.enabled.then_some(c.admin.address)) {
        all.push(ListenerStatus {
            role: "admin".into(),
            url: format!("http://{admin}"),
            access: "read-only: this page, /status.json, /healthz, /readyz, /metrics".into(),
        });
    }
    all
}

/// The rows of the tokens table: each key a route uses, once per mode it is used in: a route's
/// own key; a delegate's base (the credential's interval token); a `{delegate}` route's listed
/// teams, and on a `["*"]` route the [`PATH_TEAMS_SHOWN`] teams most recently issued a token.
fn token_keys(proxy: &Proxy) -> Vec<(TokenKey, TokenMode)> {
    let mut keys: Vec<(TokenKey, TokenMode)> = Vec::new();
    let mut seen = HashSet::new();
    let mut add = |key: TokenKey, mode: TokenMode| {
        let row = (
            key.credential.clone(),
            key.delegate.clone(),
            key.any_team(),
            mode.as_str(),
        );
        if seen.insert(row) {
            keys.push((key, mode));
        }
    };
    for route in proxy.routes().routes() {
        if route.delegate.is_some() || route.team.is_some() {
            add(
                TokenKey::new(route.credential.clone(), None),
                TokenMode::Interval,
            );
        }
        let Some(team) = &route.team else {
            add(route.token_key(), route.token_mode);
            continue;
        };
        let (teams, from) = match &team.listed {
            Some(listed) => {
                let mut teams: Vec<Arc<str>> = listed.iter().cloned().collect();
                teams.sort_unstable();
                (teams, TeamFrom::Listed)
            }
            None => {
                let mut teams = proxy.tokens().reported_teams(&route.credential);
                teams.truncate(PATH_TEAMS_SHOWN);
                (teams, TeamFrom::Any)
            }
        };
        for t in teams {
            let mut key = TokenKey::new(route.credential.clone(), Some(t));
            key.team_from = from;
            add(key, route.token_mode);
        }
    }
    keys
}

/// Token rows listed at most (a gateway may list thousands of teams): those in trouble first.
const TOKEN_ROWS_SHOWN: usize = 300;

async fn tokens(proxy: &Proxy) -> (Vec<TokenStatus>, u64) {
    let now = SystemTime::now();
    let mut all = Vec::new();
    for (key, mode) in token_keys(proxy) {
        let mut report = proxy.tokens().report(&key, mode).await;
        // A `{delegate}` route's team gets its token with its first request.
        if key.team_from_path() && report.phase == TokenPhase::Missing {
            report.phase = TokenPhase::OnDemand;
        }
        let h = &report.history;
        all.push(TokenStatus {
            credential: key.credential.to_string(),
            delegate: key.delegate.as_deref().map(str::to_string),
            mode: mode.as_str().to_string(),
            state: report.phase,
            expires_at: report.expires_at.map(rfc3339),
            expires_in_s: report
                .expires_at
                .map(|at| at.duration_since(now).unwrap_or_default().as_secs()),
            refresh_in_s: report.refresh_in.map(|d| d.as_secs()),
            retry_in_s: report.retry_in.map(|d| d.as_secs_f64().ceil() as u64),
            issued_at: h.issued_at.map(rfc3339),
            fingerprint: h.fingerprint.clone(),
            last_error: h.last_error.as_ref().map(|(at, m)| incident(*at, m)),
        });
    }
    let mut omitted = 0;
    if all.len() > TOKEN_ROWS_SHOWN {
        all.sort_by_key(|t| !t.state.is_trouble());
        omitted = (all.len() - TOKEN_ROWS_SHOWN) as u64;
        all.truncate(TOKEN_ROWS_SHOWN);
    }
    (all, omitted)
}

/// Each route of `readiness` (in matching order) with its figures.
fn routes(proxy: &Proxy, readiness: Vec<RouteReadiness>, tally: &Tally) -> Vec<RouteStatus> {
    let now = Instant::now();
    let by_prefix: HashMap<&str, &Arc<RouteTally>> = proxy
        .routes()
        .routes()
        .iter()
        .map(|route| (&*route.prefix, &route.tally))
        .collect();
    readiness
        .into_iter()
        .map(|r| {
            let figures = match by_prefix.get(r.prefix.as_str()) {
                Some(route) => route.figures(now),
                // The proxy was replaced by a reload since readiness was taken.
                None => tally.route(&Arc::from(r.prefix.as_str())).figures(now),
            };
            RouteStatus {
                prefix: r.prefix,
                credential: r.credential,
                delegate: r.delegate,
                delegates: r.delegates,
                mode: r.mode,
                required: r.required,
                token: r.token,
                requests: figures.classes.into(),
                recent_requests: figures.recent,
                p50_ms: figures.p50_ms,
                p95_ms: figures.p95_ms,
                last_upstream_error: figures.last_error.map(|e| incident(e.at, &e.message)),
            }
        })
        .collect()
}

/// Clients listed at most: a gateway may have thousands; beyond this, the ones refused most,
/// then the busiest.
const CLIENTS_SHOWN: usize = 200;

/// The configured clients (`names`, file order), `api_keys` and `unknown` once they have
/// figures; at most [`CLIENTS_SHOWN`], with how many more there are.
fn clients(tally: &Tally, names: &[String]) -> (Vec<ClientStatus>, u64) {
    let figures: HashMap<Arc<str>, (u64, u64)> = tally
        .clients()
        .into_iter()
        .map(|(name, requests, denials)| (name, (requests, denials)))
        .collect();
    let extra = ["api_keys", "unknown"];
    let mut all: Vec<ClientStatus> = names
        .iter()
        .map(String::as_str)
        .chain(extra)
        .filter_map(|name| {
            let (requests, denials) = figures.get(name).copied().unwrap_or_default();
            let idle_extra = extra.contains(&name) && requests == 0 && denials == 0;
            (!idle_extra).then(|| ClientStatus {
                name: name.to_string(),
                requests,
                denials,
            })
        })
        .collect();
    let mut omitted = 0;
    if all.len() > CLIENTS_SHOWN {
        all.sort_by_key(|c| std::cmp::Reverse((c.denials, c.requests)));
        omitted = (all.len() - CLIENTS_SHOWN) as u64;
        all.truncate(CLIENTS_SHOWN);
    }
    (all, omitted)
}
