//! Webhooks end to end: a real receiver on 127.0.0.1:0 gets every event of a purchase's life,
//! signed; failures are retried on schedule; 410 disables; rotation overlaps; redelivery and
//! the event log work; the endpoint API refuses bad input with stable codes.

#![allow(clippy::unwrap_used)] // test helpers: a panic is how they fail

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use carrier_sim::{Fault, SimConfig};
use cobro_sdk::webhooks;
use cobro_server::admin;
use cobro_types::{
    CreateSkuPurchaseInput,
    events::{CreateWebhookEndpoint, UpdateWebhookEndpoint},
};
use serde_json::{Value, json};

use crate::common::*;

/// One delivery as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub headers: HeaderMap,
    pub body: Bytes,
    pub at: Instant,
}

#[derive(Default)]
struct ReceiverState {
    got: Vec<Received>,
    /// Statuses to answer, in order; 200 when empty.
    script: VecDeque<u16>,
}

/// A webhook receiver on 127.0.0.1:0 that records every request.
#[derive(Clone)]
pub struct Receiver {
    state: Arc<Mutex<ReceiverState>>,
    pub url: String,
    stop: Arc<tokio::sync::Notify>,
}

impl Receiver {
    pub async fn start() -> Receiver {
        let state = Arc::new(Mutex::new(ReceiverState::default()));
        async fn hook(
            State(state): State<Arc<Mutex<ReceiverState>>>,
            headers: HeaderMap,
            body: Bytes,
        ) -> StatusCode {
            let mut s = state.lock().unwrap();
            s.got.push(Received {
                headers,
                body,
                at: Instant::now(),
            });
            let code = s.script.pop_front().unwrap_or(200);
            StatusCode::from_u16(code).unwrap()
        }
        let router = Router::new()
            .route("/hook", post(hook))
            .with_state(state.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(tokio::sync::Notify::new());
        let stopped = stop.clone();
        tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async move { stopped.notified().await })
                .await
                .ok();
        });
        Receiver {
            state,
            url: format!("http://{addr}/hook"),
            stop,
        }
    }

    /// Answers these statuses to the next requests (then 200).
    pub fn script(&self, codes: &[u16]) {
        self.state.lock().unwrap().script.extend(codes);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().got.clone()
    }

    /// Waits until `pred` holds for what was received (at most 20 s).
    pub async fn wait_for(&self, what: &str, pred: impl Fn(&[Received]) -> bool) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let got = self.received();
            if pred(&got) {
                return got;
            }
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; received {} requests",
                got.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub fn stop(&self) {
        self.stop.notify_one();
    }
}

pub fn header<'a>(r: &'a Received, name: &str) -> &'a str {
    r.headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
}

fn event_type(r: &Received) -> String {
    let v: Value = serde_json::from_slice(&r.body).unwrap();
    v["type"].as_str().unwrap().to_string()
}

/// A server whose dispatcher may deliver to loopback, with a compressed retry schedule.
async fn webhook_app(tune: impl FnOnce(&mut cobro_server::Config)) -> TestApp {
    spawn_app_with(|c| {
        c.webhooks.allow_private_addresses = true;
        c.webhooks.retry_schedule_ms = vec![0, 200, 400, 800];
        c.webhooks.poll_interval_ms = 20;
        c.webhooks.timeout_ms = 1_000;
        c.webhooks.lease_ms = 3_000;
        tune(c);
    })
    .await
}

fn purchase(key: &str, phone: &str) -> CreateSkuPurchaseInput {
    serde_json::from_value(json!({
        "transactionHash": key, "skuId": "sku-tl-TEL010", "skuReference": phone, "currencyAmount": 10,
        "chain": "STARKNET", "token": "USDC", "walletAddress": "0x0",
    }))
    .unwrap()
}

fn endpoint(url: &str, events: Option<&[&str]>) -> CreateWebhookEndpoint {
    CreateWebhookEndpoint {
        url: url.to_string(),
        events: events.map(|e| e.iter().map(|s| s.to_string()).collect()),
        description: Some("test receiver".into()),
        enabled: None,
    }
}

