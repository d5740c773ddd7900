//! Customer JWT verification against a JWKS fetched over HTTP.
//!
//! Rules (the table in the API docs):
//! * only asymmetric algorithms are accepted: RS256/384/512, PS256/384/512, ES256/384 and
//!   EdDSA. `alg: none` and every HMAC algorithm are refused before any key is looked at, so
//!   the classic "HS256 signed with the public key" forgery cannot work; symmetric (`oct`)
//!   keys in a JWKS are ignored, and a JWK that names its `alg` must match the token's;
//! * `exp` and `sub` are required; `exp`/`nbf` are checked with `auth.jwt_leeway_secs` of
//!   leeway; `iss`/`aud` are checked when the API key names them (always, for the built-in
//!   issuer: `iss` = its name, `aud` = the organisation id);
//! * a JWKS is cached per URL for `auth.jwks_cache_ttl_secs`; a token whose `kid` is not in
//!   the cached set triggers a refresh, but at most one fetch per URL per
//!   `auth.jwks_min_refresh_interval_ms` (single-flight), so a flood of made-up `kid`s cannot
//!   hammer the identity provider. When a refresh fails the stale set keeps being used.

use std::{
    collections::HashMap,
    str::FromStr,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use base64::Engine;
use cobro_store::ApiKeyRecord;
use cobro_types::ErrorCode;
use jsonwebtoken::{
    Algorithm, DecodingKey, Validation,
    errors::ErrorKind,
    jwk::{AlgorithmParameters, JwkSet, PublicKeyUse},
};
use serde::Deserialize;

use crate::{error::ApiError, telemetry::Metrics};

/// Largest JWKS document accepted.
const MAX_JWKS_BYTES: usize = 1 << 20;

/// Settings of the verifier (from `[auth]`).
#[derive(Debug, Clone)]
pub struct JwtSettings {
    pub leeway_secs: u64,
    pub cache_ttl: Duration,
    pub min_refresh_interval: Duration,
    pub fetch_timeout: Duration,
    pub builtin_issuer: String,
}

/// What a verified customer JWT tells us.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CustomerClaims {
    pub sub: String,
}

#[derive(Deserialize)]
struct SubClaim {
    sub: Option<String>,
    exp: Option<u64>,
}

/// Verified tokens are remembered for at most this long (and never past their `exp`), so a
/// client reusing its session token costs one signature check per minute, not one per call.
/// The API key is checked (and can be revoked) before the cache is consulted.
const VERIFIED_TTL_SECS: u64 = 60;
/// Bound on remembered tokens; the memory is cleared when it is reached.
const VERIFIED_CAPACITY: usize = 10_000;

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[derive(Clone)]
struct VerifyKey {
    key: DecodingKey,
    alg: Option<Algorithm>,
}

/// The usable keys of one JWKS document.
#[derive(Clone, Default)]
pub struct KeySet {
    by_kid: HashMap<String, VerifyKey>,
    /// The only key, when the set has exactly one (tokens without `kid` may use it).
    only: Option<VerifyKey>,
}

