//! CSP delegation and routing: a delegate route strips its prefix and sends a token updated from
//! the base token; delegates get tokens of their own; prefixes match on whole segments; an
//! unknown delegate is an `sts_rejected` naming the credential and the delegate.

use crate::support::tokio;
use crate::support::{Proxy, route};

#[tokio::test]
async fn delegate_route_sends_the_updated_token_and_that_teams_data() {
    let proxy = Proxy::builder()
        .route(route("/"))
        .route(route("/customers/contoso").delegate("TEAM-CONTOSO"))
        .spawn()
        .await;
    let own: serde_json::Value = proxy
        .get("/v1/costs/by-service")
        .await
        .json()
        .await
        .unwrap();
    let r = proxy.get("/customers/contoso/v1/costs/by-service").await;
    assert_eq!(r.status(), 200);
    let contoso: serde_json::Value = r.json().await.unwrap();
    assert_eq!(own["team"]["id"], "TEAM-PARTNER");
    assert_eq!(contoso["team"]["id"], "TEAM-CONTOSO");
    assert_ne!(own["total"], contoso["total"]);

    let issued = proxy.sim.issued_tokens();
    let base = issued.iter().find(|t| t.delegate.is_none()).unwrap();
    let delegated = issued
        .iter()
        .find(|t| t.delegate.as_deref() == Some("TEAM-CONTOSO"))
        .unwrap();
    assert_eq!(delegated.updated_from.as_deref(), Some(base.token.as_str()));
    let seen = proxy.sim.requests();
    assert_eq!(seen[1].path_and_query, "/v1/costs/by-service");
    assert_eq!(
        seen[1].headers["authorization"],
        format!("Bearer {}", delegated.token).as_str()
    );
    // The base token is cached in its own right: one issue, one update.
    assert_eq!(proxy.sim.issue_calls(), 1);
    assert_eq!(proxy.sim.update_calls(), 1);
}

#[tokio::test]
async fn two_delegates_get_two_tokens_and_their_own_data() {
    let proxy = Proxy::builder()
        .route(route("/customers/contoso").delegate("TEAM-CONTOSO"))
        .route(route("/customers/fabrikam").delegate("TEAM-FABRIKAM"))
        .spawn()
        .await;
    let mut totals = Vec::new();
    for (path, team) in [
        ("/customers/contoso/v1/costs/by-service", "TEAM-CONTOSO"),
        ("/customers/fabrikam/v1/costs/by-service", "TEAM-FABRIKAM"),
        ("/customers/contoso/v1/costs/by-service", "TEAM-CONTOSO"),
    ] {
        let r = proxy.get(path).await;
        assert_eq!(r.status(), 200);
        let body: serde_json::Value = r.json().await.unwrap();
        assert_eq!(body["team"]["id"], team);
        totals.push(body["total"].clone());
    }
    assert_ne!(totals[0], totals[1], "distinct sample data per team");
    let seen: Vec<String> = proxy
        .sim
        .requests()
        .iter()
        .map(|r| r.headers["authorization"].to_str().unwrap().to_string())
        .collect();
    assert_ne!(seen[0], seen[1]);
    assert_eq!(seen[0], seen[2], "each delegate token is cached");
    // One base token, updated once per delegate (with no `/` route, the base is still shared).
    assert_eq!(proxy.sim.issue_calls(), 1);
    assert_eq!(proxy.sim.update_calls(), 2);
}

#[tokio::test]
async fn prefixes_match_on_whole_path_segments() {
    let proxy = Proxy::builder()
        .route(route("/"))
        .route(route("/contoso").delegate("TEAM-CONTOSO"))
        .spawn()
        .await;
    let r = proxy.get("/contoso/v1/teams").await;
    assert_eq!(r.status(), 200);
    // `/contosox` is not under `/contoso`: it goes to `/` unchanged, with the base token.
    let r = proxy.get("/contosox/v1/teams").await;
    assert_eq!(r.status(), 404, "the API has no /contosox path");
    let seen = proxy.sim.requests();
    assert_eq!(seen[0].path_and_query, "/v1/teams");
    assert_eq!(seen[1].path_and_query, "/contosox/v1/teams");
    let issued = proxy.sim.issued_tokens();
    let token_of = |delegated: bool| {
        let t = issued
            .iter()
            .find(|t| t.delegate.is_some() == delegated)
            .unwrap();
        format!("Bearer {}", t.token)
    };
    assert_eq!(seen[0].headers["authorization"], token_of(true).as_str());
    assert_eq!(seen[1].headers["authorization"], token_of(false).as_str());
}

#[tokio::test]
async fn without_a_root_route_other_paths_have_no_route() {
    let proxy = Proxy::builder()
        .route(route("/contoso").delegate("TEAM-CONTOSO"))
        .spawn()
        .await;
    let r = proxy.get("/contosox/v1/teams").await;
    assert_eq!(r.status(), 404);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "no_route");
    assert_eq!(proxy.sim.api_requests(), 0);
}

#[tokio::test]
async fn unknown_delegate_is_sts_rejected_naming_credential_and_delegate() {
    let proxy = Proxy::builder()
        .route(route("/").delegate("TEAM-NOBODY"))
        .spawn()
        .await;
    let r = proxy.get("/v1/teams").await;
    assert_eq!(r.status(), 502);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error"], "sts_rejected");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("`default`"), "{message}");
    assert!(message.contains("`TEAM-NOBODY`"), "{message}");
    assert!(!message.contains(&proxy.sim.client_secret()), "{message}");
    assert_eq!(proxy.sim.api_requests(), 0);
}
