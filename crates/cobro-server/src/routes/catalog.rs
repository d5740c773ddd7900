//! `GET /v1/skus` and `GET /v1/skus/{id}`, served from the in-memory catalog snapshot.

use axum::{
    Json,
    extract::{Path, RawQuery, State},
};
use cobro_domain::catalog::{CatalogQuery, Locale};
use cobro_types::{ErrorBody, ErrorCode, Paginated, Sku};
use utoipa::IntoParams;

use crate::{AppState, auth::CatalogCaller, error::ApiError, extract::query_pairs};

/// Query parameters of `GET /v1/skus` (documentation; parsing is in `cobro-domain`).
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code, non_snake_case)]
pub struct SkuListParams {
    /// 1-based page (default 1).
    page: Option<u64>,
    /// Page size, 1..=100 (default 10).
    limit: Option<u64>,
    /// Items to skip; when given it wins over `page`.
    offset: Option<u64>,
    /// `TET` or `CHIPI`.
    provider: Option<String>,
    /// A `SkuCategory`; `TELEFONICA` is accepted as `TELEFONIA`.
    category: Option<String>,
    /// Admin-curated code such as `RECARGAS`, `GIFT_CARDS` (case-insensitive).
    chipiCategory: Option<String>,
    /// Case-insensitive substring of the carrier name.
    carrierName: Option<String>,
    /// `en` (default) or `es`.
    locale: Option<String>,
}

/// Query parameters of `GET /v1/skus/{id}`.
#[derive(Debug, IntoParams)]
#[into_params(parameter_in = Query)]
#[allow(dead_code)]
pub struct SkuGetParams {
    /// `en` (default) or `es`.
    locale: Option<String>,
}

/// Lists active SKUs, filtered and paginated.
#[utoipa::path(
    get, path = "/v1/skus", tag = "catalog",
    params(SkuListParams),
    responses(
        (status = 200, description = "One page of SKUs", body = Paginated<Sku>),
        (status = 400, description = "A parameter is invalid; `param` names it", body = ErrorBody),
        (status = 401, description = "Authentication failed", body = ErrorBody),
    ),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn list_skus(
    _caller: CatalogCaller,
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Paginated<Sku>>, ApiError> {
    let pairs = query_pairs(raw.as_deref())?;
    let query = CatalogQuery::from_pairs(pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())))?;
    Ok(Json(app.catalog().list(&query)))
}

/// Returns one active SKU.
#[utoipa::path(
    get, path = "/v1/skus/{id}", tag = "catalog",
    params(("id" = String, Path, description = "SKU id, e.g. sku-tl-TEL010"), SkuGetParams),
    responses(
        (status = 200, description = "The SKU", body = Sku),
        (status = 401, description = "Authentication failed", body = ErrorBody),
        (status = 404, description = "No active SKU has this id (`SKU_NOT_FOUND`)", body = ErrorBody),
    ),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn get_sku(
    _caller: CatalogCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Sku>, ApiError> {
    let mut locale = Locale::default();
    for (k, v) in query_pairs(raw.as_deref())? {
        if k == "locale" && !v.is_empty() {
            locale = Locale::parse(&v).ok_or_else(|| {
                ApiError::param(
                    ErrorCode::InvalidParameter,
                    "locale",
                    "Invalid value for 'locale': must be one of en, es.",
                )
            })?;
        }
    }
    app.catalog().get(&id, locale).map(Json).ok_or_else(|| {
        ApiError::param(
            ErrorCode::SkuNotFound,
            "id",
            format!("No SKU with id '{id}'."),
        )
    })
}

/// Body of `POST /v1/skus/{id}/check-reference`.
#[derive(Debug, serde::Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct CheckReferenceInput {
    /// The phone number or account to check.
    pub reference: String,
}

/// Asks the biller whether a reference is valid (and, for bills, what is due) before buying.
#[utoipa::path(
    post, path = "/v1/skus/{id}/check-reference", tag = "catalog",
    params(("id" = String, Path, description = "SKU id")),
    request_body = CheckReferenceInput,
    responses(
        (status = 200, description = "`{valid, holder?, amountDue?, message?}`"),
        (status = 400, description = "INVALID_PARAMETER or REFERENCE_CHECK_UNSUPPORTED", body = ErrorBody),
        (status = 404, body = ErrorBody),
        (status = 503, description = "CARRIER_UNAVAILABLE", body = ErrorBody),
    ),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn check_reference(
    caller: CatalogCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
    crate::extract::ApiJson(input): crate::extract::ApiJson<CheckReferenceInput>,
) -> Result<Json<serde_json::Value>, ApiError> {
    use cobro_carriers::Carrier;
    let catalog = app.catalog();
    let sku = catalog.entry(&id).ok_or_else(|| {
        ApiError::param(
            ErrorCode::SkuNotFound,
            "id",
            format!("No SKU with id '{id}'."),
        )
    })?;
    if !sku.can_check_sku_reference {
        return Err(ApiError::new(
            ErrorCode::ReferenceCheckUnsupported,
            format!("The biller of '{id}' cannot check references."),
        ));
    }
    if catalog.reference_matches(&id, &input.reference) != Some(true) {
        return Err(ApiError::param(
            ErrorCode::InvalidParameter,
            "reference",
            format!(
                "Invalid value for 'reference': must be a valid {}.",
                sku.reference_label
            ),
        ));
    }
    let unavailable = |why: String| {
        ApiError::new(
            ErrorCode::CarrierUnavailable,
            format!("The biller could not be asked: {why}"),
        )
    };
    let check = match (caller.0.environment(), &app.carrier) {
        (cobro_types::Environment::Dev, _) => {
            cobro_carriers::SandboxCarrier
                .check_reference(&id, &input.reference)
                .await
        }
        (cobro_types::Environment::Prod, Some(carrier)) => {
            carrier.check_reference(&id, &input.reference).await
        }
        (cobro_types::Environment::Prod, None) => {
            return Err(unavailable("no carrier is configured".into()));
        }
    };
    let check = check.map_err(|e| unavailable(e.to_string()))?;
    serde_json::to_value(check)
        .map(Json)
        .map_err(|e| ApiError::internal("reference check", e))
}
