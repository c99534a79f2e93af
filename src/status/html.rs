//! The status page: one HTML document rendered on the server from a [`Status`]. Plain semantic
//! HTML (headings, tables with header cells, definition lists) so that screen readers and
//! printers do well; no JavaScript, no form, no external resource, one inline style sheet
//! (the page's `Content-Security-Policy` allows inline styles and nothing else). It reloads
//! itself every 10 seconds. Every value is escaped.

use std::fmt::Write as _;

use super::{ClientStatus, Incident, RouteStatus, Status, TokenPhase, TokenStatus, seconds};
use crate::readiness::{Delegates, ReadyState, TokenReadiness};

/// Seconds between the page's own reloads.
pub(crate) const REFRESH_S: u32 = 10;

const STYLE: &str = "\
body{font:14px/1.4 system-ui,'Segoe UI',sans-serif;margin:1rem auto;max-width:1320px;\
padding:0 .75rem;color:#1b1b1b;background:#fff}\
h1{font-size:1.4rem;margin:.2rem 0}h2{font-size:1.1rem;margin:1.4rem 0 .4rem}\
table{border-collapse:collapse;width:100%;font-size:13px}\
th,td{border:1px solid #c8c8c8;padding:.25rem .4rem;text-align:left;vertical-align:top}\
th{background:#f0f0f0}td.n{text-align:right;font-variant-numeric:tabular-nums}\
.ok{color:#0a6b2a;font-weight:600}.bad{color:#a4000f;font-weight:600}\
.warn{color:#7a4d00;font-weight:600}.muted{color:#595959}\
.warnings{border:2px solid #a4000f;padding:.3rem .8rem;background:#fff4f4}\
dl{display:grid;grid-template-columns:max-content 1fr;gap:.2rem 1rem;margin:0}dt{font-weight:600}\
dd{margin:0;word-break:break-word}code{font-size:12px}\
@media print{body{max-width:none;font-size:11px}table{font-size:10px}}";

/// The whole page.
pub(crate) fn render(status: &Status) -> String {
    let mut out = String::with_capacity(16 * 1024);
    let state = ready_word(status.status);
    let _ = write!(
        out,
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n\
         <meta http-equiv=\"refresh\" content=\"{REFRESH_S}\">\n\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n\
         <title>azure-costs-proxy: {state}</title>\n<style>{STYLE}</style>\n</head>\n<body>\n"
    );
    header(&mut out, status);
    out.push_str("<main>\n");
    warnings(&mut out, &status.warnings);
    tokens(&mut out, &status.tokens, status.tokens_omitted);
    routes(&mut out, &status.routes);
    if let Some(clients) = &status.clients {
        self::clients(&mut out, clients, status.clients_omitted);
    }
    config(&mut out, status);
    network(&mut out, status);
    out.push_str("</main>\n</body>\n</html>\n");
    out
}

fn ready_word(state: ReadyState) -> &'static str {
    match state {
        ReadyState::Ready => "ready",
        ReadyState::NotReady => "not ready",
        ReadyState::ShuttingDown => "shutting down",
    }
}

fn header(out: &mut String, s: &Status) {
    let class = if s.status == ReadyState::Ready {
        "ok"
    } else {
        "bad"
    };
    let _ = write!(
        out,
        "<header>\n<h1>azure-costs-proxy <span class=\"{class}\">{}</span></h1>\n\
         <p class=\"muted\">version {} &middot; started {} (up {}) &middot; as of {} &middot; \
         this page reloads every {REFRESH_S} s</p>\n</header>\n",
        ready_word(s.status),
        esc(&s.version),
        esc(&s.started_at),
        esc(&seconds(s.uptime_s)),
        esc(&s.now),
    );
}

fn warnings(out: &mut String, warnings: &[String]) {
    if warnings.is_empty() {
        return;
    }
    out.push_str("<section class=\"warnings\">\n<h2>Warnings</h2>\n<ul>\n");
    for w in warnings {
        let _ = writeln!(out, "<li>{}</li>", esc(w));
    }
    out.push_str("</ul>\n</section>\n");
}

/// A table: caption, header cells, then the rows as given (already escaped).
fn table(out: &mut String, caption: &str, heads: &[&str], rows: &[String]) {
    let _ = write!(
        out,
        "<table>\n<caption class=\"muted\">{caption}</caption>\n<thead><tr>"
    );
    for h in heads {
        let _ = write!(out, "<th scope=\"col\">{h}</th>");
    }
    out.push_str("</tr></thead>\n<tbody>\n");
    for row in rows {
        let _ = writeln!(out, "<tr>{row}</tr>");
    }
    out.push_str("</tbody>\n</table>\n");
}

fn tokens(out: &mut String, tokens: &[TokenStatus], omitted: u64) {
    out.push_str("<section>\n<h2 id=\"tokens\">Tokens</h2>\n");
    let rows: Vec<String> = tokens
        .iter()
        .map(|t| {
            let class = match t.state {
                TokenPhase::Valid => "ok",
                TokenPhase::Missing => "warn",
                state if state.is_trouble() => "bad",
                _ => "",
            };
            format!(
                "<th scope=\"row\">{}</th><td>{}</td><td>{}</td><td class=\"{class}\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td><code>{}</code></td><td>{}</td>",
                esc(&t.credential),
                esc(t.delegate.as_deref().unwrap_or("-")),
                esc(&t.mode),
                t.state.as_str(),
                after(t.expires_in_s),
                match (t.retry_in_s, t.refresh_in_s) {
                    (Some(retry), _) => format!("retry in {}", esc(&seconds(retry))),
                    (None, refresh) => after(refresh),
                },
                esc(t.fingerprint.as_deref().unwrap_or("-")),
                incident(t.last_error.as_ref()),
            )
        })
        .collect();
    table(
        out,
        "Per credential and delegate; a fingerprint tells tokens apart and reveals nothing",
        &[
            "Credential",
            "Delegate",
            "Mode",
            "State",
            "Expires in",
            "Next refresh",
            "Fingerprint",
            "Last STS error",
        ],
        &rows,
    );
    if omitted > 0 {
        let _ = writeln!(
            out,
            "<p class=\"muted\">{omitted} more tokens not listed (those in trouble are)</p>"
        );
    }
    out.push_str("</section>\n");
}

