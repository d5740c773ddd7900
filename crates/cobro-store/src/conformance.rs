//! The conformance suite: behaviour every [`Store`] backend must show.
//!
//! A backend's tests invoke [`conformance_suite!`](crate::conformance_suite) with a setup
//! function that returns a fresh, migrated store and a teardown future; the macro expands to
//! one `#[tokio::test]` per check below, and runs the teardown even when the check panics.
//! The checks use `expect`: they are tests, and a panic is how they fail.

use std::sync::Arc;

use cobro_types::{
    CatalogEntry, Currency, Environment, MinorAmount, Provider, SkuCategory, SkuTexts, Timestamp,
    UsdMicros,
};

use crate::{
    ApiKeyRecord, DemoBootstrap, FinishPurchase, FulfilmentBacklog, IssuerKey, LedgerEntry,
    MarkupRule, NewEvent, NewPurchase, Org, PurchaseFilter, PurchaseRecord, PurchaseResult, Store,
    StoreError,
};
use cobro_types::PurchaseStatus;

/// Expands to one test per conformance check. `$setup` is an async fn returning
/// `Option<(Arc<dyn Store>, impl Future<Output = ()> + Send)>`; `None` skips (for example
/// when no PostgreSQL URL is configured).
#[macro_export]
macro_rules! conformance_suite {
    ($setup:path) => {
        $crate::conformance_suite!(@each $setup;
            organisations_start_with_zero_credits_and_move_only_through_the_ledger,
            concurrent_debits_never_overdraw,
            concurrent_top_ups_are_all_counted,
            keys_are_stored_hashed_unique_and_revocable,
            catalog_upserts_keep_creation_time_and_bump_the_version,
            demo_bootstrap_happens_exactly_once_even_when_raced,
            the_issuer_key_is_chosen_once,
            purchases_debit_once_replay_by_key_and_store_nothing_when_refused,
            a_batch_gives_each_purchase_its_own_outcome,
            a_batch_that_cannot_be_written_whole_is_decided_one_by_one,
            batches_sharing_keys_in_opposite_orders_each_create_once,
            concurrent_duplicates_create_one_purchase_per_key,
            concurrent_purchases_never_overdraw,
            concurrent_batches_share_one_balance_exactly,
            markups_prefer_the_sku_rule_over_the_category_rule,
            fulfilment_jobs_are_leased_to_one_worker_at_a_time,
            a_failed_purchase_is_refunded_by_a_new_entry,
            retried_jobs_wait_and_stuck_ones_are_flagged,
            concurrent_workers_claim_each_job_once,
            a_round_of_finishes_commits_together_and_skips_lost_leases,
            events_route_once_to_each_matching_endpoint,
            deliveries_are_leased_retried_and_every_attempt_is_logged,
            gone_endpoints_are_disabled_and_deleted_ones_cancelled,
            concurrent_writers_route_and_dispatchers_claim_each_delivery_once,
            x402_nonces_are_reserved_once_even_when_raced,
        );
    };
    (@each $setup:path; $($name:ident),* $(,)?) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                let Some((store, teardown)) = $setup().await else {
                    eprintln!("skipped: no database configured for this backend");
                    return;
                };
                let outcome = tokio::spawn($crate::conformance::$name(store)).await;
                teardown.await;
                if let Err(e) = outcome {
                    if let Ok(panic) = e.try_into_panic() {
                        std::panic::resume_unwind(panic);
                    }
                    panic!("conformance check was cancelled");
                }
            }
        )*
    };
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from_unix_millis(ms)
}

/// A test organisation with a unique id.
pub fn org(tag: &str) -> Org {
    Org {
        id: format!("org_{tag}"),
        name: format!("Org {tag}"),
        created_at: ts(1_700_000_000_000),
    }
}

/// A key record for tests (the hash is fake but unique per key).
pub fn key(public_key: &str, org_id: &str, env: Environment) -> ApiKeyRecord {
    ApiKeyRecord {
        public_key: public_key.into(),
        org_id: org_id.into(),
        environment: env,
        secret_hash: format!("hash-of-{public_key}"),
        jwks_url: Some("https://issuer.example/.well-known/jwks.json".into()),
        issuer: Some("https://issuer.example".into()),
        audience: None,
        created_at: ts(1_700_000_000_000),
        revoked_at: None,
    }
}

/// A small valid catalog record.
pub fn sku(id: &str, amount: i64) -> CatalogEntry {
    CatalogEntry {
        id: id.into(),
        provider_id: "telcel".into(),
        name: format!("Telcel {amount}"),
        description: Some("Prepaid credit".into()),
        category: SkuCategory::Telefonia,
        reference_regex_validation: "^[0-9]{10}$".into(),
        reference_label: "Phone number".into(),
        amount_regex_validation: "^[0-9]+(\\.[0-9]{1,2})?$".into(),
        amount_label: "Amount (MXN)".into(),
        fixed_amount: Some(MinorAmount(amount * 100)),
        min_amount: None,
        max_amount: None,
        currency: Currency::Mxn,
        can_check_sku_reference: false,
        logo_url: None,
        provider: Provider::Tet,
        chipi_category: "RECARGAS".into(),
        carrier_name: "Telcel".into(),
        active: true,
        translations: [(
            "es".to_string(),
            SkuTexts {
                name: Some(format!("Recarga Telcel ${amount}")),
                ..Default::default()
            },
        )]
        .into_iter()
        .collect(),
        created_at: None,
        updated_at: None,
    }
}

/// The auditor: recomputes the balance from the entries alone and checks the chain.
pub async fn audit_ledger(store: &dyn Store, org_id: &str) -> Vec<LedgerEntry> {
    let mut entries = store
        .ledger_entries(org_id, 10_000, 0)
        .await
        .expect("ledger");
    entries.reverse(); // oldest first
    let mut running = 0i64;
    for e in &entries {
        assert_ne!(e.amount.0, 0, "zero entry {e:?}");
        running += e.amount.0;
        assert!(running >= 0, "balance went negative at {e:?}");
        assert_eq!(e.balance_after.0, running, "broken balance chain at {e:?}");
    }
    let balance = store.balance(org_id).await.expect("balance");
    assert_eq!(balance.0, running, "balance != sum of entries");
    entries
}

pub async fn organisations_start_with_zero_credits_and_move_only_through_the_ledger(
    store: Arc<dyn Store>,
) {
    let o = org("credits");
    store.create_org(&o).await.expect("create org");
    assert_eq!(
        store.get_org(&o.id).await.expect("get").map(|x| x.name),
        Some(o.name.clone())
    );
    assert!(store.get_org("org_missing").await.expect("get").is_none());
    assert!(matches!(
        store.create_org(&o).await,
        Err(StoreError::Conflict(_))
    ));
    assert_eq!(store.balance(&o.id).await.expect("balance"), UsdMicros(0));
    assert!(matches!(
        store.balance("org_missing").await,
        Err(StoreError::NotFound(_))
    ));

    let e = store
        .adjust_credits(
            &o.id,
            "le_1",
            UsdMicros(1_000_000_000),
            Some("first"),
            ts(1),
        )
        .await
        .expect("top-up");
    assert_eq!(
        (e.kind.as_str(), e.balance_after),
        ("topup", UsdMicros(1_000_000_000))
    );
    let e = store
        .adjust_credits(&o.id, "le_2", UsdMicros(-250_000), None, ts(2))
        .await
        .expect("adjust");
    assert_eq!(
        (e.kind.as_str(), e.balance_after),
        ("adjustment", UsdMicros(999_750_000))
    );

    let overdraw = store
        .adjust_credits(&o.id, "le_3", UsdMicros(-1_000_000_000), None, ts(3))
        .await;
    assert!(
        matches!(overdraw, Err(StoreError::Rejected(_))),
        "{overdraw:?}"
    );
    assert!(matches!(
        store
            .adjust_credits(&o.id, "le_4", UsdMicros(0), None, ts(4))
            .await,
        Err(StoreError::Rejected(_))
    ));
    assert!(matches!(
        store
            .adjust_credits("org_missing", "le_5", UsdMicros(5), None, ts(5))
            .await,
        Err(StoreError::NotFound(_))
    ));
    assert!(matches!(
        store
            .adjust_credits(&o.id, "le_1", UsdMicros(5), None, ts(6))
            .await,
        Err(StoreError::Conflict(_))
    ));

    let entries = audit_ledger(&*store, &o.id).await;
    assert_eq!(
        entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["le_1", "le_2"]
    );
    assert_eq!(
        store.balance(&o.id).await.expect("balance"),
        UsdMicros(999_750_000)
    );
    let newest = store.ledger_entries(&o.id, 1, 0).await.expect("page");
    assert_eq!(
        newest.iter().map(|e| e.id.as_str()).collect::<Vec<_>>(),
        ["le_2"]
    );
    let second = store.ledger_entries(&o.id, 1, 1).await.expect("page");
    assert_eq!(
        second.first().map(|e| e.note.clone()),
        Some(Some("first".to_string()))
    );
}

