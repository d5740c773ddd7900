//! The built-in development issuer.
//!
//! So that a newcomer can call the API without an identity provider, cobro can mint customer
//! JWTs itself: an Ed25519 key kept in the database (created on first use; all processes
//! sharing the database agree on it), tokens minted by `cobro admin token`, and the public
//! key served at `/.well-known/jwks.json`. An API key created without a JWKS URL trusts this
//! issuer; its tokens carry `iss` = `auth.builtin_issuer` and `aud` = `<org id>:<environment>`
//! (see [`audience`]), so a token minted for one organisation's dev keys is refused by
//! another organisation's keys and by the same organisation's prod keys.
//!
//! The private key is stored unencrypted: this issuer is for development and for operators
//! who have no identity provider; production integrations should register their own JWKS.

use aws_lc_rs::signature::{Ed25519KeyPair, KeyPair};
use base64::Engine;
use cobro_store::{IssuerKey, Store, StoreError};
use cobro_types::{Environment, Timestamp};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde::Serialize;

/// The signing half of the built-in issuer.
pub struct BuiltinIssuer {
    kid: String,
    encoding: EncodingKey,
    issuer: String,
    /// Every issuer key's public JWK (JSON objects), for the JWKS endpoint.
    public_jwks: Vec<serde_json::Value>,
}

impl std::fmt::Debug for BuiltinIssuer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuiltinIssuer")
            .field("kid", &self.kid)
            .field("issuer", &self.issuer)
            .finish()
    }
}

#[derive(Serialize)]
struct MintedClaims<'a> {
    sub: &'a str,
    iss: &'a str,
    aud: &'a str,
    iat: i64,
    nbf: i64,
    exp: i64,
}

/// The `aud` of built-in issuer tokens for an organisation's keys of one environment.
pub fn audience(org_id: &str, env: Environment) -> String {
    format!("{org_id}:{}", env.as_str())
}

fn b64url(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// Generates a new Ed25519 issuer key.
pub fn generate_issuer_key() -> Result<IssuerKey, StoreError> {
    let rng = aws_lc_rs::rand::SystemRandom::new();
    let pkcs8 = Ed25519KeyPair::generate_pkcs8v1(&rng)
        .map_err(|_| StoreError::Rejected("could not generate an Ed25519 key".into()))?;
    let pair = Ed25519KeyPair::from_pkcs8(pkcs8.as_ref())
        .map_err(|e| StoreError::Corrupt(format!("generated key rejected: {e}")))?;
    let kid = format!(
        "cobro-{}",
        cobro_domain::keys::random_base62(16).map_err(|e| StoreError::Rejected(e.to_string()))?
    );
    let jwk = serde_json::json!({
        "kty": "OKP",
        "crv": "Ed25519",
        "x": b64url(pair.public_key().as_ref()),
        "kid": kid,
        "alg": "EdDSA",
        "use": "sig",
    });
    Ok(IssuerKey {
        kid,
        alg: "EdDSA".into(),
        private_pkcs8: pkcs8.as_ref().to_vec(),
        public_jwk: jwk.to_string(),
        created_at: Timestamp::now(),
    })
}

impl BuiltinIssuer {
    /// Loads the issuer key from the store, creating it on first use.
    pub async fn load_or_create(
        store: &dyn Store,
        issuer: &str,
    ) -> Result<BuiltinIssuer, StoreError> {
        let mut keys = store.issuer_keys().await?;
        if keys.is_empty() {
            let in_force = store.ensure_issuer_key(&generate_issuer_key()?).await?;
            keys = vec![in_force];
        }
        let current = keys
            .first()
            .ok_or_else(|| StoreError::Corrupt("no issuer key".into()))?;
        if current.alg != "EdDSA" {
            return Err(StoreError::Corrupt(format!(
                "issuer key algorithm {}",
                current.alg
            )));
        }
        let public_jwks = keys
            .iter()
            .map(|k| {
                serde_json::from_str(&k.public_jwk)
                    .map_err(|e| StoreError::Corrupt(format!("issuer JWK: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(BuiltinIssuer {
            kid: current.kid.clone(),
            encoding: EncodingKey::from_ed_der(&current.private_pkcs8),
            issuer: issuer.to_string(),
            public_jwks,
        })
    }

    /// The `iss` of minted tokens.
    pub fn issuer(&self) -> &str {
        &self.issuer
    }

    /// The JWKS document (`{"keys": [...]}`).
    pub fn jwks(&self) -> serde_json::Value {
        serde_json::json!({ "keys": self.public_jwks })
    }

    /// Mints a customer JWT for `sub` with audience `aud` (see [`audience`]), valid `ttl_secs`.
    /// Returns the token and its expiry (Unix seconds).
    pub fn mint(
        &self,
        sub: &str,
        aud: &str,
        ttl_secs: i64,
    ) -> Result<(String, i64), jsonwebtoken::errors::Error> {
        let now = Timestamp::now().unix_millis() / 1000;
        let exp = now + ttl_secs;
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        let claims = MintedClaims {
            sub,
            iss: &self.issuer,
            aud,
            iat: now,
            nbf: now,
            exp,
        };
        Ok((jsonwebtoken::encode(&header, &claims, &self.encoding)?, exp))
    }
}
