//! Facilitator checks, replay protection, HTTP router.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::sync::Arc;

use cobro_x402::wire::{PaymentPayload, PaymentRequirements};
use cobro_x402::{Facilitator, Felt, MemoryStore, PaymentState, X402Config, now_unix};
use common::*;
use serde_json::json;

async fn reason(f: &Facilitator, p: &PaymentPayload, r: &PaymentRequirements) -> String {
    let v = f.verify(p, r).await;
    assert!(!v.is_valid, "expected a refusal");
    v.invalid_reason.unwrap()
}

#[tokio::test]
async fn valid_payments_verify_in_both_payload_kinds() {
    let f = facilitator();
    let v = f
        .verify(&chipi_payload(&P::default()), &requirements(10_000, false))
        .await;
    assert!(v.is_valid, "{v:?}");
    assert_eq!(v.payer.as_deref(), Some("0x1234"));
    let v = f
        .verify(&v2_payload(&P::default()), &requirements(10_000, true))
        .await;
    assert!(v.is_valid, "{v:?}");
    // Chipi allows paying more than asked; the v2 exact scheme does not.
    let over = P {
        amount: 20_000,
        ..P::default()
    };
    assert!(
        f.verify(&chipi_payload(&over), &requirements(10_000, false))
            .await
            .is_valid
    );
    assert_eq!(
        reason(&f, &v2_payload(&over), &requirements(10_000, true)).await,
        "invalid_payload"
    );
}

#[tokio::test]
async fn variant_b_signatures_are_accepted() {
    use cobro_x402::typed_data::*;
    let f = facilitator();
    let p = P::default();
    let m = PaymentMessage {
        from_address: p.from,
        to_address: p.to,
        amount_low: p.amount,
        amount_high: 0,
        asset: p.asset,
        valid_until: u128::from(p.valid_until),
        nonce: p.nonce,
    };
    let h = payment_message_hash(&m, chain_id("SN_MAIN").unwrap(), DomainVariant::B);
    let (r, s) = sign_hash(&p.key, &h).unwrap();
    let mut pl = chipi_payload(&p);
    pl.payload["signature"] = json!({"r": felt_hex(&r), "s": s.to_string()});
    assert!(f.verify(&pl, &requirements(10_000, false)).await.is_valid);
}

#[tokio::test]
async fn tampering_with_any_field_is_rejected() {
    let f = facilitator();
    let req = requirements(10_000, false);
    let base = chipi_payload(&P::default());
    let fields: [(&str, serde_json::Value); 7] = [
        ("fromAddress", json!("0x1235")),
        ("toAddress", json!("0x5679")),
        ("amount", json!("10001")),
        (
            "asset",
            json!("0x53c91253bc9682c04929ca02ed00b3e423f6710d2ee7e0d5ebb06f3ecf368a8"),
        ),
        ("validUntil", json!(now_unix() + 121)),
        ("nonce", json!("0x99")),
        ("signature", json!({"r": "0x1", "s": "0x2"})),
    ];
    for (k, v) in fields {
        let mut p = base.clone();
        p.payload[k] = v;
        let r = f.verify(&p, &req).await;
        assert!(!r.is_valid, "tampered {k} accepted");
    }
    // v2: each part of the outside execution.
    let base = v2_payload(&P::default());
    let req = requirements(10_000, true);
    let edits: [(&str, serde_json::Value); 6] = [
        ("/from", json!("0x1235")),
        ("/outsideExecution/nonce", json!("0x77")),
        ("/outsideExecution/executeBefore", json!(now_unix() + 100)),
        ("/outsideExecution/caller", json!("0x1")),
        ("/outsideExecution/calls/0/calldata/0", json!("0x5679")),
        ("/signature/0", json!("0x1")),
    ];
    for (ptr, v) in edits {
        let mut p = base.clone();
        *p.payload.pointer_mut(ptr).unwrap() = v;
        assert!(
            !f.verify(&p, &req).await.is_valid,
            "tampered {ptr} accepted"
        );
    }
}

