//! Encodings every backend shares, so both store exactly the same bytes.

use cobro_types::{CatalogEntry, Currency, Environment, PurchaseStatus, Timestamp, UsdMicros};

use crate::{StoreError, StoreResult};

/// The JSON document stored for a catalog record (timestamps live in their own columns).
pub fn encode_catalog_entry(e: &CatalogEntry) -> StoreResult<String> {
    let mut doc = e.clone();
    doc.created_at = None;
    doc.updated_at = None;
    serde_json::to_string(&doc).map_err(|err| StoreError::Corrupt(format!("SKU {}: {err}", e.id)))
}

/// Reads a stored catalog record back, with its timestamps.
pub fn decode_catalog_entry(
    doc: &str,
    created_ms: i64,
    updated_ms: i64,
) -> StoreResult<CatalogEntry> {
    let mut e: CatalogEntry = serde_json::from_str(doc)
        .map_err(|err| StoreError::Corrupt(format!("catalog document: {err}")))?;
    e.created_at = Some(Timestamp::from_unix_millis(created_ms));
    e.updated_at = Some(Timestamp::from_unix_millis(updated_ms));
    Ok(e)
}

pub fn decode_environment(s: &str) -> StoreResult<Environment> {
    Environment::parse(s).ok_or_else(|| StoreError::Corrupt(format!("environment {s:?}")))
}

/// The ledger kind of a manual credit movement: `topup` when positive, `adjustment` when
/// negative; zero is refused.
pub fn credit_kind(amount: UsdMicros) -> StoreResult<&'static str> {
    match amount.0 {
        0 => Err(StoreError::Rejected(
            "a credit movement cannot be zero".into(),
        )),
        a if a > 0 => Ok("topup"),
        _ => Ok("adjustment"),
    }
}

pub fn decode_status(s: &str) -> StoreResult<PurchaseStatus> {
    PurchaseStatus::parse(s).ok_or_else(|| StoreError::Corrupt(format!("purchase status {s:?}")))
}

pub fn decode_currency(s: &str) -> StoreResult<Currency> {
    match s {
        "MXN" => Ok(Currency::Mxn),
        "USD" => Ok(Currency::Usd),
        _ => Err(StoreError::Corrupt(format!("currency {s:?}"))),
    }
}
