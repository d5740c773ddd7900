//! `POST /v1/sku-purchases`, `GET /v1/sku-purchases/{id}`, `GET /v1/sku-purchases`.
//! Customer JWT only (a secret key is `CUSTOMER_JWT_REQUIRED`); scoped to the caller's
//! organisation and environment.

use axum::{
    Json,
    extract::{Path, RawQuery, State},
    http::{HeaderName, HeaderValue, StatusCode},
    response::{IntoResponse, Response},
};
use cobro_domain::{
    ParamError,
    catalog::{parse_limit, parse_offset, parse_page, window},
    purchase::{self, InvalidPurchase},
};
use cobro_store::{PurchaseFilter, PurchaseResult};
use cobro_types::{
    CreateSkuPurchaseInput, Environment, ErrorBody, ErrorCode, Paginated, PurchaseStatus,
    Timestamp, Transaction,
};

use crate::{
    AppState,
    auth::{CustomerCaller, Principal},
    error::ApiError,
    extract::{ApiJson, query_pairs},
    purchases::{Buyer, build, markup_from, to_transaction},
};

/// Header on a replayed (idempotent) answer.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

/// Buys a SKU with the organisation's credits.
#[utoipa::path(
    post, path = "/v1/sku-purchases", tag = "purchases",
    request_body = CreateSkuPurchaseInput,
    responses(
        (status = 201, description = "Created: debited and queued (dev keys: already SUCCESS)", body = Transaction),
        (status = 200, description = "Replay of the same transactionHash; header Idempotent-Replayed: true", body = Transaction),
        (status = 400, description = "A field is invalid; `param` names it", body = ErrorBody),
        (status = 401, description = "Authentication failed (a customer JWT is required)", body = ErrorBody),
        (status = 402, description = "INSUFFICIENT_BALANCE: nothing stored, nothing debited", body = ErrorBody),
        (status = 404, description = "SKU_NOT_FOUND", body = ErrorBody),
        (status = 422, description = "IDEMPOTENCY_KEY_REUSED with a different body", body = ErrorBody),
        (status = 503, description = "CARRIER_UNAVAILABLE: nothing debited", body = ErrorBody),
    ),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn create_purchase(
    CustomerCaller(caller): CustomerCaller,
    State(app): State<AppState>,
    ApiJson(input): ApiJson<CreateSkuPurchaseInput>,
) -> Result<Response, ApiError> {
    let valid = purchase::validate(&input, &app.catalog()).map_err(|e| match e {
        InvalidPurchase::Param(p) => ApiError::from(p),
        InvalidPurchase::SkuNotFound(id) => ApiError::param(
            ErrorCode::SkuNotFound,
            "skuId",
            format!("No SKU with id '{id}'."),
        ),
    })?;
    if caller.environment() == Environment::Prod && app.carrier.is_none() {
        // Never take money for a purchase nobody will fulfil: refuse before any debit.
        return Err(ApiError::new(
            ErrorCode::CarrierUnavailable,
            "No carrier is configured for production purchases; nothing was debited. Dev keys use the sandbox.",
        ));
    }
    let Principal::Customer { sub } = &caller.principal else {
        return Err(ApiError::new(
            ErrorCode::CustomerJwtRequired,
            "This endpoint requires a customer JWT.",
        ));
    };
    let rule = app.markup_rule(caller.org_id(), &valid.sku.id, valid.sku.category.as_str());
    let buyer = Buyer {
        org_id: caller.org_id(),
        environment: caller.environment(),
        api_public_key: &caller.key.public_key,
        customer_id: sub,
    };
    let new = build(
        &buyer,
        &valid,
        app.rates.as_ref(),
        &markup_from(rule)?,
        Timestamp::now(),
    )?;
    match app.writer.create(new).await? {
        PurchaseResult::Created(r) => {
            Ok((StatusCode::CREATED, Json(to_transaction(&r))).into_response())
        }
        PurchaseResult::Replayed(r) => {
            let mut resp = (StatusCode::OK, Json(to_transaction(&r))).into_response();
            resp.headers_mut().insert(
                HeaderName::from_static(IDEMPOTENT_REPLAYED),
                HeaderValue::from_static("true"),
            );
            Ok(resp)
        }
        PurchaseResult::KeyReused(existing) => Err(ApiError::param(
            ErrorCode::IdempotencyKeyReused,
            "transactionHash",
            format!(
                "transactionHash '{}' was already used for purchase {} with a different request; use a new key.",
                existing.idempotency_key, existing.id
            ),
        )),
        PurchaseResult::InsufficientBalance => Err(ApiError::new(
            ErrorCode::InsufficientBalance,
            "The organisation's credits do not cover this purchase; nothing was debited.",
        )),
    }
}

