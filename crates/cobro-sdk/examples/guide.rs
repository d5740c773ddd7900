//! The guides' flow through `cobro-sdk`: browse recharges with filters, buy one, wait until it
//! settles.
//!
//! ```sh
//! COBRO_URL=http://127.0.0.1:8080 COBRO_API_KEY=pk_dev_… COBRO_TOKEN=eyJ… \
//!   cargo run -p cobro-sdk --example guide
//! ```

use std::time::Duration;

use cobro_sdk::{Client, SkuListQuery};
use cobro_types::CreateSkuPurchaseInput;

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let var = |name: &str| std::env::var(name).map_err(|_| format!("set {name}"));
    let client = Client::new(&var("COBRO_URL")?)?
        .with_api_key(var("COBRO_API_KEY")?)
        .with_bearer(var("COBRO_TOKEN")?); // a customer JWT

    // 1. Browse: Telcel recharges.
    let page = client
        .list_skus(&SkuListQuery {
            chipi_category: Some("RECARGAS".into()),
            carrier_name: Some("Telcel".into()),
            limit: Some(50),
            ..Default::default()
        })
        .await?;
    println!("{} Telcel recharges", page.total);
    let sku = page
        .data
        .iter()
        .find(|s| s.fixed_amount.is_some())
        .ok_or("no fixed-amount recharge in the catalog")?;
    let amount = sku
        .fixed_amount
        .map(|a| a.to_major_string())
        .unwrap_or_default();

    // 2. Buy it. An empty transactionHash gets a fresh idempotency key; retries reuse it.
    let input = CreateSkuPurchaseInput {
        transaction_hash: String::new(),
        sku_id: sku.id.clone(),
        sku_reference: "5512345678".into(),
        currency_amount: amount.parse()?,
        chain: "STARKNET".into(),
        token: "USDC".into(),
        wallet_address: "0x0".into(),
        currency: None,
        org_markup: None,
    };
    let created = client.create_purchase(&input).await?;
    println!(
        "purchase {} is {:?}",
        created.value.id, created.value.status
    );

    // 3. Wait until it settles.
    let tx = client
        .wait_for_settlement(&created.value.id, Duration::from_secs(60))
        .await?;
    println!(
        "settled: {:?}, receipt {}",
        tx.status,
        tx.sku_file_number.as_deref().unwrap_or("-")
    );
    if tx.status != cobro_types::PurchaseStatus::Success {
        return Err(format!("the purchase ended {:?}: {:?}", tx.status, tx.error_message).into());
    }
    Ok(())
}
