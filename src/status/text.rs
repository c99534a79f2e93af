//! The `status` command's report: the status page's facts as a few lines of plain ASCII text,
//! for a console (PowerShell's included) at 3 a.m.: the verdict first, then what is wrong, then
//! the tables.

use std::fmt::Write as _;

use super::{Incident, Status, seconds};
use crate::readiness::ReadyState;

/// The report for `status`.
pub(crate) fn render(s: &Status) -> String {
    let mut out = String::new();
    let verdict = match s.status {
        ReadyState::Ready => "READY",
        ReadyState::NotReady => "NOT READY",
        ReadyState::ShuttingDown => "SHUTTING DOWN",
    };
    let _ = writeln!(
        out,
        "azure-costs-proxy {}: {verdict} (up {}, as of {})",
        s.version,
        seconds(s.uptime_s),
        s.now
    );
    for w in &s.warnings {
        let _ = writeln!(out, "warning: {w}");
    }
    let _ = writeln!(out, "config:  {}", s.config.origin);
    if let Some(r) = &s.config.last_reload {
        let _ = writeln!(
            out,
            "reload:  {} at {} ({}){}",
            r.result,
            r.at,
            r.trigger,
            r.error
                .as_ref()
                .map(|e| format!(": {e}"))
                .unwrap_or_default()
        );
    }
    tokens(&mut out, s);
    routes(&mut out, s);
    if let Some(clients) = &s.clients {
        let _ = writeln!(out, "\nclients                    requests    refused");
        for c in clients {
            let _ = writeln!(out, "  {:<24} {:>8} {:>10}", c.name, c.requests, c.denials);
        }
        if s.clients_omitted > 0 {
            let _ = writeln!(out, "  ... and {} more (see /metrics)", s.clients_omitted);
        }
    }
    out
}

fn tokens(out: &mut String, s: &Status) {
    let _ = writeln!(
        out,
        "\ntokens                             state        expires in   fingerprint"
    );
    for t in &s.tokens {
        let name = match &t.delegate {
            Some(d) => format!("{}/{d}", t.credential),
            None => t.credential.clone(),
        };
        let _ = writeln!(
            out,
            "  {:<32} {:<12} {:<12} {}",
            name,
            t.state.as_str(),
            t.expires_in_s.map(seconds).unwrap_or_else(|| "-".into()),
            t.fingerprint.as_deref().unwrap_or("-"),
        );
        if let Some(retry) = t.retry_in_s {
            let _ = writeln!(out, "      next attempt in {}", seconds(retry));
        }
        last_error(out, "last STS error", t.last_error.as_ref());
    }
    if s.tokens_omitted > 0 {
        let _ = writeln!(
            out,
            "  ... and {} more (those in trouble are listed)",
            s.tokens_omitted
        );
    }
}

fn routes(out: &mut String, s: &Status) {
    let _ = writeln!(
        out,
        "\nroutes                     token           2xx      4xx      5xx   p50 ms   p95 ms"
    );
    for r in &s.routes {
        let ms = |v: Option<f64>| v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}"));
        let _ = writeln!(
            out,
            "  {:<24} {:<12} {:>6} {:>8} {:>8} {:>8} {:>8}",
            r.prefix,
            r.token.as_str(),
            r.requests.c2,
            r.requests.c4,
            r.requests.c5,
            ms(r.p50_ms),
            ms(r.p95_ms),
        );
        last_error(out, "last upstream error", r.last_upstream_error.as_ref());
    }
}

fn last_error(out: &mut String, what: &str, incident: Option<&Incident>) {
    if let Some(i) = incident {
        let _ = writeln!(out, "      {what} at {}: {}", i.at, i.message);
    }
}
