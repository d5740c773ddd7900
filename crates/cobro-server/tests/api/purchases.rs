//! Purchases over HTTP: the DEV sandbox, idempotency, validation, scoping, exchange, credits.

use cobro_server::admin::{self, MarkupTarget};
use cobro_types::{CreateSkuPurchaseInput, PurchaseStatus, Transaction};
use serde_json::json;

use crate::common::*;

fn body(key: &str, sku: &str, reference: &str, amount: f64) -> CreateSkuPurchaseInput {
    serde_json::from_value(json!({
        "transactionHash": key, "skuId": sku, "skuReference": reference, "currencyAmount": amount,
        "chain": "STARKNET", "token": "USDC", "walletAddress": "0x0",
    }))
    .expect("valid body")
}

fn telcel10(key: &str) -> CreateSkuPurchaseInput {
    body(key, "sku-tl-TEL010", "5512345678", 10.0)
}

#[tokio::test]
async fn a_dev_purchase_is_a_deterministic_sandbox_success_that_moves_no_credits() {
    let app = spawn_app().await;
    admin::add_credits(app.store.as_ref(), &app.org_id, "100", None)
        .await
        .expect("credits");
    let buyer = app.dev_client().await;
    let created = buyer
        .create_purchase(&telcel10("order-1"))
        .await
        .expect("purchase");
    assert!(!created.replayed);
    let tx: Transaction = created.value;
    assert_eq!(
        tx.status,
        PurchaseStatus::Success,
        "already SUCCESS in the POST response"
    );
    assert!(tx.id.starts_with("tx-"), "{}", tx.id);
    assert!(
        tx.ledger_entry_id.starts_with("le-dev-"),
        "{}",
        tx.ledger_entry_id
    );
    let file = tx.sku_file_number.clone().expect("a receipt");
    assert!(
        file.strip_prefix("dev-sandbox-")
            .is_some_and(|ms| ms.parse::<i64>().is_ok()),
        "{file}"
    );
    assert_eq!(
        (tx.amount.as_str(), tx.fx_rate.as_str()),
        ("0.588", "0.0588"),
        "10 MXN at 0.0588"
    );
    assert_eq!(
        (
            tx.kind.as_str(),
            tx.customer_id.as_str(),
            tx.transaction_hash.as_str()
        ),
        ("SKU_PURCHASE", "customer-1", "order-1")
    );
    assert_eq!(tx.api_public_key, app.dev.public_key);
    assert!(tx.confirmed_at.is_some() && tx.error_message.is_none());

    let org = app.client(&app.dev.public_key, &app.dev.secret_key);
    assert_eq!(
        org.balance().await.expect("balance").available_micros,
        100_000_000,
        "no credits debited"
    );
    assert_eq!(
        org.ledger_entries(&[]).await.expect("ledger").total,
        1,
        "no ledger row for the sandbox"
    );

    assert_eq!(buyer.get_purchase(&tx.id).await.expect("get"), tx);
    let listed = buyer.list_purchases(&[]).await.expect("list");
    assert_eq!(
        (listed.total, listed.data.first().map(|t| t.id.clone())),
        (1, Some(tx.id.clone()))
    );
    app.stop().await;
}

#[tokio::test]
async fn the_same_transaction_hash_replays_and_a_different_body_is_refused() {
    let app = spawn_app().await;
    let buyer = app.dev_client().await;
    let first = buyer
        .create_purchase(&telcel10("order-7"))
        .await
        .expect("purchase");
    let again = buyer
        .create_purchase(&telcel10("order-7"))
        .await
        .expect("replay");
    assert!(again.replayed, "Idempotent-Replayed: true");
    assert_eq!(again.value, first.value);
    let other = body("order-7", "sku-tl-TEL010", "5599999999", 10.0);
    match buyer.create_purchase(&other).await {
        Err(cobro_sdk::Error::Api {
            status: 422,
            code,
            param,
            ..
        }) => {
            assert_eq!(
                (code.as_str(), param.as_deref()),
                ("IDEMPOTENCY_KEY_REUSED", Some("transactionHash"))
            );
        }
        r => panic!("expected 422, got {r:?}"),
    }
    assert_eq!(buyer.list_purchases(&[]).await.expect("list").total, 1);
    app.stop().await;
}

#[tokio::test]
async fn twenty_keys_times_fifty_concurrent_duplicates_make_exactly_twenty_purchases() {
    let app = spawn_app().await;
    let buyer = app.dev_client().await;
    let mut tasks = Vec::new();
    for key in 0..20 {
        for _ in 0..50 {
            let buyer = buyer.clone();
            tasks.push(tokio::spawn(async move {
                buyer
                    .create_purchase(&telcel10(&format!("dup-{key}")))
                    .await
            }));
        }
    }
    let (mut created, mut replayed) = (0, 0);
    let mut ids = std::collections::HashMap::new();
    for t in tasks {
        let c = t.await.expect("task").expect("purchase");
        if c.replayed {
            replayed += 1
        } else {
            created += 1
        }
        let first = ids
            .entry(c.value.transaction_hash.clone())
            .or_insert_with(|| c.value.id.clone());
        assert_eq!(
            first, &c.value.id,
            "every answer for a key names the same purchase"
        );
    }
    assert_eq!((created, replayed), (20, 980));
    assert_eq!(
        buyer
            .list_purchases(&[("limit", "100".into())])
            .await
            .expect("list")
            .total,
        20
    );
    app.stop().await;
}