impl std::fmt::Debug for KeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeySet")
            .field("kids", &self.by_kid.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl KeySet {
    /// Keeps the signature keys that can verify an accepted algorithm.
    pub fn from_jwks(set: &JwkSet) -> KeySet {
        let mut keys = Vec::new();
        for jwk in &set.keys {
            if matches!(jwk.common.public_key_use, Some(ref u) if *u != PublicKeyUse::Signature) {
                continue;
            }
            if !matches!(
                jwk.algorithm,
                AlgorithmParameters::RSA(_)
                    | AlgorithmParameters::EllipticCurve(_)
                    | AlgorithmParameters::OctetKeyPair(_)
            ) {
                continue; // symmetric or unknown key types are never trusted
            }
            let Ok(key) = DecodingKey::from_jwk(jwk) else {
                continue;
            };
            let alg = jwk
                .common
                .key_algorithm
                .and_then(|a| Algorithm::try_from(a).ok());
            keys.push((jwk.common.key_id.clone(), VerifyKey { key, alg }));
        }
        let only = (keys.len() == 1).then(|| keys[0].1.clone());
        let by_kid = keys
            .into_iter()
            .filter_map(|(kid, k)| kid.map(|kid| (kid, k)))
            .collect();
        KeySet { by_kid, only }
    }

    fn find(&self, kid: Option<&str>) -> Option<VerifyKey> {
        match kid {
            Some(kid) => self.by_kid.get(kid).cloned(),
            None => self.only.clone(),
        }
    }
}

#[derive(Default)]
struct RemoteJwks {
    keys: tokio::sync::RwLock<Option<(Arc<KeySet>, Instant)>>,
    /// Held while fetching; holds the time of the last fetch attempt.
    fetch: tokio::sync::Mutex<Option<Instant>>,
}

/// Verifies customer JWTs for API keys.
pub struct JwtVerifier {
    settings: JwtSettings,
    http: reqwest::Client,
    remote: Mutex<HashMap<String, Arc<RemoteJwks>>>,
    builtin: KeySet,
    metrics: Arc<Metrics>,
    /// (public key, token) → claims, valid until the stored Unix second.
    verified: Mutex<HashMap<(String, String), (CustomerClaims, u64)>>,
}

impl std::fmt::Debug for JwtVerifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JwtVerifier")
            .field("settings", &self.settings)
            .finish_non_exhaustive()
    }
}

