//! Operational endpoints: health, readiness, metrics, the built-in issuer's JWKS, OpenAPI,
//! and the fallback for unknown routes.

use std::time::Duration;

use axum::{
    Json,
    extract::State,
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use cobro_types::ErrorCode;
use serde_json::json;
use utoipa::OpenApi;

use crate::{AppState, error::ApiError, openapi::ApiDoc};

/// Liveness: the process is serving HTTP.
#[utoipa::path(get, path = "/healthz", tag = "operations", responses((status = 200, description = "Alive")))]
pub async fn healthz() -> Json<serde_json::Value> {
    Json(json!({ "status": "ok" }))
}

/// Readiness: the database answers within two seconds.
#[utoipa::path(
    get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "Ready"), (status = 503, description = "Database unreachable", body = cobro_types::ErrorBody))
)]
pub async fn readyz(State(app): State<AppState>) -> Result<Json<serde_json::Value>, ApiError> {
    match tokio::time::timeout(Duration::from_secs(2), app.store.ping()).await {
        Ok(Ok(())) => Ok(Json(json!({
            "status": "ready",
            "database": app.store.backend(),
            "catalogSkus": app.catalog().len(),
        }))),
        Ok(Err(e)) => Err(e.into()),
        Err(_) => Err(ApiError::new(
            ErrorCode::ServiceUnavailable,
            "The database did not answer in time.",
        )),
    }
}

/// Prometheus metrics in the text exposition format.
pub async fn metrics(State(app): State<AppState>) -> Response {
    let mut resp = app.metrics.render().into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/openmetrics-text; version=1.0.0; charset=utf-8"),
    );
    resp
}

/// The public keys of the built-in development issuer.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations", responses((status = 200, description = "JWKS")))]
pub async fn jwks(State(app): State<AppState>) -> Response {
    let mut resp = Json(app.issuer.jwks()).into_response();
    resp.headers_mut().insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=300"),
    );
    resp
}

/// The OpenAPI 3.1 description of this server, generated from the code.
pub async fn openapi() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// Any path no route matches.
pub async fn not_found() -> ApiError {
    ApiError::new(
        ErrorCode::RouteNotFound,
        "No such route; see /openapi.json for the API.",
    )
}
