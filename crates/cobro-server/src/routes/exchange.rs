//! `GET /v1/exchanges/usd-amount?currencyAmount=200&currency=MXN`: a bare JSON number, as the
//! SDK's `getUsdAmount` expects (`Number.isFinite(response)`). USD in, USD out.

use axum::{
    Json,
    extract::{RawQuery, State},
};
use cobro_domain::pricing;
use cobro_types::{Currency, ErrorBody, ErrorCode, MinorAmount, UsdMicros};

use crate::{AppState, auth::CatalogCaller, error::ApiError, extract::query_pairs};

/// Converts an amount to USD at the current rate (no markup), rounded half-up to 6 decimals.
#[utoipa::path(
    get, path = "/v1/exchanges/usd-amount", tag = "catalog",
    params(
        ("currencyAmount" = f64, Query, description = "Amount, > 0, at most 2 decimals"),
        ("currency" = Currency, Query, description = "MXN or USD"),
    ),
    responses((status = 200, description = "The amount in USD, a bare number", body = f64), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn usd_amount(
    _caller: CatalogCaller,
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<UsdMicros>, ApiError> {
    let (mut amount, mut currency) = (None, None);
    for (k, v) in query_pairs(raw.as_deref())? {
        match k.as_str() {
            "currencyAmount" => {
                let a = MinorAmount::parse_major(&v).map_err(|e| {
                    ApiError::param(
                        ErrorCode::InvalidParameter,
                        "currencyAmount",
                        format!("Invalid value for 'currencyAmount': {e}."),
                    )
                })?;
                if a.0 <= 0 {
                    return Err(ApiError::param(
                        ErrorCode::InvalidParameter,
                        "currencyAmount",
                        "currencyAmount must be greater than 0.",
                    ));
                }
                amount = Some(a);
            }
            "currency" => {
                currency = Some(match v.as_str() {
                    "MXN" => Currency::Mxn,
                    "USD" => Currency::Usd,
                    _ => {
                        return Err(ApiError::param(
                            ErrorCode::InvalidParameter,
                            "currency",
                            "currency must be MXN or USD.",
                        ));
                    }
                })
            }
            _ => {}
        }
    }
    let missing = |p: &str| {
        ApiError::param(
            ErrorCode::MissingParameter,
            p,
            format!("Missing required query parameter '{p}'."),
        )
    };
    let amount = amount.ok_or_else(|| missing("currencyAmount"))?;
    let currency = currency.ok_or_else(|| missing("currency"))?;
    let rate = app.rates.usd_per_unit(currency).ok_or_else(|| {
        ApiError::new(
            ErrorCode::ServiceUnavailable,
            "No exchange rate is available; retry later.",
        )
    })?;
    let usd = pricing::to_usd_micros(amount, rate).map_err(|e| {
        ApiError::param(ErrorCode::InvalidParameter, "currencyAmount", e.to_string())
    })?;
    Ok(Json(usd))
}
