//! The error body every non-2xx response carries, and the stable codes it may hold.
//!
//! One body satisfies every client we know of: Chipi's SDKs read `{message, code, status}`,
//! the legacy reference shows `{error, message}`, and Stripe-style integrators look for
//! `param` and a request id. Codes are part of the contract: never rename one, only add.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// The broad class of an error (the `error` field), one per kind of remedy.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ErrorClass {
    InvalidRequest,
    AuthenticationError,
    PermissionError,
    NotFound,
    Conflict,
    InsufficientFunds,
    RateLimited,
    UpstreamError,
    InternalError,
}

macro_rules! error_codes {
    ($( $(#[$doc:meta])* $variant:ident => ($text:literal, $status:literal, $class:ident), )*) => {
        /// Every stable error code the server emits, with its HTTP status and class.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum ErrorCode {
            $( $(#[$doc])* $variant, )*
        }

        impl ErrorCode {
            /// All codes, in declaration order (documentation and tests walk this list).
            pub const ALL: &'static [ErrorCode] = &[$(ErrorCode::$variant,)*];

            /// The SCREAMING_SNAKE_CASE code as it appears on the wire.
            pub const fn as_str(self) -> &'static str {
                match self { $(ErrorCode::$variant => $text,)* }
            }

            /// The HTTP status this code is always sent with.
            pub const fn status(self) -> u16 {
                match self { $(ErrorCode::$variant => $status,)* }
            }

            /// The error class (`error` field) this code belongs to.
            pub const fn class(self) -> ErrorClass {
                match self { $(ErrorCode::$variant => ErrorClass::$class,)* }
            }

            /// Parses a wire code; `None` for codes this version does not know.
            pub fn parse(code: &str) -> Option<ErrorCode> {
                match code { $($text => Some(ErrorCode::$variant),)* _ => None }
            }
        }
    };
}

error_codes! {
    // -- 400: the request itself is wrong --------------------------------------------------
    /// A query parameter or body field has a bad value; `param` names it.
    InvalidParameter => ("INVALID_PARAMETER", 400, InvalidRequest),
    /// A required body field is missing; `param` names it.
    MissingParameter => ("MISSING_PARAMETER", 400, InvalidRequest),
    /// The body is not valid JSON, or not the JSON shape the endpoint takes.
    InvalidJson => ("INVALID_JSON", 400, InvalidRequest),
    /// The query string cannot be parsed at all.
    InvalidQuery => ("INVALID_QUERY", 400, InvalidRequest),
    /// A body was sent with a content type other than `application/json`.
    UnsupportedMediaType => ("UNSUPPORTED_MEDIA_TYPE", 415, InvalidRequest),
    /// The body is larger than the server's limit (64 KiB by default).
    PayloadTooLarge => ("PAYLOAD_TOO_LARGE", 413, InvalidRequest),
    /// The SKU's biller cannot validate references before purchase (`canCheckSkuReference` is false).
    ReferenceCheckUnsupported => ("REFERENCE_CHECK_UNSUPPORTED", 400, InvalidRequest),
    /// The route exists but not with this HTTP method.
    MethodNotAllowed => ("METHOD_NOT_ALLOWED", 405, InvalidRequest),

    // -- 401: who is calling cannot be established -------------------------------------------
    /// No `x-api-key` header.
    MissingApiKey => ("MISSING_API_KEY", 401, AuthenticationError),
    /// The `x-api-key` is malformed or unknown.
    InvalidApiKey => ("INVALID_API_KEY", 401, AuthenticationError),
    /// The `x-api-key` was revoked.
    ApiKeyRevoked => ("API_KEY_REVOKED", 401, AuthenticationError),
    /// No `Authorization: Bearer` header (or not a Bearer scheme).
    MissingAuthorization => ("MISSING_AUTHORIZATION", 401, AuthenticationError),
    /// A secret key was sent where the endpoint takes only a customer JWT.
    CustomerJwtRequired => ("CUSTOMER_JWT_REQUIRED", 401, AuthenticationError),
    /// A customer JWT was sent where the endpoint takes only the secret key.
    SecretKeyRequired => ("SECRET_KEY_REQUIRED", 401, AuthenticationError),
    /// The bearer secret key does not belong to the public key's organisation and environment.
    InvalidSecretKey => ("INVALID_SECRET_KEY", 401, AuthenticationError),
    /// The bearer token is not a well-formed JWT.
    MalformedToken => ("MALFORMED_TOKEN", 401, AuthenticationError),
    /// The JWT's `alg` is not an accepted asymmetric algorithm (`none`, HMAC, ...).
    UnsupportedTokenAlgorithm => ("UNSUPPORTED_TOKEN_ALGORITHM", 401, AuthenticationError),
    /// The JWT's `kid` is not in the key's JWKS, even after a refresh.
    UnknownSigningKey => ("UNKNOWN_SIGNING_KEY", 401, AuthenticationError),
    /// The JWT's signature does not verify.
    InvalidTokenSignature => ("INVALID_TOKEN_SIGNATURE", 401, AuthenticationError),
    /// The JWT's `exp` is in the past.
    TokenExpired => ("TOKEN_EXPIRED", 401, AuthenticationError),
    /// The JWT's `nbf` is in the future.
    TokenNotYetValid => ("TOKEN_NOT_YET_VALID", 401, AuthenticationError),
    /// The JWT's `iss` is not the issuer configured on the key.
    InvalidTokenIssuer => ("INVALID_TOKEN_ISSUER", 401, AuthenticationError),
    /// The JWT's `aud` does not contain the audience configured on the key.
    InvalidTokenAudience => ("INVALID_TOKEN_AUDIENCE", 401, AuthenticationError),
    /// The JWT lacks a claim the server requires (`sub`, `exp`).
    MissingTokenClaim => ("MISSING_TOKEN_CLAIM", 401, AuthenticationError),

    // -- 404 -----------------------------------------------------------------------------------
    /// No route matches the path.
    RouteNotFound => ("ROUTE_NOT_FOUND", 404, NotFound),
    /// No active SKU has this id.
    SkuNotFound => ("SKU_NOT_FOUND", 404, NotFound),
    /// The organisation does not exist.
    OrgNotFound => ("ORG_NOT_FOUND", 404, NotFound),
    /// No purchase with this id in the caller's organisation and environment.
    PurchaseNotFound => ("PURCHASE_NOT_FOUND", 404, NotFound),
    /// No webhook endpoint with this id in the caller's organisation and environment.
    WebhookEndpointNotFound => ("WEBHOOK_ENDPOINT_NOT_FOUND", 404, NotFound),
    /// No event with this id in the caller's organisation and environment.
    EventNotFound => ("EVENT_NOT_FOUND", 404, NotFound),

    // -- money and conflicts ---------------------------------------------------------------------
    /// The organisation's credits do not cover the purchase; nothing was stored or debited.
    InsufficientBalance => ("INSUFFICIENT_BALANCE", 402, InsufficientFunds),
    /// The idempotency key (`transactionHash`) was used before with a different request.
    IdempotencyKeyReused => ("IDEMPOTENCY_KEY_REUSED", 422, Conflict),
    /// No carrier can fulfil production purchases right now; nothing was debited.
    CarrierUnavailable => ("CARRIER_UNAVAILABLE", 503, UpstreamError),
    /// The organisation already has the most webhook endpoints allowed in this environment.
    WebhookEndpointLimit => ("WEBHOOK_ENDPOINT_LIMIT", 409, Conflict),
    /// The endpoint is disabled; enable it (PATCH) before redelivering to it.
    WebhookEndpointDisabled => ("WEBHOOK_ENDPOINT_DISABLED", 409, Conflict),

    // -- 5xx -------------------------------------------------------------------------------------
    /// The key's JWKS could not be fetched and no cached copy can verify the token.
    JwksUnavailable => ("JWKS_UNAVAILABLE", 503, UpstreamError),
    /// The database is unreachable or overloaded; retry with backoff.
    ServiceUnavailable => ("SERVICE_UNAVAILABLE", 503, InternalError),
    /// The request took longer than the server's limit.
    RequestTimeout => ("REQUEST_TIMEOUT", 503, InternalError),
    /// An unexpected failure; the request id locates it in the server's logs.
    InternalError => ("INTERNAL_ERROR", 500, InternalError),
}

impl std::fmt::Display for ErrorCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The JSON body of every error response.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ErrorBody {
    /// The error class, e.g. `invalid_request`.
    pub error: ErrorClass,
    /// The stable code, e.g. `SKU_NOT_FOUND`.
    pub code: String,
    /// A human-readable explanation; wording may change, match on `code` instead.
    pub message: String,
    /// The HTTP status, repeated for clients that only see the body.
    pub status: u16,
    /// The `x-request-id` of the request, to quote when asking for help.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    /// The parameter or field at fault, when there is one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub param: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_round_trips_through_its_wire_text() {
        for code in ErrorCode::ALL {
            assert_eq!(ErrorCode::parse(code.as_str()), Some(*code));
            assert!(
                code.as_str()
                    .chars()
                    .all(|c| c.is_ascii_uppercase() || c == '_')
            );
        }
    }

    #[test]
    fn authentication_codes_are_401_and_not_found_codes_are_404() {
        for code in ErrorCode::ALL {
            match code.class() {
                ErrorClass::AuthenticationError => assert_eq!(code.status(), 401, "{code}"),
                ErrorClass::NotFound => assert_eq!(code.status(), 404, "{code}"),
                _ => {}
            }
        }
    }
}

#[cfg(test)]
mod docs_tests {
    use super::ErrorCode;

    #[test]
    fn every_error_code_is_documented_with_its_status() {
        let doc = include_str!("../../../docs/api.md");
        for code in ErrorCode::ALL {
            let row = format!("| `{}` | {} |", code.as_str(), code.status());
            assert!(doc.contains(&row), "docs/api.md lacks the row {row}");
        }
    }
}