#[tokio::test]
async fn every_check_has_its_reason() {
    let f = facilitator();
    let r1 = requirements(10_000, false);
    let r2 = requirements(10_000, true);
    let now = now_unix();
    let cases: Vec<(&str, PaymentPayload, &PaymentRequirements)> = vec![
        (
            "payment_expired",
            chipi_payload(&P {
                valid_until: now - 1,
                ..P::default()
            }),
            &r1,
        ),
        (
            "payment_expired",
            v2_payload(&P {
                valid_until: now - 1,
                ..P::default()
            }),
            &r2,
        ),
        (
            "invalid_payload",
            chipi_payload(&P {
                valid_until: now + 3600,
                ..P::default()
            }),
            &r1,
        ),
        (
            "invalid_payload",
            v2_payload(&P {
                valid_until: now + 3600,
                ..P::default()
            }),
            &r2,
        ),
        (
            "recipient_mismatch",
            chipi_payload(&P {
                to: f_("0x9999"),
                ..P::default()
            }),
            &r1,
        ),
        (
            "recipient_mismatch",
            v2_payload(&P {
                to: f_("0x9999"),
                ..P::default()
            }),
            &r2,
        ),
        (
            "insufficient_amount",
            chipi_payload(&P {
                amount: 9_999,
                ..P::default()
            }),
            &r1,
        ),
        (
            "insufficient_amount",
            v2_payload(&P {
                amount: 9_999,
                ..P::default()
            }),
            &r2,
        ),
        (
            "asset_mismatch",
            chipi_payload(&P {
                asset: f_("0x4718f5a0fc34cc1af16a1cdee98ffb20c31f5cd61d6ab07201858f4287c938d"),
                ..P::default()
            }),
            &r1,
        ),
        (
            "asset_mismatch",
            v2_payload(&P {
                asset: f_("0x4718f5a0fc34cc1af16a1cdee98ffb20c31f5cd61d6ab07201858f4287c938d"),
                ..P::default()
            }),
            &r2,
        ),
        // Signed for another chain: the signature does not verify here.
        (
            "invalid_signature",
            chipi_payload(&P {
                chain: "SN_SEPOLIA",
                ..P::default()
            }),
            &r1,
        ),
        (
            "invalid_signature",
            v2_payload(&P {
                chain: "SN_SEPOLIA",
                ..P::default()
            }),
            &r2,
        ),
        (
            "invalid_signature",
            chipi_payload(&P {
                key: f_("0x42"),
                ..P::default()
            }),
            &r1,
        ),
    ];
    for (want, p, r) in cases {
        assert_eq!(reason(&f, &p, r).await, want, "{p:?}");
    }
    // Wrong network names.
    let mut p = chipi_payload(&P::default());
    p.network = Some("starknet-sepolia".into());
    assert_eq!(reason(&f, &p, &r1).await, "invalid_network");
    let mut sep = r1.clone();
    sep.network = "starknet-sepolia".into();
    assert_eq!(reason(&f, &p, &sep).await, "invalid_network");
    p.network = Some("base".into());
    assert_eq!(reason(&f, &p, &r1).await, "invalid_network");
    // Declared chain id differs.
    let pp = P::default();
    let oe = oe_of(&pp);
    let h =
        cobro_x402::typed_data::outside_execution_hash(&oe, pp.from, f_("0x534e5f5345504f4c4941"));
    let (r, s) = cobro_x402::typed_data::sign_hash(&pp.key, &h).unwrap();
    let p = v2_payload_signed(&pp, &oe, vec![r, s], Some("SN_SEPOLIA"));
    assert_eq!(reason(&f, &p, &r2).await, "invalid_network");
    // Version and scheme.
    let mut p = chipi_payload(&P::default());
    p.x402_version = 3;
    assert_eq!(reason(&f, &p, &r1).await, "invalid_x402_version");
    let mut p = chipi_payload(&P::default());
    p.scheme = Some("upto".into());
    assert_eq!(reason(&f, &p, &r1).await, "invalid_scheme");
    // Garbage payload.
    let mut p = chipi_payload(&P::default());
    p.payload = json!({"hello": 1});
    assert_eq!(reason(&f, &p, &r1).await, "invalid_payload");
    // Two calls in an outside execution.
    let pp = P::default();
    let mut oe = oe_of(&pp);
    oe.calls.push(oe.calls[0].clone());
    let h = cobro_x402::typed_data::outside_execution_hash(&oe, pp.from, f_("0x534e5f4d41494e"));
    let (r, s) = cobro_x402::typed_data::sign_hash(&pp.key, &h).unwrap();
    assert_eq!(
        reason(&f, &v2_payload_signed(&pp, &oe, vec![r, s], None), &r2).await,
        "invalid_payload"
    );
}

