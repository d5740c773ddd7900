//! The simulator over real HTTP on 127.0.0.1:0.

use std::time::{Duration, Instant};

use carrier_sim::{Counts, Fault, Running, SimConfig, spawn};
use reqwest::{Client, StatusCode};
use serde_json::{Value, json};

type TestResult = Result<(), Box<dyn std::error::Error>>;

fn client() -> Result<Client, reqwest::Error> {
    Client::builder().timeout(Duration::from_secs(3)).build()
}

async fn start(config: SimConfig) -> Result<Running, std::io::Error> {
    spawn(config, "127.0.0.1:0").await
}

async fn recharge(
    client: &Client,
    sim: &Running,
    reference: &str,
    account: &str,
    amount: &str,
) -> reqwest::Result<reqwest::Response> {
    client
        .post(format!("{}/v1/recharges", sim.url()))
        .json(&json!({
            "reference": reference,
            "sku": "sku-tl-TEL010",
            "account": account,
            "amount": amount,
            "currency": "MXN",
        }))
        .send()
        .await
}

async fn lookup(
    client: &Client,
    sim: &Running,
    reference: &str,
) -> reqwest::Result<(StatusCode, Value)> {
    let res = client
        .get(format!("{}/v1/recharges/{reference}", sim.url()))
        .send()
        .await?;
    let status = res.status();
    Ok((status, res.json().await?))
}

async fn admin_counts(client: &Client, sim: &Running) -> reqwest::Result<Counts> {
    client
        .get(format!("{}/_sim/fulfilments", sim.url()))
        .send()
        .await?
        .json()
        .await
}

async fn plan(
    client: &Client,
    sim: &Running,
    account: &str,
    fault: &str,
    times: u32,
) -> TestResult {
    let res = client
        .post(format!("{}/_sim/plan", sim.url()))
        .json(&json!({"account": account, "fault": fault, "times": times}))
        .send()
        .await?;
    assert_eq!(res.status(), StatusCode::OK);
    Ok(())
}

fn is_receipt(v: &Value) -> bool {
    v.as_str().is_some_and(|s| {
        s.strip_prefix("TET-")
            .is_some_and(|d| d.len() == 10 && d.bytes().all(|b| b.is_ascii_digit()))
    })
}

#[tokio::test]
async fn success_and_idempotent_resubmission_fulfil_once() -> TestResult {
    let sim = start(SimConfig::default()).await?;
    let c = client()?;
    let first = recharge(&c, &sim, "tx-1", "5512345678", "10.00").await?;
    assert_eq!(first.status(), StatusCode::OK);
    let first: Value = first.json().await?;
    assert_eq!(first["status"], "success");
    assert_eq!(first["reference"], "tx-1");
    assert!(is_receipt(&first["fileNumber"]), "{first}");

    let again = recharge(&c, &sim, "tx-1", "5512345678", "10.00").await?;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await?, first);

    let (status, got) = lookup(&c, &sim, "tx-1").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got, first);

    // Another reference gets another receipt.
    let other: Value = recharge(&c, &sim, "tx-2", "5512345679", "10.00")
        .await?
        .json()
        .await?;
    assert_ne!(other["fileNumber"], first["fileNumber"]);

    let counts = admin_counts(&c, &sim).await?;
    assert_eq!(counts, sim.sim.fulfilments());
    assert_eq!(counts.total, 2);
    assert_eq!(counts.by_reference.get("tx-1"), Some(&1));
    assert_eq!(counts.attempts.get("tx-1"), Some(&2));
    sim.shutdown().await;
    Ok(())
}