fn verify(secret: &str, r: &Received, now: i64) -> Result<(), webhooks::VerifyError> {
    webhooks::verify_headers(secret, &r.body, &r.headers, now, 300)
}

#[tokio::test]
async fn every_event_of_a_purchase_life_reaches_the_receiver_signed() {
    let sim = carrier_sim::spawn(SimConfig::default(), "127.0.0.1:0")
        .await
        .unwrap();
    let sim_url = sim.url();
    let app = webhook_app(|c| {
        c.carrier.url = sim_url;
        c.carrier.poll_interval_ms = 20;
    })
    .await;
    admin::add_credits(app.store.as_ref(), &app.org_id, "100", None)
        .await
        .unwrap();
    let receiver = Receiver::start().await;
    let org = app.client(&app.prod.public_key, &app.prod.secret_key);
    let created = org
        .create_webhook_endpoint(&endpoint(&receiver.url, None))
        .await
        .unwrap();
    let secret = created.secret.clone().expect("secret shown on create");
    assert!(secret.starts_with("whsec_"));
    assert_eq!(created.events, ["*"]);
    // The secret is never shown again.
    let fetched = org.get_webhook_endpoint(&created.id).await.unwrap();
    assert_eq!(fetched.secret, None);

    sim.sim
        .plan("5500000001", Fault::Fail("INVALID_NUMBER".into()), 1);
    let token = app.token(&app.prod, "customer-1").await;
    let buyer = app.client(&app.prod.public_key, &token);
    let ok = buyer
        .create_purchase(&purchase("wh-ok", "5512345678"))
        .await
        .unwrap()
        .value;
    let bad = buyer
        .create_purchase(&purchase("wh-bad", "5500000001"))
        .await
        .unwrap()
        .value;

    let got = receiver
        .wait_for("three events", |got| got.len() >= 3)
        .await;
    let now = now();
    let mut kinds: Vec<(String, String)> = got
        .iter()
        .map(|r| {
            let v: Value = serde_json::from_slice(&r.body).unwrap();
            (v["data"]["id"].as_str().unwrap().to_string(), event_type(r))
        })
        .collect();
    kinds.sort();
    let mut want = vec![
        (ok.id.clone(), "sku-purchase.completed".to_string()),
        (bad.id.clone(), "sku-purchase.failed".to_string()),
        (bad.id.clone(), "sku-purchase.refunded".to_string()),
    ];
    want.sort();
    assert_eq!(kinds, want);
    for r in &got {
        verify(&secret, r, now).expect("valid signatures");
        let body: Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(header(r, "webhook-id"), body["id"].as_str().unwrap());
        assert!(body["id"].as_str().unwrap().starts_with("evt_"));
        assert!(body["createdAt"].as_str().unwrap().ends_with('Z'));
        assert_eq!(header(r, "content-type"), "application/json");
        // chipi-signature is the hex HMAC-SHA256 of the raw body with the secret.
        assert_eq!(
            header(r, "chipi-signature"),
            webhooks::chipi_signature(&secret, &r.body)
        );
    }
    let completed = got
        .iter()
        .find(|r| event_type(r) == "sku-purchase.completed")
        .unwrap();
    let body: Value = serde_json::from_slice(&completed.body).unwrap();
    assert_eq!(body["data"]["status"], "SUCCESS");
    assert!(body["data"]["skuFileNumber"].is_string());

    // Forgeries fail: a tampered body, a wrong secret, a stale timestamp.
    let r = &got[0];
    let mut tampered = r.clone();
    tampered.body = Bytes::from(String::from_utf8_lossy(&r.body).replace("USDC", "USDT"));
    assert_eq!(
        verify(&secret, &tampered, now),
        Err(webhooks::VerifyError::NoMatch)
    );
    let wrong = webhooks::new_secret().unwrap();
    assert_eq!(verify(&wrong, r, now), Err(webhooks::VerifyError::NoMatch));
    assert_eq!(
        verify(&secret, r, now + 301),
        Err(webhooks::VerifyError::StaleTimestamp)
    );

    // Nothing more arrives: each event was delivered once.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 3);

    // The event log lists them, filterable, and each shows its successful attempt.
    let events = org.list_events(&[]).await.unwrap();
    assert_eq!(events.total, 3);
    let of_bad = org
        .list_events(&[("purchaseId", bad.id.clone())])
        .await
        .unwrap();
    assert_eq!(of_bad.total, 2);
    let refunded = org
        .list_events(&[("type", "sku-purchase.refunded".to_string())])
        .await
        .unwrap();
    assert_eq!(refunded.total, 1);
    assert_eq!(refunded.data[0].data["id"], bad.id.as_str());
    let detail = org.get_event(&events.data[0].id).await.unwrap();
    assert_eq!(detail.deliveries.len(), 1);
    assert_eq!(detail.deliveries[0].status, "delivered");
    assert_eq!(detail.attempts.len(), 1);
    assert_eq!(detail.attempts[0].status_code, Some(200));
    // Dev events are not the prod key's business.
    let dev_org = app.client(&app.dev.public_key, &app.dev.secret_key);
    assert_eq!(dev_org.list_events(&[]).await.unwrap().total, 0);
    let err = dev_org.get_event(&events.data[0].id).await.unwrap_err();
    assert_eq!(err.code(), Some("EVENT_NOT_FOUND"));
    receiver.stop();
    app.stop().await;
}

