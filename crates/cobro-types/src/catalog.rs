//! The catalog on the wire: `Sku`, the paginated list envelope, and the import/export record.
//!
//! Field names follow the `GET /skus/{id}` reference and `@chipi-stack/types`. `category`
//! is emitted as `TELEFONIA` (the typed SDK's spelling) and `TELEFONICA` (the REST reference's)
//! is accepted wherever a category is read.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{MinorAmount, Timestamp};

/// The upstream classification of a SKU.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum SkuCategory {
    Telepeaje,
    #[serde(alias = "TELEFONICA")]
    Telefonia,
    General,
    Tesoreria,
    Luz,
    Internet,
    Tv,
    Movilidad,
    Recargas,
    GiftCards,
    Gaming,
    VentasCatalogo,
    Deportes,
    Streaming,
}

impl SkuCategory {
    pub const ALL: [SkuCategory; 14] = [
        SkuCategory::Telepeaje,
        SkuCategory::Telefonia,
        SkuCategory::General,
        SkuCategory::Tesoreria,
        SkuCategory::Luz,
        SkuCategory::Internet,
        SkuCategory::Tv,
        SkuCategory::Movilidad,
        SkuCategory::Recargas,
        SkuCategory::GiftCards,
        SkuCategory::Gaming,
        SkuCategory::VentasCatalogo,
        SkuCategory::Deportes,
        SkuCategory::Streaming,
    ];

    /// The wire spelling.
    pub const fn as_str(self) -> &'static str {
        match self {
            SkuCategory::Telepeaje => "TELEPEAJE",
            SkuCategory::Telefonia => "TELEFONIA",
            SkuCategory::General => "GENERAL",
            SkuCategory::Tesoreria => "TESORERIA",
            SkuCategory::Luz => "LUZ",
            SkuCategory::Internet => "INTERNET",
            SkuCategory::Tv => "TV",
            SkuCategory::Movilidad => "MOVILIDAD",
            SkuCategory::Recargas => "RECARGAS",
            SkuCategory::GiftCards => "GIFT_CARDS",
            SkuCategory::Gaming => "GAMING",
            SkuCategory::VentasCatalogo => "VENTAS_CATALOGO",
            SkuCategory::Deportes => "DEPORTES",
            SkuCategory::Streaming => "STREAMING",
        }
    }

    /// Parses the wire spelling, accepting the REST reference's `TELEFONICA` too.
    pub fn parse(s: &str) -> Option<SkuCategory> {
        if s == "TELEFONICA" {
            return Some(SkuCategory::Telefonia);
        }
        SkuCategory::ALL.into_iter().find(|c| c.as_str() == s)
    }
}

/// Who fulfils a SKU upstream.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Provider {
    Tet,
    Chipi,
}

impl Provider {
    pub const fn as_str(self) -> &'static str {
        match self {
            Provider::Tet => "TET",
            Provider::Chipi => "CHIPI",
        }
    }

    pub fn parse(s: &str) -> Option<Provider> {
        [Provider::Tet, Provider::Chipi]
            .into_iter()
            .find(|p| p.as_str() == s)
    }
}

/// Fiat currency of a SKU's amount.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Currency {
    Mxn,
    Usd,
}

impl Currency {
    pub const fn as_str(self) -> &'static str {
        match self {
            Currency::Mxn => "MXN",
            Currency::Usd => "USD",
        }
    }
}

/// A purchasable product or bill, as the API returns it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Sku {
    /// Stable identifier, e.g. `sku-tl-TEL010`.
    pub id: String,
    /// Slug of the carrier or biller, e.g. `telcel`.
    pub provider_id: String,
    /// Display name, in the requested locale where the catalog has it.
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub category: SkuCategory,
    /// Regex the purchase's `skuReference` must match (ECMAScript and Rust compatible).
    pub reference_regex_validation: String,
    pub reference_label: String,
    /// Regex the purchase's amount must match.
    pub amount_regex_validation: String,
    pub amount_label: String,
    /// The price in major units of `currency`; absent for variable-amount SKUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_amount: Option<MinorAmount>,
    /// Smallest amount a variable-amount SKU accepts (cobro extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_amount: Option<MinorAmount>,
    /// Largest amount a variable-amount SKU accepts (cobro extension).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount: Option<MinorAmount>,
    pub currency: Currency,
    /// Whether `POST /v1/skus/{id}/check-reference` can validate a reference before purchase.
    pub can_check_sku_reference: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
    pub provider: Provider,
    /// Admin-curated taxonomy code such as `RECARGAS`, `GIFT_CARDS`, `GENERAL`, `TELEFONIA`.
    pub chipi_category: String,
    /// Human carrier or biller name, e.g. `Telcel`.
    pub carrier_name: String,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

/// Localised texts of a SKU for one language.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SkuTexts {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reference_label: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_label: Option<String>,
}

/// One record of a catalog file (`cobro admin catalog import/export`): the `Sku` shape plus
/// what the operator controls: `active`, and `translations` keyed by language (`es`).
/// The base texts (`name`, `description`, labels) are English.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CatalogEntry {
    pub id: String,
    pub provider_id: String,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub category: SkuCategory,
    pub reference_regex_validation: String,
    pub reference_label: String,
    pub amount_regex_validation: String,
    pub amount_label: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_amount: Option<MinorAmount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_amount: Option<MinorAmount>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_amount: Option<MinorAmount>,
    pub currency: Currency,
    pub can_check_sku_reference: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub logo_url: Option<String>,
    pub provider: Provider,
    pub chipi_category: String,
    pub carrier_name: String,
    /// Inactive SKUs are kept (purchases refer to them) but neither listed nor sold.
    #[serde(default = "default_true")]
    pub active: bool,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub translations: BTreeMap<String, SkuTexts>,
    /// Set by the server; ignored on import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<Timestamp>,
    /// Set by the server; ignored on import.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<Timestamp>,
}

fn default_true() -> bool {
    true
}

/// The answer of `POST /v1/skus/{id}/check-reference`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceCheck {
    /// Whether the biller knows the reference.
    pub valid: bool,
    /// The account holder's name, when the biller tells it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// What is due on a bill, as a decimal string in the SKU's currency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_due: Option<String>,
    /// Why the reference is not valid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The list envelope of every paginated endpoint: `PaginatedResponse<T>` in the SDK.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Paginated<T> {
    pub data: Vec<T>,
    /// Number of items matching the filters, across all pages.
    pub total: u64,
    /// The 1-based page returned.
    pub page: u64,
    /// The page size used.
    pub limit: u64,
    /// `ceil(total / limit)`; 0 when nothing matches.
    pub total_pages: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn telefonica_is_read_as_telefonia_and_written_as_telefonia() {
        let c: Result<SkuCategory, _> = serde_json::from_str("\"TELEFONICA\"");
        assert_eq!(c.ok(), Some(SkuCategory::Telefonia));
        assert_eq!(
            SkuCategory::parse("TELEFONICA"),
            Some(SkuCategory::Telefonia)
        );
        assert_eq!(
            serde_json::to_string(&SkuCategory::Telefonia)
                .ok()
                .as_deref(),
            Some("\"TELEFONIA\"")
        );
    }

    #[test]
    fn category_wire_names_match_serde() {
        for c in SkuCategory::ALL {
            let json = serde_json::to_string(&c).unwrap_or_default();
            assert_eq!(json, format!("\"{}\"", c.as_str()));
            assert_eq!(SkuCategory::parse(c.as_str()), Some(c));
        }
        assert_eq!(SkuCategory::parse("telefonia"), None);
    }
}
