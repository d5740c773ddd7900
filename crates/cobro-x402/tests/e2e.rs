//! Middleware + client end to end, and the JSON-RPC backend / verifier against the stand-in.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use axum::routing::get;
use axum::{Extension, Router};
use cobro_x402::client::{ClientConfig, ClientError, X402Client};
use cobro_x402::middleware::{Payer, PaymentLayer, Price, RequiredHeader, SettleMode};
use cobro_x402::testing::StandIn;
use cobro_x402::typed_data::*;
use cobro_x402::wire::Dialect;
use cobro_x402::{Facilitator, Felt, MemoryStore, PaymentState, PaymentStore, X402Config};
use common::*;
use reqwest::header::HeaderMap;

async fn paid(Extension(p): Extension<Payer>) -> String {
    p.address
}

struct App {
    url: String,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for App {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn app(layer: PaymentLayer) -> App {
    let router = Router::new()
        .route("/paid", get(paid).layer(layer))
        .route("/free", get(|| async { "free" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let task = tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    App {
        url: format!("http://{addr}"),
        task,
    }
}

fn client(max: u128, allow: &[&str]) -> X402Client {
    X402Client::new(&ClientConfig {
        private_key: KEY.into(),
        account_address: PAYER.into(),
        max_amount: max,
        allowed_recipients: allow.iter().map(|s| s.to_string()).collect(),
    })
    .unwrap()
}

#[tokio::test]
async fn client_pays_in_each_dialect_and_handler_sees_payer() {
    for mode in [
        SettleMode::Before,
        SettleMode::After,
        SettleMode::VerifyOnly,
    ] {
        let layer = PaymentLayer::from_config(facilitator(), &config()).mode(mode);
        let a = app(layer).await;
        let c = client(1_000_000, &[PAY_TO]);
        for d in [Dialect::X402V2, Dialect::X402V1, Dialect::ChipiV1] {
            let r = c
                .request_with(
                    reqwest::Method::GET,
                    &format!("{}/paid", a.url),
                    HeaderMap::new(),
                    None,
                    Some(d),
                )
                .await
                .unwrap();
            assert_eq!(
                r.status,
                200,
                "{mode:?} {d:?} {}",
                String::from_utf8_lossy(&r.body)
            );
            assert_eq!(r.body, b"0x1234");
            assert_eq!(r.paid_with, Some(d));
            let s = r.settlement.expect("payment response header");
            assert!(s.success);
            if mode != SettleMode::VerifyOnly {
                assert!(s.transaction.starts_with("0x"));
            }
            let want_header = if d == Dialect::X402V2 {
                "payment-response"
            } else {
                "x-payment-response"
            };
            assert!(r.headers.iter().any(|(k, _)| k == want_header), "{d:?}");
        }
        // Default preference is v2.
        let r = c.get(&format!("{}/paid", a.url)).await.unwrap();
        assert_eq!(r.paid_with, Some(Dialect::X402V2));
    }
}

#[tokio::test]
async fn the_402_answer_serves_all_dialects() {
    let a = app(PaymentLayer::from_config(facilitator(), &config()).description("demo")).await;
    let r = reqwest::get(format!("{}/paid", a.url)).await.unwrap();
    assert_eq!(r.status(), 402);
    let h: serde_json::Value =
        serde_json::from_str(r.headers()["payment-required"].to_str().unwrap()).unwrap();
    assert_eq!(h["network"], "starknet-mainnet");
    assert_eq!(h["maxAmountRequired"], "10000");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["x402Version"], 1);
    assert_eq!(body["accepts"][0]["payTo"], PAY_TO);
    assert_eq!(body["paymentRequirement"]["scheme"], "exact");
    assert_eq!(
        body["paymentRequiredV2"]["accepts"][0]["network"],
        "starknet:SN_MAIN"
    );
    // Standard v2 header form.
    let a2 = app(PaymentLayer::from_config(facilitator(), &config())
        .required_header(RequiredHeader::V2Base64))
    .await;
    let r = reqwest::get(format!("{}/paid", a2.url)).await.unwrap();
    let v: serde_json::Value =
        cobro_x402::wire::decode_header_json(r.headers()["payment-required"].to_str().unwrap())
            .unwrap();
    assert_eq!(v["x402Version"], 2);
    assert_eq!(v["accepts"][0]["amount"], "10000");
    let c = client(1_000_000, &[]);
    assert_eq!(
        c.get(&format!("{}/paid", a2.url)).await.unwrap().status,
        200
    );
    assert_eq!(
        reqwest::get(format!("{}/free", a.url))
            .await
            .unwrap()
            .text()
            .await
            .unwrap(),
        "free"
    );
}

#[tokio::test]
async fn replayed_header_is_served_once_in_every_mode() {
    for mode in [
        SettleMode::Before,
        SettleMode::After,
        SettleMode::VerifyOnly,
    ] {
        let a = app(PaymentLayer::from_config(facilitator(), &config()).mode(mode)).await;
        let url = format!("{}/paid", a.url);
        let first = reqwest::get(&url).await.unwrap();
        let hdrs = first.headers().clone();
        let body = first.bytes().await.unwrap();
        let c = client(1_000_000, &[]);
        for d in [Dialect::X402V2, Dialect::X402V1, Dialect::ChipiV1] {
            let (name, value, _) = c.payment_for(&hdrs, &body, Some(d)).unwrap();
            let http = reqwest::Client::new();
            // Sequential replay.
            let s1 = http
                .get(&url)
                .header(name, &value)
                .send()
                .await
                .unwrap()
                .status();
            let s2 = http
                .get(&url)
                .header(name, &value)
                .send()
                .await
                .unwrap()
                .status();
            assert_eq!((s1.as_u16(), s2.as_u16()), (200, 402), "{mode:?} {d:?}");
            // Concurrent replay of a fresh header.
            let (name, value, _) = c.payment_for(&hdrs, &body, Some(d)).unwrap();
            let mut tasks = Vec::new();
            for _ in 0..8 {
                let (http, url, value) = (http.clone(), url.clone(), value.clone());
                tasks.push(tokio::spawn(async move {
                    http.get(&url)
                        .header(name, value)
                        .send()
                        .await
                        .unwrap()
                        .status()
                        .as_u16()
                }));
            }
            let mut ok = 0;
            for t in tasks {
                if t.await.unwrap() == 200 {
                    ok += 1;
                }
            }
            assert_eq!(ok, 1, "{mode:?} {d:?}");
        }
    }
}

#[tokio::test]
async fn client_limits_and_dynamic_price() {
    let price = Price::Dynamic(Arc::new(|parts: &axum::http::request::Parts| {
        if parts.uri.query() == Some("big") {
            Some(5_000_000)
        } else {
            None
        }
    }));
    let layer = PaymentLayer::new(facilitator(), PAY_TO, ASSET, price);
    let a = app(layer).await;
    let c = client(1_000_000, &[PAY_TO]);
    // Free when the price function says so (the handler then has no Payer: 500 from axum's extractor).
    let r = c.get(&format!("{}/paid", a.url)).await.unwrap();
    assert_ne!(r.status, 402);
    match c.get(&format!("{}/paid?big", a.url)).await {
        Err(ClientError::AmountTooHigh {
            required: 5_000_000,
            max: 1_000_000,
        }) => {}
        other => panic!("{other:?}"),
    }
    let c2 = client(10_000_000, &["0x9999"]);
    assert!(matches!(
        c2.get(&format!("{}/paid?big", a.url)).await,
        Err(ClientError::RecipientNotAllowed(_))
    ));
    let r = client(10_000_000, &[])
        .get(&format!("{}/paid?big", a.url))
        .await
        .unwrap();
    assert_eq!(r.status, 200);
    // The CLI entry point.
    let r = cobro_x402::pay(
        &format!("{}/paid?big", a.url),
        KEY,
        PAYER,
        5_000_000,
        &[PAY_TO.to_string()],
    )
    .await
    .unwrap();
    assert_eq!(r.status, 200);
}

#[tokio::test]
async fn bad_payment_gets_402_with_reason() {
    let a = app(PaymentLayer::from_config(facilitator(), &config())).await;
    let r = reqwest::Client::new()
        .get(format!("{}/paid", a.url))
        .header("x-payment", "%%%")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 402);
    let b: serde_json::Value = r.json().await.unwrap();
    assert_eq!(b["error"], "invalid_payload");
    // A wrong key: invalid_signature.
    let other = X402Client::new(&ClientConfig {
        private_key: "0x42".into(),
        account_address: PAYER.into(),
        max_amount: u128::MAX,
        allowed_recipients: vec![],
    })
    .unwrap();
    let r = other.get(&format!("{}/paid", a.url)).await.unwrap();
    assert_eq!(r.status, 402);
    let b: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
    assert_eq!(b["error"], "invalid_signature");
}

// ---------- JSON-RPC ----------

const RELAYER: &str = "0x7e1a7e1";
const RELAYER_KEY: &str = "0x5eed";

fn rpc_config(url: &str) -> X402Config {
    X402Config {
        settlement: "rpc".into(),
        rpc_url: url.into(),
        accounts: vec![],
        relayer_address: RELAYER.into(),
        relayer_private_key: RELAYER_KEY.into(),
        confirm_timeout_ms: 300,
        poll_interval_ms: 20,
        ..config()
    }
}

async fn standin() -> StandIn {
    let s = StandIn::start("SN_MAIN").await.unwrap();
    s.add_account(f(PAYER), vec![public_key(&f(KEY))]);
    s.add_account(f(RELAYER), vec![public_key(&f(RELAYER_KEY))]);
    s
}

#[tokio::test]
async fn rpc_verification_reads_key_or_calls_is_valid_signature() {
    let s = standin().await;
    let fac = Facilitator::new(&rpc_config(&s.url), Arc::new(MemoryStore::new())).unwrap();
    // Public key read from the chain, then cached.
    assert!(
        fac.verify(&chipi_payload(&P::default()), &requirements(10_000, false))
            .await
            .is_valid
    );
    assert!(
        fac.verify(&v2_payload(&P::default()), &requirements(10_000, true))
            .await
            .is_valid
    );
    let calls = s
        .with(|st| st.calls.iter().filter(|m| *m == "starknet_call").count())
        .unwrap();
    assert_eq!(calls, 1, "public key should be cached");
    // Wrong key: rejected (after asking the account too).
    let v = fac
        .verify(
            &chipi_payload(&P {
                key: f("0x42"),
                ..P::default()
            }),
            &requirements(10_000, false),
        )
        .await;
    assert_eq!(v.invalid_reason.as_deref(), Some("invalid_signature"));
    // A 2-of-2 multisig account: 4-felt signature, only is_valid_signature can check it.
    let (k1, k2) = (f("0xaaa"), f("0xbbb"));
    let multi = f("0x3333");
    s.add_account(multi, vec![public_key(&k1), public_key(&k2)]);
    let p = P {
        from: multi,
        ..P::default()
    };
    let oe = oe_of(&p);
    let h = outside_execution_hash(&oe, multi, chain_id("SN_MAIN").unwrap());
    let (r1, s1) = sign_hash(&k1, &h).unwrap();
    let (r2, s2) = sign_hash(&k2, &h).unwrap();
    let good = v2_payload_signed(&p, &oe, vec![r1, s1, r2, s2], None);
    assert!(
        fac.verify(&good, &requirements(10_000, true))
            .await
            .is_valid
    );
    let bad = v2_payload_signed(&p, &oe, vec![r1, s1, r1, s1], None);
    assert_eq!(
        fac.verify(&bad, &requirements(10_000, true))
            .await
            .invalid_reason
            .as_deref(),
        Some("invalid_signature")
    );
    // Multisig settles through execute_from_outside_v2 with the whole signature.
    let st = fac.settle(&good, &requirements(10_000, true)).await;
    assert!(st.success, "{st:?}");
}

#[tokio::test]
async fn rpc_settlement_both_kinds_and_duplicates() {
    let s = standin().await;
    let fac = Facilitator::new(&rpc_config(&s.url), Arc::new(MemoryStore::new())).unwrap();
    for (p, req) in [
        (v2_payload(&P::default()), requirements(10_000, true)),
        (chipi_payload(&P::default()), requirements(10_000, false)),
    ] {
        let st = fac.settle(&p, &req).await;
        assert!(st.success, "{st:?}");
        let h = f(&st.transaction);
        let receipt = s.with(|x| x.receipts.get(&h).cloned()).unwrap().unwrap();
        assert_eq!(receipt["execution_status"], "SUCCEEDED");
        assert_eq!(receipt["events"][0]["keys"][2], "0x5678");
        let again = fac.settle(&p, &req).await;
        assert_eq!(again.error_reason.as_deref(), Some("duplicate_settlement"));
        assert_eq!(again.transaction, st.transaction);
    }
    // The relayer's nonce advanced once per settlement.
    assert_eq!(
        s.with(|x| x.nonces.get(&f(RELAYER)).copied()).unwrap(),
        Some(Felt::TWO)
    );
}

#[tokio::test]
async fn rpc_pending_then_resume_and_revert() {
    let s = standin().await;
    let store = Arc::new(MemoryStore::new());
    let fac = Facilitator::new(&rpc_config(&s.url), store.clone()).unwrap();
    s.with(|x| x.withhold_receipts = true);
    let p = v2_payload(&P::default());
    let st = fac.settle(&p, &requirements(10_000, true)).await;
    assert!(!st.success);
    assert_eq!(st.error_reason.as_deref(), Some("settlement_pending"));
    assert!(st.transaction.starts_with("0x"));
    let payer_nonce = store.list_unfinished().await.unwrap();
    assert_eq!(payer_nonce.len(), 1);
    assert_eq!(payer_nonce[0].state, PaymentState::Submitted);
    // Restart: a new facilitator over the same store resolves it once the chain has it.
    let fac2 = Facilitator::new(&rpc_config(&s.url), store.clone()).unwrap();
    assert_eq!(fac2.resume().await.unwrap().pending, 1);
    s.release();
    let rep = fac2.resume().await.unwrap();
    assert_eq!(rep.settled, 1);
    let rec = store
        .get(&payer_nonce[0].payer, &payer_nonce[0].nonce)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, PaymentState::Settled);
    assert_eq!(rec.tx_hash.as_deref(), Some(st.transaction.as_str()));
    // A replay now carries the original hash.
    let again = fac2.settle(&p, &requirements(10_000, true)).await;
    assert_eq!(again.error_reason.as_deref(), Some("duplicate_settlement"));
    assert_eq!(again.transaction, st.transaction);
    // Reverted transactions are failures, never success.
    s.with(|x| x.revert = true);
    let st = fac2
        .settle(&v2_payload(&P::default()), &requirements(10_000, true))
        .await;
    assert_eq!(st.error_reason.as_deref(), Some("unexpected_settle_error"));
    assert!(!st.error_message.unwrap_or_default().contains("rpc"));
}

#[tokio::test]
async fn middleware_with_rpc_backend_end_to_end() {
    let s = standin().await;
    let cfg = rpc_config(&s.url);
    let fac = Facilitator::new(&cfg, Arc::new(MemoryStore::new())).unwrap();
    let a = app(PaymentLayer::from_config(fac, &cfg)).await;
    let r = client(1_000_000, &[PAY_TO])
        .get(&format!("{}/paid", a.url))
        .await
        .unwrap();
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    let tx = r.settlement.unwrap().transaction;
    assert!(s.with(|x| x.receipts.contains_key(&f(&tx))).unwrap());
}

#[tokio::test]
async fn settle_after_and_verify_only_run_the_handler_once_for_concurrent_replays() {
    use std::sync::atomic::{AtomicUsize, Ordering};
    for mode in [
        SettleMode::After,
        SettleMode::VerifyOnly,
        SettleMode::Before,
    ] {
        let hits = Arc::new(AtomicUsize::new(0));
        let h2 = hits.clone();
        let handler = move || {
            let h = h2.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                "ok"
            }
        };
        let router = Router::new().route(
            "/paid",
            get(handler).layer(PaymentLayer::from_config(facilitator(), &config()).mode(mode)),
        );
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/paid", listener.local_addr().unwrap());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let server = tokio::spawn(async move {
            axum::serve(listener, router)
                .with_graceful_shutdown(async {
                    let _ = rx.await;
                })
                .await
        });
        let first = reqwest::get(&url).await.unwrap();
        let (hdrs, body) = (first.headers().clone(), first.bytes().await.unwrap());
        let (name, value, _) = client(1_000_000, &[])
            .payment_for(&hdrs, &body, None)
            .unwrap();
        let http = reqwest::Client::new();
        let mut tasks = Vec::new();
        for _ in 0..8 {
            let (http, url, value) = (http.clone(), url.clone(), value.clone());
            tasks.push(tokio::spawn(async move {
                http.get(&url)
                    .header(name, value)
                    .send()
                    .await
                    .unwrap()
                    .status()
                    .as_u16()
            }));
        }
        let mut ok = 0;
        for t in tasks {
            ok += usize::from(t.await.unwrap() == 200);
        }
        assert_eq!((ok, hits.load(Ordering::SeqCst)), (1, 1), "{mode:?}");
        let _ = tx.send(());
        server.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn standalone_facilitator_serves_and_stops() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(cobro_x402::serve_with_shutdown(
        facilitator(),
        listener,
        async {
            let _ = rx.await;
        },
    ));
    for prefix in ["", "/x402"] {
        let r = reqwest::get(format!("http://{addr}{prefix}/supported"))
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
    }
    let _ = tx.send(());
    server.await.unwrap().unwrap();
}
