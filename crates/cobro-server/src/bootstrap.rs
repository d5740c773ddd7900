//! The first start: on a database with no organisation, create a demo organisation with a
//! dev and a prod key pair, 1,000 USD of credits and the demo catalog (one transaction), then
//! print a quickstart whose commands work when pasted.

use cobro_store::{DemoBootstrap, Org, Store};
use cobro_types::{ApiKeyCreated, Environment, Timestamp, UsdMicros};

use crate::{
    Config,
    admin::{self, AdminError, KeyOptions},
    auth::issuer::BuiltinIssuer,
};

/// The demo catalog: Mexican recharges, bills, tolls and gift cards, English and Spanish.
pub const DEMO_CATALOG: &str = include_str!("../catalog/demo-catalog.json");

/// The subject of the quickstart's customer JWT.
pub const DEMO_CUSTOMER: &str = "demo-customer";

/// What the first start created (secrets included: shown once).
#[derive(Debug, Clone)]
pub struct DemoSetup {
    pub org_id: String,
    pub dev: ApiKeyCreated,
    pub prod: ApiKeyCreated,
    pub credits: UsdMicros,
    /// A customer JWT for the dev key, valid 24 hours.
    pub dev_token: String,
    pub skus: usize,
}

/// Seeds the demo when the database has no organisation; `None` when it already had one (or
/// the bootstrap is disabled).
pub async fn bootstrap_demo(
    store: &dyn Store,
    config: &Config,
) -> Result<Option<DemoSetup>, AdminError> {
    if !config.demo.bootstrap {
        return Ok(None);
    }
    let credits = UsdMicros::parse_usd(&config.demo.credits_usd)
        .map_err(|e| AdminError::Invalid(format!("demo.credits_usd: {e}")))?;
    let org = Org {
        id: cobro_domain::keys::new_id("org").map_err(|e| AdminError::Invalid(e.to_string()))?,
        name: "Demo organisation".into(),
        created_at: Timestamp::now(),
    };
    let (dev_record, dev) = admin::new_key(&org.id, Environment::Dev, &KeyOptions::default())?;
    let (prod_record, prod) = admin::new_key(&org.id, Environment::Prod, &KeyOptions::default())?;
    let catalog = admin::parse_catalog(DEMO_CATALOG)?;
    let skus = catalog.iter().filter(|e| e.active).count();
    let demo = DemoBootstrap {
        org: org.clone(),
        keys: vec![dev_record, prod_record],
        credits,
        credits_entry_id: cobro_domain::keys::new_id("le")
            .map_err(|e| AdminError::Invalid(e.to_string()))?,
        catalog,
    };
    if !store.bootstrap_if_empty(&demo).await? {
        return Ok(None);
    }
    let issuer = BuiltinIssuer::load_or_create(store, &config.auth.builtin_issuer).await?;
    let (dev_token, _) = issuer
        .mint(
            DEMO_CUSTOMER,
            &crate::auth::issuer::audience(&org.id, Environment::Dev),
            24 * 3600,
        )
        .map_err(|e| AdminError::Invalid(format!("signing failed: {e}")))?;
    Ok(Some(DemoSetup {
        org_id: org.id,
        dev,
        prod,
        credits,
        dev_token,
        skus,
    }))
}

/// The quickstart printed after the first start; `base_url` is where the server answers.
pub fn quickstart(setup: &DemoSetup, base_url: &str) -> String {
    let auth = format!(
        "-H 'x-api-key: {}' -H 'Authorization: Bearer {}'",
        setup.dev.public_key, setup.dev_token
    );
    let lines = [
        String::new(),
        "cobro: this database was empty, so a demo organisation was created.".to_string(),
        String::new(),
        format!("  organisation   {}", setup.org_id),
        format!("  dev keys       {}", setup.dev.public_key),
        format!("                 {}", setup.dev.secret_key),
        format!("  prod keys      {}", setup.prod.public_key),
        format!("                 {}", setup.prod.secret_key),
        format!("  credits        {} USD", setup.credits.to_usd_string()),
        format!("  catalog        {} SKUs", setup.skus),
        String::new(),
        "  The secret keys are shown only this once: keep them somewhere safe.".to_string(),
        String::new(),
        format!(
            "A customer JWT for the dev key, from the built-in issuer, valid 24 hours (sub = {DEMO_CUSTOMER}):"
        ),
        String::new(),
        format!("  {}", setup.dev_token),
        String::new(),
        "Try it (paste into a shell):".to_string(),
        String::new(),
        "  # Telcel recharges".to_string(),
        format!(
            "  curl -s '{base_url}/v1/skus?chipiCategory=RECARGAS&carrierName=telcel&limit=5' {auth}"
        ),
        String::new(),
        "  # one SKU, in Spanish".to_string(),
        format!("  curl -s '{base_url}/v1/skus/sku-tl-TEL010?locale=es' {auth}"),
        String::new(),
        "  # buy a Telcel $10 recharge (dev key: the sandbox, SUCCESS at once, no credits move)"
            .to_string(),
        format!(
            "  curl -s -X POST '{base_url}/v1/sku-purchases' {auth} -H 'Content-Type: application/json' -d '{}'",
            r#"{"transactionHash":"quickstart-order-1","skuId":"sku-tl-TEL010","skuReference":"5512345678","currencyAmount":10,"chain":"STARKNET","token":"USDC","walletAddress":"0x0"}"#
        ),
        String::new(),
        "  # its status (newest purchase first)".to_string(),
        format!("  curl -s '{base_url}/v1/sku-purchases?limit=1' {auth}"),
        String::new(),
        "Or with the cobro CLI (./target/release/cobro from the repository), in another terminal:"
            .to_string(),
        String::new(),
        format!(
            "  export COBRO_URL={base_url} COBRO_API_KEY={} COBRO_TOKEN={} COBRO_SECRET_KEY={}",
            setup.dev.public_key, setup.dev_token, setup.dev.secret_key
        ),
        "  cobro skus list --category RECARGAS --carrier telcel --limit 5".to_string(),
        "  cobro buy sku-tl-TEL010 5512345678 --wait".to_string(),
        "  cobro purchases list --limit 5".to_string(),
        String::new(),
        "  # webhooks: in a third terminal (same exports) run a receiver that registers itself,"
            .to_string(),
        "  # verifies signatures and prints deliveries, then buy again here:".to_string(),
        "  cobro webhook listen --register".to_string(),
        String::new(),
        format!(
            "More: {base_url}/openapi.json, and `cobro admin token --key {} --sub SOMEONE` for new tokens.",
            setup.dev.public_key
        ),
    ];
    lines.join("\n")
}