#[tokio::test]
async fn planned_failure_refuses_once() -> TestResult {
    let sim = start(SimConfig::default()).await?;
    let c = client()?;
    plan(&c, &sim, "5511111111", "fail:INVALID_NUMBER", 1).await?;
    let res = recharge(&c, &sim, "tx-f", "5511111111", "20.00").await?;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = res.json().await?;
    assert_eq!(body["status"], "failed");
    assert_eq!(body["code"], "INVALID_NUMBER");
    assert!(body["message"].as_str().is_some_and(|m| !m.is_empty()));
    assert_eq!(lookup(&c, &sim, "tx-f").await?.1["status"], "failed");
    // The refusal is the reference's outcome for good; the plan is consumed.
    let again = recharge(&c, &sim, "tx-f", "5511111111", "20.00").await?;
    assert_eq!(again.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let next = recharge(&c, &sim, "tx-g", "5511111111", "20.00").await?;
    assert_eq!(next.status(), StatusCode::OK);
    assert_eq!(sim.sim.fulfilments().total, 1);
    Ok(())
}

#[tokio::test]
async fn unavailable_processes_nothing() -> TestResult {
    let sim = start(SimConfig::default()).await?;
    let c = client()?;
    sim.sim.plan("5522222222", Fault::Unavailable, 2);
    for _ in 0..2 {
        let res = recharge(&c, &sim, "tx-u", "5522222222", "10.00").await?;
        assert_eq!(res.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(lookup(&c, &sim, "tx-u").await?.0, StatusCode::NOT_FOUND);
    }
    assert_eq!(sim.sim.fulfilments().total, 0);
    let res = recharge(&c, &sim, "tx-u", "5522222222", "10.00").await?;
    assert_eq!(res.status(), StatusCode::OK);
    let counts = sim.sim.fulfilments();
    assert_eq!(counts.total, 1);
    assert_eq!(counts.attempts.get("tx-u"), Some(&3));
    Ok(())
}

#[tokio::test]
async fn timeout_is_processed_but_answered_late() -> TestResult {
    let sim = start(SimConfig {
        timeout_ms: 1_500,
        ..SimConfig::default()
    })
    .await?;
    let c = client()?;
    sim.sim.plan("5533333333", Fault::Timeout, 1);
    let started = Instant::now();
    let res = c
        .post(format!("{}/v1/recharges", sim.url()))
        .timeout(Duration::from_millis(200))
        .json(&json!({"reference": "tx-t", "sku": "s", "account": "5533333333", "amount": "10.00", "currency": "MXN"}))
        .send()
        .await;
    let err = res.err().ok_or("expected a client timeout")?;
    assert!(err.is_timeout(), "{err}");
    assert!(started.elapsed() < Duration::from_millis(1_000));

    let (status, body) = lookup(&c, &sim, "tx-t").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "success");
    assert_eq!(sim.sim.fulfilments().total, 1);

    // Shutting down cuts the pending sleep short instead of waiting for it.
    let started = Instant::now();
    sim.shutdown().await;
    assert!(started.elapsed() < Duration::from_millis(1_000));
    Ok(())
}

/// A lost answer: the status arrives, then the body breaks off; reading it is an error.
async fn assert_unreadable(res: reqwest::Result<reqwest::Response>) -> TestResult {
    let res = res?;
    assert_eq!(res.status(), StatusCode::OK);
    match res.json::<Value>().await {
        Err(_) => Ok(()),
        Ok(v) => Err(format!("a lost answer was readable: {v}").into()),
    }
}

#[tokio::test]
async fn lost_answer_is_unreadable_but_fulfilled_once() -> TestResult {
    let sim = start(SimConfig::default()).await?;
    let c = client()?;
    plan(&c, &sim, "5544444444", "lost", 1).await?;
    assert_unreadable(recharge(&c, &sim, "tx-l", "5544444444", "30.00").await).await?;

    let (status, body) = lookup(&c, &sim, "tx-l").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "success");
    // Resubmitting after the GET replays the outcome: still one fulfilment.
    let again = recharge(&c, &sim, "tx-l", "5544444444", "30.00").await?;
    assert_eq!(again.status(), StatusCode::OK);
    assert_eq!(again.json::<Value>().await?, body);
    let counts = sim.sim.fulfilments();
    assert_eq!(counts.total, 1);
    assert_eq!(counts.by_reference.get("tx-l"), Some(&1));

    // The same through the random draw.
    sim.sim.set_config(SimConfig {
        lost_rate: 1.0,
        ..SimConfig::default()
    });
    assert_unreadable(recharge(&c, &sim, "tx-l2", "5544444445", "30.00").await).await?;
    assert_eq!(sim.sim.fulfilments().total, 2);
    Ok(())
}