#[tokio::test]
async fn a_failing_receiver_is_retried_on_schedule_and_every_attempt_is_logged() {
    let app = webhook_app(|_| {}).await;
    let receiver = Receiver::start().await;
    receiver.script(&[500, 503, 500]);
    let org = app.client(&app.dev.public_key, &app.dev.secret_key);
    let ep = org
        .create_webhook_endpoint(&endpoint(&receiver.url, Some(&["sku-purchase.completed"])))
        .await
        .unwrap();
    let buyer = app.dev_client().await;
    let tx = buyer
        .create_purchase(&purchase("retry-1", "5512345678"))
        .await
        .unwrap()
        .value;
    let got = receiver.wait_for("four attempts", |g| g.len() >= 4).await;
    // The schedule [0, 200, 400, 800] ms: each wait at least the scheduled delay.
    let gaps: Vec<u128> = got
        .windows(2)
        .map(|w| (w[1].at - w[0].at).as_millis())
        .collect();
    for (gap, min) in gaps.iter().zip([200u128, 400, 800]) {
        assert!(*gap >= min - 5, "gaps {gaps:?} shorter than the schedule");
    }
    assert!(
        got.iter()
            .all(|r| header(r, "webhook-id") == header(&got[0], "webhook-id"))
    );
    let events = org
        .list_events(&[("purchaseId", tx.id.clone())])
        .await
        .unwrap();
    let detail = org.get_event(&events.data[0].id).await.unwrap();
    let codes: Vec<Option<u16>> = detail.attempts.iter().map(|a| a.status_code).collect();
    assert_eq!(codes, [Some(500), Some(503), Some(500), Some(200)]);
    assert!(detail.attempts[0].error.as_deref().unwrap().contains("500"));
    assert_eq!(detail.deliveries[0].status, "delivered");
    assert_eq!(detail.deliveries[0].attempts, 4);
    assert_eq!(detail.deliveries[0].endpoint_id, ep.id);

    // Redelivery on request: a new delivery, the same webhook-id.
    let again = org.redeliver_event(&detail.event.id, None).await.unwrap();
    assert_eq!(again.deliveries.len(), 1);
    let got = receiver.wait_for("the redelivery", |g| g.len() >= 5).await;
    assert_eq!(header(&got[4], "webhook-id"), detail.event.id);

    // A schedule that runs out fails the delivery for good (still logged).
    receiver.script(&[500, 500, 500, 500]);
    let tx2 = buyer
        .create_purchase(&purchase("retry-2", "5512345678"))
        .await
        .unwrap()
        .value;
    let events = org
        .list_events(&[("purchaseId", tx2.id.clone())])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = org.get_event(&events.data[0].id).await.unwrap();
        if d.deliveries.first().is_some_and(|d| d.status == "failed") {
            assert_eq!(d.attempts.len(), 4);
            break;
        }
        assert!(Instant::now() < deadline, "delivery never failed: {d:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    receiver.stop();
    app.stop().await;
}

#[tokio::test]
async fn a_410_disables_the_endpoint_and_connection_errors_are_retried() {
    let app = webhook_app(|_| {}).await;
    let receiver = Receiver::start().await;
    receiver.script(&[410]);
    let org = app.client(&app.dev.public_key, &app.dev.secret_key);
    let ep = org
        .create_webhook_endpoint(&endpoint(&receiver.url, None))
        .await
        .unwrap();
    // A second endpoint where nothing listens: connection refused, retried, logged.
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let dead = org
        .create_webhook_endpoint(&endpoint(&format!("http://{closed}/hook"), None))
        .await
        .unwrap();
    let buyer = app.dev_client().await;
    let tx = buyer
        .create_purchase(&purchase("gone-1", "5512345678"))
        .await
        .unwrap()
        .value;
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let e = org.get_webhook_endpoint(&ep.id).await.unwrap();
        if !e.enabled {
            assert!(e.disabled_reason.unwrap().contains("410"));
            break;
        }
        assert!(Instant::now() < deadline, "endpoint never disabled");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let events = org
        .list_events(&[("purchaseId", tx.id.clone())])
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let d = org.get_event(&events.data[0].id).await.unwrap();
        let dead_attempts: Vec<_> = d
            .attempts
            .iter()
            .filter(|a| a.endpoint_id == dead.id)
            .collect();
        if dead_attempts.len() >= 2 {
            assert!(dead_attempts.iter().all(|a| a.status_code.is_none()));
            assert!(
                dead_attempts[0]
                    .error
                    .as_deref()
                    .unwrap()
                    .contains("connect")
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no retries to the dead endpoint: {d:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // Nothing more goes to the disabled endpoint; redelivering to it is refused until it is
    // enabled again.
    let err = org
        .redeliver_event(&events.data[0].id, Some(&ep.id))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("WEBHOOK_ENDPOINT_DISABLED"));
    let enabled = org
        .update_webhook_endpoint(
            &ep.id,
            &UpdateWebhookEndpoint {
                enabled: Some(true),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(enabled.enabled && enabled.disabled_reason.is_none());
    org.redeliver_event(&events.data[0].id, Some(&ep.id))
        .await
        .unwrap();
    receiver
        .wait_for("the redelivery after re-enabling", |g| g.len() >= 2)
        .await;
    receiver.stop();
    app.stop().await;
}

#[tokio::test]
async fn during_a_rotation_both_signatures_verify_and_after_it_only_the_new_one() {
    let app = webhook_app(|c| c.webhooks.rotation_overlap_secs = 2).await;
    let receiver = Receiver::start().await;
    let org = app.client(&app.dev.public_key, &app.dev.secret_key);
    let ep = org
        .create_webhook_endpoint(&endpoint(&receiver.url, None))
        .await
        .unwrap();
    let old = ep.secret.unwrap();
    let rotated = org.rotate_webhook_secret(&ep.id).await.unwrap();
    let new = rotated.secret.unwrap();
    assert_ne!(old, new);
    assert!(rotated.previous_secret_expires_at.is_some());
    let buyer = app.dev_client().await;
    buyer
        .create_purchase(&purchase("rot-1", "5512345678"))
        .await
        .unwrap();
    let got = receiver.wait_for("a delivery", |g| !g.is_empty()).await;
    let now = now();
    verify(&new, &got[0], now).expect("new secret verifies");
    verify(&old, &got[0], now).expect("old secret verifies during the overlap");
    assert_eq!(header(&got[0], "webhook-signature").split(' ').count(), 2);

    tokio::time::sleep(Duration::from_millis(2_100)).await;
    buyer
        .create_purchase(&purchase("rot-2", "5512345678"))
        .await
        .unwrap();
    let got = receiver
        .wait_for("a second delivery", |g| g.len() >= 2)
        .await;
    let now = self::now();
    verify(&new, &got[1], now).expect("new secret verifies");
    assert_eq!(
        verify(&old, &got[1], now),
        Err(webhooks::VerifyError::NoMatch)
    );
    assert_eq!(header(&got[1], "webhook-signature").split(' ').count(), 1);
    receiver.stop();
    app.stop().await;
}

#[tokio::test]
async fn the_endpoint_api_refuses_bad_input_with_stable_codes() {
    let app = spawn_app_with(|c| c.webhooks.max_endpoints = 2).await;
    let org = app.client(&app.prod.public_key, &app.prod.secret_key);
    for (url, param) in [
        ("http://10.0.0.7/hook", "url"),
        ("http://192.168.1.10/hook", "url"),
        ("http://[fd00::1]/hook", "url"),
        ("http://169.254.169.254/latest", "url"),
        ("ftp://hooks.example.com/", "url"),
        ("not a url", "url"),
    ] {
        let err = org
            .create_webhook_endpoint(&endpoint(url, None))
            .await
            .unwrap_err();
        assert_eq!(err.code(), Some("INVALID_PARAMETER"), "{url}");
        assert!(matches!(&err, cobro_sdk::Error::Api { param: Some(p), .. } if p == param));
    }
    // This server listens on loopback only, so a loopback endpoint is accepted (what
    // `cobro webhook listen` relies on); a server on any other address refuses it
    // (webhooks::tests covers that policy).
    let local = org
        .create_webhook_endpoint(&endpoint("http://127.0.0.1:9/hook", None))
        .await
        .expect("loopback endpoint on a loopback-only server");
    org.delete_webhook_endpoint(&local.id)
        .await
        .expect("delete");
    let err = org
        .create_webhook_endpoint(&endpoint(
            "https://hooks.example.com/a",
            Some(&["sku-purchase.created"]),
        ))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, cobro_sdk::Error::Api { code, param: Some(p), .. } if code == "INVALID_PARAMETER" && p == "events")
    );
    let a = org
        .create_webhook_endpoint(&endpoint("https://hooks.example.com/a", None))
        .await
        .unwrap();
    org.create_webhook_endpoint(&endpoint("https://hooks.example.com/b", None))
        .await
        .unwrap();
    let err = org
        .create_webhook_endpoint(&endpoint("https://hooks.example.com/c", None))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("WEBHOOK_ENDPOINT_LIMIT"));
    assert_eq!(err.status(), Some(409));
    assert_eq!(org.list_webhook_endpoints().await.unwrap().total, 2);
    // Another environment's key sees none of them.
    let dev_org = app.client(&app.dev.public_key, &app.dev.secret_key);
    assert_eq!(dev_org.list_webhook_endpoints().await.unwrap().total, 0);
    assert_eq!(
        dev_org
            .get_webhook_endpoint(&a.id)
            .await
            .unwrap_err()
            .code(),
        Some("WEBHOOK_ENDPOINT_NOT_FOUND")
    );
    // A customer JWT cannot manage endpoints.
    let token = app.token(&app.prod, "customer-1").await;
    let customer = app.client(&app.prod.public_key, &token);
    assert_eq!(
        customer.list_webhook_endpoints().await.unwrap_err().code(),
        Some("SECRET_KEY_REQUIRED")
    );
    // PATCH changes only what it names; DELETE is final.
    let patched = org
        .update_webhook_endpoint(
            &a.id,
            &UpdateWebhookEndpoint {
                events: Some(vec!["sku-purchase.failed".into()]),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(patched.events, ["sku-purchase.failed"]);
    assert_eq!(patched.url, "https://hooks.example.com/a");
    let err = org
        .update_webhook_endpoint(
            &a.id,
            &UpdateWebhookEndpoint {
                url: Some("http://10.0.0.1/".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("INVALID_PARAMETER"));
    assert!(org.delete_webhook_endpoint(&a.id).await.unwrap().deleted);
    assert_eq!(
        org.delete_webhook_endpoint(&a.id).await.unwrap_err().code(),
        Some("WEBHOOK_ENDPOINT_NOT_FOUND")
    );
    assert_eq!(
        org.get_event("evt_nope").await.unwrap_err().code(),
        Some("EVENT_NOT_FOUND")
    );
    let err = org
        .list_events(&[("type", "nope".to_string())])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("INVALID_PARAMETER"));
    app.stop().await;
}
