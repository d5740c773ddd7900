//! Crash safety: SIGKILL the server in the middle of a burst of production purchases, restart
//! it on the same database, and check the guarantees against the carrier simulator's counts
//! and the ledger:
//! * every purchase that got a 201 is still there and reaches a terminal state;
//! * nothing is fulfilled twice (the simulator counts fulfilments per reference);
//! * a client retrying an unanswered request with its key gets that purchase, not a new one;
//! * the balance equals the credits minus the successful purchases (failures refunded), and
//!   equals the sum of the ledger's entries.
//!
//! The carrier simulator runs in this test process; the server is a real child process.
//! With `COBRO_TEST_DATABASE_URL` set the database is a fresh PostgreSQL one.

mod support;

use std::{
    collections::{BTreeMap, BTreeSet},
    time::{Duration, Instant},
};

use carrier_sim::SimConfig;
use serde_json::{Value, json};
use support::*;

const PRICE_MICROS: i64 = 588_000; // Telcel 10 MXN at 0.0588

fn body(key: &str, i: usize) -> Value {
    json!({
        "transactionHash": key, "skuId": "sku-tl-TEL010", "skuReference": format!("55{:08}", 40_000 + i),
        "currencyAmount": 10, "chain": "STARKNET", "token": "USDC", "walletAddress": "0x0",
    })
}

struct Api {
    http: reqwest::Client,
    pk: String,
    token: String,
    secret: String,
}

impl Api {
    async fn post(&self, base: &str, key: &str, i: usize) -> Result<(u16, Value), reqwest::Error> {
        let resp = self
            .http
            .post(format!("{base}/v1/sku-purchases"))
            .header("x-api-key", &self.pk)
            .bearer_auth(&self.token)
            .json(&body(key, i))
            .send()
            .await?;
        let status = resp.status().as_u16();
        Ok((status, resp.json().await?))
    }

    async fn get(&self, base: &str, path: &str, secret: bool) -> Value {
        let bearer = if secret { &self.secret } else { &self.token };
        self.http
            .get(format!("{base}{path}"))
            .header("x-api-key", &self.pk)
            .bearer_auth(bearer)
            .send()
            .await
            .expect("send")
            .json()
            .await
            .expect("json")
    }
}