#[tokio::test]
async fn pending_succeeds_when_asked_later() -> TestResult {
    let sim = start(SimConfig::default()).await?;
    let c = client()?;
    sim.sim.plan("5555555555", Fault::Pending(150), 1);
    let res = recharge(&c, &sim, "tx-p", "5555555555", "50.00").await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    assert_eq!(res.json::<Value>().await?["status"], "pending");
    assert_eq!(lookup(&c, &sim, "tx-p").await?.1["status"], "pending");
    assert_eq!(sim.sim.fulfilments().total, 0);

    tokio::time::sleep(Duration::from_millis(200)).await;
    let (status, body) = lookup(&c, &sim, "tx-p").await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["status"], "success");
    assert!(is_receipt(&body["fileNumber"]));
    assert_eq!(lookup(&c, &sim, "tx-p").await?.1, body);
    assert_eq!(sim.sim.fulfilments().total, 1);

    // Through the random draw, with the configured pending time.
    sim.sim.set_config(SimConfig {
        pending_rate: 1.0,
        pending_ms: 50,
        ..SimConfig::default()
    });
    let res = recharge(&c, &sim, "tx-p2", "5555555556", "50.00").await?;
    assert_eq!(res.status(), StatusCode::ACCEPTED);
    tokio::time::sleep(Duration::from_millis(80)).await;
    let replay = recharge(&c, &sim, "tx-p2", "5555555556", "50.00").await?;
    assert_eq!(replay.status(), StatusCode::OK);
    assert_eq!(sim.sim.fulfilments().total, 2);
    Ok(())
}

#[tokio::test]
async fn duplicate_within_window_is_refused() -> TestResult {
    let sim = start(SimConfig::default()).await?;
    let c = client()?;
    let first = recharge(&c, &sim, "tx-d1", "5566666666", "100.00").await?;
    assert_eq!(first.status(), StatusCode::OK);
    // Same account and amount (written differently) under another reference.
    let dup = recharge(&c, &sim, "tx-d2", "5566666666", "100").await?;
    assert_eq!(dup.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(dup.json::<Value>().await?["code"], "DUPLICATE_RECHARGE");
    // Another amount is fine.
    let other = recharge(&c, &sim, "tx-d3", "5566666666", "50.00").await?;
    assert_eq!(other.status(), StatusCode::OK);
    assert_eq!(sim.sim.fulfilments().total, 2);

    sim.sim.set_config(SimConfig {
        duplicate_window_secs: 0,
        ..SimConfig::default()
    });
    let allowed = recharge(&c, &sim, "tx-d4", "5566666666", "100.00").await?;
    assert_eq!(allowed.status(), StatusCode::OK);
    Ok(())
}

#[tokio::test]
async fn unknown_reference_and_garbage() -> TestResult {
    let sim = start(SimConfig::default()).await?;
    let c = client()?;
    let (status, body) = lookup(&c, &sim, "tx-never").await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["code"], "NOT_FOUND");

    for garbage in ["not json", "{}", r#"{"reference": 5}"#] {
        let res = c
            .post(format!("{}/v1/recharges", sim.url()))
            .header("content-type", "application/json")
            .body(garbage)
            .send()
            .await?;
        assert_eq!(res.status(), StatusCode::BAD_REQUEST, "{garbage}");
    }
    let bad_amount = recharge(&c, &sim, "tx-a", "5512345678", "-3").await?;
    assert_eq!(bad_amount.status(), StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(bad_amount.json::<Value>().await?["code"], "INVALID_AMOUNT");

    let bad_plan = c
        .post(format!("{}/_sim/plan", sim.url()))
        .json(&json!({"account": "1", "fault": "explode"}))
        .send()
        .await?;
    assert_eq!(bad_plan.status(), StatusCode::BAD_REQUEST);
    assert_eq!(sim.sim.fulfilments().total, 0);
    Ok(())
}

#[tokio::test]
async fn reference_check() -> TestResult {
    let sim = start(SimConfig::default()).await?;
    let c = client()?;
    let check = |account: &'static str| {
        let c = c.clone();
        let url = format!("{}/v1/references/check", sim.url());
        async move {
            let res = c
                .post(url)
                .json(&json!({"sku": "sku-cfe-CFE001", "account": account}))
                .send()
                .await?;
            assert_eq!(res.status(), StatusCode::OK);
            res.json::<Value>().await
        }
    };
    for account in ["123456789012", "5512345678"] {
        let v = check(account).await?;
        assert_eq!(v["valid"], true, "{account}");
        assert!(v["holder"].as_str().is_some_and(|h| !h.is_empty()));
        let due = v["amountDue"].as_str().ok_or("amountDue")?;
        let (units, cents) = due.split_once('.').ok_or("decimal")?;
        assert!(!units.is_empty() && cents.len() == 2, "{due}");
        assert_eq!(check(account).await?, v, "stable per account");
    }
    for account in ["12345678901", "55123x5678", ""] {
        let v = check(account).await?;
        assert_eq!(v["valid"], false, "{account}");
        assert!(v["message"].is_string());
    }
    sim.sim
        .plan("123456789012", Fault::Fail("INVALID_NUMBER".into()), 1);
    assert_eq!(check("123456789012").await?["valid"], false);
    let bad = c
        .post(format!("{}/v1/references/check", sim.url()))
        .body("{")
        .send()
        .await?;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    Ok(())
}

