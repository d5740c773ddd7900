//! The storage contract of cobro.
//!
//! [`Store`] has one method per atomic business operation: each runs in a single database
//! transaction inside the backend, and no transaction ever crosses the trait. Backends
//! (`cobro-store-sqlite`, `cobro-store-postgres`) implement it with their own SQL and
//! migrations and map their own constraint violations to [`StoreError::Conflict`].
//! The [`conformance`] suite (feature `conformance`) is run by every backend's tests, so the
//! two behave the same.
//!
//! Guarantees every backend gives:
//! * an organisation's balance equals the sum of its ledger entries and is never negative
//!   (enforced by a `CHECK`, not only by the code);
//! * ledger entries are never updated or deleted;
//! * a secret key is stored only as its hash;
//! * `change_versions` increases whenever keys or the catalog change, so servers polling it
//!   see every change.
#![forbid(unsafe_code)]

use async_trait::async_trait;
use cobro_types::{CatalogEntry, Environment, Timestamp, UsdMicros};

pub mod codec;

#[cfg(feature = "conformance")]
pub mod conformance;

/// What can go wrong in the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (the name says which).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The operation refers to something that does not exist.
    #[error("not found: {0}")]
    NotFound(String),
    /// The operation would break an invariant (for example a negative balance).
    #[error("rejected: {0}")]
    Rejected(String),
    /// The database could not be reached or answered with an error.
    #[error("database error: {0}")]
    Database(String),
    /// A stored value could not be decoded (a bug or manual tampering).
    #[error("corrupt data: {0}")]
    Corrupt(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

/// An organisation: the tenant that owns keys, credits and purchases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Org {
    pub id: String,
    pub name: String,
    pub created_at: Timestamp,
}

/// An API key pair as stored: the secret only as its hash.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiKeyRecord {
    pub public_key: String,
    pub org_id: String,
    pub environment: Environment,
    /// Lowercase hex SHA-256 of the secret key.
    pub secret_hash: String,
    /// Customer JWTs are verified against this JWKS; `None` trusts the built-in issuer.
    pub jwks_url: Option<String>,
    /// Required `iss` of customer JWTs, when set.
    pub issuer: Option<String>,
    /// Required `aud` of customer JWTs, when set.
    pub audience: Option<String>,
    pub created_at: Timestamp,
    pub revoked_at: Option<Timestamp>,
}

/// A ledger entry: one movement of an organisation's credits. Never edited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LedgerEntry {
    pub id: String,
    pub org_id: String,
    /// `topup`, `purchase`, `refund` or `adjustment`.
    pub kind: String,
    /// Signed: credits added are positive, debits negative.
    pub amount: UsdMicros,
    /// The balance right after this entry.
    pub balance_after: UsdMicros,
    pub note: Option<String>,
    pub purchase_id: Option<String>,
    pub created_at: Timestamp,
}

/// A ledger entry about to be appended (the store computes `balance_after`).
#[derive(Debug, Clone, Copy)]
pub struct NewLedgerEntry<'a> {
    pub id: &'a str,
    pub org_id: &'a str,
    pub kind: &'a str,
    pub amount: UsdMicros,
    pub note: Option<&'a str>,
    pub purchase_id: Option<&'a str>,
    pub at: Timestamp,
}

/// A signing key of the built-in development issuer.
#[derive(Clone, PartialEq, Eq)]
pub struct IssuerKey {
    pub kid: String,
    /// JWS algorithm, e.g. `EdDSA`.
    pub alg: String,
    /// The private key, PKCS#8 DER.
    pub private_pkcs8: Vec<u8>,
    /// The public key as a JWK (JSON text).
    pub public_jwk: String,
    pub created_at: Timestamp,
}

impl std::fmt::Debug for IssuerKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuerKey")
            .field("kid", &self.kid)
            .field("alg", &self.alg)
            .field("private_pkcs8", &"<redacted>")
            .finish()
    }
}

/// Monotonic counters that change whenever keys or the catalog change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChangeVersions {
    pub keys: i64,
    pub catalog: i64,
}

/// Everything the first start of a server creates, in one transaction.
#[derive(Debug, Clone)]
pub struct DemoBootstrap {
    pub org: Org,
    pub keys: Vec<ApiKeyRecord>,
    pub credits: UsdMicros,
    pub credits_entry_id: String,
    pub catalog: Vec<CatalogEntry>,
}

/// The storage operations of cobro. Each method is one atomic operation.
#[async_trait]
pub trait Store: Send + Sync + std::fmt::Debug + 'static {
    /// The backend's name (`sqlite`, `postgres`) for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// Succeeds when the database answers a trivial query.
    async fn ping(&self) -> StoreResult<()>;

    /// Creates an organisation with a zero balance.
    async fn create_org(&self, org: &Org) -> StoreResult<()>;

    async fn get_org(&self, id: &str) -> StoreResult<Option<Org>>;

    /// When no organisation exists yet, creates the demo organisation, its keys, its credits
    /// (one top-up entry) and the catalog, and returns `true`. Otherwise changes nothing and
    /// returns `false`. Safe when several processes start at once: exactly one bootstraps.
    async fn bootstrap_if_empty(&self, demo: &DemoBootstrap) -> StoreResult<bool>;

    /// Stores a new key pair; the organisation must exist (`NotFound` otherwise).
    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()>;

    /// Marks a key revoked. Returns `false` when no such key exists; revoking twice keeps the
    /// first revocation time.
    async fn revoke_api_key(&self, public_key: &str, at: Timestamp) -> StoreResult<bool>;

    async fn get_api_key(&self, public_key: &str) -> StoreResult<Option<ApiKeyRecord>>;

    /// Every key, revoked ones included (the server's in-memory snapshot).
    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>>;

    async fn change_versions(&self) -> StoreResult<ChangeVersions>;

    /// Adds credits (a `topup` entry, `amount > 0`) or removes them (an `adjustment`,
    /// `amount < 0`, refused with `Rejected` if the balance would go negative). Returns the
    /// entry, whose `balance_after` is the new balance.
    async fn adjust_credits(
        &self,
        org_id: &str,
        entry_id: &str,
        amount: UsdMicros,
        note: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<LedgerEntry>;

    /// The organisation's available credits (`NotFound` for an unknown organisation).
    async fn balance(&self, org_id: &str) -> StoreResult<UsdMicros>;

    /// The organisation's ledger, newest first.
    async fn ledger_entries(
        &self,
        org_id: &str,
        limit: u32,
        offset: u64,
    ) -> StoreResult<Vec<LedgerEntry>>;

    /// Inserts or updates catalog records by id (created_at is kept on update).
    /// Returns how many records were written.
    async fn upsert_catalog(&self, entries: &[CatalogEntry], at: Timestamp) -> StoreResult<usize>;

    /// Every catalog record, inactive ones included.
    async fn list_catalog(&self) -> StoreResult<Vec<CatalogEntry>>;

    /// The built-in issuer's signing keys, newest first.
    async fn issuer_keys(&self) -> StoreResult<Vec<IssuerKey>>;

    /// Stores `key` as the issuer key unless one already exists, and returns the key in force
    /// (the existing one if another process won the race).
    async fn ensure_issuer_key(&self, key: &IssuerKey) -> StoreResult<IssuerKey>;
}