async fn database() -> (
    String,
    Option<cobro_store_postgres::test_db::TestDatabase>,
    tempfile::TempDir,
) {
    let dir = tempfile::tempdir().expect("tmp");
    match cobro_store_postgres::test_db::TestDatabase::create().await {
        Some(db) => (db.url.clone(), Some(db), dir),
        None => (sqlite_url(dir.path()), None, dir),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_during_a_purchase_burst_loses_nothing_and_fulfils_nothing_twice() {
    let (db, pg, _dir) = database().await;
    let sim = carrier_sim::spawn(
        SimConfig {
            latency_ms: 30,
            lost_rate: 0.1,
            timeout_rate: 0.05,
            timeout_ms: 1_500,
            failure_rate: 0.1,
            seed: 11,
            ..SimConfig::default()
        },
        "127.0.0.1:0",
    )
    .await
    .expect("carrier-sim");

    let setup = {
        let db = db.clone();
        tokio::task::spawn_blocking(move || {
            let t = tenant(&db, "Crash test", "prod");
            json(
                &db,
                &[
                    "admin", "credits", "add", "--org", &t.org, "--usd", "1000", "--json",
                ],
            );
            (t.pk, t.sk, t.token)
        })
        .await
        .expect("setup")
    };
    let api = Api {
        http: reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .expect("client"),
        pk: setup.0,
        secret: setup.1,
        token: setup.2,
    };
    let sim_url = sim.url();
    let env = [
        ("COBRO_CARRIER_URL", sim_url.as_str()),
        ("COBRO_CARRIER_TIMEOUT_MS", "500"),
        ("COBRO_CARRIER_LEASE_MS", "2000"),
        ("COBRO_CARRIER_RETRY_BASE_MS", "50"),
        ("COBRO_CARRIER_RETRY_MAX_MS", "300"),
        ("COBRO_CARRIER_POLL_INTERVAL_MS", "20"),
        ("COBRO_DEMO_BOOTSTRAP", "false"),
    ];

    // 1. a burst of 150 purchases; SIGKILL the server while it is in full swing
    let first = serve_with(&db, &env);
    let base = first.url.clone();
    let api = std::sync::Arc::new(api);
    let burst: Vec<_> = (0..150)
        .map(|i| {
            let api = api.clone();
            let base = base.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(2 * i as u64)).await;
                (i, api.post(&base, &format!("crash-{i}"), i as usize).await)
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(150)).await;
    first.kill9();
    let mut created = BTreeMap::new(); // key -> purchase id, for every 201
    let mut unanswered = Vec::new();
    for t in burst {
        let (i, r) = t.await.expect("task");
        match r {
            Ok((201, tx)) => {
                created.insert(
                    format!("crash-{i}"),
                    tx["id"].as_str().expect("id").to_string(),
                );
            }
            Ok((status, body)) => panic!("unexpected {status}: {body}"),
            Err(_) => unanswered.push(i),
        }
    }
    assert!(
        !created.is_empty() && !unanswered.is_empty(),
        "the kill must land mid-burst ({} created, {} unanswered)",
        created.len(),
        unanswered.len()
    );

    // 2. restart on the same database; clients retry what got no answer, with the same keys
    let second = serve_with(&db, &env);
    let base = second.url.clone();
    for i in &unanswered {
        let key = format!("crash-{i}");
        let (status, tx) = api.post(&base, &key, *i as usize).await.expect("retry");
        assert!(
            status == 201 || status == 200,
            "retry of {key}: {status} {tx}"
        );
        if let Some(earlier) = created.get(&key) {
            assert_eq!(tx["id"].as_str(), Some(earlier.as_str()));
        }
        created.insert(key, tx["id"].as_str().expect("id").to_string());
    }

    // 3. everything reaches a terminal state
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut finals: BTreeMap<String, Value> = BTreeMap::new();
    while finals.len() < created.len() {
        assert!(
            Instant::now() < deadline,
            "{} of {} purchases still open after 60 s",
            created.len() - finals.len(),
            created.len()
        );
        for id in created.values() {
            if finals.contains_key(id) {
                continue;
            }
            let tx = api
                .get(&base, &format!("/v1/sku-purchases/{id}"), false)
                .await;
            assert_eq!(
                tx["id"].as_str(),
                Some(id.as_str()),
                "a purchase that got a 201 is gone: {tx}"
            );
            if tx["status"] == "SUCCESS" || tx["status"] == "FAILED" {
                finals.insert(id.clone(), tx);
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // 4. exactly-once fulfilment and exact money
    let counts = sim.sim.fulfilments();
    let listed = api
        .get(&base, "/v1/sku-purchases?limit=100&status=PENDING", false)
        .await;
    assert_eq!(listed["total"], 0, "nothing left pending");
    let ids: BTreeSet<&String> = created.values().collect();
    assert_eq!(ids.len(), created.len(), "one purchase per key");
    let mut successes = 0i64;
    for (id, tx) in &finals {
        let fulfilled = counts.by_reference.get(id).copied().unwrap_or(0);
        if tx["status"] == "SUCCESS" {
            successes += 1;
            assert_eq!(fulfilled, 1, "{id} fulfilled {fulfilled} times");
        } else {
            assert_eq!(fulfilled, 0, "{id} failed but was fulfilled");
        }
    }
    assert!(
        counts.by_reference.values().all(|&n| n <= 1),
        "something was fulfilled twice: {counts:?}"
    );
    assert_eq!(counts.total, u64::try_from(successes).unwrap_or(0));
    let balance = api.get(&base, "/v1/balance", true).await;
    assert_eq!(
        balance["availableMicros"],
        json!(1_000_000_000 - successes * PRICE_MICROS),
        "{balance}"
    );
    let ledger = api.get(&base, "/v1/ledger-entries?limit=100", true).await;
    let mut sum = 0i64;
    let mut page = 1;
    let mut ledger = ledger;
    loop {
        for e in ledger["data"].as_array().expect("entries") {
            sum += (e["amountUsd"].as_f64().expect("amount") * 1e6).round() as i64;
        }
        if ledger["page"].as_u64() >= ledger["totalPages"].as_u64() {
            break;
        }
        page += 1;
        ledger = api
            .get(
                &base,
                &format!("/v1/ledger-entries?limit=100&page={page}"),
                true,
            )
            .await;
    }
    assert_eq!(
        json!(sum),
        balance["availableMicros"],
        "balance == sum of ledger entries"
    );
    eprintln!(
        "crash test: {} created before the kill, {} unanswered and retried, {} succeeded, {} failed and refunded",
        created.len() - unanswered.len(),
        unanswered.len(),
        successes,
        finals.len() as i64 - successes
    );

    drop(second);
    if let Some(db) = pg {
        db.drop_database().await;
    }
}