pub async fn concurrent_debits_never_overdraw(store: Arc<dyn Store>) {
    let o = org("race");
    store.create_org(&o).await.expect("create org");
    store
        .adjust_credits(&o.id, "le_seed", UsdMicros(10), None, ts(1))
        .await
        .expect("seed");
    let tasks: Vec<_> = (0..25)
        .map(|i| {
            let store = store.clone();
            let org_id = o.id.clone();
            tokio::spawn(async move {
                store
                    .adjust_credits(&org_id, &format!("le_d{i}"), UsdMicros(-1), None, ts(2))
                    .await
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        match t.await.expect("task") {
            Ok(_) => ok += 1,
            Err(StoreError::Rejected(_)) => {}
            Err(e) => panic!("unexpected error {e:?}"),
        }
    }
    assert_eq!(ok, 10, "exactly the available credits are spent");
    assert_eq!(store.balance(&o.id).await.expect("balance"), UsdMicros(0));
    assert_eq!(audit_ledger(&*store, &o.id).await.len(), 11);
}

pub async fn concurrent_top_ups_are_all_counted(store: Arc<dyn Store>) {
    let o = org("topups");
    store.create_org(&o).await.expect("create org");
    let tasks: Vec<_> = (0..30)
        .map(|i| {
            let store = store.clone();
            let org_id = o.id.clone();
            tokio::spawn(async move {
                store
                    .adjust_credits(
                        &org_id,
                        &format!("le_t{i}"),
                        UsdMicros(1_000_001),
                        None,
                        ts(i),
                    )
                    .await
            })
        })
        .collect();
    for t in tasks {
        t.await.expect("task").expect("top-up");
    }
    assert_eq!(
        store.balance(&o.id).await.expect("balance"),
        UsdMicros(30_000_030)
    );
    audit_ledger(&*store, &o.id).await;
}

pub async fn keys_are_stored_hashed_unique_and_revocable(store: Arc<dyn Store>) {
    let o = org("keys");
    store.create_org(&o).await.expect("create org");
    let v0 = store.change_versions().await.expect("versions");
    let dev = key(
        "pk_dev_conformance0000000000000000000000",
        &o.id,
        Environment::Dev,
    );
    store.create_api_key(&dev).await.expect("create key");
    let v1 = store.change_versions().await.expect("versions");
    assert!(v1.keys > v0.keys, "creating a key bumps the keys version");
    assert_eq!(
        store.get_api_key(&dev.public_key).await.expect("get"),
        Some(dev.clone())
    );
    assert!(matches!(
        store.create_api_key(&dev).await,
        Err(StoreError::Conflict(_))
    ));
    let orphan = key(
        "pk_dev_orphan00000000000000000000000000",
        "org_missing",
        Environment::Dev,
    );
    assert!(matches!(
        store.create_api_key(&orphan).await,
        Err(StoreError::NotFound(_))
    ));
    let mut builtin = key(
        "pk_prod_conformance000000000000000000000",
        &o.id,
        Environment::Prod,
    );
    builtin.jwks_url = None;
    builtin.issuer = None;
    store.create_api_key(&builtin).await.expect("create key");
    let all = store.list_api_keys().await.expect("list");
    assert_eq!(all.len(), 2);
    assert!(all.contains(&builtin));

    assert!(
        store
            .revoke_api_key(&dev.public_key, ts(5_000))
            .await
            .expect("revoke")
    );
    let v2 = store.change_versions().await.expect("versions");
    assert!(v2.keys > v1.keys, "revoking bumps the keys version");
    assert!(
        store
            .revoke_api_key(&dev.public_key, ts(9_000))
            .await
            .expect("revoke again")
    );
    let revoked = store
        .get_api_key(&dev.public_key)
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        revoked.revoked_at,
        Some(ts(5_000)),
        "the first revocation time is kept"
    );
    assert!(
        !store
            .revoke_api_key("pk_dev_unknown", ts(1))
            .await
            .expect("revoke unknown")
    );
    assert!(
        store
            .get_api_key("pk_dev_unknown")
            .await
            .expect("get")
            .is_none()
    );
}

pub async fn catalog_upserts_keep_creation_time_and_bump_the_version(store: Arc<dyn Store>) {
    let v0 = store.change_versions().await.expect("versions");
    let written = store
        .upsert_catalog(&[sku("sku-a", 10), sku("sku-b", 20)], ts(1_000))
        .await
        .expect("upsert");
    assert_eq!(written, 2);
    let v1 = store.change_versions().await.expect("versions");
    assert!(v1.catalog > v0.catalog);
    let mut changed = sku("sku-a", 10);
    changed.name = "Telcel 10 (new)".into();
    changed.active = false;
    store
        .upsert_catalog(&[changed.clone()], ts(2_000))
        .await
        .expect("update");
    let all = store.list_catalog().await.expect("list");
    assert_eq!(all.len(), 2);
    let a = all.iter().find(|e| e.id == "sku-a").expect("sku-a");
    assert_eq!((a.name.as_str(), a.active), ("Telcel 10 (new)", false));
    assert_eq!(
        (a.created_at, a.updated_at),
        (Some(ts(1_000)), Some(ts(2_000)))
    );
    let b = all.iter().find(|e| e.id == "sku-b").expect("sku-b");
    let mut expected = sku("sku-b", 20);
    expected.created_at = Some(ts(1_000));
    expected.updated_at = Some(ts(1_000));
    assert_eq!(
        b, &expected,
        "records round-trip exactly, translations included"
    );
    assert!(store.change_versions().await.expect("versions").catalog > v1.catalog);
}

fn demo(tag: &str) -> DemoBootstrap {
    let o = org(tag);
    DemoBootstrap {
        keys: vec![key(
            &format!("pk_dev_{tag}00000000000000000000000000000000"),
            &o.id,
            Environment::Dev,
        )],
        credits: UsdMicros(1_000_000_000),
        credits_entry_id: format!("le_{tag}"),
        catalog: vec![sku("sku-demo", 10)],
        org: o,
    }
}

pub async fn demo_bootstrap_happens_exactly_once_even_when_raced(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..4)
        .map(|i| {
            let store = store.clone();
            tokio::spawn(async move { store.bootstrap_if_empty(&demo(&format!("demo{i}"))).await })
        })
        .collect();
    let mut winners = Vec::new();
    for (i, t) in tasks.into_iter().enumerate() {
        if t.await.expect("task").expect("bootstrap") {
            winners.push(i);
        }
    }
    assert_eq!(winners.len(), 1, "exactly one process bootstraps");
    let winner = format!("org_demo{}", winners[0]);
    assert_eq!(
        store.balance(&winner).await.expect("balance"),
        UsdMicros(1_000_000_000)
    );
    assert_eq!(store.list_api_keys().await.expect("keys").len(), 1);
    assert_eq!(store.list_catalog().await.expect("catalog").len(), 1);
    audit_ledger(&*store, &winner).await;
    assert!(
        !store
            .bootstrap_if_empty(&demo("later"))
            .await
            .expect("second bootstrap")
    );
}

pub async fn the_issuer_key_is_chosen_once(store: Arc<dyn Store>) {
    assert!(store.issuer_keys().await.expect("keys").is_empty());
    let first = IssuerKey {
        kid: "kid-1".into(),
        alg: "EdDSA".into(),
        private_pkcs8: vec![1, 2, 3],
        public_jwk: "{\"kty\":\"OKP\"}".into(),
        created_at: ts(1),
    };
    let second = IssuerKey {
        kid: "kid-2".into(),
        private_pkcs8: vec![9],
        ..first.clone()
    };
    assert_eq!(
        store.ensure_issuer_key(&first).await.expect("ensure"),
        first
    );
    assert_eq!(
        store.ensure_issuer_key(&second).await.expect("ensure"),
        first
    );
    assert_eq!(store.issuer_keys().await.expect("keys"), vec![first]);
}

/// A purchase record for tests: `total` micro-dollars, keyed by `key`.
pub fn purchase(id: &str, org_id: &str, env: Environment, key: &str, total: i64) -> NewPurchase {
    let sandbox = env == Environment::Dev;
    NewPurchase {
        record: PurchaseRecord {
            id: id.into(),
            org_id: org_id.into(),
            environment: env,
            idempotency_key: key.into(),
            request_hash: format!("hash-{key}"),
            status: if sandbox {
                PurchaseStatus::Success
            } else {
                PurchaseStatus::Pending
            },
            api_public_key: "pk_test".into(),
            customer_id: "customer-1".into(),
            sku_id: "sku-tl-TEL010".into(),
            sku_name: "Telcel 10 MXN".into(),
            carrier_name: "Telcel".into(),
            sku_reference: "5512345678".into(),
            amount: MinorAmount(1000),
            currency: Currency::Mxn,
            chain: "STARKNET".into(),
            token: "USDC".into(),
            wallet_address: "0x0".into(),
            fx_rate: "0.0588".into(),
            base: UsdMicros(total),
            markup: UsdMicros(0),
            total: UsdMicros(total),
            org_markup: None,
            ledger_entry_id: format!("le_{id}"),
            sandbox,
            file_number: sandbox.then(|| "dev-sandbox-1".to_string()),
            error_message: None,
            created_at: ts(1_000),
            updated_at: ts(1_000),
            confirmed_at: sandbox.then(|| ts(1_000)),
        },
        events: if sandbox {
            vec![NewEvent {
                id: format!("evt_{id}"),
                kind: "sku-purchase.completed".into(),
                payload: "{}".into(),
            }]
        } else {
            vec![]
        },
    }
}

async fn funded_org(store: &dyn Store, tag: &str, micros: i64) -> Org {
    let o = org(tag);
    store.create_org(&o).await.expect("create org");
    if micros > 0 {
        store
            .adjust_credits(
                &o.id,
                &format!("le_seed_{tag}"),
                UsdMicros(micros),
                None,
                ts(1),
            )
            .await
            .expect("seed");
    }
    o
}

async fn create(store: &dyn Store, p: NewPurchase) -> PurchaseResult {
    let mut results = store
        .create_purchases(&[p])
        .await
        .expect("create_purchases");
    assert_eq!(results.len(), 1);
    results.remove(0)
}

pub async fn purchases_debit_once_replay_by_key_and_store_nothing_when_refused(
    store: Arc<dyn Store>,
) {
    let o = funded_org(&*store, "buy", 1_000_000).await;
    let first = purchase("p1", &o.id, Environment::Prod, "order-1", 600_000);
    assert_eq!(
        create(&*store, first.clone()).await,
        PurchaseResult::Created(first.record.clone())
    );
    assert_eq!(
        store.balance(&o.id).await.expect("balance"),
        UsdMicros(400_000)
    );
    let entries = audit_ledger(&*store, &o.id).await;
    let debit = entries.last().expect("a debit");
    assert_eq!(
        (
            debit.kind.as_str(),
            debit.amount,
            debit.purchase_id.as_deref()
        ),
        ("purchase", UsdMicros(-600_000), Some("p1"))
    );

    // the same key and request: the same purchase, no second debit
    let again = purchase("p1-retry", &o.id, Environment::Prod, "order-1", 600_000);
    assert_eq!(
        create(&*store, again).await,
        PurchaseResult::Replayed(first.record.clone())
    );
    // the same key, another request: refused, nothing done
    let mut other = purchase("p1-other", &o.id, Environment::Prod, "order-1", 600_000);
    other.record.request_hash = "different".into();
    assert_eq!(
        create(&*store, other).await,
        PurchaseResult::KeyReused(first.record.clone())
    );
    // not enough credits: nothing stored
    let big = purchase("p2", &o.id, Environment::Prod, "order-2", 400_001);
    assert_eq!(
        create(&*store, big).await,
        PurchaseResult::InsufficientBalance
    );
    assert!(
        store
            .get_purchase(&o.id, Environment::Prod, "p2")
            .await
            .expect("get")
            .is_none()
    );
    assert_eq!(
        store.balance(&o.id).await.expect("balance"),
        UsdMicros(400_000)
    );
    // a sandbox purchase touches no credits, even when it costs more than the balance
    let dev = purchase("p3", &o.id, Environment::Dev, "order-1", 5_000_000);
    assert!(matches!(
        create(&*store, dev).await,
        PurchaseResult::Created(_)
    ));
    assert_eq!(
        store.balance(&o.id).await.expect("balance"),
        UsdMicros(400_000)
    );
    assert_eq!(
        audit_ledger(&*store, &o.id).await.len(),
        2,
        "seed + one debit"
    );

    // reads are scoped to organisation and environment
    assert_eq!(
        store
            .get_purchase(&o.id, Environment::Prod, "p1")
            .await
            .expect("get"),
        Some(first.record.clone())
    );
    assert!(
        store
            .get_purchase(&o.id, Environment::Dev, "p1")
            .await
            .expect("get")
            .is_none()
    );
    assert!(
        store
            .get_purchase("org_other", Environment::Prod, "p1")
            .await
            .expect("get")
            .is_none()
    );
    let (prod, total) = store
        .list_purchases(&o.id, Environment::Prod, &PurchaseFilter::default(), 10, 0)
        .await
        .expect("list");
    assert_eq!((prod.len(), total), (1, 1));
    let pending = PurchaseFilter {
        status: Some(PurchaseStatus::Pending),
        ..Default::default()
    };
    assert_eq!(
        store
            .list_purchases(&o.id, Environment::Prod, &pending, 10, 0)
            .await
            .expect("list")
            .1,
        1
    );
    let success = PurchaseFilter {
        status: Some(PurchaseStatus::Success),
        ..Default::default()
    };
    assert_eq!(
        store
            .list_purchases(&o.id, Environment::Prod, &success, 10, 0)
            .await
            .expect("list")
            .1,
        0
    );
    let by_ref = PurchaseFilter {
        sku_reference: Some("5512345678".into()),
        sku_id: Some("sku-tl-TEL010".into()),
        ..Default::default()
    };
    assert_eq!(
        store
            .list_purchases(&o.id, Environment::Prod, &by_ref, 10, 0)
            .await
            .expect("list")
            .1,
        1
    );
    let later = PurchaseFilter {
        created_from: Some(ts(2_000)),
        ..Default::default()
    };
    assert_eq!(
        store
            .list_purchases(&o.id, Environment::Prod, &later, 10, 0)
            .await
            .expect("list")
            .1,
        0
    );
}

pub async fn a_batch_gives_each_purchase_its_own_outcome(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "batch", 1_000).await;
    let a = purchase("b1", &o.id, Environment::Prod, "k1", 700);
    let too_big = purchase("b2", &o.id, Environment::Prod, "k2", 700);
    let dup = purchase("b3", &o.id, Environment::Prod, "k1", 700);
    let c = purchase("b4", &o.id, Environment::Prod, "k4", 300);
    let results = store
        .create_purchases(&[a.clone(), too_big, dup, c.clone()])
        .await
        .expect("batch");
    assert_eq!(
        results,
        vec![
            PurchaseResult::Created(a.record.clone()),
            PurchaseResult::InsufficientBalance,
            PurchaseResult::Replayed(a.record),
            PurchaseResult::Created(c.record),
        ]
    );
    assert_eq!(store.balance(&o.id).await.expect("balance"), UsdMicros(0));
    assert_eq!(audit_ledger(&*store, &o.id).await.len(), 3);
}

