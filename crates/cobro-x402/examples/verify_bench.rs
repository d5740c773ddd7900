//! Facilitator verifications per second on one core vs the raw `starknet-crypto` ECDSA verify
//! of the same signature. Run: `cargo run --release --example verify_bench -p cobro-x402 [N]`.

use std::sync::Arc;
use std::time::Instant;

use cobro_x402::typed_data::{
    DomainVariant, PaymentMessage, chain_id, felt_hex, parse_felt, payment_message_hash,
    public_key, sign_hash,
};
use cobro_x402::wire::{PaymentPayload, PaymentRequirements};
use cobro_x402::{AccountKey, Facilitator, Felt, MemoryStore, X402Config, now_unix};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let n: u32 = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    let key = parse_felt("0x1234567890abcdef").ok_or("key")?;
    let pk = public_key(&key);
    let asset = "0x033068f6539f8e6e6b131e6b2b814e6c34a5224bc66947c47dab9dfee93b35fb";
    let valid_until = now_unix() + 250;
    let m = PaymentMessage {
        from_address: Felt::from(0x1234u64),
        to_address: Felt::from(0x5678u64),
        amount_low: 10_000,
        amount_high: 0,
        asset: parse_felt(asset).ok_or("asset")?,
        valid_until: u128::from(valid_until),
        nonce: Felt::ONE,
    };
    let h = payment_message_hash(&m, chain_id("SN_MAIN").ok_or("chain")?, DomainVariant::C);
    let (r, s) = sign_hash(&key, &h).ok_or("sign")?;

    let cfg = X402Config {
        pay_to: "0x5678".into(),
        accounts: vec![AccountKey {
            address: "0x1234".into(),
            public_key: felt_hex(&pk),
        }],
        ..X402Config::default()
    };
    let fac = Facilitator::new(&cfg, Arc::new(MemoryStore::new()))?;
    let payload: PaymentPayload = serde_json::from_value(serde_json::json!({
        "x402Version": 1, "scheme": "exact", "network": "starknet-mainnet",
        "payload": {"signature": {"r": felt_hex(&r), "s": felt_hex(&s)}, "fromAddress": "0x1234",
            "toAddress": "0x5678", "amount": "10000", "asset": asset, "validUntil": valid_until, "nonce": "0x1"}
    }))?;
    let req: PaymentRequirements = serde_json::from_value(serde_json::json!({
        "scheme": "exact", "network": "starknet-mainnet", "maxAmountRequired": "10000", "payTo": "0x5678",
        "maxTimeoutSeconds": 300, "asset": asset
    }))?;
    let rt = tokio::runtime::Builder::new_current_thread().build()?;

    // Warm up and sanity check.
    if !rt.block_on(fac.verify(&payload, &req)).is_valid
        || !starknet_crypto::verify(&pk, &h, &r, &s)?
    {
        return Err("bench payment does not verify".into());
    }
    // Interleaved rounds, best of each: the machine is shared, so load changes over time.
    let rounds = 5;
    let per = (n / rounds).max(1);
    let (mut raw, mut full) = (0f64, 0f64);
    for _ in 0..rounds {
        let t = Instant::now();
        for _ in 0..per {
            let ok = starknet_crypto::verify(&pk, &h, &r, &s)?;
            std::hint::black_box(ok);
        }
        raw = raw.max(f64::from(per) / t.elapsed().as_secs_f64());
        let t = Instant::now();
        rt.block_on(async {
            for _ in 0..per {
                let v = fac.verify(std::hint::black_box(&payload), &req).await;
                std::hint::black_box(v.is_valid);
            }
        });
        full = full.max(f64::from(per) / t.elapsed().as_secs_f64());
    }
    println!("raw starknet-crypto verify: {raw:.0} /s/core");
    println!("facilitator verify:        {full:.0} /s/core");
    println!("ratio facilitator/raw:     {:.3}", full / raw);
    Ok(())
}