fn f_(s: &str) -> Felt {
    common::f(s)
}

#[tokio::test]
async fn unknown_account_without_rpc_fails_closed() {
    let cfg = X402Config {
        accounts: vec![],
        ..config()
    };
    let f = Facilitator::new(&cfg, Arc::new(MemoryStore::new())).unwrap();
    let v = f
        .verify(&chipi_payload(&P::default()), &requirements(10_000, false))
        .await;
    assert!(!v.is_valid);
    assert_eq!(v.invalid_reason.as_deref(), Some("invalid_signature"));
    assert!(!v.invalid_message.unwrap().contains("rpc error"));
}

#[tokio::test]
async fn settle_once_then_duplicate_with_original_hash() {
    let f = facilitator();
    let req = requirements(10_000, false);
    let p = chipi_payload(&P::default());
    let s1 = f.settle(&p, &req).await;
    assert!(s1.success, "{s1:?}");
    assert!(s1.transaction.starts_with("0x"));
    let s2 = f.settle(&p, &req).await;
    assert!(!s2.success);
    assert_eq!(s2.error_reason.as_deref(), Some("duplicate_settlement"));
    assert_eq!(s2.transaction, s1.transaction);
    // verify refuses a settled nonce.
    let v = f.verify(&p, &req).await;
    assert_eq!(v.invalid_reason.as_deref(), Some("nonce_already_used"));
    let rec = f
        .store()
        .get(
            "0x1234",
            &serde_json::from_value::<String>(p.payload["nonce"].clone()).unwrap(),
        )
        .await
        .unwrap()
        .unwrap();
    assert_eq!(rec.state, PaymentState::Settled);
}

#[tokio::test]
async fn concurrent_replays_settle_once() {
    for payload in [chipi_payload(&P::default()), v2_payload(&P::default())] {
        let f = facilitator();
        let req = if payload.x402_version == 2 {
            requirements(10_000, true)
        } else {
            requirements(10_000, false)
        };
        let mut tasks = Vec::new();
        for _ in 0..16 {
            let (f, p, r) = (f.clone(), payload.clone(), req.clone());
            tasks.push(tokio::spawn(async move { f.settle(&p, &r).await }));
        }
        let mut ok = 0;
        let mut hashes = std::collections::HashSet::new();
        for t in tasks {
            let s = t.await.unwrap();
            if s.success {
                ok += 1;
            } else {
                assert_eq!(s.error_reason.as_deref(), Some("duplicate_settlement"));
            }
            hashes.insert(s.transaction);
        }
        assert_eq!(ok, 1);
        hashes.remove("");
        assert!(hashes.len() <= 1);
    }
}

#[tokio::test]
async fn verify_and_reserve_consumes_the_nonce_once_even_concurrently() {
    let f = facilitator();
    let req = requirements(10_000, false);
    let p = chipi_payload(&P::default());
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let (f, p, r) = (f.clone(), p.clone(), req.clone());
        tasks.push(tokio::spawn(async move {
            f.verify_and_reserve(&p, &r).await.is_ok()
        }));
    }
    let mut ok = 0;
    for t in tasks {
        ok += usize::from(t.await.unwrap());
    }
    assert_eq!(ok, 1);
    assert_eq!(
        f.settle(&p, &req).await.error_reason.as_deref(),
        Some("duplicate_settlement")
    );
}