/// Batches of distinct keys of one organisation (the kind a backend may write in one go),
/// each with one purchase that cannot be written as it stands: a stored key, then a balance
/// that covers only part of the batch.
pub async fn a_batch_that_cannot_be_written_whole_is_decided_one_by_one(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "whole", 1_000).await;
    let a = purchase("w1", &o.id, Environment::Prod, "k1", 300);
    assert_eq!(
        store
            .create_purchases(std::slice::from_ref(&a))
            .await
            .expect("first"),
        vec![PurchaseResult::Created(a.record.clone())]
    );
    let b = purchase("w2", &o.id, Environment::Prod, "k2", 200);
    let again = purchase("w3", &o.id, Environment::Prod, "k1", 300);
    let c = purchase("w4", &o.id, Environment::Prod, "k3", 200);
    assert_eq!(
        store
            .create_purchases(&[b.clone(), again, c.clone()])
            .await
            .expect("stored key"),
        vec![
            PurchaseResult::Created(b.record),
            PurchaseResult::Replayed(a.record),
            PurchaseResult::Created(c.record),
        ]
    );
    assert_eq!(store.balance(&o.id).await.expect("balance"), UsdMicros(300));
    let d = purchase("w5", &o.id, Environment::Prod, "k4", 200);
    let e = purchase("w6", &o.id, Environment::Prod, "k5", 200);
    let f = purchase("w7", &o.id, Environment::Prod, "k6", 100);
    assert_eq!(
        store
            .create_purchases(&[d.clone(), e, f.clone()])
            .await
            .expect("short balance"),
        vec![
            PurchaseResult::Created(d.record),
            PurchaseResult::InsufficientBalance,
            PurchaseResult::Created(f.record),
        ]
    );
    assert_eq!(store.balance(&o.id).await.expect("balance"), UsdMicros(0));
    let entries = audit_ledger(&*store, &o.id).await;
    assert_eq!(entries.len(), 6, "top-up and five debits");
    assert!(
        store
            .get_purchase(&o.id, Environment::Prod, "w6")
            .await
            .expect("get")
            .is_none(),
        "nothing stored for the refused purchase"
    );
}

