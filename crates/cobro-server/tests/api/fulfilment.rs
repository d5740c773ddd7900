//! Production purchases fulfilled through `carrier-sim` (in-process, real HTTP on loopback):
//! every fault type alone and mixed; each purchase must end `SUCCESS` fulfilled exactly once,
//! or `FAILED`, refunded, fulfilled zero times.

use std::time::{Duration, Instant};

use carrier_sim::{Fault, SimConfig};
use cobro_server::admin;
use cobro_types::{CreateSkuPurchaseInput, PurchaseStatus, Transaction};
use serde_json::json;

use crate::common::*;

fn body(key: &str, phone: &str) -> CreateSkuPurchaseInput {
    serde_json::from_value(json!({
        "transactionHash": key, "skuId": "sku-tl-TEL010", "skuReference": phone, "currencyAmount": 10,
        "chain": "STARKNET", "token": "USDC", "walletAddress": "0x0",
    }))
    .expect("valid body")
}

/// A server whose production purchases go to a fresh simulator, with fast retries.
async fn with_carrier(sim_config: SimConfig) -> (TestApp, carrier_sim::Running, cobro_sdk::Client) {
    with_carrier_tuned(sim_config, |_| {}).await
}

/// [`with_carrier`], with further changes to the server's configuration.
async fn with_carrier_tuned(
    sim_config: SimConfig,
    tune: impl FnOnce(&mut cobro_server::Config),
) -> (TestApp, carrier_sim::Running, cobro_sdk::Client) {
    let sim = carrier_sim::spawn(sim_config, "127.0.0.1:0")
        .await
        .expect("carrier-sim");
    let url = sim.url();
    let app = spawn_app_with(|c| {
        c.carrier.url = url;
        c.carrier.timeout_ms = 500;
        c.carrier.lease_ms = 2_000;
        c.carrier.retry_base_ms = 50;
        c.carrier.retry_max_ms = 200;
        c.carrier.poll_interval_ms = 20;
        tune(c);
    })
    .await;
    admin::add_credits(app.store.as_ref(), &app.org_id, "100", None)
        .await
        .expect("credits");
    let token = app.token(&app.prod, "customer-1").await;
    let buyer = app.client(&app.prod.public_key, &token);
    (app, sim, buyer)
}

