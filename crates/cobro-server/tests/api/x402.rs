//! x402 in the server: the facilitator routes, the paid catalog route paid by our client, and
//! replay protection that holds under concurrency and across a restart (durable nonces in the
//! server's own database, SQLite or PostgreSQL).

use cobro_x402::{ClientConfig, X402Client};
use serde_json::Value;

use crate::common::*;

const KEY: &str = "0x1234567890abcdef";
const PUBLIC_KEY: &str = "0x2abbefdcbf731195ee2acd186441eb536e86f888327b3655cffbd07b57dbf26";
const ACCOUNT: &str = "0x1234";
const PAY_TO: &str = "0x5678";

async fn x402_app() -> TestApp {
    spawn_app_with(|c| {
        c.x402.enabled = true;
        c.x402.pay_to = PAY_TO.into();
        c.x402.price = "10000".into();
        c.x402.accounts = vec![cobro_x402::AccountKey {
            address: ACCOUNT.into(),
            public_key: PUBLIC_KEY.into(),
        }];
    })
    .await
}

fn payer() -> X402Client {
    X402Client::new(&ClientConfig {
        private_key: KEY.into(),
        account_address: ACCOUNT.into(),
        max_amount: 1_000_000,
        allowed_recipients: vec![PAY_TO.into()],
    })
    .expect("client")
}

/// A fresh payment header for the paid route, built from its 402 answer.
async fn payment_header(http: &reqwest::Client, url: &str) -> (&'static str, String) {
    let resp = http.get(url).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 402);
    let headers = resp.headers().clone();
    let body = resp.bytes().await.expect("body");
    let (name, value, _) = payer().payment_for(&headers, &body, None).expect("payable");
    (name, value)
}

#[tokio::test]
async fn the_paid_route_is_paid_by_our_client_and_a_payment_is_accepted_once() {
    let mut app = x402_app().await;
    let http = reqwest::Client::new();
    let supported: Value = http
        .get(format!("{}/x402/supported", app.url))
        .send()
        .await
        .expect("send")
        .json()
        .await
        .expect("json");
    assert!(!supported["kinds"].as_array().expect("kinds").is_empty());

    // Unpaid: 402 with the requirements, in every dialect the client can read.
    let url = format!("{}/v1/paid/catalog", app.url);
    let resp = http.get(&url).send().await.expect("send");
    assert_eq!(resp.status().as_u16(), 402);
    assert!(resp.headers().contains_key("payment-required"));

    // Our client pays; the handler sees the payer.
    let paid = payer().get(&url).await.expect("paid");
    assert_eq!(paid.status, 200, "{}", String::from_utf8_lossy(&paid.body));
    let body: Value = serde_json::from_slice(&paid.body).expect("json");
    assert_eq!(body["paidBy"], ACCOUNT);
    assert_eq!(
        body["skus"].as_array().expect("skus").len(),
        app.app().catalog().len()
    );
    assert!(paid.settlement.as_ref().is_some_and(|s| s.success));

    // The same header twice at once: one is served.
    let (name, value) = payment_header(&http, &url).await;
    let send = || http.get(&url).header(name, value.clone()).send();
    let (a, b) = tokio::join!(send(), send());
    let mut codes = [
        a.expect("a").status().as_u16(),
        b.expect("b").status().as_u16(),
    ];
    codes.sort_unstable();
    assert_eq!(codes, [200, 402], "a payment is accepted once");

    // A fresh payment, served; then the server restarts on the same database and the same
    // header is refused: nonces are durable.
    let (name, value) = payment_header(&http, &url).await;
    let first = http
        .get(&url)
        .header(name, &value)
        .send()
        .await
        .expect("send");
    assert_eq!(first.status().as_u16(), 200);
    let server = app.server.take().expect("running");
    server.shutdown().await.expect("shutdown");
    let restarted = cobro_server::start(app.config.clone(), app.store.clone())
        .await
        .expect("restart");
    app.url = restarted.url();
    app.server = Some(restarted);
    let url = format!("{}/v1/paid/catalog", app.url);
    let replay = http
        .get(&url)
        .header(name, &value)
        .send()
        .await
        .expect("send");
    assert_eq!(replay.status().as_u16(), 402, "replayed after a restart");
    let body: Value = replay.json().await.expect("json");
    let text = body.to_string();
    assert!(
        text.contains("nonce_already_used") || text.contains("duplicate_settlement"),
        "{text}"
    );
    app.stop().await;
}

#[tokio::test]
async fn the_facilitator_routes_are_off_by_default() {
    let app = spawn_app().await;
    let resp = reqwest::get(format!("{}/x402/supported", app.url))
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 404);
    let resp = reqwest::get(format!("{}/v1/paid/catalog", app.url))
        .await
        .expect("send");
    assert_eq!(resp.status().as_u16(), 404);
    app.stop().await;
}
