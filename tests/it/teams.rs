//! CSP partners at scale: one `{delegate}` route for many customer teams (the team from the path,
//! an allow-list or any team, tokens per team in a bounded cache).

use std::time::Duration;

use crate::support::process::{ProxyProcess, Scratch, command};
use crate::support::tokio;
use crate::support::{Proxy, TestConfig, route, simulator};

const ROUTE: &str = "/teams/{delegate}";

/// The status of `GET /teams/{team}/v1/teams` through `proxy`.
async fn get_team(client: &reqwest::Client, proxy: &Proxy, team: &str) -> u16 {
    let url = proxy.url(&format!("/teams/{team}/v1/teams"));
    client.get(url).send().await.unwrap().status().as_u16()
}

async fn body(r: reqwest::Response) -> serde_json::Value {
    r.json().await.unwrap()
}

#[tokio::test]
async fn a_listed_team_gets_its_own_token_and_the_stripped_path() {
    let proxy = Proxy::builder()
        .route(route(ROUTE).delegates(&["TEAM-CONTOSO", "TEAM-FABRIKAM"]))
        .spawn()
        .await;
    let r = proxy.get("/teams/TEAM-CONTOSO/v1/costs/by-service").await;
    assert_eq!(r.status(), 200);
    assert_eq!(body(r).await["team"]["id"], "TEAM-CONTOSO");
    let r = proxy.get("/teams/TEAM-FABRIKAM/v1/costs/by-service").await;
    assert_eq!(body(r).await["team"]["id"], "TEAM-FABRIKAM");
    let seen = proxy.sim.requests();
    assert_eq!(seen[0].path_and_query, "/v1/costs/by-service");
    let issued = proxy.sim.issued_tokens();
    let token_of = |team: &str| {
        let t = issued
            .iter()
            .find(|t| t.delegate.as_deref() == Some(team))
            .unwrap();
        format!("Bearer {}", t.token)
    };
    assert_eq!(
        seen[0].headers["authorization"],
        token_of("TEAM-CONTOSO").as_str()
    );
    assert_eq!(
        seen[1].headers["authorization"],
        token_of("TEAM-FABRIKAM").as_str()
    );
    // Cached per team: a second request costs no STS call.
    let calls = proxy.sim.sts_calls();
    assert_eq!(
        proxy.get("/teams/TEAM-CONTOSO/v1/teams").await.status(),
        200
    );
    assert_eq!(proxy.sim.sts_calls(), calls);
}

#[tokio::test]
async fn a_team_not_listed_is_403_forbidden_delegate_without_an_sts_call() {
    let proxy = Proxy::builder()
        .route(route(ROUTE).delegates(&["TEAM-CONTOSO"]))
        .spawn()
        .await;
    // The base token is kept warm from the start; wait for it, then count.
    proxy.sim.wait_for_sts_calls(1).await;
    let calls = proxy.sim.sts_calls();
    for path in [
        "/teams/TEAM-FABRIKAM/v1/teams",
        // Matched exactly: case counts, nothing is percent-decoded.
        "/teams/team-contoso/v1/teams",
    ] {
        let r = proxy.get(path).await;
        assert_eq!(r.status(), 403, "{path}");
        let b = body(r).await;
        assert_eq!(b["error"], "forbidden_delegate", "{path}");
    }
    let r = proxy.get("/teams/TEAM%2DCONTOSO/v1/teams").await;
    assert_eq!(r.status(), 400);
    assert_eq!(body(r).await["error"], "bad_request");
    assert_eq!(proxy.sim.sts_calls(), calls);
    assert_eq!(proxy.sim.api_requests(), 0);
    // Counted under the route's prefix, not "-" (which is where a foreign Host shows).
    let metrics = proxy.metrics().await;
    let series = "azure_costs_proxy_requests_total{route=\"/teams/{delegate}\",status=\"403\",client=\"-\"} 2";
    assert!(metrics.contains(series), "missing {series} in\n{metrics}");
}

