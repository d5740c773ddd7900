//! The one error type of the HTTP layer, and the middleware that renders every error.
//!
//! Handlers return [`ApiError`]; its `IntoResponse` attaches the error to the response
//! instead of rendering it, and [`render_errors`] (the outermost middleware, the only one
//! that knows the request id) writes the JSON body. The same middleware turns errors that
//! never went through a handler (axum's own 405, a body-limit 413, a timeout, a panic) into
//! the same body, so a client sees one error shape whatever failed.

use axum::{
    body::Body,
    extract::Request,
    http::{HeaderValue, StatusCode, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use cobro_store::StoreError;
use cobro_types::{ErrorBody, ErrorCode};

use crate::telemetry::RequestId;

/// An error answer: a stable code, a message safe to show, and optionally the parameter.
#[derive(Debug, Clone)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    pub param: Option<String>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            param: None,
        }
    }

    /// An error about one parameter or field.
    pub fn param(code: ErrorCode, param: impl Into<String>, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            param: Some(param.into()),
        }
    }

    /// An unexpected failure: logged in full, shown to the client only as INTERNAL_ERROR.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        ApiError::new(
            ErrorCode::InternalError,
            "An unexpected error occurred; quote the request id if you contact support.",
        )
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::Database(msg) => {
                tracing::error!(error = %msg, "database unavailable");
                ApiError::new(
                    ErrorCode::ServiceUnavailable,
                    "The database is unavailable; retry with backoff.",
                )
            }
            other => ApiError::internal("store error", other),
        }
    }
}

impl From<cobro_domain::ParamError> for ApiError {
    fn from(e: cobro_domain::ParamError) -> Self {
        let message = format!("Invalid value for '{}': {}.", e.param, e.message);
        ApiError::param(ErrorCode::InvalidParameter, e.param, message)
    }
}

/// Marker placed in response extensions; rendered by [`render_errors`].
#[derive(Debug, Clone)]
struct PendingError(ApiError);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = status.into_response();
        resp.extensions_mut().insert(PendingError(self));
        resp
    }
}

/// The error a bare status from outside the handlers stands for.
fn error_for_status(status: StatusCode) -> ApiError {
    let (code, message) = match status {
        StatusCode::NOT_FOUND => (ErrorCode::RouteNotFound, "No such route."),
        StatusCode::METHOD_NOT_ALLOWED => (
            ErrorCode::MethodNotAllowed,
            "This route does not accept that HTTP method.",
        ),
        StatusCode::PAYLOAD_TOO_LARGE => {
            (ErrorCode::PayloadTooLarge, "The request body is too large.")
        }
        StatusCode::UNSUPPORTED_MEDIA_TYPE => (
            ErrorCode::UnsupportedMediaType,
            "Send bodies as application/json.",
        ),
        StatusCode::REQUEST_TIMEOUT | StatusCode::GATEWAY_TIMEOUT => (
            ErrorCode::RequestTimeout,
            "The request took too long and was abandoned.",
        ),
        StatusCode::BAD_REQUEST => (ErrorCode::InvalidQuery, "The request could not be parsed."),
        StatusCode::SERVICE_UNAVAILABLE => (
            ErrorCode::ServiceUnavailable,
            "The service is unavailable; retry with backoff.",
        ),
        _ => (
            ErrorCode::InternalError,
            "An unexpected error occurred; quote the request id if you contact support.",
        ),
    };
    ApiError::new(code, message)
}

/// Builds the JSON body of an error.
pub fn error_body(err: &ApiError, request_id: Option<&str>) -> ErrorBody {
    ErrorBody {
        error: err.code.class(),
        code: err.code.as_str().to_string(),
        message: err.message.clone(),
        status: err.code.status(),
        request_id: request_id.map(str::to_string),
        param: err.param.clone(),
    }
}

/// Renders every error response as an [`ErrorBody`] with the request id.
pub async fn render_errors(req: Request, next: Next) -> Response {
    let request_id = req.extensions().get::<RequestId>().map(|r| r.0.clone());
    let resp = next.run(req).await;
    let pending = resp.extensions().get::<PendingError>().map(|p| p.0.clone());
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    let err = match pending {
        Some(err) => err,
        None if resp.status().is_client_error() || resp.status().is_server_error() => {
            if is_json {
                return resp; // already an error body (e.g. rendered by a nested router)
            }
            error_for_status(resp.status())
        }
        None => return resp,
    };
    if err.code.status() >= 500 {
        tracing::warn!(code = err.code.as_str(), "request failed");
    }
    let body = error_body(&err, request_id.as_deref());
    let json =
        serde_json::to_vec(&body).unwrap_or_else(|_| b"{\"error\":\"internal_error\"}".to_vec());
    let (mut parts, _) = resp.into_parts();
    parts.status =
        StatusCode::from_u16(err.code.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.extensions.remove::<PendingError>();
    Response::from_parts(parts, Body::from(json))
}
