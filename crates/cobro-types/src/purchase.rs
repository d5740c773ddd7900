//! Purchases on the wire: the `CreateSkuPurchaseInput` body, the `Transaction` answer, and the
//! organisation's balance and ledger views.
//!
//! Field names follow `@chipi-stack/types` (`Transaction`, `CreateSkuPurchaseBody`) and the
//! guides; cobro adds `ledgerEntryId`, `usdAmount`, `fxRate`, `markupUsd`, `errorMessage` and
//! `customerId`, as the API contract asks.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Currency, MinorAmount, Timestamp, UsdMicros};

/// Life of a purchase: `PENDING` → `PROCESSING` → `SUCCESS` | `FAILED` (`CANCELLED` reserved).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum PurchaseStatus {
    Pending,
    Processing,
    Success,
    Failed,
    Cancelled,
}

impl PurchaseStatus {
    pub const ALL: [PurchaseStatus; 5] = [
        PurchaseStatus::Pending,
        PurchaseStatus::Processing,
        PurchaseStatus::Success,
        PurchaseStatus::Failed,
        PurchaseStatus::Cancelled,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            PurchaseStatus::Pending => "PENDING",
            PurchaseStatus::Processing => "PROCESSING",
            PurchaseStatus::Success => "SUCCESS",
            PurchaseStatus::Failed => "FAILED",
            PurchaseStatus::Cancelled => "CANCELLED",
        }
    }

    pub fn parse(s: &str) -> Option<PurchaseStatus> {
        PurchaseStatus::ALL.into_iter().find(|p| p.as_str() == s)
    }

    /// Whether no further transition can happen.
    pub const fn is_terminal(self) -> bool {
        matches!(
            self,
            PurchaseStatus::Success | PurchaseStatus::Failed | PurchaseStatus::Cancelled
        )
    }
}

/// The body of `POST /v1/sku-purchases` (`CreateSkuPurchaseInput`). Unknown fields are
/// ignored, as the official DTO does.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CreateSkuPurchaseInput {
    /// The idempotency key: any unique string, 1..=255 characters.
    pub transaction_hash: String,
    pub sku_id: String,
    /// Phone number, account number…; must match the SKU's `referenceRegexValidation`.
    pub sku_reference: String,
    /// Amount in the SKU's currency; equals `fixedAmount` when the SKU has one.
    #[schema(value_type = f64)]
    pub currency_amount: serde_json::Number,
    /// `STARKNET`.
    pub chain: String,
    /// A `ChainToken`; `USDC` for the credits flow.
    pub token: String,
    /// Required by the DTO, unused by the credits flow (`"0x0"` is fine).
    pub wallet_address: String,
    /// When present, must equal the SKU's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub currency: Option<String>,
    /// Optional analytics field, ≥ 0.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<f64>)]
    pub org_markup: Option<serde_json::Number>,
}

/// A purchase as the API returns it (`Transaction`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Transaction {
    pub id: String,
    /// Always `SKU_PURCHASE`.
    #[serde(rename = "type")]
    pub kind: String,
    pub status: PurchaseStatus,
    pub chain: String,
    pub token: String,
    /// The idempotency key the purchase was created with.
    pub transaction_hash: String,
    /// The request's `walletAddress`.
    pub sender_address: String,
    /// No on-chain destination in the credits flow: `0x0`.
    pub destination_address: String,
    /// What was debited, in USD, as a decimal string (`"11.76"`).
    pub amount: String,
    pub sku_id: String,
    pub sku_reference: String,
    pub sku_purchase_amount: MinorAmount,
    pub sku_purchase_currency: Currency,
    /// The carrier's receipt once `SUCCESS`; null before.
    pub sku_file_number: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub confirmed_at: Option<Timestamp>,
    pub api_public_key: String,
    /// The debit's ledger entry (`le-dev-…`, synthetic, for dev keys).
    pub ledger_entry_id: String,
    /// What was debited, in USD, as a number.
    pub usd_amount: UsdMicros,
    /// USD per unit of the SKU's currency used for the conversion (decimal string).
    pub fx_rate: String,
    /// The markup included in `usdAmount`.
    pub markup_usd: UsdMicros,
    /// Why the purchase failed; null otherwise.
    pub error_message: Option<String>,
    /// The customer JWT's `sub`.
    pub customer_id: String,
}

/// `GET /v1/balance`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OrgBalance {
    pub org_id: String,
    /// Spendable credits.
    pub available_usd: UsdMicros,
    /// Available plus held; cobro debits at purchase time and holds nothing, so equal.
    pub total_usd: UsdMicros,
    pub available_micros: i64,
}

/// One movement of credits (`GET /v1/ledger-entries`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LedgerEntryView {
    pub id: String,
    /// `topup`, `purchase`, `refund` or `adjustment`.
    #[serde(rename = "type")]
    pub kind: String,
    /// Signed USD: positive adds credits.
    pub amount_usd: UsdMicros,
    pub balance_after_usd: UsdMicros,
    pub purchase_id: Option<String>,
    pub note: Option<String>,
    pub created_at: Timestamp,
}
