//! The paid route: `GET /v1/paid/catalog`, the whole active catalog for one x402 payment.
//!
//! Mounted only when `x402.enabled` is set and `x402.pay_to` names the recipient; the price is
//! `x402.price` base units of `x402.asset`. No API key: the payment is the credential. The
//! x402 middleware answers 402 in every dialect, verifies and settles before the handler runs,
//! and passes the payer in.

use axum::{Extension, Json};
use cobro_types::Sku;
use serde::Serialize;

use crate::AppState;

/// The answer of the paid catalog route.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PaidCatalog {
    /// The account that paid.
    pub paid_by: String,
    /// The settlement transaction, when settled.
    pub transaction: Option<String>,
    pub skus: Vec<Sku>,
}

pub async fn catalog(
    axum::extract::State(app): axum::extract::State<AppState>,
    Extension(payer): Extension<cobro_x402::Payer>,
) -> Json<PaidCatalog> {
    let catalog = app.catalog();
    Json(PaidCatalog {
        paid_by: payer.address.clone(),
        transaction: payer.transaction.clone(),
        skus: catalog.all(cobro_domain::catalog::Locale::default()),
    })
}