async fn settle(buyer: &cobro_sdk::Client, id: &str) -> Transaction {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let tx = buyer.get_purchase(id).await.expect("poll");
        if tx.status.is_terminal() {
            return tx;
        }
        assert!(
            Instant::now() < deadline,
            "purchase {id} still {:?} after 30 s",
            tx.status
        );
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn balance(app: &TestApp) -> i64 {
    app.client(&app.prod.public_key, &app.prod.secret_key)
        .balance()
        .await
        .expect("balance")
        .available_micros
}

#[tokio::test]
async fn a_production_purchase_is_debited_then_fulfilled_once() {
    let (app, sim, buyer) = with_carrier(SimConfig::default()).await;
    let created = buyer
        .create_purchase(&body("prod-1", "5512345601"))
        .await
        .expect("purchase")
        .value;
    assert_eq!(created.status, PurchaseStatus::Pending);
    assert!(created.ledger_entry_id.starts_with("le_"));
    assert_eq!(
        balance(&app).await,
        100_000_000 - 588_000,
        "debited at once"
    );
    let done = settle(&buyer, &created.id).await;
    assert_eq!(done.status, PurchaseStatus::Success);
    assert!(
        done.sku_file_number
            .as_deref()
            .is_some_and(|f| f.starts_with("TET-")),
        "{:?}",
        done.sku_file_number
    );
    assert!(done.confirmed_at.is_some());
    assert_eq!(
        sim.sim.fulfilments().by_reference.get(&created.id),
        Some(&1)
    );
    assert_eq!(balance(&app).await, 100_000_000 - 588_000);
    app.stop().await;
}

#[tokio::test]
async fn each_fault_alone_ends_in_the_right_state_with_the_right_money() {
    let (app, sim, buyer) = with_carrier(SimConfig {
        timeout_ms: 1_500,
        ..SimConfig::default()
    })
    .await;
    let cases: Vec<(&str, Option<Fault>, PurchaseStatus)> = vec![
        (
            "5500000001",
            Some(Fault::Fail("INVALID_NUMBER".into())),
            PurchaseStatus::Failed,
        ),
        (
            "5500000002",
            Some(Fault::Fail("CARRIER_UNAVAILABLE".into())),
            PurchaseStatus::Failed,
        ),
        (
            "5500000003",
            Some(Fault::Unavailable),
            PurchaseStatus::Success,
        ),
        ("5500000004", Some(Fault::Timeout), PurchaseStatus::Success),
        ("5500000005", Some(Fault::Lost), PurchaseStatus::Success),
        (
            "5500000006",
            Some(Fault::Pending(300)),
            PurchaseStatus::Success,
        ),
        (
            "5500000007",
            Some(Fault::Latency(200)),
            PurchaseStatus::Success,
        ),
        ("5500000008", None, PurchaseStatus::Success),
    ];
    let mut ids = Vec::new();
    for (i, (phone, fault, _)) in cases.iter().enumerate() {
        if let Some(f) = fault {
            sim.sim.plan(phone, f.clone(), 2);
        }
        ids.push(
            buyer
                .create_purchase(&body(&format!("fault-{i}"), phone))
                .await
                .expect("purchase")
                .value
                .id,
        );
    }
    let mut expected_balance = 100_000_000i64;
    for ((phone, fault, want), id) in cases.iter().zip(&ids) {
        let done = settle(&buyer, id).await;
        assert_eq!(done.status, *want, "{phone} with {fault:?}");
        let fulfilled = sim
            .sim
            .fulfilments()
            .by_reference
            .get(id)
            .copied()
            .unwrap_or(0);
        match want {
            PurchaseStatus::Success => {
                assert_eq!(fulfilled, 1, "{phone}: fulfilled exactly once");
                expected_balance -= 588_000;
            }
            _ => {
                assert_eq!(fulfilled, 0, "{phone}: never fulfilled");
                assert!(done.error_message.as_deref().is_some_and(|m| !m.is_empty()));
            }
        }
    }
    assert_eq!(
        balance(&app).await,
        expected_balance,
        "failed purchases were refunded"
    );
    let ledger = app
        .client(&app.prod.public_key, &app.prod.secret_key)
        .ledger_entries(&[("limit", "100".into())])
        .await
        .expect("ledger");
    let refunds = ledger.data.iter().filter(|e| e.kind == "refund").count();
    assert_eq!(refunds, 2, "one reversing entry per failed purchase");
    crate::common::audit(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn mixed_random_faults_never_fulfil_twice_and_every_failure_is_refunded() {
    let config = SimConfig {
        failure_rate: 0.15,
        unavailable_rate: 0.15,
        timeout_rate: 0.1,
        timeout_ms: 1_000,
        lost_rate: 0.1,
        pending_rate: 0.1,
        pending_ms: 200,
        duplicate_window_secs: 0,
        seed: 7,
        ..SimConfig::default()
    };
    let (app, sim, buyer) = with_carrier(config).await;
    let mut tasks = Vec::new();
    for i in 0..40 {
        let buyer = buyer.clone();
        tasks.push(tokio::spawn(async move {
            buyer
                .create_purchase(&body(&format!("mix-{i}"), &format!("55{:08}", 10_000 + i)))
                .await
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.expect("task").expect("purchase").value.id);
    }
    let counts = |id: &str| {
        sim.sim
            .fulfilments()
            .by_reference
            .get(id)
            .copied()
            .unwrap_or(0)
    };
    let (mut ok, mut failed) = (0i64, 0i64);
    for id in &ids {
        let done = settle(&buyer, id).await;
        match done.status {
            PurchaseStatus::Success => {
                ok += 1;
                assert_eq!(counts(id), 1, "{id} fulfilled exactly once");
            }
            PurchaseStatus::Failed => {
                failed += 1;
                assert_eq!(counts(id), 0, "{id} failed but was fulfilled");
            }
            other => panic!("{id} ended {other:?}"),
        }
    }
    assert_eq!(ok + failed, 40);
    assert!(
        ok > 0 && failed > 0,
        "the seed should produce both outcomes ({ok} ok, {failed} failed)"
    );
    assert_eq!(balance(&app).await, 100_000_000 - ok * 588_000);
    assert_eq!(sim.sim.fulfilments().total, u64::try_from(ok).unwrap_or(0));
    crate::common::audit(&app).await;
    app.stop().await;
}

#[tokio::test]
async fn twenty_keys_times_fifty_duplicates_debit_exactly_twenty_times() {
    let (app, sim, buyer) = with_carrier(SimConfig::default()).await;
    let mut tasks = Vec::new();
    for key in 0..20 {
        for _ in 0..50 {
            let buyer = buyer.clone();
            tasks.push(tokio::spawn(async move {
                buyer
                    .create_purchase(&body(
                        &format!("dup-{key}"),
                        &format!("55{:08}", 20_000 + key),
                    ))
                    .await
            }));
        }
    }
    let mut ids = std::collections::BTreeSet::new();
    let mut created = 0;
    for t in tasks {
        let c = t.await.expect("task").expect("purchase");
        created += usize::from(!c.replayed);
        ids.insert(c.value.id);
    }
    assert_eq!((created, ids.len()), (20, 20));
    assert_eq!(
        balance(&app).await,
        100_000_000 - 20 * 588_000,
        "exactly twenty debits"
    );
    for id in &ids {
        assert_eq!(settle(&buyer, id).await.status, PurchaseStatus::Success);
    }
    assert_eq!(sim.sim.fulfilments().total, 20);
    app.stop().await;
}

#[tokio::test]
async fn a_hundred_concurrent_purchases_against_credits_for_thirty() {
    let (app, sim, buyer) = with_carrier(SimConfig::default()).await;
    // The organisation has 100 USD; spend it down to exactly 30 purchases' worth.
    let spare = 100_000_000 - 30 * 588_000;
    app.store
        .adjust_credits(
            &app.org_id,
            "le_spend_down",
            cobro_types::UsdMicros(-spare),
            None,
            cobro_types::Timestamp::now(),
        )
        .await
        .expect("spend down");
    let tasks: Vec<_> = (0..100)
        .map(|i| {
            let buyer = buyer.clone();
            tokio::spawn(async move {
                buyer
                    .create_purchase(&body(&format!("rush-{i}"), &format!("55{:08}", 30_000 + i)))
                    .await
            })
        })
        .collect();
    let (mut ok, mut refused) = (Vec::new(), 0);
    for t in tasks {
        match t.await.expect("task") {
            Ok(c) => ok.push(c.value.id),
            Err(e) if e.code() == Some("INSUFFICIENT_BALANCE") && e.status() == Some(402) => {
                refused += 1
            }
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert_eq!((ok.len(), refused), (30, 70));
    assert_eq!(balance(&app).await, 0, "never negative, nothing left");
    for id in &ok {
        assert_eq!(settle(&buyer, id).await.status, PurchaseStatus::Success);
    }
    assert_eq!(sim.sim.fulfilments().total, 30);
    assert_eq!(
        buyer.list_purchases(&[]).await.expect("list").total,
        30,
        "refused purchases are not stored"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_purchase_the_carrier_never_takes_is_flagged_and_kept_not_dropped() {
    let (app, sim, buyer) = with_carrier_tuned(SimConfig::default(), |c| {
        c.carrier.retry_base_ms = 20;
        c.carrier.retry_max_ms = 40;
        c.carrier.poll_interval_ms = 10;
        c.carrier.flag_after_attempts = 3;
    })
    .await;
    sim.sim.plan("5500000099", Fault::Unavailable, 1_000);
    let tx = buyer
        .create_purchase(&body("stuck-1", "5500000099"))
        .await
        .expect("purchase")
        .value;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let backlog = app.store.fulfilment_backlog().await.expect("backlog");
        if backlog.flagged == 1 {
            assert_eq!(backlog.open, 1, "flagged, and still in the queue");
            break;
        }
        assert!(Instant::now() < deadline, "never flagged: {backlog:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let still = buyer.get_purchase(&tx.id).await.expect("get");
    assert_eq!(
        still.status,
        PurchaseStatus::Processing,
        "not dropped, not failed: the carrier never answered"
    );
    assert_eq!(sim.sim.fulfilments().by_reference.get(&tx.id), None);
    let metrics = reqwest::get(format!("{}/metrics", app.url))
        .await
        .expect("metrics")
        .text()
        .await
        .expect("text");
    assert!(
        metrics.contains("cobro_fulfilment_outcomes_total{outcome=\"retry\"}"),
        "{metrics}"
    );
    app.stop().await;
}