/// Two batches with the same new keys in opposite orders, at once, twenty times: whatever
/// locks they meet (PostgreSQL inserts a batch's rows in key order, so the later batch waits
/// for the earlier; were they to deadlock, the loser is decided one by one), each key is
/// created once and replayed once, and neither batch fails.
pub async fn batches_sharing_keys_in_opposite_orders_each_create_once(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "cross", 100_000_000).await;
    for round in 0..20 {
        let forward: Vec<NewPurchase> = (0..6)
            .map(|k| {
                purchase(
                    &format!("x{round}-{k}-f"),
                    &o.id,
                    Environment::Prod,
                    &format!("cross-{round}-{k}"),
                    1_000,
                )
            })
            .collect();
        let backward: Vec<NewPurchase> = (0..6)
            .rev()
            .map(|k| {
                purchase(
                    &format!("x{round}-{k}-b"),
                    &o.id,
                    Environment::Prod,
                    &format!("cross-{round}-{k}"),
                    1_000,
                )
            })
            .collect();
        let (s1, s2) = (store.clone(), store.clone());
        let a = tokio::spawn(async move { s1.create_purchases(&forward).await });
        let b = tokio::spawn(async move { s2.create_purchases(&backward).await });
        let mut outcomes = a.await.expect("task").expect("forward batch");
        outcomes.extend(b.await.expect("task").expect("backward batch"));
        let created = outcomes
            .iter()
            .filter(|r| matches!(r, PurchaseResult::Created(_)))
            .count();
        let replayed = outcomes
            .iter()
            .filter(|r| matches!(r, PurchaseResult::Replayed(_)))
            .count();
        assert_eq!((created, replayed), (6, 6), "round {round}: {outcomes:?}");
    }
    assert_eq!(
        store.balance(&o.id).await.expect("balance"),
        UsdMicros(100_000_000 - 20 * 6 * 1_000)
    );
    audit_ledger(&*store, &o.id).await;
}

