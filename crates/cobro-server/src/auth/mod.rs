//! Who is calling: the `x-api-key` + `Authorization: Bearer` guard of every `/v1` route.
//!
//! | extractor | bearer accepted |
//! | --- | --- |
//! | [`CatalogCaller`] | a customer JWT, or the secret key of the same organisation and environment |
//! | [`CustomerCaller`] | a customer JWT only (a secret key is `CUSTOMER_JWT_REQUIRED`) |
//! | [`OrgCaller`] | the secret key only (a JWT is `SECRET_KEY_REQUIRED`) |
//!
//! The checks run in a fixed order, and the first failure is the answer: `x-api-key` present,
//! well-formed, known, not revoked; then a Bearer credential; then the secret key or the JWT.
//! Anything a caller reads is scoped to the organisation and environment of its public key.

pub mod issuer;
pub mod jwt;
pub mod keyring;

use std::sync::Arc;

use axum::{extract::FromRequestParts, http::request::Parts};
use cobro_store::ApiKeyRecord;
use cobro_types::{Environment, ErrorCode};
use subtle::ConstantTimeEq;

use crate::{AppState, error::ApiError, telemetry::Metrics};

/// How the caller proved who it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Principal {
    /// A customer JWT; `sub` is the customer id.
    Customer { sub: String },
    /// The organisation's secret key (a server-side call).
    SecretKey,
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The API key named by `x-api-key`.
    pub key: Arc<ApiKeyRecord>,
    pub principal: Principal,
}

impl Caller {
    pub fn org_id(&self) -> &str {
        &self.key.org_id
    }

    pub fn environment(&self) -> Environment {
        self.key.environment
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Accept {
    JwtOrSecret,
    JwtOnly,
    SecretOnly,
}

/// Caller of the catalog and exchange endpoints (JWT or secret key).
#[derive(Debug, Clone)]
pub struct CatalogCaller(pub Caller);
/// Caller of the purchase endpoints (customer JWT only).
#[derive(Debug, Clone)]
pub struct CustomerCaller(pub Caller);
/// Caller of the organisation endpoints (secret key only).
#[derive(Debug, Clone)]
pub struct OrgCaller(pub Caller);

macro_rules! caller_extractor {
    ($t:ident, $accept:expr) => {
        impl FromRequestParts<AppState> for $t {
            type Rejection = ApiError;

            async fn from_request_parts(
                parts: &mut Parts,
                app: &AppState,
            ) -> Result<Self, ApiError> {
                match authenticate(parts, app, $accept).await {
                    Ok(c) => Ok($t(c)),
                    Err(e) => {
                        Metrics::count(&app.metrics.auth_failures, e.code.as_str());
                        Err(e)
                    }
                }
            }
        }
    };
}
caller_extractor!(CatalogCaller, Accept::JwtOrSecret);
caller_extractor!(CustomerCaller, Accept::JwtOnly);
caller_extractor!(OrgCaller, Accept::SecretOnly);

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get(name)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
}

async fn authenticate(parts: &Parts, app: &AppState, accept: Accept) -> Result<Caller, ApiError> {
    // Two values for one credential header would let a proxy and this server disagree on
    // who is calling: refuse them.
    if parts.headers.get_all("x-api-key").iter().count() > 1 {
        return Err(ApiError::new(
            ErrorCode::InvalidApiKey,
            "Send exactly one x-api-key header.",
        ));
    }
    if parts.headers.get_all("authorization").iter().count() > 1 {
        return Err(ApiError::new(
            ErrorCode::MalformedToken,
            "Send exactly one Authorization header.",
        ));
    }
    let public_key = header(parts, "x-api-key")
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::MissingApiKey,
                "Send your public key in the x-api-key header.",
            )
        })?;
    let invalid_key = || {
        ApiError::new(
            ErrorCode::InvalidApiKey,
            "The x-api-key is not a valid public key.",
        )
    };
    if cobro_domain::keys::parse_public_key(public_key).is_none() {
        return Err(invalid_key());
    }
    let key = app
        .keys
        .by_public_key(app.store.as_ref(), public_key)
        .await?
        .ok_or_else(invalid_key)?;
    if key.revoked_at.is_some() {
        return Err(ApiError::new(
            ErrorCode::ApiKeyRevoked,
            "This API key has been revoked.",
        ));
    }

    let bearer = header(parts, "authorization")
        .and_then(|v| {
            let (scheme, rest) = v.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| rest.trim())
        })
        .filter(|t| !t.is_empty())
        .ok_or_else(|| {
            let what = match accept {
                Accept::JwtOnly => "a customer JWT",
                Accept::SecretOnly => "your secret key",
                Accept::JwtOrSecret => "a customer JWT or your secret key",
            };
            ApiError::new(
                ErrorCode::MissingAuthorization,
                format!("Send {what} in the Authorization: Bearer header."),
            )
        })?;

    if bearer.starts_with("sk_") {
        if accept == Accept::JwtOnly {
            return Err(ApiError::new(
                ErrorCode::CustomerJwtRequired,
                "This endpoint requires a customer JWT in Authorization: Bearer; the secret key is not accepted here.",
            ));
        }
        check_secret(app, &key, bearer)?;
        return Ok(Caller {
            key,
            principal: Principal::SecretKey,
        });
    }
    if accept == Accept::SecretOnly {
        return Err(ApiError::new(
            ErrorCode::SecretKeyRequired,
            "This endpoint requires your secret key (sk_...) in Authorization: Bearer.",
        ));
    }
    let claims = app.jwt.verify(bearer, &key).await?;
    Ok(Caller {
        key,
        principal: Principal::Customer { sub: claims.sub },
    })
}

/// Accepts the secret key of any live key pair of the same organisation and environment.
/// The presented pair's own secret is checked directly; another pair's secret is found in
/// the key snapshot, so a pair created by another process vouches for other public keys once
/// the snapshot has refreshed (`auth.refresh_interval_ms`).
fn check_secret(app: &AppState, key: &ApiKeyRecord, secret: &str) -> Result<(), ApiError> {
    let refuse = || {
        ApiError::new(
            ErrorCode::InvalidSecretKey,
            "The secret key does not belong to this public key's organisation and environment.",
        )
    };
    if cobro_domain::keys::parse_secret_key(secret) != Some(key.environment) {
        return Err(refuse());
    }
    let hash = cobro_domain::keys::hash_secret(secret);
    if bool::from(hash.as_bytes().ct_eq(key.secret_hash.as_bytes())) {
        return Ok(());
    }
    match app.keys.by_secret_hash(&hash) {
        Some(other)
            if other.org_id == key.org_id
                && other.environment == key.environment
                && other.revoked_at.is_none() =>
        {
            Ok(())
        }
        _ => Err(refuse()),
    }
}
