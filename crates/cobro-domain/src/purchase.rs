//! Validation of a purchase request against the catalog, in a fixed precedence order so the
//! same bad request always gets the same error:
//!
//! 1. fields that need no SKU: `transactionHash` (1..=255 characters), `chain` (`STARKNET`),
//!    `token` (a `ChainToken`), `walletAddress` (1..=255), `skuId` (non-empty), `orgMarkup`
//!    (≥ 0), `skuReference` (1..=64);
//! 2. the SKU: unknown or inactive is `SkuNotFound` (404);
//! 3. fields judged against the SKU: `currency` (equal to the SKU's), `currencyAmount` (> 0,
//!    at most two decimals, a full match of `amountRegexValidation`, equal to `fixedAmount` or
//!    within `minAmount..=maxAmount`), `skuReference` (a full match of
//!    `referenceRegexValidation`).

use aws_lc_rs::digest;
use cobro_types::{CatalogEntry, CreateSkuPurchaseInput, Currency, MinorAmount};

use crate::{ParamError, catalog::Catalog};

/// The `ChainToken` values of `@chipi-stack/types`.
pub const CHAIN_TOKENS: [&str; 15] = [
    "USDC", "USDC_E", "USDT", "DAI", "ETH", "STRK", "SLINK", "ALF", "BROTHER", "ARB", "DOC",
    "MXNB", "WLD", "WBTC", "OTHER",
];

/// Why a purchase request is refused before anything is stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InvalidPurchase {
    Param(ParamError),
    SkuNotFound(String),
}

impl From<ParamError> for InvalidPurchase {
    fn from(e: ParamError) -> Self {
        InvalidPurchase::Param(e)
    }
}

/// A request that passed every check, with its amounts as integers.
#[derive(Debug, Clone, PartialEq)]
pub struct ValidPurchase {
    pub idempotency_key: String,
    pub sku: CatalogEntry,
    pub reference: String,
    pub amount: MinorAmount,
    pub currency: Currency,
    pub chain: String,
    pub token: String,
    pub wallet_address: String,
    /// `orgMarkup` as sent (analytics only), as a decimal string.
    pub org_markup: Option<String>,
    /// SHA-256 of the request's canonical form: the same key with another body is a 422.
    pub request_hash: String,
}

fn param(name: &str, message: impl Into<String>) -> InvalidPurchase {
    InvalidPurchase::Param(ParamError::new(name, message))
}

fn check_len(name: &str, value: &str, max: usize) -> Result<(), InvalidPurchase> {
    let n = value.chars().count();
    if n == 0 || n > max {
        return Err(param(name, format!("must be 1 to {max} characters")));
    }
    Ok(())
}