#[tokio::test]
async fn http_router_verify_settle_supported() {
    let f = facilitator();
    let app = axum::Router::new().nest("/x402", cobro_x402::router(f));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let http = reqwest::Client::new();
    let base = format!("http://{addr}/x402");
    let sup: serde_json::Value = http
        .get(format!("{base}/supported"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(sup["kinds"][1]["network"], "starknet:SN_MAIN");
    let body = json!({"x402Version": 2, "paymentPayload": v2_payload(&P::default()), "paymentRequirements": requirements(10_000, true).to_v2_json()});
    let v: serde_json::Value = http
        .post(format!("{base}/verify"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(v["isValid"], true, "{v}");
    let s: serde_json::Value = http
        .post(format!("{base}/settle"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s["success"], true, "{s}");
    assert_eq!(s["network"], "starknet:SN_MAIN");
    let s2: serde_json::Value = http
        .post(format!("{base}/settle"))
        .json(&body)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(s2["errorReason"], "duplicate_settlement");
    assert_eq!(s2["transaction"], s["transaction"]);
    let bad = http
        .post(format!("{base}/verify"))
        .body("{}")
        .header("content-type", "application/json")
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 400);
    let bad: serde_json::Value = bad.json().await.unwrap();
    assert_eq!(bad["invalidReason"], "invalid_payload");
    server.abort();
}

#[tokio::test]
async fn config_validation_and_toml_names() {
    let cfg: X402Config = serde_json::from_value(json!({
        "enabled": true, "network": "SN_SEPOLIA", "settlement": "sandbox", "rpc_url": "http://127.0.0.1:5050",
        "accounts": [{"address": "0x1", "public_key": "0x2"}]
    }))
    .unwrap();
    cfg.validate().unwrap();
    assert!(serde_json::from_value::<X402Config>(json!({"bogus": 1})).is_err());
    let bad = X402Config {
        network: "SN_GOERLI".into(),
        ..X402Config::default()
    };
    assert_eq!(bad.validate().unwrap_err().key, "network");
    let bad = X402Config {
        settlement: "rpc".into(),
        ..X402Config::default()
    };
    assert_eq!(bad.validate().unwrap_err().key, "rpc_url");
    let bad = X402Config {
        settlement: "rpc".into(),
        rpc_url: "http://x".into(),
        ..X402Config::default()
    };
    assert_eq!(bad.validate().unwrap_err().key, "relayer_address");
}

mod prop {
    use super::*;
    use cobro_x402::AccountKey;
    use cobro_x402::typed_data::{felt_hex, public_key};
    use proptest::prelude::*;

    fn felt() -> impl Strategy<Value = Felt> {
        any::<[u8; 31]>().prop_map(|b| Felt::from_bytes_be_slice(&b))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(16))]
        /// Random account keys: the signed payment verifies through the facilitator in both
        /// payload kinds; changing any one signed field makes it fail.
        #[test]
        fn random_keys_verify_and_any_change_rejects(
            key in felt().prop_filter("nonzero", |k| *k != Felt::ZERO),
            account in felt(), nonce in felt(), amount in 1u64..u64::MAX, field in 0usize..5,
        ) {
            let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            let cfg = X402Config {
                accounts: vec![AccountKey { address: felt_hex(&account), public_key: felt_hex(&public_key(&key)) }],
                ..config()
            };
            let f = Facilitator::new(&cfg, Arc::new(MemoryStore::new())).unwrap();
            let p = P { key, from: account, nonce, amount: u128::from(amount), ..P::default() };
            let r1 = requirements(u128::from(amount), false);
            let r2 = requirements(u128::from(amount), true);
            let (c, v) = (chipi_payload(&p), v2_payload(&p));
            prop_assert!(rt.block_on(f.verify(&c, &r1)).is_valid);
            prop_assert!(rt.block_on(f.verify(&v, &r2)).is_valid);
            let mut c2 = c.clone();
            let mut v2 = v.clone();
            match field {
                0 => { c2.payload["nonce"] = json!(felt_hex(&(nonce + Felt::ONE))); v2.payload["outsideExecution"]["nonce"] = json!(felt_hex(&(nonce + Felt::ONE))); }
                1 => { c2.payload["amount"] = json!((u128::from(amount) + 1).to_string()); v2.payload["outsideExecution"]["calls"][0]["calldata"][1] = json!(felt_hex(&Felt::from(u128::from(amount) + 1))); }
                2 => { c2.payload["validUntil"] = json!(p.valid_until - 1); v2.payload["outsideExecution"]["executeBefore"] = json!(p.valid_until - 1); }
                3 => { c2.payload["fromAddress"] = json!(felt_hex(&(account + Felt::ONE))); v2.payload["from"] = json!(felt_hex(&(account + Felt::ONE))); }
                _ => { c2.payload["signature"]["r"] = json!(felt_hex(&Felt::from(7u8))); v2.payload["signature"][1] = json!("0x7"); }
            }
            let r1b = requirements(u128::from(amount), false);
            prop_assert!(!rt.block_on(f.verify(&c2, &r1b)).is_valid);
            prop_assert!(!rt.block_on(f.verify(&v2, &r2)).is_valid);
        }
    }
}