pub async fn concurrent_duplicates_create_one_purchase_per_key(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "dups", 100_000_000).await;
    let mut tasks = Vec::new();
    for key in 0..10 {
        for attempt in 0..10 {
            let store = store.clone();
            let p = purchase(
                &format!("d{key}-{attempt}"),
                &o.id,
                Environment::Prod,
                &format!("key-{key}"),
                1_000_000,
            );
            tasks.push(tokio::spawn(
                async move { store.create_purchases(&[p]).await },
            ));
        }
    }
    let (mut created, mut replayed) = (0, 0);
    for t in tasks {
        match t.await.expect("task").expect("create").pop() {
            Some(PurchaseResult::Created(_)) => created += 1,
            Some(PurchaseResult::Replayed(_)) => replayed += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!((created, replayed), (10, 90));
    assert_eq!(
        store.balance(&o.id).await.expect("balance"),
        UsdMicros(90_000_000)
    );
    audit_ledger(&*store, &o.id).await;
}

pub async fn concurrent_purchases_never_overdraw(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "rush", 30_000).await;
    let tasks: Vec<_> = (0..60)
        .map(|i| {
            let store = store.clone();
            let p = purchase(
                &format!("r{i}"),
                &o.id,
                Environment::Prod,
                &format!("rush-{i}"),
                1_000,
            );
            tokio::spawn(async move { store.create_purchases(&[p]).await })
        })
        .collect();
    let mut created = 0;
    for t in tasks {
        match t.await.expect("task").expect("create").pop() {
            Some(PurchaseResult::Created(_)) => created += 1,
            Some(PurchaseResult::InsufficientBalance) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(created, 30, "exactly the purchases the balance covers");
    spent_exactly_on_30(&*store, &o.id).await;
}

/// After a race for a balance that covers 30 purchases: it is spent, exactly 30 are stored
/// (refused purchases are not), and the ledger adds up.
async fn spent_exactly_on_30(store: &dyn Store, org_id: &str) {
    assert_eq!(store.balance(org_id).await.expect("balance"), UsdMicros(0));
    let (_, stored) = store
        .list_purchases(org_id, Environment::Prod, &PurchaseFilter::default(), 1, 0)
        .await
        .expect("list");
    assert_eq!(stored, 30, "refused purchases are not stored");
    audit_ledger(store, org_id).await;
}

/// Batches of several purchases from one organisation, racing: the balance covers 30 of the
/// 54 distinct keys, and pairs of batches share a key. Exactly 30 are stored, the balance ends
/// at zero, and the ledger chain is whole (a backend that plans from an unlocked read must
/// still debit in lock order).
pub async fn concurrent_batches_share_one_balance_exactly(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "batches", 30_000).await;
    let tasks: Vec<_> = (0..12)
        .map(|b| {
            let store = store.clone();
            let mut batch: Vec<NewPurchase> = (0..4)
                .map(|i| {
                    purchase(
                        &format!("b{b}-{i}"),
                        &o.id,
                        Environment::Prod,
                        &format!("batch-{b}-{i}"),
                        1_000,
                    )
                })
                .collect();
            batch.push(purchase(
                &format!("b{b}-shared"),
                &o.id,
                Environment::Prod,
                &format!("shared-{}", b / 2),
                1_000,
            ));
            tokio::spawn(async move { store.create_purchases(&batch).await })
        })
        .collect();
    let (mut created, mut other) = (0, 0);
    for t in tasks {
        for r in t.await.expect("task").expect("create") {
            match r {
                PurchaseResult::Created(_) => created += 1,
                PurchaseResult::InsufficientBalance | PurchaseResult::Replayed(_) => other += 1,
                PurchaseResult::KeyReused(p) => panic!("same body, reported as reused: {p:?}"),
            }
        }
    }
    assert_eq!((created, other), (30, 30));
    spent_exactly_on_30(&*store, &o.id).await;
}

pub async fn markups_prefer_the_sku_rule_over_the_category_rule(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "markup", 0).await;
    let rule = |scope: &str, target: &str, percent: &str| MarkupRule {
        org_id: o.id.clone(),
        scope: scope.into(),
        target: target.into(),
        percent: percent.into(),
        fixed: UsdMicros(10_000),
        updated_at: ts(1),
    };
    assert!(
        store
            .markup_for(&o.id, "sku-a", "TELEFONIA")
            .await
            .expect("read")
            .is_none()
    );
    store
        .set_markup(&rule("category", "TELEFONIA", "2"))
        .await
        .expect("set");
    assert_eq!(
        store
            .markup_for(&o.id, "sku-a", "TELEFONIA")
            .await
            .expect("read")
            .map(|r| r.percent),
        Some("2".into())
    );
    store
        .set_markup(&rule("sku", "sku-a", "1.5"))
        .await
        .expect("set");
    assert_eq!(
        store
            .markup_for(&o.id, "sku-a", "TELEFONIA")
            .await
            .expect("read")
            .map(|r| r.percent),
        Some("1.5".into())
    );
    store
        .set_markup(&rule("sku", "sku-a", "3"))
        .await
        .expect("replace");
    assert_eq!(
        store
            .markup_for(&o.id, "sku-a", "TELEFONIA")
            .await
            .expect("read")
            .map(|r| r.percent),
        Some("3".into())
    );
    assert_eq!(
        store
            .markup_for(&o.id, "sku-b", "TELEFONIA")
            .await
            .expect("read")
            .map(|r| r.percent),
        Some("2".into())
    );
    assert!(matches!(
        store
            .set_markup(&MarkupRule {
                org_id: "org_missing".into(),
                ..rule("sku", "x", "1")
            })
            .await,
        Err(StoreError::NotFound(_))
    ));
    let versions = store.change_versions().await.expect("versions");
    assert!(
        versions.markups >= 3,
        "every markup change bumps its version: {versions:?}"
    );
    assert_eq!(store.list_markups().await.expect("list").len(), 2);
}

fn finish(id: &str, owner: &str, status: PurchaseStatus, at: i64) -> FinishPurchase {
    FinishPurchase {
        purchase_id: id.into(),
        owner: owner.into(),
        status,
        file_number: (status == PurchaseStatus::Success).then(|| "TET-1".to_string()),
        error_message: (status == PurchaseStatus::Failed).then(|| "INVALID_NUMBER".to_string()),
        at: ts(at),
        refund_entry_id: (status == PurchaseStatus::Failed).then(|| format!("le_refund_{id}")),
        events: vec![NewEvent {
            id: format!("evt_{id}_{at}"),
            kind: "sku-purchase.completed".into(),
            payload: "{}".into(),
        }],
    }
}

pub async fn fulfilment_jobs_are_leased_to_one_worker_at_a_time(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "jobs", 10_000_000).await;
    let p = purchase("j1", &o.id, Environment::Prod, "job-1", 1_000_000);
    assert!(matches!(
        create(&*store, p).await,
        PurchaseResult::Created(_)
    ));
    assert_eq!(
        store.fulfilment_backlog().await.expect("backlog"),
        FulfilmentBacklog {
            open: 1,
            flagged: 0
        }
    );
    assert!(
        store
            .claim_fulfilment_jobs("w1", ts(500), 10_000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "not due yet"
    );
    let jobs = store
        .claim_fulfilment_jobs("w1", ts(2_000), 10_000, 10)
        .await
        .expect("claim");
    assert_eq!(jobs.len(), 1);
    assert_eq!(
        (jobs[0].attempt, jobs[0].purchase.status),
        (1, PurchaseStatus::Processing)
    );
    assert!(
        store
            .claim_fulfilment_jobs("w2", ts(3_000), 10_000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "leased"
    );
    // the lease expires: another worker takes over, and the first one can no longer finish
    let jobs = store
        .claim_fulfilment_jobs("w2", ts(12_001), 10_000, 10)
        .await
        .expect("claim");
    assert_eq!(jobs.iter().map(|j| j.attempt).collect::<Vec<_>>(), [2]);
    assert!(
        !store
            .finish_purchase(&finish("j1", "w1", PurchaseStatus::Success, 13_000))
            .await
            .expect("finish")
    );
    assert!(
        store
            .finish_purchase(&finish("j1", "w2", PurchaseStatus::Success, 13_000))
            .await
            .expect("finish")
    );
    let done = store
        .get_purchase(&o.id, Environment::Prod, "j1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (done.status, done.file_number.as_deref(), done.confirmed_at),
        (PurchaseStatus::Success, Some("TET-1"), Some(ts(13_000)))
    );
    assert!(
        !store
            .finish_purchase(&finish("j1", "w2", PurchaseStatus::Failed, 14_000))
            .await
            .expect("again"),
        "only once"
    );
    assert_eq!(
        store.fulfilment_backlog().await.expect("backlog"),
        FulfilmentBacklog::default()
    );
    assert_eq!(
        store.balance(&o.id).await.expect("balance"),
        UsdMicros(9_000_000)
    );
}

pub async fn a_failed_purchase_is_refunded_by_a_new_entry(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "refund", 5_000_000).await;
    assert!(matches!(
        create(
            &*store,
            purchase("f1", &o.id, Environment::Prod, "fail-1", 2_000_000)
        )
        .await,
        PurchaseResult::Created(_)
    ));
    assert_eq!(
        store.balance(&o.id).await.expect("balance"),
        UsdMicros(3_000_000)
    );
    let jobs = store
        .claim_fulfilment_jobs("w", ts(2_000), 10_000, 10)
        .await
        .expect("claim");
    assert_eq!(jobs.len(), 1);
    assert!(
        store
            .finish_purchase(&finish("f1", "w", PurchaseStatus::Failed, 3_000))
            .await
            .expect("finish")
    );
    assert_eq!(
        store.balance(&o.id).await.expect("balance"),
        UsdMicros(5_000_000),
        "the debit came back"
    );
    let entries = audit_ledger(&*store, &o.id).await;
    let kinds: Vec<(&str, i64)> = entries
        .iter()
        .map(|e| (e.kind.as_str(), e.amount.0))
        .collect();
    assert_eq!(
        kinds,
        [
            ("topup", 5_000_000),
            ("purchase", -2_000_000),
            ("refund", 2_000_000)
        ]
    );
    assert_eq!(entries[2].purchase_id.as_deref(), Some("f1"));
    let failed = store
        .get_purchase(&o.id, Environment::Prod, "f1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (
            failed.status,
            failed.error_message.as_deref(),
            failed.confirmed_at
        ),
        (PurchaseStatus::Failed, Some("INVALID_NUMBER"), None)
    );
}

