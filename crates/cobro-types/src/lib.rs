//! Wire types shared by the cobro server and its clients.
//!
//! Everything here is a shape that crosses the HTTP boundary: the JSON bodies of the API
//! (camelCase, as Chipi's official SDKs expect), the error body and its stable codes, and the
//! small value types (money, timestamps, environments) those bodies are made of. Nothing here
//! does I/O; the server and `cobro-sdk` both depend on this crate and on nothing of each other.
#![forbid(unsafe_code)]

pub mod admin;
pub mod catalog;
pub mod error;
pub mod events;
pub mod money;
pub mod purchase;
pub mod time;
pub mod webhook;

pub use admin::{ApiKeyCreated, Balance, Environment, OrgCreated, TokenIssued};
pub use catalog::{CatalogEntry, Currency, Paginated, Provider, Sku, SkuCategory, SkuTexts};
pub use error::{ErrorBody, ErrorClass, ErrorCode};
pub use money::{MinorAmount, UsdMicros};
pub use purchase::{
    CreateSkuPurchaseInput, LedgerEntryView, OrgBalance, PurchaseStatus, Transaction,
};
pub use time::Timestamp;

/// The API version string the official SDKs send as `__chipi_api_version` on every request.
pub const CHIPI_API_VERSION: &str = "2025-12-30";