fn routes(out: &mut String, routes: &[RouteStatus]) {
    out.push_str("<section>\n<h2 id=\"routes\">Routes</h2>\n");
    let rows: Vec<String> = routes
        .iter()
        .map(|r| {
            let acts_for = match (&r.delegate, &r.delegates) {
                (Some(d), _) => esc(d),
                (None, Some(Delegates::Any(_))) => "any team (from the path)".into(),
                (None, Some(Delegates::Listed(teams))) => esc(&teams.join(", ")),
                (None, None) => "-".into(),
            };
            let class = match r.token {
                TokenReadiness::Valid => "ok",
                TokenReadiness::OnDemand => "",
                TokenReadiness::Missing => "warn",
                TokenReadiness::BackingOff => "bad",
            };
            let q = r.requests;
            format!(
                "<th scope=\"row\"><code>{}</code></th><td>{}</td><td>{}</td><td>{}</td>\
                 <td class=\"{class}\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td>\
                 <td class=\"n\">{}</td><td class=\"n\">{}</td><td>{}</td>",
                esc(&r.prefix),
                esc(&r.credential),
                acts_for,
                esc(&r.mode),
                r.token.as_str(),
                q.c2,
                q.c1 + q.c3,
                q.c4,
                q.c5,
                r.recent_requests,
                ms(r.p50_ms),
                ms(r.p95_ms),
                incident(r.last_upstream_error.as_ref()),
            )
        })
        .collect();
    table(
        out,
        "Requests since the start by status class; latency over the last 5 minutes",
        &[
            "Prefix",
            "Credential",
            "Acts for",
            "Mode",
            "Token",
            "2xx",
            "1xx/3xx",
            "4xx",
            "5xx",
            "Last 5 min",
            "p50",
            "p95",
            "Last upstream error",
        ],
        &rows,
    );
    out.push_str("</section>\n");
}

fn clients(out: &mut String, clients: &[ClientStatus], omitted: u64) {
    out.push_str("<section>\n<h2 id=\"clients\">Clients</h2>\n");
    let rows: Vec<String> = clients
        .iter()
        .map(|c| {
            let class = if c.denials > 0 { " warn" } else { "" };
            format!(
                "<th scope=\"row\">{}</th><td class=\"n\">{}</td><td class=\"n{class}\">{}</td>",
                esc(&c.name),
                c.requests,
                c.denials
            )
        })
        .collect();
    table(
        out,
        "unknown: requests no client was recognised for",
        &["Client", "Requests", "Refused (401, 403, 429)"],
        &rows,
    );
    if omitted > 0 {
        let _ = writeln!(
            out,
            "<p class=\"muted\">{omitted} more clients not listed: those refused most, then the \
             busiest, are (every client is in /metrics)</p>"
        );
    }
    out.push_str("</section>\n");
}

fn config(out: &mut String, s: &Status) {
    let c = &s.config;
    let last = match &c.last_reload {
        None => "none since the start".to_string(),
        Some(r) => {
            let class = if r.error.is_some() { "bad" } else { "ok" };
            format!(
                "{} ({}): <span class=\"{class}\">{}</span>{}",
                esc(&r.at),
                esc(&r.trigger),
                esc(&r.result),
                r.error
                    .as_ref()
                    .map(|e| format!(" &mdash; {}", esc(e)))
                    .unwrap_or_default()
            )
        }
    };
    let _ = write!(
        out,
        "<section>\n<h2 id=\"config\">Configuration</h2>\n<dl>\n\
         <dt>Config</dt><dd><code>{}</code></dd>\n<dt>Reloads</dt><dd>{}</dd>\n\
         <dt>Last reload</dt><dd>{last}</dd>\n</dl>\n</section>\n",
        esc(&c.origin),
        esc(&c.reload),
    );
}

fn network(out: &mut String, s: &Status) {
    out.push_str("<section>\n<h2 id=\"network\">Listeners and the way out</h2>\n<dl>\n");
    for l in &s.listeners {
        let _ = writeln!(
            out,
            "<dt>{} listener</dt><dd><code>{}</code> &mdash; {}</dd>",
            esc(&l.role),
            esc(&l.url),
            esc(&l.access)
        );
    }
    let o = &s.outbound;
    for (name, way) in [("API", &o.api), ("STS", &o.sts)] {
        let _ = writeln!(
            out,
            "<dt>{name}</dt><dd><code>{}</code> &mdash; {}</dd>",
            esc(&way.url),
            esc(&way.via)
        );
    }
    let _ = writeln!(out, "<dt>Trusted roots</dt><dd>{}</dd>", esc(&o.trust));
    out.push_str("</dl>\n</section>\n");
}

fn after(s: Option<u64>) -> String {
    s.map_or_else(|| "-".to_string(), |s| esc(&seconds(s)))
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_string(), |v| format!("{v:.1}&nbsp;ms"))
}

fn incident(i: Option<&Incident>) -> String {
    i.map_or_else(
        || "-".to_string(),
        |i| {
            format!(
                "<span class=\"muted\">{}</span> {}",
                esc(&i.at),
                esc(&i.message)
            )
        },
    )
}

/// Text made safe for HTML content and attribute values.
pub(crate) fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}