/// Validates `input` against the catalog.
pub fn validate(
    input: &CreateSkuPurchaseInput,
    catalog: &Catalog,
) -> Result<ValidPurchase, InvalidPurchase> {
    check_len("transactionHash", &input.transaction_hash, 255)?;
    if input.chain != "STARKNET" {
        return Err(param("chain", "must be STARKNET"));
    }
    if !CHAIN_TOKENS.contains(&input.token.as_str()) {
        return Err(param(
            "token",
            format!("must be one of {}", CHAIN_TOKENS.join(", ")),
        ));
    }
    check_len("walletAddress", &input.wallet_address, 255)?;
    check_len("skuId", &input.sku_id, 64)?;
    let org_markup = match &input.org_markup {
        Some(n) if n.as_f64().is_some_and(|v| v.is_finite() && v >= 0.0) => Some(n.to_string()),
        Some(_) => {
            return Err(param(
                "orgMarkup",
                "must be a number greater than or equal to 0",
            ));
        }
        None => None,
    };
    check_len("skuReference", &input.sku_reference, 64)?;

    let sku = catalog
        .entry(&input.sku_id)
        .ok_or_else(|| InvalidPurchase::SkuNotFound(input.sku_id.clone()))?
        .clone();

    if let Some(c) = &input.currency
        && c != sku.currency.as_str()
    {
        return Err(param(
            "currency",
            format!("must be {}, the SKU's currency", sku.currency.as_str()),
        ));
    }
    let amount_text = input.currency_amount.to_string();
    let amount = input
        .currency_amount
        .as_f64()
        .ok_or_else(|| param("currencyAmount", "must be a number"))
        .and_then(|v| {
            MinorAmount::from_major_f64(v).map_err(|e| param("currencyAmount", e.to_string()))
        })?;
    if amount.0 <= 0 {
        return Err(param("currencyAmount", "must be greater than 0"));
    }
    if catalog.amount_matches(&sku.id, &amount_text) != Some(true) {
        return Err(param(
            "currencyAmount",
            format!(
                "does not match the SKU's amount format ({})",
                sku.amount_regex_validation
            ),
        ));
    }
    match (sku.fixed_amount, sku.min_amount, sku.max_amount) {
        (Some(fixed), _, _) if fixed != amount => {
            return Err(param(
                "currencyAmount",
                format!("must be {} for this SKU", fixed.to_major_string()),
            ));
        }
        (None, Some(min), Some(max)) if amount < min || amount > max => {
            return Err(param(
                "currencyAmount",
                format!(
                    "must be between {} and {} for this SKU",
                    min.to_major_string(),
                    max.to_major_string()
                ),
            ));
        }
        _ => {}
    }
    if catalog.reference_matches(&sku.id, &input.sku_reference) != Some(true) {
        return Err(param(
            "skuReference",
            format!(
                "must be a valid {} ({})",
                sku.reference_label, sku.reference_regex_validation
            ),
        ));
    }

    let canonical = serde_json::json!([
        input.transaction_hash,
        sku.id,
        input.sku_reference,
        amount.0,
        sku.currency.as_str(),
        input.chain,
        input.token,
        input.wallet_address,
        org_markup,
    ]);
    let request_hash =
        hex(digest::digest(&digest::SHA256, canonical.to_string().as_bytes()).as_ref());
    Ok(ValidPurchase {
        idempotency_key: input.transaction_hash.clone(),
        reference: input.sku_reference.clone(),
        currency: sku.currency,
        amount,
        chain: input.chain.clone(),
        token: input.token.clone(),
        wallet_address: input.wallet_address.clone(),
        org_markup,
        request_hash,
        sku,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use cobro_types::{Provider, SkuCategory};

    fn sku(id: &str, fixed: Option<i64>) -> CatalogEntry {
        CatalogEntry {
            id: id.into(),
            provider_id: "telcel".into(),
            name: "Telcel".into(),
            description: None,
            category: SkuCategory::Telefonia,
            reference_regex_validation: "^[0-9]{10}$".into(),
            reference_label: "Phone number".into(),
            amount_regex_validation: "^[0-9]+(\\\\.[0-9]{1,2})?$".replace("\\\\", "\\"),
            amount_label: "Amount (MXN)".into(),
            fixed_amount: fixed.map(MinorAmount),
            min_amount: fixed.is_none().then_some(MinorAmount(1000)),
            max_amount: fixed.is_none().then_some(MinorAmount(500_000)),
            currency: Currency::Mxn,
            can_check_sku_reference: false,
            logo_url: None,
            provider: Provider::Tet,
            chipi_category: "RECARGAS".into(),
            carrier_name: "Telcel".into(),
            active: true,
            translations: Default::default(),
            created_at: None,
            updated_at: None,
        }
    }

    fn input(sku_id: &str, amount: &str) -> CreateSkuPurchaseInput {
        serde_json::from_value(serde_json::json!({
            "transactionHash": "order-1", "skuId": sku_id, "skuReference": "5512345678",
            "currencyAmount": serde_json::from_str::<serde_json::Value>(amount).unwrap_or_default(),
            "chain": "STARKNET", "token": "USDC", "walletAddress": "0x0",
        }))
        .unwrap_or_else(|e| panic!("test input: {e}"))
    }

    fn err_param(r: Result<ValidPurchase, InvalidPurchase>) -> String {
        match r {
            Err(InvalidPurchase::Param(p)) => p.param,
            other => panic!("expected a parameter error, got {other:?}"),
        }
    }

    #[test]
    fn a_good_request_validates_and_hashes_its_canonical_form() {
        let cat = Catalog::new([sku("t200", Some(20_000)), sku("cfe", None)]);
        let a = validate(&input("t200", "200"), &cat).expect("valid");
        assert_eq!((a.amount, a.currency), (MinorAmount(20_000), Currency::Mxn));
        let b = validate(&input("t200", "200.0"), &cat).expect("valid");
        assert_eq!(
            a.request_hash, b.request_hash,
            "200 and 200.0 are the same amount"
        );
        let mut other = input("t200", "200");
        other.sku_reference = "5599999999".into();
        assert_ne!(
            validate(&other, &cat).expect("valid").request_hash,
            a.request_hash
        );
        assert!(validate(&input("cfe", "1234.56"), &cat).is_ok());
    }

    #[test]
    fn each_rule_names_its_field_in_precedence_order() {
        let cat = Catalog::new([sku("t200", Some(20_000)), sku("cfe", None)]);
        let mut i = input("t200", "200");
        i.transaction_hash = String::new();
        i.chain = "BASE".into();
        assert_eq!(
            err_param(validate(&i, &cat)),
            "transactionHash",
            "the first rule wins"
        );
        let mut i = input("t200", "200");
        i.chain = "BASE".into();
        assert_eq!(err_param(validate(&i, &cat)), "chain");
        let mut i = input("t200", "200");
        i.token = "DOGE".into();
        assert_eq!(err_param(validate(&i, &cat)), "token");
        let mut i = input("t200", "200");
        i.currency = Some("USD".into());
        assert_eq!(err_param(validate(&i, &cat)), "currency");
        assert_eq!(
            err_param(validate(&input("t200", "100"), &cat)),
            "currencyAmount"
        );
        assert_eq!(
            err_param(validate(&input("t200", "0"), &cat)),
            "currencyAmount"
        );
        assert_eq!(
            err_param(validate(&input("t200", "-200"), &cat)),
            "currencyAmount"
        );
        assert_eq!(
            err_param(validate(&input("t200", "200.001"), &cat)),
            "currencyAmount"
        );
        assert_eq!(
            err_param(validate(&input("cfe", "5"), &cat)),
            "currencyAmount",
            "below minAmount"
        );
        assert_eq!(
            err_param(validate(&input("cfe", "9000"), &cat)),
            "currencyAmount",
            "above maxAmount"
        );
        let mut i = input("t200", "200");
        i.sku_reference = "55123".into();
        assert_eq!(err_param(validate(&i, &cat)), "skuReference");
        let mut i = input("t200", "200");
        i.org_markup = Some(serde_json::Number::from_f64(-1.0).expect("finite"));
        assert_eq!(err_param(validate(&i, &cat)), "orgMarkup");
        assert_eq!(
            validate(&input("nope", "200"), &cat),
            Err(InvalidPurchase::SkuNotFound("nope".into()))
        );
    }

    #[test]
    fn alternation_in_a_pattern_still_needs_a_full_match() {
        let mut s = sku("alt", Some(1000));
        s.reference_regex_validation = "^1|2$".into();
        let cat = Catalog::new([s]);
        let mut i = input("alt", "10");
        i.sku_reference = "1999".into(); // `^1|2$` would match this partially
        assert_eq!(err_param(validate(&i, &cat)), "skuReference");
        i.sku_reference = "2".into();
        assert!(validate(&i, &cat).is_ok());
    }
}