pub async fn retried_jobs_wait_and_stuck_ones_are_flagged(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "retry", 5_000_000).await;
    assert!(matches!(
        create(
            &*store,
            purchase("r1", &o.id, Environment::Prod, "retry-1", 1_000)
        )
        .await,
        PurchaseResult::Created(_)
    ));
    let jobs = store
        .claim_fulfilment_jobs("w", ts(2_000), 10_000, 10)
        .await
        .expect("claim");
    assert_eq!(jobs.len(), 1);
    assert!(
        !store
            .retry_fulfilment("r1", "other", ts(5_000), "timeout", None)
            .await
            .expect("retry"),
        "not the holder"
    );
    assert!(
        store
            .retry_fulfilment("r1", "w", ts(5_000), "timeout", Some(ts(2_500)))
            .await
            .expect("retry")
    );
    assert_eq!(
        store.fulfilment_backlog().await.expect("backlog"),
        FulfilmentBacklog {
            open: 1,
            flagged: 1
        }
    );
    assert!(
        store
            .claim_fulfilment_jobs("w", ts(4_999), 10_000, 10)
            .await
            .expect("claim")
            .is_empty(),
        "waits for its time"
    );
    let jobs = store
        .claim_fulfilment_jobs("w", ts(5_000), 10_000, 10)
        .await
        .expect("claim");
    assert_eq!(jobs.iter().map(|j| j.attempt).collect::<Vec<_>>(), [2]);
    assert_eq!(jobs[0].purchase.status, PurchaseStatus::Processing);
}

pub async fn concurrent_workers_claim_each_job_once(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "workers", 100_000_000).await;
    let batch: Vec<NewPurchase> = (0..40)
        .map(|i| {
            purchase(
                &format!("cw{i}"),
                &o.id,
                Environment::Prod,
                &format!("cw-{i}"),
                1_000,
            )
        })
        .collect();
    store.create_purchases(&batch).await.expect("batch");
    let tasks: Vec<_> = (0..4)
        .map(|w| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let jobs = store
                        .claim_fulfilment_jobs(&format!("w{w}"), ts(2_000), 60_000, 3)
                        .await
                        .expect("claim");
                    if jobs.is_empty() {
                        return mine;
                    }
                    mine.extend(jobs.into_iter().map(|j| j.purchase.id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.expect("task"));
    }
    all.sort();
    let before = all.len();
    all.dedup();
    assert_eq!(
        (before, all.len()),
        (40, 40),
        "every job claimed exactly once"
    );
}

pub async fn a_round_of_finishes_commits_together_and_skips_lost_leases(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "round", 10_000_000).await;
    let batch: Vec<NewPurchase> = (0..3)
        .map(|i| {
            purchase(
                &format!("fr{i}"),
                &o.id,
                Environment::Prod,
                &format!("fr-{i}"),
                1_000_000,
            )
        })
        .collect();
    store.create_purchases(&batch).await.expect("batch");
    assert_eq!(
        store
            .claim_fulfilment_jobs("w", ts(2_000), 10_000, 10)
            .await
            .expect("claim")
            .len(),
        3
    );
    let round = vec![
        finish("fr0", "w", PurchaseStatus::Success, 3_000),
        finish("fr1", "someone-else", PurchaseStatus::Success, 3_000),
        finish("fr2", "w", PurchaseStatus::Failed, 3_000),
    ];
    assert_eq!(
        store.finish_purchases(&round).await.expect("round"),
        vec![true, false, true]
    );
    let status = |id: &'static str| {
        let store = store.clone();
        let org = o.id.clone();
        async move {
            store
                .get_purchase(&org, Environment::Prod, id)
                .await
                .expect("get")
                .expect("exists")
                .status
        }
    };
    assert_eq!(status("fr0").await, PurchaseStatus::Success);
    assert_eq!(
        status("fr1").await,
        PurchaseStatus::Processing,
        "a lost lease changes nothing"
    );
    assert_eq!(status("fr2").await, PurchaseStatus::Failed);
    assert_eq!(
        store.balance(&o.id).await.expect("balance"),
        UsdMicros(8_000_000),
        "fr2 refunded"
    );
    assert_eq!(store.fulfilment_backlog().await.expect("backlog").open, 1);
}

// -- webhooks ------------------------------------------------------------------------------------

use crate::webhooks::{
    DeliveryResult, DeliveryStatus, DeliveryVerdict, EventFilter, WebhookEndpoint,
};

/// An endpoint for tests.
pub fn endpoint(
    id: &str,
    org_id: &str,
    env: Environment,
    events: &[&str],
    at: i64,
) -> WebhookEndpoint {
    WebhookEndpoint {
        id: id.into(),
        org_id: org_id.into(),
        environment: env,
        url: format!("http://127.0.0.1:9/{id}"),
        description: None,
        events: events.iter().map(|e| e.to_string()).collect(),
        enabled: true,
        disabled_reason: None,
        secret: format!("whsec_{id}"),
        previous_secret: None,
        previous_secret_until: None,
        created_at: ts(at),
        updated_at: ts(at),
    }
}

/// Creates `n` dev purchases, each with one `sku-purchase.completed` event at time 1000.
async fn dev_events(store: &dyn Store, org_id: &str, tag: &str, n: usize) {
    let batch: Vec<NewPurchase> = (0..n)
        .map(|i| {
            purchase(
                &format!("tx_{tag}_{i}"),
                org_id,
                Environment::Dev,
                &format!("{tag}-{i}"),
                1,
            )
        })
        .collect();
    for r in store.create_purchases(&batch).await.expect("create") {
        assert!(matches!(r, PurchaseResult::Created(_)), "{r:?}");
    }
}

fn result(
    owner: &str,
    d: &crate::webhooks::ClaimedDelivery,
    at: i64,
    code: Option<u16>,
    verdict: DeliveryVerdict,
) -> DeliveryResult {
    DeliveryResult {
        owner: owner.into(),
        attempt: crate::webhooks::AttemptRecord {
            delivery_id: d.delivery_id,
            event_id: d.event.id.clone(),
            endpoint_id: d.endpoint.id.clone(),
            attempt: d.attempt,
            attempted_at: ts(at),
            status_code: code,
            latency_ms: 3,
            error: (verdict != DeliveryVerdict::Delivered).then(|| "HTTP 500".to_string()),
        },
        verdict,
    }
}

