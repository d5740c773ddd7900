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