/// The accepted algorithms, by their `alg` header value.
fn accepted_algorithm(alg: &str) -> Option<Algorithm> {
    match alg {
        "RS256" | "RS384" | "RS512" | "PS256" | "PS384" | "PS512" | "ES256" | "ES384" | "EdDSA" => {
            Algorithm::from_str(alg).ok()
        }
        _ => None,
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    kid: Option<String>,
}

/// Reads the JOSE header without trusting anything in it.
fn read_header(token: &str) -> Result<RawHeader, ApiError> {
    let malformed = || {
        ApiError::new(
            ErrorCode::MalformedToken,
            "The bearer token is not a well-formed JWT.",
        )
    };
    let mut parts = token.split('.');
    let (Some(h), Some(_), Some(_), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(malformed());
    };
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(h.trim_end_matches('='))
        .map_err(|_| malformed())?;
    serde_json::from_slice(&bytes).map_err(|_| malformed())
}

impl JwtVerifier {
    pub fn new(
        settings: JwtSettings,
        builtin_jwks: &serde_json::Value,
        metrics: Arc<Metrics>,
    ) -> Result<JwtVerifier, String> {
        let http = reqwest::Client::builder()
            .timeout(settings.fetch_timeout)
            .connect_timeout(settings.fetch_timeout)
            .user_agent(concat!("cobro/", env!("CARGO_PKG_VERSION")))
            // Identity providers rarely redirect a JWKS; never follow more than a couple.
            .redirect(reqwest::redirect::Policy::limited(2))
            .build()
            .map_err(|e| format!("HTTP client: {e}"))?;
        let set: JwkSet = serde_json::from_value(builtin_jwks.clone())
            .map_err(|e| format!("built-in JWKS: {e}"))?;
        Ok(JwtVerifier {
            builtin: KeySet::from_jwks(&set),
            settings,
            http,
            remote: Mutex::new(HashMap::new()),
            metrics,
            verified: Mutex::new(HashMap::new()),
        })
    }

    /// Verifies `token` for `key` and returns its claims (from the verified-token cache when
    /// this exact token was verified for this key less than a minute ago and has not expired).
    pub async fn verify(
        &self,
        token: &str,
        key: &ApiKeyRecord,
    ) -> Result<CustomerClaims, ApiError> {
        let cache_key = (key.public_key.clone(), token.to_string());
        let now = unix_now();
        if let Ok(cache) = self.verified.lock()
            && let Some((claims, until)) = cache.get(&cache_key)
            && *until > now
        {
            return Ok(claims.clone());
        }
        let (claims, exp) = self.verify_uncached(token, key).await?;
        if let Ok(mut cache) = self.verified.lock() {
            if cache.len() >= VERIFIED_CAPACITY {
                cache.clear();
            }
            cache.insert(
                cache_key,
                (claims.clone(), exp.min(now + VERIFIED_TTL_SECS)),
            );
        }
        Ok(claims)
    }

    async fn verify_uncached(
        &self,
        token: &str,
        key: &ApiKeyRecord,
    ) -> Result<(CustomerClaims, u64), ApiError> {
        let header = read_header(token)?;
        let alg_name = header.alg.unwrap_or_default();
        let alg = accepted_algorithm(&alg_name).ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnsupportedTokenAlgorithm,
                format!("JWT algorithm {alg_name:?} is not accepted; use RS256, ES256 or EdDSA."),
            )
        })?;
        let kid = header.kid.as_deref();
        let (vk, iss, aud) = match &key.jwks_url {
            None => {
                let vk = self.builtin.find(kid).ok_or_else(unknown_kid)?;
                (
                    vk,
                    Some(self.settings.builtin_issuer.clone()),
                    Some(super::issuer::audience(&key.org_id, key.environment)),
                )
            }
            Some(url) => (
                self.remote_key(url, kid).await?,
                key.issuer.clone(),
                key.audience.clone(),
            ),
        };
        if vk.alg.is_some_and(|a| a != alg) {
            return Err(ApiError::new(
                ErrorCode::UnsupportedTokenAlgorithm,
                format!("JWT algorithm {alg_name} does not match the signing key's algorithm."),
            ));
        }
        let mut validation = Validation::new(alg);
        validation.leeway = self.settings.leeway_secs;
        validation.validate_nbf = true;
        validation.set_required_spec_claims(&["exp", "sub"]);
        match &iss {
            Some(iss) => {
                validation.set_issuer(&[iss]);
                validation.required_spec_claims.insert("iss".into());
            }
            None => validation.iss = None,
        }
        match &aud {
            Some(aud) => {
                validation.set_audience(&[aud]);
                validation.required_spec_claims.insert("aud".into());
            }
            None => validation.validate_aud = false,
        }
        let data =
            jsonwebtoken::decode::<SubClaim>(token, &vk.key, &validation).map_err(map_jwt_error)?;
        match (data.claims.sub, data.claims.exp) {
            (Some(sub), Some(exp)) if !sub.is_empty() && sub.len() <= 255 => {
                Ok((CustomerClaims { sub }, exp))
            }
            _ => Err(ApiError::new(
                ErrorCode::MissingTokenClaim,
                "The JWT has no usable 'sub' claim.",
            )),
        }
    }

    fn slot(&self, url: &str) -> Arc<RemoteJwks> {
        let mut map = match self.remote.lock() {
            Ok(m) => m,
            Err(poisoned) => poisoned.into_inner(),
        };
        map.entry(url.to_string()).or_default().clone()
    }

    async fn remote_key(&self, url: &str, kid: Option<&str>) -> Result<VerifyKey, ApiError> {
        let slot = self.slot(url);
        let cached = slot.keys.read().await.clone();
        let keys = match cached {
            Some((keys, fetched)) if fetched.elapsed() < self.settings.cache_ttl => keys,
            // Stale: refresh, but never make a request wait on a slow identity provider when
            // there are keys to verify with; another request may already be refreshing.
            Some((stale, _)) => self.refresh(&slot, url, Wait::No).await.unwrap_or(stale),
            None => self.refresh(&slot, url, Wait::Yes).await.ok_or_else(|| {
                ApiError::new(
                    ErrorCode::JwksUnavailable,
                    "The JWKS registered for this API key could not be fetched; retry later.",
                )
            })?,
        };
        if let Some(k) = keys.find(kid) {
            return Ok(k);
        }
        // Unknown kid: the identity provider may have rotated its keys.
        if let Some(fresh) = self.refresh(&slot, url, Wait::Yes).await
            && let Some(k) = fresh.find(kid)
        {
            return Ok(k);
        }
        Err(unknown_kid())
    }

    /// Fetches the JWKS, at most once per URL per minimum interval, one fetch at a time.
    ///
    /// Returns the freshest key set available afterwards: the one this call fetched, or, when
    /// another request fetched while this one waited or the rate limit forbids a fetch now,
    /// the cached one (which may be what that other request just fetched). `None` only when
    /// nothing is cached and no fetch succeeded.
    async fn refresh(&self, slot: &RemoteJwks, url: &str, wait: Wait) -> Option<Arc<KeySet>> {
        let cached = || async { slot.keys.read().await.as_ref().map(|(k, _)| k.clone()) };
        let requested_at = Instant::now();
        let mut last_attempt = match wait {
            Wait::Yes => slot.fetch.lock().await,
            Wait::No => match slot.fetch.try_lock() {
                Ok(guard) => guard,
                Err(_) => return None, // a refresh is in progress; the caller keeps its keys
            },
        };
        if let Some(last) = *last_attempt
            && (last >= requested_at || last.elapsed() < self.settings.min_refresh_interval)
        {
            if last < requested_at {
                Metrics::count(&self.metrics.jwks_fetches, "rate_limited");
            }
            return cached().await;
        }
        *last_attempt = Some(Instant::now());
        match self.fetch(url).await {
            Ok(set) => {
                Metrics::count(&self.metrics.jwks_fetches, "ok");
                let keys = Arc::new(KeySet::from_jwks(&set));
                *slot.keys.write().await = Some((keys.clone(), Instant::now()));
                // Mark the attempt as finished now, so requests that queued behind this fetch
                // see it as newer than their own request and reuse its result.
                *last_attempt = Some(Instant::now());
                Some(keys)
            }
            Err(e) => {
                Metrics::count(&self.metrics.jwks_fetches, "error");
                tracing::warn!(url, error = %e, "JWKS fetch failed");
                *last_attempt = Some(Instant::now());
                cached().await
            }
        }
    }

    async fn fetch(&self, url: &str) -> Result<JwkSet, String> {
        let mut resp = self.http.get(url).send().await.map_err(|e| e.to_string())?;
        if !resp.status().is_success() {
            return Err(format!("HTTP {}", resp.status()));
        }
        if resp
            .content_length()
            .is_some_and(|n| n > MAX_JWKS_BYTES as u64)
        {
            return Err("JWKS too large".into());
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| e.to_string())? {
            if body.len() + chunk.len() > MAX_JWKS_BYTES {
                return Err("JWKS too large".into());
            }
            body.extend_from_slice(&chunk);
        }
        serde_json::from_slice(&body).map_err(|e| format!("not a JWKS: {e}"))
    }
}

