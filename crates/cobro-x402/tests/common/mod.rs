#![allow(dead_code, clippy::unwrap_used)]

use std::sync::Arc;

use cobro_x402::typed_data::*;
use cobro_x402::wire::{PaymentPayload, PaymentRequirements};
use cobro_x402::{AccountKey, Facilitator, Felt, MemoryStore, X402Config, now_unix};
use serde_json::{Value, json};

pub const ASSET: &str = "0x033068f6539f8e6e6b131e6b2b814e6c34a5224bc66947c47dab9dfee93b35fb";
pub const PAY_TO: &str = "0x5678";
pub const PAYER: &str = "0x1234";
pub const KEY: &str = "0x1234567890abcdef";

pub fn f(s: &str) -> Felt {
    parse_felt(s).unwrap()
}

pub fn config() -> X402Config {
    X402Config {
        enabled: true,
        pay_to: PAY_TO.into(),
        accounts: vec![AccountKey {
            address: PAYER.into(),
            public_key: felt_hex(&public_key(&f(KEY))),
        }],
        ..X402Config::default()
    }
}

pub fn facilitator() -> Facilitator {
    Facilitator::new(&config(), Arc::new(MemoryStore::new())).unwrap()
}

pub fn requirements(amount: u128, v2: bool) -> PaymentRequirements {
    PaymentRequirements {
        scheme: "exact".into(),
        network: if v2 {
            "starknet:SN_MAIN".into()
        } else {
            "starknet-mainnet".into()
        },
        amount: amount.to_string(),
        resource: Some("http://127.0.0.1/paid".into()),
        description: None,
        mime_type: None,
        pay_to: PAY_TO.into(),
        max_timeout_seconds: 300,
        asset: ASSET.into(),
        extra: None,
    }
}

/// Parameters of a test payment; every field can be altered.
#[derive(Clone, Debug)]
pub struct P {
    pub key: Felt,
    pub from: Felt,
    pub to: Felt,
    pub amount: u128,
    pub asset: Felt,
    pub valid_until: u64,
    pub nonce: Felt,
    pub chain: &'static str,
}

impl Default for P {
    fn default() -> Self {
        Self {
            key: f(KEY),
            from: f(PAYER),
            to: f(PAY_TO),
            amount: 10_000,
            asset: f(ASSET),
            valid_until: now_unix() + 120,
            nonce: Felt::from(now_unix() * 1000 + u64::from(rand_u16())),
            chain: "SN_MAIN",
        }
    }
}

fn rand_u16() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static N: AtomicU16 = AtomicU16::new(1);
    N.fetch_add(1, Ordering::Relaxed)
}

pub fn chipi_payload(p: &P) -> PaymentPayload {
    let m = PaymentMessage {
        from_address: p.from,
        to_address: p.to,
        amount_low: p.amount,
        amount_high: 0,
        asset: p.asset,
        valid_until: u128::from(p.valid_until),
        nonce: p.nonce,
    };
    let h = payment_message_hash(&m, chain_id(p.chain).unwrap(), DomainVariant::C);
    let (r, s) = sign_hash(&p.key, &h).unwrap();
    serde_json::from_value(json!({
        "x402Version": 1, "scheme": "exact", "network": "starknet-mainnet",
        "payload": {
            "signature": {"r": r.to_string(), "s": felt_hex(&s)},
            "fromAddress": felt_hex(&p.from), "toAddress": felt_hex(&p.to),
            "amount": p.amount.to_string(), "asset": felt_hex(&p.asset),
            "validUntil": p.valid_until, "nonce": felt_hex(&p.nonce),
        }
    }))
    .unwrap()
}

pub fn oe_of(p: &P) -> OutsideExecution {
    OutsideExecution {
        caller: ANY_CALLER,
        nonce: p.nonce,
        execute_after: now_unix() - 10,
        execute_before: p.valid_until,
        calls: vec![Call {
            to: p.asset,
            selector: SELECTOR_TRANSFER,
            calldata: vec![p.to, Felt::from(p.amount), Felt::ZERO],
        }],
    }
}

pub fn oe_json(oe: &OutsideExecution) -> Value {
    json!({
        "caller": felt_hex(&oe.caller), "nonce": felt_hex(&oe.nonce),
        "executeAfter": oe.execute_after, "executeBefore": oe.execute_before,
        "calls": oe.calls.iter().map(|c| json!({
            "to": felt_hex(&c.to), "selector": felt_hex(&c.selector),
            "calldata": c.calldata.iter().map(felt_hex).collect::<Vec<_>>()})).collect::<Vec<_>>(),
    })
}

pub fn v2_payload_signed(
    p: &P,
    oe: &OutsideExecution,
    sig: Vec<Felt>,
    chain_field: Option<&str>,
) -> PaymentPayload {
    let mut payload = json!({
        "from": felt_hex(&p.from),
        "outsideExecution": oe_json(oe),
        "signature": sig.iter().map(felt_hex).collect::<Vec<_>>(),
    });
    if let Some(c) = chain_field {
        payload["chainId"] = json!(c);
    }
    serde_json::from_value(json!({
        "x402Version": 2,
        "accepted": requirements(p.amount, true).to_v2_json(),
        "payload": payload,
    }))
    .unwrap()
}

pub fn v2_payload(p: &P) -> PaymentPayload {
    let oe = oe_of(p);
    let h = outside_execution_hash(&oe, p.from, chain_id(p.chain).unwrap());
    let (r, s) = sign_hash(&p.key, &h).unwrap();
    v2_payload_signed(p, &oe, vec![r, s], None)
}
