//! The simulator's own knobs that later tests and the refresh-storm benchmark lean on: the API's
//! rate limit per token identity, in each `Retry-After` form real servers use.

use crate::support::tokio;
use crate::support::{client, simulator};
use azure_costs_proxy::simulator::{ApiRateLimit, RetryAfter, Simulator, TOKEN_PATH};

/// A token straight from the simulated STS.
async fn token(sim: &Simulator) -> String {
    let answer: serde_json::Value = client()
        .post(format!(
            "{}{TOKEN_PATH}",
            sim.sts_url().trim_end_matches(TOKEN_PATH)
        ))
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", sim.client_id()),
            ("client_secret", &sim.client_secret()),
        ])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    answer["access_token"].as_str().unwrap().to_string()
}

/// Status and `Retry-After` of one API request with `token`.
async fn ask(sim: &Simulator, token: &str) -> (u16, Option<String>) {
    let r = client()
        .get(format!("{}/v1/teams", sim.api_url().trim_end_matches('/')))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let retry = r
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_string());
    (r.status().as_u16(), retry)
}

#[tokio::test]
async fn the_api_limits_each_identity_and_says_when_to_come_back_in_each_form() {
    let sim = simulator().await;
    let bearer = token(&sim).await;
    for (form, wanted) in [
        (RetryAfter::Seconds, Some("seconds")),
        (RetryAfter::HttpDate, Some("date")),
        (RetryAfter::Absent, None),
    ] {
        // A limit of 0 answers 429 whatever the second: the form can be seen at once.
        sim.set_api_rate_limit(Some(ApiRateLimit {
            per_second: 0,
            retry_after: form,
        }));
        let (status, retry) = ask(&sim, &bearer).await;
        assert_eq!(status, 429, "{form:?}");
        match (wanted, retry.as_deref()) {
            (Some("seconds"), Some(v)) => assert_eq!(v, "1"),
            (Some("date"), Some(v)) => assert!(v.ends_with(" GMT"), "{v}"),
            (None, None) => {}
            (w, got) => panic!("{form:?}: wanted {w:?}, got {got:?}"),
        }
    }
    assert_eq!(sim.rate_limited_requests(), 3);
    // A generous limit lets requests through; lifting it too.
    sim.set_api_rate_limit(Some(ApiRateLimit {
        per_second: 1_000,
        retry_after: RetryAfter::Seconds,
    }));
    assert_eq!(ask(&sim, &bearer).await.0, 200);
    sim.set_api_rate_limit(None);
    assert_eq!(ask(&sim, &bearer).await.0, 200);
    assert_eq!(sim.rate_limited_requests(), 3);
}

#[tokio::test]
async fn the_simulator_counts_for_benchmarks_that_run_it_apart() {
    let sim = simulator().await;
    let bearer = token(&sim).await;
    sim.set_api_rate_limit(Some(ApiRateLimit {
        per_second: 0,
        retry_after: RetryAfter::Absent,
    }));
    assert_eq!(ask(&sim, &bearer).await.0, 429);
    let stats: serde_json::Value = client()
        .get(format!(
            "{}/_simulator/stats",
            sim.api_url().trim_end_matches('/')
        ))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    // Asking for the figures is not an API request.
    assert_eq!(stats["api_requests"], 1);
    assert_eq!(stats["rate_limited"], 1);
    assert_eq!(sim.api_requests(), 1);
}
