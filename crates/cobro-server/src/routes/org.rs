//! Organisation endpoints (secret key only): `GET /v1/balance`, `GET /v1/ledger-entries`.

use axum::{
    Json,
    extract::{RawQuery, State},
};
use cobro_domain::catalog::{parse_limit, parse_offset, parse_page, window};
use cobro_types::{ErrorBody, LedgerEntryView, OrgBalance, Paginated};

use crate::{AppState, auth::OrgCaller, error::ApiError, extract::query_pairs};

/// The organisation's credits.
#[utoipa::path(
    get, path = "/v1/balance", tag = "organisation",
    responses((status = 200, body = OrgBalance), (status = 401, description = "A secret key is required", body = ErrorBody)),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn balance(
    OrgCaller(caller): OrgCaller,
    State(app): State<AppState>,
) -> Result<Json<OrgBalance>, ApiError> {
    let available = app.store.balance(caller.org_id()).await?;
    Ok(Json(OrgBalance {
        org_id: caller.org_id().to_string(),
        available_usd: available,
        total_usd: available,
        available_micros: available.0,
    }))
}

/// The organisation's ledger, newest first.
#[utoipa::path(
    get, path = "/v1/ledger-entries", tag = "organisation",
    params(("page" = Option<u64>, Query), ("limit" = Option<u64>, Query), ("offset" = Option<u64>, Query)),
    responses((status = 200, body = Paginated<LedgerEntryView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn ledger_entries(
    OrgCaller(caller): OrgCaller,
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Paginated<LedgerEntryView>>, ApiError> {
    let (mut page, mut limit, mut offset) = (None, None, None);
    for (k, v) in query_pairs(raw.as_deref())? {
        match (k.as_str(), v.is_empty()) {
            ("page", false) => page = Some(parse_page(&v)?),
            ("limit", false) => limit = Some(parse_limit(&v)?),
            ("offset", false) => offset = Some(parse_offset(&v)?),
            _ => {}
        }
    }
    let (offset, limit, page) = window(page, limit, offset);
    let total = app.store.count_ledger_entries(caller.org_id()).await?;
    let entries = app
        .store
        .ledger_entries(caller.org_id(), u32::try_from(limit).unwrap_or(100), offset)
        .await?;
    Ok(Json(Paginated {
        data: entries
            .into_iter()
            .map(|e| LedgerEntryView {
                id: e.id,
                kind: e.kind,
                amount_usd: e.amount,
                balance_after_usd: e.balance_after,
                purchase_id: e.purchase_id,
                note: e.note,
                created_at: e.created_at,
            })
            .collect(),
        total,
        page,
        limit,
        total_pages: total.div_ceil(limit),
    }))
}