pub async fn events_route_once_to_each_matching_endpoint(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "route", 0).await;
    let other = funded_org(&*store, "route_other", 0).await;
    let all = endpoint("we_all", &o.id, Environment::Dev, &["*"], 500);
    let failed_only = endpoint(
        "we_failed",
        &o.id,
        Environment::Dev,
        &["sku-purchase.failed"],
        500,
    );
    let completed = endpoint(
        "we_completed",
        &o.id,
        Environment::Dev,
        &["sku-purchase.completed"],
        500,
    );
    let prod = endpoint("we_prod", &o.id, Environment::Prod, &["*"], 500);
    let later = endpoint("we_later", &o.id, Environment::Dev, &["*"], 5_000);
    let foreign = endpoint("we_foreign", &other.id, Environment::Dev, &["*"], 500);
    let mut disabled = endpoint("we_disabled", &o.id, Environment::Dev, &["*"], 500);
    disabled.enabled = false;
    for e in [
        &all,
        &failed_only,
        &completed,
        &prod,
        &later,
        &foreign,
        &disabled,
    ] {
        store
            .create_webhook_endpoint(e)
            .await
            .expect("create endpoint");
    }
    assert!(matches!(
        store.create_webhook_endpoint(&all).await,
        Err(StoreError::Conflict(_))
    ));
    let listed = store
        .list_webhook_endpoints(&o.id, Environment::Dev)
        .await
        .expect("list");
    assert_eq!(listed.len(), 5);
    assert_eq!(
        store
            .get_webhook_endpoint(&o.id, Environment::Dev, "we_all")
            .await
            .expect("get"),
        Some(all.clone())
    );
    assert_eq!(
        store
            .get_webhook_endpoint(&other.id, Environment::Dev, "we_all")
            .await
            .expect("get"),
        None
    );

    // Events are routed in the transaction that writes them: their deliveries are due at the
    // events' time (1,000), and nothing is left unrouted.
    dev_events(&*store, &o.id, "route", 3).await;
    let backlog = store.webhook_backlog().await.expect("backlog");
    assert_eq!(backlog.pending, 6, "3 events x (all, completed)");
    assert_eq!(backlog.oldest_pending, Some(ts(1_000)));

    let claimed = store
        .claim_deliveries("d1", ts(10_000), 60_000, 100, 100)
        .await
        .expect("claim");
    let mut targets: Vec<&str> = claimed.iter().map(|c| c.endpoint.id.as_str()).collect();
    targets.sort_unstable();
    assert_eq!(
        targets,
        [
            "we_all",
            "we_all",
            "we_all",
            "we_completed",
            "we_completed",
            "we_completed"
        ]
    );
    assert!(
        claimed
            .iter()
            .all(|c| c.attempt == 1 && c.event.kind == "sku-purchase.completed")
    );

    let (events, total) = store
        .list_events(&o.id, Environment::Dev, &EventFilter::default(), 2, 0)
        .await
        .expect("events");
    assert_eq!(total, 3);
    assert_eq!(events.len(), 2);
    assert_eq!(
        events[0].purchase_id.as_deref(),
        Some("tx_route_2"),
        "newest first"
    );
    let only = EventFilter {
        kind: None,
        purchase_id: Some("tx_route_1".into()),
    };
    let (events, total) = store
        .list_events(&o.id, Environment::Dev, &only, 10, 0)
        .await
        .expect("events");
    assert_eq!((events.len(), total), (1, 1));
    let none = EventFilter {
        kind: Some("sku-purchase.failed".into()),
        purchase_id: None,
    };
    assert_eq!(
        store
            .list_events(&o.id, Environment::Dev, &none, 10, 0)
            .await
            .expect("events")
            .1,
        0
    );
    assert_eq!(
        store
            .list_events(&o.id, Environment::Prod, &EventFilter::default(), 10, 0)
            .await
            .expect("events")
            .1,
        0
    );
    assert_eq!(
        store
            .get_event(&o.id, Environment::Dev, &events[0].id)
            .await
            .expect("get"),
        Some(events[0].clone())
    );
    assert_eq!(
        store
            .get_event(&other.id, Environment::Dev, &events[0].id)
            .await
            .expect("get"),
        None
    );
}

pub async fn deliveries_are_leased_retried_and_every_attempt_is_logged(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "deliver", 0).await;
    store
        .create_webhook_endpoint(&endpoint("we_d", &o.id, Environment::Dev, &["*"], 0))
        .await
        .expect("endpoint");
    dev_events(&*store, &o.id, "deliver", 1).await;
    assert_eq!(store.webhook_backlog().await.expect("backlog").pending, 1);

    let first = store
        .claim_deliveries("d1", ts(10_000), 1_000, 10, 10)
        .await
        .expect("claim");
    assert_eq!(first.len(), 1);
    assert!(
        store
            .claim_deliveries("d2", ts(10_500), 1_000, 10, 10)
            .await
            .expect("claim")
            .is_empty(),
        "leased"
    );
    let retry = result(
        "d1",
        &first[0],
        10_100,
        Some(500),
        DeliveryVerdict::Retry {
            next_attempt_at: ts(20_000),
        },
    );
    assert_eq!(
        store.record_deliveries(&[retry]).await.expect("record"),
        vec![true]
    );
    assert!(
        store
            .claim_deliveries("d2", ts(19_999), 1_000, 10, 10)
            .await
            .expect("claim")
            .is_empty(),
        "not due"
    );

    // The second attempt's lease runs out; a third dispatcher takes over, and the late answer
    // of the second is logged but changes nothing.
    let second = store
        .claim_deliveries("d2", ts(20_000), 1_000, 10, 10)
        .await
        .expect("claim");
    assert_eq!(second[0].attempt, 2);
    let third = store
        .claim_deliveries("d3", ts(21_001), 1_000, 10, 10)
        .await
        .expect("claim");
    assert_eq!(third[0].attempt, 3);
    let late = result(
        "d2",
        &second[0],
        21_500,
        Some(200),
        DeliveryVerdict::Delivered,
    );
    assert_eq!(
        store.record_deliveries(&[late]).await.expect("record"),
        vec![false]
    );
    let ok = result(
        "d3",
        &third[0],
        21_600,
        Some(200),
        DeliveryVerdict::Delivered,
    );
    assert_eq!(
        store.record_deliveries(&[ok]).await.expect("record"),
        vec![true]
    );

    let (deliveries, attempts) = store
        .event_deliveries(&first[0].event.id)
        .await
        .expect("deliveries");
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0].status, DeliveryStatus::Delivered);
    assert_eq!(deliveries[0].attempts, 3);
    assert_eq!(deliveries[0].last_status_code, Some(200));
    assert_eq!(deliveries[0].finished_at, Some(ts(21_600)));
    let log: Vec<(u32, Option<u16>)> = attempts
        .iter()
        .map(|a| (a.attempt, a.status_code))
        .collect();
    assert_eq!(log, [(1, Some(500)), (2, Some(200)), (3, Some(200))]);
    assert_eq!(store.webhook_backlog().await.expect("backlog").pending, 0);
    assert!(
        store
            .claim_deliveries("d4", ts(99_000), 1_000, 10, 10)
            .await
            .expect("claim")
            .is_empty()
    );

    // Redelivery queues a new delivery of the same event.
    let event = first[0].event.clone();
    let again = store
        .redeliver_event(&event, None, ts(30_000))
        .await
        .expect("redeliver");
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].status, DeliveryStatus::Pending);
    let claimed = store
        .claim_deliveries("d5", ts(30_000), 1_000, 10, 10)
        .await
        .expect("claim");
    assert_eq!(
        (
            claimed.len(),
            claimed[0].attempt,
            claimed[0].event.id.as_str()
        ),
        (1, 1, event.id.as_str())
    );
}

