//! Extractors whose failures are [`ApiError`]s, so malformed input gets the same error body
//! as everything else.

use axum::{
    body::Bytes,
    extract::{FromRequest, Request},
    http::header,
};
use cobro_types::ErrorCode;
use serde::de::DeserializeOwned;

use crate::error::ApiError;

/// Decodes a query string into its (key, value) pairs, in order.
pub fn query_pairs(raw: Option<&str>) -> Result<Vec<(String, String)>, ApiError> {
    serde_urlencoded::from_str::<Vec<(String, String)>>(raw.unwrap_or_default()).map_err(|_| {
        ApiError::new(
            ErrorCode::InvalidQuery,
            "The query string is not valid URL encoding.",
        )
    })
}

/// A JSON body. Errors: 415 without `Content-Type: application/json`, 413 over the body
/// limit, 400 `INVALID_JSON` for bad syntax, 400 `MISSING_PARAMETER` / `INVALID_PARAMETER`
/// naming the field for a well-formed body of the wrong shape.
#[derive(Debug, Clone)]
pub struct ApiJson<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let is_json = req
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.split(';').next())
            .is_some_and(|m| m.trim().eq_ignore_ascii_case("application/json"));
        if !is_json {
            return Err(ApiError::new(
                ErrorCode::UnsupportedMediaType,
                "Send the body as JSON with Content-Type: application/json.",
            ));
        }
        let bytes = Bytes::from_request(req, state).await.map_err(|rejection| {
            if rejection.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
                ApiError::new(ErrorCode::PayloadTooLarge, "The request body is too large.")
            } else {
                ApiError::new(
                    ErrorCode::InvalidJson,
                    "The request body could not be read.",
                )
            }
        })?;
        parse_json(&bytes).map(ApiJson)
    }
}

/// Parses a JSON body, naming the field at fault.
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    if bytes.iter().find(|b| !b.is_ascii_whitespace()) != Some(&b'{') {
        return Err(ApiError::new(
            ErrorCode::InvalidJson,
            "The request body must be a JSON object.",
        ));
    }
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        if !matches!(inner.classify(), serde_json::error::Category::Data) {
            return ApiError::new(
                ErrorCode::InvalidJson,
                format!("The request body is not valid JSON: {inner}."),
            );
        }
        let msg = inner.to_string();
        // serde reports a missing field at the path of the object that lacks it.
        if let Some(field) = msg
            .strip_prefix("missing field `")
            .and_then(|r| r.split('`').next())
        {
            let param = if path == "." {
                field.to_string()
            } else {
                format!("{path}.{field}")
            };
            return ApiError::param(
                ErrorCode::MissingParameter,
                param.clone(),
                format!("Missing required field '{param}'."),
            );
        }
        if path == "." {
            return ApiError::new(
                ErrorCode::InvalidJson,
                format!("The request body has the wrong shape: {msg}."),
            );
        }
        let detail = msg.split(" at line ").next().unwrap_or(&msg).to_string();
        ApiError::param(
            ErrorCode::InvalidParameter,
            path.clone(),
            format!("Invalid value for '{path}': {detail}."),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    #[allow(dead_code)]
    struct Body {
        sku_id: String,
        currency_amount: f64,
    }

    #[test]
    fn json_errors_name_the_field_at_fault() {
        let e = parse_json::<Body>(b"{\"skuId\": \"x\"")
            .map(|_| ())
            .expect_err("truncated");
        assert_eq!(e.code, ErrorCode::InvalidJson);
        let e = parse_json::<Body>(b"{\"skuId\": \"x\"}")
            .map(|_| ())
            .expect_err("missing");
        assert_eq!(
            (e.code, e.param.as_deref()),
            (ErrorCode::MissingParameter, Some("currencyAmount"))
        );
        let e = parse_json::<Body>(b"{\"skuId\": 5, \"currencyAmount\": 1}")
            .map(|_| ())
            .expect_err("type");
        assert_eq!(
            (e.code, e.param.as_deref()),
            (ErrorCode::InvalidParameter, Some("skuId"))
        );
        let e = parse_json::<Body>(b"[1,2]").map(|_| ()).expect_err("shape");
        assert_eq!(e.code, ErrorCode::InvalidJson);
        assert!(
            parse_json::<Body>(b"{\"skuId\": \"x\", \"currencyAmount\": 1, \"extra\": true}")
                .is_ok()
        );
    }

    #[test]
    fn query_strings_decode_in_order() {
        let pairs = query_pairs(Some("a=1&carrierName=AT%26T&b=")).expect("decodes");
        assert_eq!(pairs[1], ("carrierName".to_string(), "AT&T".to_string()));
        assert_eq!(query_pairs(None).expect("empty").len(), 0);
    }
}