/// Statuses and bodies of 40 recharges against a fresh simulator with random faults.
async fn run_scenario(seed: u64) -> Result<Vec<(u16, String)>, Box<dyn std::error::Error>> {
    let sim = start(SimConfig {
        seed,
        failure_rate: 0.25,
        unavailable_rate: 0.2,
        pending_rate: 0.2,
        pending_ms: 60_000,
        latency_jitter_ms: 3,
        ..SimConfig::default()
    })
    .await?;
    let c = client()?;
    let mut seen = Vec::new();
    for i in 0..40 {
        let reference = format!("tx-{}", i % 30);
        let account = format!("55{:08}", i % 30);
        let res = recharge(&c, &sim, &reference, &account, "10.00").await?;
        seen.push((res.status().as_u16(), res.text().await?));
    }
    let counts = sim.sim.fulfilments();
    seen.push((0, format!("{counts:?}")));
    sim.shutdown().await;
    Ok(seen)
}

#[tokio::test]
async fn same_seed_same_outcomes() -> TestResult {
    let a = run_scenario(7).await?;
    let b = run_scenario(7).await?;
    assert_eq!(a, b);
    let statuses: std::collections::BTreeSet<u16> = a.iter().map(|(s, _)| *s).collect();
    for s in [200, 202, 422, 503] {
        assert!(
            statuses.contains(&s),
            "status {s} never drawn: {statuses:?}"
        );
    }
    let c = run_scenario(8).await?;
    assert_ne!(a, c);
    Ok(())
}

#[tokio::test]
async fn reset_and_config_over_http() -> TestResult {
    let sim = start(SimConfig::default()).await?;
    let c = client()?;
    recharge(&c, &sim, "tx-r", "5577777777", "10.00").await?;
    plan(&c, &sim, "5577777778", "unavailable", 5).await?;
    let res = c.post(format!("{}/_sim/reset", sim.url())).send().await?;
    assert!(res.status().is_success());
    assert_eq!(admin_counts(&c, &sim).await?, Counts::default());
    assert_eq!(lookup(&c, &sim, "tx-r").await?.0, StatusCode::NOT_FOUND);
    // The plan is gone, and the duplicate window forgot tx-r.
    let res = recharge(&c, &sim, "tx-r2", "5577777778", "10.00").await?;
    assert_eq!(res.status(), StatusCode::OK);
    let res = recharge(&c, &sim, "tx-r3", "5577777777", "10.00").await?;
    assert_eq!(res.status(), StatusCode::OK);

    let url = format!("{}/_sim/config", sim.url());
    let bad = c
        .put(&url)
        .json(&json!({"failureRate": 2.0}))
        .send()
        .await?;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);
    let good = c
        .put(&url)
        .json(&json!({"failureRate": 1.0, "seed": 3}))
        .send()
        .await?;
    assert_eq!(good.status(), StatusCode::OK);
    let config: SimConfig = c.get(&url).send().await?.json().await?;
    assert_eq!(config.failure_rate, 1.0);
    assert_eq!(config.seed, 3);
    assert_eq!(config.timeout_ms, 30_000);
    let res = recharge(&c, &sim, "tx-r4", "5577777779", "10.00").await?;
    assert_eq!(res.status(), StatusCode::UNPROCESSABLE_ENTITY);
    Ok(())
}

#[tokio::test]
async fn dropping_stops_serving() -> TestResult {
    let sim = start(SimConfig::default()).await?;
    let url = sim.url();
    drop(sim);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let c = client()?;
    assert!(c.get(format!("{url}/_sim/config")).send().await.is_err());
    Ok(())
}