pub async fn gone_endpoints_are_disabled_and_deleted_ones_cancelled(store: Arc<dyn Store>) {
    let o = funded_org(&*store, "gone", 0).await;
    for id in ["we_gone", "we_deleted"] {
        store
            .create_webhook_endpoint(&endpoint(id, &o.id, Environment::Dev, &["*"], 0))
            .await
            .expect("endpoint");
    }
    dev_events(&*store, &o.id, "gone", 2).await;
    let claimed = store
        .claim_deliveries("d1", ts(10_000), 1_000, 1, 1)
        .await
        .expect("claim");
    assert_eq!(claimed.len(), 1);
    let gone_id = claimed[0].endpoint.id.clone();
    let verdict = result(
        "d1",
        &claimed[0],
        10_100,
        Some(410),
        DeliveryVerdict::DisableEndpoint,
    );
    assert_eq!(
        store.record_deliveries(&[verdict]).await.expect("record"),
        vec![true]
    );
    let gone = store
        .get_webhook_endpoint(&o.id, Environment::Dev, &gone_id)
        .await
        .expect("get")
        .expect("exists");
    assert!(!gone.enabled);
    assert!(gone.disabled_reason.is_some());
    // A disabled endpoint's queued deliveries wait; nothing of it is claimed.
    let rest = store
        .claim_deliveries("d1", ts(10_200), 1_000, 100, 100)
        .await
        .expect("claim");
    assert!(rest.iter().all(|c| c.endpoint.id != gone_id));
    let other_id = if gone_id == "we_gone" {
        "we_deleted"
    } else {
        "we_gone"
    };
    assert!(
        store
            .delete_webhook_endpoint(&o.id, Environment::Dev, other_id, ts(10_300))
            .await
            .expect("delete")
    );
    assert!(
        !store
            .delete_webhook_endpoint(&o.id, Environment::Dev, other_id, ts(10_300))
            .await
            .expect("delete")
    );
    assert_eq!(
        store
            .get_webhook_endpoint(&o.id, Environment::Dev, other_id)
            .await
            .expect("get"),
        None
    );
    let (deliveries, _) = store
        .event_deliveries(&claimed[0].event.id)
        .await
        .expect("deliveries");
    let of_deleted = deliveries
        .iter()
        .find(|d| d.endpoint_id == other_id)
        .expect("delivery");
    assert_eq!(of_deleted.status, DeliveryStatus::Cancelled);

    // Re-enabling brings the queued deliveries back.
    let mut back = gone.clone();
    back.enabled = true;
    back.disabled_reason = None;
    back.updated_at = ts(10_400);
    assert!(store.update_webhook_endpoint(&back).await.expect("update"));
    let resumed = store
        .claim_deliveries("d1", ts(10_500), 1_000, 100, 100)
        .await
        .expect("claim");
    assert_eq!(
        resumed.len(),
        1,
        "the second event's delivery to the re-enabled endpoint"
    );
    assert_eq!(resumed[0].endpoint.id, gone_id);
}

pub async fn concurrent_writers_route_and_dispatchers_claim_each_delivery_once(
    store: Arc<dyn Store>,
) {
    let o = funded_org(&*store, "fanout", 0).await;
    store
        .create_webhook_endpoint(&endpoint("we_f", &o.id, Environment::Dev, &["*"], 0))
        .await
        .expect("endpoint");
    // Three writers of 20 events each, concurrently: every event is routed once.
    let writers: Vec<_> = (0..3)
        .map(|i| {
            let (s, org) = (store.clone(), o.id.clone());
            tokio::spawn(async move { dev_events(&*s, &org, &format!("fanout{i}"), 20).await })
        })
        .collect();
    for w in writers {
        w.await.expect("writer");
    }
    assert_eq!(store.webhook_backlog().await.expect("backlog").pending, 60);
    let claimers: Vec<_> = (0..4)
        .map(|i| {
            let s = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                loop {
                    let got = s
                        .claim_deliveries(&format!("c{i}"), ts(10_000), 60_000, 5, 5)
                        .await
                        .expect("claim");
                    if got.is_empty() {
                        return mine;
                    }
                    mine.extend(got.into_iter().map(|c| c.delivery_id));
                }
            })
        })
        .collect();
    let mut all = Vec::new();
    for c in claimers {
        all.extend(c.await.expect("claimer"));
    }
    all.sort_unstable();
    let n = all.len();
    all.dedup();
    assert_eq!(
        (n, all.len()),
        (60, 60),
        "each delivery claimed exactly once"
    );
}

// -- x402 payments -------------------------------------------------------------------------------

fn payment(payer: &str, nonce: &str) -> cobro_x402::PaymentRecord {
    cobro_x402::PaymentRecord {
        payer: payer.into(),
        nonce: nonce.into(),
        state: cobro_x402::PaymentState::Reserved,
        tx_hash: None,
        network: "SN_MAIN".into(),
        asset: "0x33068f6539f8e6e6b131e6b2b814e6c34a5224bc66947c47dab9dfee93b35fb".into(),
        pay_to: "0x5678".into(),
        amount: "10000".into(),
        error: None,
        created_at: 1_700_000_000,
        updated_at: 1_700_000_000,
    }
}

pub async fn x402_nonces_are_reserved_once_even_when_raced(store: Arc<dyn Store>) {
    use cobro_x402::{PaymentState, ReserveOutcome};
    let payments = store.payments();
    let racers: Vec<_> = (0..16)
        .map(|_| {
            let p = payments.clone();
            tokio::spawn(async move { p.reserve(payment("0x1234", "0x1")).await.expect("reserve") })
        })
        .collect();
    let mut won = 0;
    for r in racers {
        match r.await.expect("task") {
            ReserveOutcome::Reserved => won += 1,
            ReserveOutcome::AlreadyExists(existing) => {
                assert_eq!(existing.state, PaymentState::Reserved)
            }
        }
    }
    assert_eq!(won, 1, "exactly one reservation of (payer, nonce)");
    // The same nonce of another payer is another payment.
    assert_eq!(
        payments
            .reserve(payment("0x9999", "0x1"))
            .await
            .expect("reserve"),
        ReserveOutcome::Reserved
    );
    let unfinished = payments.list_unfinished().await.expect("list");
    assert_eq!(unfinished.len(), 2);

    payments
        .mark_submitted("0x1234", "0x1", "0xabc")
        .await
        .expect("submitted");
    let p = payments
        .get("0x1234", "0x1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!(
        (p.state, p.tx_hash.as_deref()),
        (PaymentState::Submitted, Some("0xabc"))
    );
    payments
        .mark_settled("0x1234", "0x1", "0xabc")
        .await
        .expect("settled");
    // A finished payment does not move again.
    payments
        .mark_failed("0x1234", "0x1", "late")
        .await
        .expect("no-op");
    let p = payments
        .get("0x1234", "0x1")
        .await
        .expect("get")
        .expect("exists");
    assert_eq!((p.state, p.error), (PaymentState::Settled, None));
    match payments
        .reserve(payment("0x1234", "0x1"))
        .await
        .expect("reserve")
    {
        ReserveOutcome::AlreadyExists(existing) => {
            assert_eq!(existing.tx_hash.as_deref(), Some("0xabc"))
        }
        other => panic!("a settled nonce was reserved again: {other:?}"),
    }
    payments
        .mark_failed("0x9999", "0x1", "verify_only")
        .await
        .expect("failed");
    assert!(payments.list_unfinished().await.expect("list").is_empty());
    assert!(
        payments.mark_settled("0x7777", "0x1", "0x1").await.is_err(),
        "unknown payment"
    );
}

/// Checks that every file in a backend's `migrations/` directory is compiled into its
/// migrator (`embedded`: version, name, SQL), under the version its name starts with, and that
/// no version lacks its file. A file left out would never be applied.
pub fn migration_files_are_embedded(dir: &std::path::Path, embedded: &[(i64, &str, &str)]) {
    let mut files: Vec<(i64, String)> = std::fs::read_dir(dir)
        .expect("migrations directory")
        .map(|e| {
            let name = e.expect("entry").file_name().to_string_lossy().into_owned();
            let version = name
                .split('_')
                .next()
                .and_then(|v| v.parse().ok())
                .expect("a migration file name starts with its version");
            (version, name)
        })
        .collect();
    files.sort();
    for (version, name) in &files {
        let Some((_, _, sql)) = embedded.iter().find(|(v, _, _)| v == version) else {
            panic!("{name} is not in MIGRATIONS");
        };
        let on_disk = std::fs::read_to_string(dir.join(name)).expect("read");
        assert_eq!(*sql, on_disk, "{name} is embedded under another version");
    }
    assert_eq!(embedded.len(), files.len(), "no version without its file");
}
