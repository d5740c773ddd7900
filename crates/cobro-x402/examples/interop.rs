//! Helper for the Node interop tests in compat/node.
//!
//! * `interop serve [before|after|verify-only]`: facilitator at `/x402/*` and a route `/paid`
//!   protected by the middleware (sandbox settlement, account 0x1234 with key
//!   0x1234567890abcdef known); prints `LISTENING http://127.0.0.1:PORT` and serves until killed.
//! * `interop pay URL`: pays with this crate's client (key 0x1234567890abcdef, account 0x1234),
//!   prints `{status, body, paidWith, settlement}` as JSON.
//! * `interop headers`: prints the payment headers this crate's client produces for the three
//!   dialects of a 10000-unit requirement to 0x5678, as JSON.

use std::sync::Arc;

use axum::routing::get;
use axum::{Extension, Router};
use cobro_x402::client::{ClientConfig, X402Client};
use cobro_x402::middleware::{Payer, PaymentLayer, SettleMode};
use cobro_x402::typed_data::{felt_hex, parse_felt, public_key};
use cobro_x402::wire::{Dialect, PaymentRequirements, payment_required_body};
use cobro_x402::{AccountKey, Facilitator, MemoryStore, X402Config};

const KEY: &str = "0x1234567890abcdef";
const ACCOUNT: &str = "0x1234";

fn client() -> Result<X402Client, Box<dyn std::error::Error>> {
    Ok(X402Client::new(&ClientConfig {
        private_key: KEY.into(),
        account_address: ACCOUNT.into(),
        max_amount: 1_000_000,
        allowed_recipients: vec![],
    })?)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("serve") => {
            let mode = match args.get(1).map(String::as_str) {
                Some("after") => SettleMode::After,
                Some("verify-only") => SettleMode::VerifyOnly,
                _ => SettleMode::Before,
            };
            let key = parse_felt(KEY).ok_or("key")?;
            let cfg = X402Config {
                enabled: true,
                pay_to: "0x5678".into(),
                accounts: vec![AccountKey {
                    address: ACCOUNT.into(),
                    public_key: felt_hex(&public_key(&key)),
                }],
                ..X402Config::default()
            };
            let fac = Facilitator::new(&cfg, Arc::new(MemoryStore::new()))?;
            let paid = |Extension(p): Extension<Payer>| async move {
                axum::Json(serde_json::json!({"payer": p.address}))
            };
            let app = Router::new()
                .route(
                    "/paid",
                    get(paid).layer(PaymentLayer::from_config(fac.clone(), &cfg).mode(mode)),
                )
                .nest("/x402", cobro_x402::router(fac));
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
            println!("LISTENING http://{}", listener.local_addr()?);
            axum::serve(listener, app).await?;
        }
        Some("pay") => {
            let url = args.get(1).ok_or("pay URL")?;
            let r = client()?.get(url).await?;
            let out = serde_json::json!({
                "status": r.status,
                "body": String::from_utf8_lossy(&r.body),
                "paidWith": r.paid_with,
                "settlement": r.settlement,
            });
            println!("{out}");
        }
        Some("headers") => {
            let req = PaymentRequirements {
                scheme: "exact".into(),
                network: "starknet-mainnet".into(),
                amount: "10000".into(),
                resource: Some("http://127.0.0.1/paid".into()),
                description: None,
                mime_type: None,
                pay_to: "0x5678".into(),
                max_timeout_seconds: 300,
                asset: cobro_x402::config::USDC_MAINNET.into(),
                extra: None,
            };
            let mut body = payment_required_body(&req, "Payment Required");
            body["paymentRequiredV2"] = serde_json::json!({
                "x402Version": 2, "resource": {"url": "http://127.0.0.1/paid"}, "accepts": [req.to_v2_json()]
            });
            let mut headers = reqwest::header::HeaderMap::new();
            headers.insert(
                "payment-required",
                reqwest::header::HeaderValue::from_str(&cobro_x402::wire::payment_required_chipi(
                    &req,
                ))?,
            );
            let bytes = serde_json::to_vec(&body)?;
            let c = client()?;
            let mut out = serde_json::Map::new();
            for d in [Dialect::ChipiV1, Dialect::X402V1, Dialect::X402V2] {
                let (name, value, _) = c.payment_for(&headers, &bytes, Some(d))?;
                out.insert(
                    format!("{d:?}"),
                    serde_json::json!({"name": name, "value": value}),
                );
            }
            println!("{}", serde_json::Value::Object(out));
        }
        _ => {
            return Err(
                "usage: interop serve [before|after|verify-only] | pay URL | headers".into(),
            );
        }
    }
    Ok(())
}