#[tokio::test]
async fn every_invalid_field_is_a_400_naming_it_and_unknown_skus_are_404() {
    let app = spawn_app().await;
    let buyer = app.dev_client().await;
    let cases: Vec<(serde_json::Value, &str)> = vec![
        (json!({"transactionHash": ""}), "transactionHash"),
        (json!({"chain": "BASE"}), "chain"),
        (json!({"token": "DOGE"}), "token"),
        (json!({"walletAddress": ""}), "walletAddress"),
        (json!({"currency": "USD"}), "currency"),
        (json!({"currencyAmount": 20}), "currencyAmount"),
        (json!({"currencyAmount": 10.001}), "currencyAmount"),
        (json!({"currencyAmount": -10}), "currencyAmount"),
        (json!({"skuReference": "55-1234-5678"}), "skuReference"),
        (json!({"orgMarkup": -1}), "orgMarkup"),
        (json!({"currencyAmount": "ten"}), "currencyAmount"),
    ];
    for (patch, param) in cases {
        let mut b = serde_json::to_value(telcel10("bad")).expect("json");
        for (k, v) in patch.as_object().expect("object") {
            b[k] = v.clone();
        }
        let r: Result<(Transaction, _), _> = buyer
            .send(reqwest::Method::POST, "/v1/sku-purchases", &[], Some(&b))
            .await;
        match r {
            Err(cobro_sdk::Error::Api {
                status: 400,
                param: p,
                ..
            }) => assert_eq!(p.as_deref(), Some(param), "{patch}"),
            other => panic!("{patch}: expected 400 naming {param}, got {other:?}"),
        }
    }
    let mut missing = serde_json::to_value(telcel10("bad")).expect("json");
    missing
        .as_object_mut()
        .expect("object")
        .remove("skuReference");
    let r: Result<(Transaction, _), _> = buyer
        .send(
            reqwest::Method::POST,
            "/v1/sku-purchases",
            &[],
            Some(&missing),
        )
        .await;
    assert!(
        matches!(r, Err(cobro_sdk::Error::Api { status: 400, ref code, .. }) if code == "MISSING_PARAMETER")
    );
    assert_api_error(
        buyer
            .create_purchase(&body("k", "sku-nope", "5512345678", 10.0))
            .await,
        404,
        "SKU_NOT_FOUND",
    );
    // CFE is variable-amount: any amount within its bounds, with the 12-digit service number
    let cfe = buyer
        .create_purchase(&body("cfe-1", "sku-cfe-CFE001", "123456789012", 845.5))
        .await
        .expect("CFE bill");
    assert_eq!(
        cfe.value.sku_purchase_amount,
        cobro_types::MinorAmount(84_550)
    );
    assert_eq!(
        buyer.list_purchases(&[]).await.expect("list").total,
        1,
        "refused requests store nothing"
    );
    app.stop().await;
}

#[tokio::test]
async fn only_a_customer_jwt_can_buy_and_prod_is_refused_until_a_carrier_exists() {
    let app = spawn_app().await;
    admin::add_credits(app.store.as_ref(), &app.org_id, "50", None)
        .await
        .expect("credits");
    let with_secret = app.client(&app.dev.public_key, &app.dev.secret_key);
    assert_api_error(
        with_secret.create_purchase(&telcel10("k")).await,
        401,
        "CUSTOMER_JWT_REQUIRED",
    );
    assert_api_error(
        with_secret.list_purchases(&[]).await,
        401,
        "CUSTOMER_JWT_REQUIRED",
    );

    let prod_token = app.token(&app.prod, "customer-1").await;
    let prod = app.client(&app.prod.public_key, &prod_token);
    assert_api_error(
        prod.create_purchase(&telcel10("prod-1")).await,
        503,
        "CARRIER_UNAVAILABLE",
    );
    let org = app.client(&app.prod.public_key, &app.prod.secret_key);
    assert_eq!(
        org.balance().await.expect("balance").available_micros,
        50_000_000,
        "nothing debited"
    );
    assert_eq!(prod.list_purchases(&[]).await.expect("list").total, 0);
    app.stop().await;
}