#[tokio::test]
async fn any_team_refused_by_the_sts_is_502_and_backs_off() {
    let proxy = Proxy::builder()
        .route(route(ROUTE).delegates(&["*"]))
        .spawn()
        .await;
    let r = proxy.get("/teams/TEAM-CONTOSO/v1/costs/by-service").await;
    assert_eq!(body(r).await["team"]["id"], "TEAM-CONTOSO");
    let updates = proxy.sim.update_calls();
    // A client looping over a team the STS does not know: 20 requests in 2 s.
    for _ in 0..20 {
        let r = proxy.get("/teams/TEAM-NOBODY/v1/teams").await;
        assert_eq!(r.status(), 502);
        assert_eq!(body(r).await["error"], "sts_rejected");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The refusal is remembered for the team: one update call, not twenty.
    assert_eq!(proxy.sim.update_calls() - updates, 1);
    // Other teams are not held back by it.
    assert_eq!(
        proxy.get("/teams/TEAM-FABRIKAM/v1/teams").await.status(),
        200
    );
}

#[tokio::test]
async fn two_teams_at_cold_start_share_one_base_token() {
    let sim = simulator().await;
    sim.hold_sts();
    let proxy = Proxy::builder()
        .sim(sim)
        .route(route(ROUTE).delegates(&["*"]))
        .spawn()
        .await;
    // The warm-up's base-token call is held at the STS.
    proxy.sim.wait_for_sts_calls(1).await;
    let client = crate::support::client();
    let get = |path: &'static str| client.get(proxy.url(path)).send();
    let (a, b, c, ()) = tokio::join!(
        get("/teams/TEAM-CONTOSO/v1/teams"),
        get("/teams/TEAM-FABRIKAM/v1/teams"),
        get("/teams/TEAM-CONTOSO/v1/teams"),
        async {
            // All three requests are in (three connections open), waiting for the one base
            // token; then the STS answers, and they need their updates at the same moment.
            loop {
                let metrics = proxy.metrics().await;
                if metrics.contains("azure_costs_proxy_connections_open 3") {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
            proxy.sim.release_sts();
        }
    );
    let (a, b, c) = (a.unwrap(), b.unwrap(), c.unwrap());
    for r in [a, b, c] {
        assert_eq!(r.status(), 200);
    }
    assert_eq!(proxy.sim.issue_calls(), 1);
    assert_eq!(proxy.sim.update_calls(), 2);
}

#[tokio::test]
async fn at_most_a_thousand_teams_are_held_the_least_recently_used_go_first() {
    let sim = simulator().await;
    sim.accept_any_team(true);
    let proxy = Proxy::builder()
        .sim(sim)
        .route(route(ROUTE).delegates(&["*"]))
        // 1,200 teams in a row: the budget for teams not yet held is not what this is about.
        .set("token.sts_budget", "100000/s")
        .spawn()
        .await;
    let client = crate::support::client();
    for i in 0..1_200 {
        assert_eq!(get_team(&client, &proxy, &format!("T-{i}")).await, 200);
        // Team 0 stays in use: the least recently used are the ones evicted.
        if i % 100 == 0 {
            assert_eq!(get_team(&client, &proxy, "T-0").await, 200);
        }
    }
    assert_eq!(proxy.sim.update_calls(), 1_200);
    // The most recent teams and team 0 are still held; the oldest are not.
    let updates = proxy.sim.update_calls();
    for team in ["T-1199", "T-1150", "T-0"] {
        assert_eq!(get_team(&client, &proxy, team).await, 200);
    }
    assert_eq!(
        proxy.sim.update_calls(),
        updates,
        "a recent team was evicted"
    );
    for team in ["T-1", "T-2", "T-3"] {
        assert_eq!(get_team(&client, &proxy, team).await, 200);
    }
    assert_eq!(
        proxy.sim.update_calls(),
        updates + 3,
        "an old team was kept"
    );
    // The expiry metric does not grow with the teams: one `*` series.
    let metrics = proxy.metrics().await;
    assert!(metrics.contains("delegate=\"*\""), "{metrics}");
    assert!(!metrics.contains("T-1199"));
}

#[tokio::test]
async fn a_team_route_next_to_a_fixed_route_of_the_same_team() {
    let proxy = Proxy::builder()
        .route(route("/contoso").delegate("TEAM-CONTOSO"))
        .route(route(ROUTE).delegates(&["TEAM-CONTOSO", "TEAM-WOODGROVE"]))
        .route(route("/teams/special").delegate("TEAM-FABRIKAM"))
        .spawn()
        .await;
    let team = |r: serde_json::Value| r["team"]["id"].as_str().unwrap().to_string();
    let r = proxy.get("/contoso/v1/costs/by-service").await;
    assert_eq!(team(body(r).await), "TEAM-CONTOSO");
    let r = proxy.get("/teams/TEAM-CONTOSO/v1/costs/by-service").await;
    assert_eq!(team(body(r).await), "TEAM-CONTOSO");
    // A fixed prefix beats a `{delegate}` one of the same length.
    let r = proxy.get("/teams/special/v1/costs/by-service").await;
    assert_eq!(team(body(r).await), "TEAM-FABRIKAM");
    let r = proxy.get("/teams/TEAM-WOODGROVE/v1/costs/by-service").await;
    assert_eq!(team(body(r).await), "TEAM-WOODGROVE");
}

#[tokio::test]
async fn readyz_check_and_token_know_team_routes() {
    let proxy = Proxy::builder()
        .route(route(ROUTE).delegates(&["TEAM-CONTOSO", "TEAM-FABRIKAM"]))
        .spawn()
        .await;
    let ready = crate::support::client()
        .get(proxy.admin_url("/readyz"))
        .send()
        .await
        .unwrap();
    assert_eq!(ready.status(), 200);
    let ready = body(ready).await;
    assert_eq!(ready["routes"][0]["prefix"], ROUTE);
    assert_eq!(ready["routes"][0]["token"], "on_demand");
    assert_eq!(
        ready["routes"][0]["delegates"],
        serde_json::json!(["TEAM-CONTOSO", "TEAM-FABRIKAM"])
    );

    let dir = Scratch::new("teams-cli");
    let text = TestConfig::new()
        .route(route(ROUTE).delegates(&["TEAM-CONTOSO", "TEAM-FABRIKAM"]))
        .text(&proxy.sim);
    let path = dir.write("proxy.toml", &text);
    let run = |args: &[&str]| {
        let mut c = command();
        c.args(args)
            .arg("--config")
            .arg(&path)
            .env("SIM_SECRET", proxy.sim.client_secret());
        c
    };
    let out = run(&["check"]).output().await.unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(
        shown.contains(ROUTE) && shown.contains("from the path"),
        "{shown}"
    );
    assert!(
        shown.contains("acts for TEAM-CONTOSO, TEAM-FABRIKAM"),
        "{shown}"
    );
    let out = run(&["token", "--route", "/teams/TEAM-FABRIKAM"])
        .output()
        .await
        .unwrap();
    let shown = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{shown}");
    assert!(shown.contains("delegate     TEAM-FABRIKAM"), "{shown}");
    let updated = proxy.sim.issued_tokens();
    assert!(
        updated
            .iter()
            .any(|t| t.delegate.as_deref() == Some("TEAM-FABRIKAM"))
    );
    let out = run(&["token", "--route", "/teams/TEAM-NOBODY"])
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("does not act for team"));
}

#[tokio::test]
async fn clients_looping_over_made_up_teams_spend_a_bounded_sts_budget() {
    let sim = simulator().await;
    let dir = Scratch::new("sts-budget");
    let config = TestConfig::new().route(route(ROUTE).delegates(&["*"]));
    let path = dir.write("proxy.toml", &config.text(&sim));
    let secret = sim.client_secret();
    let mut proxy = ProxyProcess::start(&path, &[("SIM_SECRET", &secret)]).await;
    sim.wait_for_sts_calls(1).await;
    let updates = sim.update_calls();

    // 16 clients, 25 made-up team ids each, all at once.
    let started = std::time::Instant::now();
    let c = crate::support::client();
    let tasks: Vec<_> = (0..16)
        .map(|i| {
            let (c, base) = (c.clone(), proxy.url("/teams"));
            tokio::spawn(async move {
                let mut answers = Vec::new();
                for j in 0..25 {
                    let team = format!("TEAM-BOGUS-{i}-{j}");
                    let r = c
                        .get(format!("{base}/{team}/v1/teams"))
                        .send()
                        .await
                        .unwrap();
                    let retry = r.headers().get("retry-after").is_some();
                    let code = r.json::<serde_json::Value>().await.unwrap()["error"].clone();
                    answers.push((team, code, retry));
                }
                answers
            })
        })
        .collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.extend(t.await.unwrap());
    }
    let elapsed = started.elapsed().as_secs_f64();
    let made = sim.update_calls() - updates;
    // The burst of 20, and what the rate (10 a second) refilled meanwhile.
    let allowed = 20 + (10.0 * elapsed).ceil() as usize;
    assert!(
        made <= allowed,
        "{made} STS calls for 400 made-up teams in {elapsed:.2} s"
    );
    let rejected: Vec<_> = answers
        .iter()
        .filter(|(_, code, _)| code == "sts_rejected")
        .map(|(team, _, _)| team.clone())
        .collect();
    assert_eq!(rejected.len(), made, "one 502 per STS call");
    for (_, code, retry) in &answers {
        if code != "sts_rejected" {
            assert_eq!(code, "sts_unavailable");
            assert!(retry, "503 without Retry-After");
        }
    }

    // The teams refused are remembered: asking again costs no STS call.
    for team in &rejected {
        let r = c
            .get(proxy.url(&format!("/teams/{team}/v1/teams")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 502);
    }
    assert_eq!(sim.update_calls() - updates, made);

    // The log says so once per interval with a count, not once per request.
    proxy.wait_for("STS call budget").await;
    #[cfg(unix)]
    {
        proxy.signal("TERM").await;
        assert_eq!(proxy.exit_code().await, Some(0));
        let log = proxy.transcript.join("\n");
        let budget_lines = log.matches("STS call budget").count();
        let rejection_lines = log.matches("configuration error").count();
        assert!(budget_lines <= 2, "{budget_lines} budget lines");
        assert!(
            rejection_lines <= 2,
            "{rejection_lines} rejection lines for {made} rejections"
        );
        assert!(
            log.contains("more_like_it="),
            "no count of the lines left out"
        );
    }
}