/// Whether a refresh may wait for a fetch already in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    Yes,
    No,
}

fn unknown_kid() -> ApiError {
    ApiError::new(
        ErrorCode::UnknownSigningKey,
        "The JWT's signing key (kid) is not in the JWKS registered for this API key.",
    )
}

fn map_jwt_error(e: jsonwebtoken::errors::Error) -> ApiError {
    let (code, message) = match e.kind() {
        ErrorKind::ExpiredSignature => (ErrorCode::TokenExpired, "The JWT has expired."),
        ErrorKind::ImmatureSignature => (
            ErrorCode::TokenNotYetValid,
            "The JWT is not valid yet (nbf).",
        ),
        ErrorKind::InvalidIssuer => (
            ErrorCode::InvalidTokenIssuer,
            "The JWT's issuer (iss) is not the one configured for this API key.",
        ),
        ErrorKind::InvalidAudience => (
            ErrorCode::InvalidTokenAudience,
            "The JWT's audience (aud) is not the one configured for this API key.",
        ),
        ErrorKind::InvalidSignature => (
            ErrorCode::InvalidTokenSignature,
            "The JWT's signature does not verify.",
        ),
        ErrorKind::MissingRequiredClaim(_) => (
            ErrorCode::MissingTokenClaim,
            "The JWT lacks a required claim (exp, sub, iss or aud).",
        ),
        ErrorKind::InvalidAlgorithm
        | ErrorKind::MissingAlgorithm
        | ErrorKind::UnsupportedAlgorithm => (
            ErrorCode::UnsupportedTokenAlgorithm,
            "The JWT's algorithm does not match its signing key.",
        ),
        ErrorKind::InvalidEcdsaKey
        | ErrorKind::InvalidEddsaKey
        | ErrorKind::InvalidRsaKey(_)
        | ErrorKind::InvalidKeyFormat => (
            ErrorCode::InvalidTokenSignature,
            "The JWT cannot be verified with its signing key.",
        ),
        _ => (
            ErrorCode::MalformedToken,
            "The bearer token is not a well-formed JWT.",
        ),
    };
    ApiError::new(code, message)
}