#[tokio::test]
async fn purchases_are_invisible_to_other_environments_and_organisations() {
    let app = spawn_app().await;
    let tx = app
        .dev_client()
        .await
        .create_purchase(&telcel10("mine"))
        .await
        .expect("purchase")
        .value;
    let prod_token = app.token(&app.prod, "customer-1").await;
    assert_api_error(
        app.client(&app.prod.public_key, &prod_token)
            .get_purchase(&tx.id)
            .await,
        404,
        "PURCHASE_NOT_FOUND",
    );
    let other = admin::create_org(app.store.as_ref(), "Other")
        .await
        .expect("org");
    let key = admin::create_key(
        app.store.as_ref(),
        &other.id,
        cobro_types::Environment::Dev,
        &Default::default(),
    )
    .await
    .expect("key");
    let token = app.token(&key, "someone").await;
    let stranger = app.client(&key.public_key, &token);
    assert_api_error(
        stranger.get_purchase(&tx.id).await,
        404,
        "PURCHASE_NOT_FOUND",
    );
    assert_eq!(stranger.list_purchases(&[]).await.expect("list").total, 0);
    // the same transactionHash in another organisation is another purchase
    let theirs = stranger
        .create_purchase(&telcel10("mine"))
        .await
        .expect("purchase");
    assert!(!theirs.replayed);
    app.stop().await;
}

#[tokio::test]
async fn markups_are_added_to_the_usd_amount() {
    let app = spawn_app().await;
    admin::set_markup(
        app.store.as_ref(),
        &app.org_id,
        MarkupTarget::Category("TELEFONIA".into()),
        Some("10"),
        Some("0.05"),
    )
    .await
    .expect("markup");
    // Markups are served from memory; a change is seen within the refresh interval.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    while app
        .app()
        .markup_rule(&app.org_id, "sku-tl-TEL010", "TELEFONIA")
        .is_none()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "the markup never reached the snapshot"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let tx = app
        .dev_client()
        .await
        .create_purchase(&telcel10("marked"))
        .await
        .expect("purchase")
        .value;
    // 0.588 base + 10 % (0.0588) + 0.05 fixed
    assert_eq!((tx.amount.as_str(), tx.markup_usd.0), ("0.6968", 108_800));
    app.stop().await;
}

#[tokio::test]
async fn the_exchange_endpoint_answers_a_bare_number() {
    let app = spawn_app().await;
    let c = app.dev_client().await;
    assert_eq!(c.usd_amount("200", "MXN").await.expect("rate"), 11.76);
    assert_eq!(
        c.usd_amount("12.5", "USD").await.expect("usd in, usd out"),
        12.5
    );
    let raw = reqwest::Client::new()
        .get(format!(
            "{}/v1/exchanges/usd-amount?currencyAmount=200&currency=MXN",
            app.url
        ))
        .header("x-api-key", &app.dev.public_key)
        .bearer_auth(&app.dev.secret_key)
        .send()
        .await
        .expect("send")
        .text()
        .await
        .expect("text");
    assert_eq!(raw, "11.76");
    for (q, param, code) in [
        (
            vec![("currency", "MXN")],
            "currencyAmount",
            "MISSING_PARAMETER",
        ),
        (
            vec![("currencyAmount", "10")],
            "currency",
            "MISSING_PARAMETER",
        ),
        (
            vec![("currencyAmount", "0"), ("currency", "MXN")],
            "currencyAmount",
            "INVALID_PARAMETER",
        ),
        (
            vec![("currencyAmount", "10"), ("currency", "EUR")],
            "currency",
            "INVALID_PARAMETER",
        ),
    ] {
        let q: Vec<(&str, String)> = q.into_iter().map(|(k, v)| (k, v.to_string())).collect();
        match c.get::<f64>("/v1/exchanges/usd-amount", &q).await {
            Err(cobro_sdk::Error::Api {
                status: 400,
                code: c,
                param: p,
                ..
            }) => assert_eq!((c.as_str(), p.as_deref()), (code, Some(param))),
            other => panic!("{q:?}: {other:?}"),
        }
    }
    app.stop().await;
}

#[tokio::test]
async fn balance_and_ledger_need_the_secret_key_and_list_newest_first() {
    let app = spawn_app().await;
    for (usd, note) in [("10", "first"), ("2.5", "second")] {
        admin::add_credits(app.store.as_ref(), &app.org_id, usd, Some(note))
            .await
            .expect("credits");
    }
    let org = app.client(&app.dev.public_key, &app.dev.secret_key);
    let b = org.balance().await.expect("balance");
    assert_eq!(
        (b.available_micros, b.total_usd.0, b.org_id.as_str()),
        (12_500_000, 12_500_000, app.org_id.as_str())
    );
    let ledger = org
        .ledger_entries(&[("limit", "1".into())])
        .await
        .expect("ledger");
    assert_eq!((ledger.total, ledger.total_pages), (2, 2));
    assert_eq!(ledger.data[0].note.as_deref(), Some("second"));
    assert_eq!(ledger.data[0].balance_after_usd.0, 12_500_000);
    let jwt = app.dev_client().await;
    assert_api_error(jwt.balance().await, 401, "SECRET_KEY_REQUIRED");
    assert_api_error(jwt.ledger_entries(&[]).await, 401, "SECRET_KEY_REQUIRED");
    app.stop().await;
}