/// One purchase of the caller's organisation and environment.
#[utoipa::path(
    get, path = "/v1/sku-purchases/{id}", tag = "purchases",
    params(("id" = String, Path, description = "Purchase id")),
    responses(
        (status = 200, body = Transaction),
        (status = 401, body = ErrorBody),
        (status = 404, description = "PURCHASE_NOT_FOUND (also for other organisations' and environments' purchases)", body = ErrorBody),
    ),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn get_purchase(
    CustomerCaller(caller): CustomerCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Transaction>, ApiError> {
    app.store
        .get_purchase(caller.org_id(), caller.environment(), &id)
        .await?
        .map(|r| Json(to_transaction(&r)))
        .ok_or_else(|| {
            ApiError::param(
                ErrorCode::PurchaseNotFound,
                "id",
                format!("No purchase with id '{id}'."),
            )
        })
}

fn parse_time(param: &str, value: &str) -> Result<Timestamp, ParamError> {
    Timestamp::parse_rfc3339(value).ok_or_else(|| {
        ParamError::new(
            param,
            "must be an RFC 3339 timestamp such as 2026-05-19T00:00:00Z",
        )
    })
}

/// The caller's purchases, newest first.
#[utoipa::path(
    get, path = "/v1/sku-purchases", tag = "purchases",
    params(
        ("page" = Option<u64>, Query), ("limit" = Option<u64>, Query), ("offset" = Option<u64>, Query),
        ("status" = Option<PurchaseStatus>, Query), ("skuId" = Option<String>, Query), ("skuReference" = Option<String>, Query),
        ("createdFrom" = Option<String>, Query, description = "RFC 3339, inclusive"),
        ("createdTo" = Option<String>, Query, description = "RFC 3339, inclusive"),
    ),
    responses((status = 200, body = Paginated<Transaction>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn list_purchases(
    CustomerCaller(caller): CustomerCaller,
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Paginated<Transaction>>, ApiError> {
    let (mut page, mut limit, mut offset) = (None, None, None);
    let mut f = PurchaseFilter::default();
    for (k, v) in query_pairs(raw.as_deref())? {
        if v.is_empty() {
            continue;
        }
        match k.as_str() {
            "page" => page = Some(parse_page(&v)?),
            "limit" => limit = Some(parse_limit(&v)?),
            "offset" => offset = Some(parse_offset(&v)?),
            "status" => {
                f.status = Some(PurchaseStatus::parse(&v).ok_or_else(|| {
                    ParamError::new(
                        "status",
                        "must be one of PENDING, PROCESSING, SUCCESS, FAILED, CANCELLED",
                    )
                })?)
            }
            "skuId" => f.sku_id = Some(v),
            "skuReference" => f.sku_reference = Some(v),
            "createdFrom" => f.created_from = Some(parse_time("createdFrom", &v)?),
            "createdTo" => f.created_to = Some(parse_time("createdTo", &v)?),
            _ => {}
        }
    }
    let (offset, limit, page) = window(page, limit, offset);
    let (records, total) = app
        .store
        .list_purchases(
            caller.org_id(),
            caller.environment(),
            &f,
            u32::try_from(limit).unwrap_or(100),
            offset,
        )
        .await?;
    Ok(Json(Paginated {
        data: records.iter().map(to_transaction).collect(),
        total,
        page,
        limit,
        total_pages: total.div_ceil(limit),
    }))
}
