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
use cobro_types::{
    CatalogEntry, Currency, Environment, MinorAmount, PurchaseStatus, Timestamp, UsdMicros,
};

pub mod batch;
pub mod codec;
pub mod webhooks;

pub use webhooks::WebhookStore;

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

/// An organisation's markup rule for one SKU or one category.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MarkupRule {
    pub org_id: String,
    /// `sku` or `category`.
    pub scope: String,
    /// The SKU id or the category wire name.
    pub target: String,
    /// Percentage as a decimal string, e.g. `2.5`.
    pub percent: String,
    pub fixed: UsdMicros,
    pub updated_at: Timestamp,
}

/// A purchase as stored. Amounts are integers; `fx_rate` and `org_markup` are decimal text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PurchaseRecord {
    pub id: String,
    pub org_id: String,
    pub environment: Environment,
    pub idempotency_key: String,
    pub request_hash: String,
    pub status: PurchaseStatus,
    pub api_public_key: String,
    pub customer_id: String,
    pub sku_id: String,
    /// Snapshot of the SKU at purchase time, so history survives catalog changes.
    pub sku_name: String,
    pub carrier_name: String,
    pub sku_reference: String,
    pub amount: MinorAmount,
    pub currency: Currency,
    pub chain: String,
    pub token: String,
    pub wallet_address: String,
    pub fx_rate: String,
    pub base: UsdMicros,
    pub markup: UsdMicros,
    pub total: UsdMicros,
    pub org_markup: Option<String>,
    pub ledger_entry_id: String,
    /// A dev-key purchase: no debit, no carrier, `SUCCESS` at once.
    pub sandbox: bool,
    pub file_number: Option<String>,
    pub error_message: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    pub confirmed_at: Option<Timestamp>,
}

/// An event to write to the outbox in the same transaction as the change it reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewEvent {
    pub id: String,
    /// e.g. `sku-purchase.completed`.
    pub kind: String,
    /// The JSON body delivered to webhook endpoints.
    pub payload: String,
}

/// A purchase to create. For a real (prod) purchase the store debits `record.total` with a
/// `purchase` ledger entry `record.ledger_entry_id` and queues a fulfilment job; for a
/// sandbox purchase it does neither. `events` are written only if the purchase is created.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPurchase {
    pub record: PurchaseRecord,
    pub events: Vec<NewEvent>,
}

/// What happened to one purchase of a batch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PurchaseResult {
    /// Stored (and debited, unless sandbox).
    Created(PurchaseRecord),
    /// The same idempotency key with the same request: the existing purchase, nothing done.
    Replayed(PurchaseRecord),
    /// The same idempotency key with a different request: nothing done.
    KeyReused(PurchaseRecord),
    /// Not enough credits: nothing stored, nothing debited.
    InsufficientBalance,
}

/// A fulfilment job claimed by a worker; `attempt` counts this claim (1 on the first).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedJob {
    pub purchase: PurchaseRecord,
    pub attempt: u32,
}

/// The end of a purchase's fulfilment, written in one transaction: the status change, the
/// refund entry when it failed (a new, reversing entry; the debit is never edited), the
/// events, and the removal of the job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FinishPurchase {
    pub purchase_id: String,
    /// The worker that holds the lease; a worker that lost its lease changes nothing.
    pub owner: String,
    /// `SUCCESS` or `FAILED`.
    pub status: PurchaseStatus,
    pub file_number: Option<String>,
    pub error_message: Option<String>,
    pub at: Timestamp,
    /// For a failed real purchase: the id of the refund ledger entry.
    pub refund_entry_id: Option<String>,
    pub events: Vec<NewEvent>,
}

impl FinishPurchase {
    /// The refund entry this ending writes for a purchase of `org_id` that cost `total`
    /// micro-USD: only a failed real purchase has one (`refund_entry_id`), and a free one needs
    /// none.
    pub fn refund<'a>(&'a self, org_id: &'a str, total: i64) -> Option<NewLedgerEntry<'a>> {
        let id = self.refund_entry_id.as_deref()?;
        (total > 0).then_some(NewLedgerEntry {
            id,
            org_id,
            kind: "refund",
            amount: UsdMicros(total),
            note: self.error_message.as_deref(),
            purchase_id: Some(&self.purchase_id),
            at: self.at,
        })
    }
}

/// The fulfilment queue at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FulfilmentBacklog {
    /// Purchases not yet in a terminal state.
    pub open: u64,
    /// Of those, how many were retried beyond the limit.
    pub flagged: u64,
}

/// Filters of the purchase list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurchaseFilter {
    pub status: Option<PurchaseStatus>,
    pub sku_id: Option<String>,
    pub sku_reference: Option<String>,
    pub created_from: Option<Timestamp>,
    pub created_to: Option<Timestamp>,
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
    pub markups: i64,
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
pub trait Store: WebhookStore + Send + Sync + std::fmt::Debug + 'static {
    /// The backend's name (`sqlite`, `postgres`) for logs and `/readyz`.
    fn backend(&self) -> &'static str;

    /// The x402 payments (nonces and settlements) in this database.
    fn payments(&self) -> std::sync::Arc<dyn cobro_x402::PaymentStore>;

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

    /// How many ledger entries the organisation has.
    async fn count_ledger_entries(&self, org_id: &str) -> StoreResult<u64>;

    /// Inserts or updates catalog records by id (created_at is kept on update).
    /// Returns how many records were written.
    async fn upsert_catalog(&self, entries: &[CatalogEntry], at: Timestamp) -> StoreResult<usize>;

    /// Every catalog record, inactive ones included.
    async fn list_catalog(&self) -> StoreResult<Vec<CatalogEntry>>;

    /// Creates or replaces an organisation's markup rule (`NotFound` for an unknown org).
    async fn set_markup(&self, rule: &MarkupRule) -> StoreResult<()>;

    /// Every markup rule (the server's in-memory snapshot).
    async fn list_markups(&self) -> StoreResult<Vec<MarkupRule>>;

    /// The rule for this SKU if there is one, else the rule for its category.
    async fn markup_for(
        &self,
        org_id: &str,
        sku_id: &str,
        category: &str,
    ) -> StoreResult<Option<MarkupRule>>;

    /// Creates purchases, each all-or-nothing (idempotency check, debit, ledger entry,
    /// purchase row, fulfilment job, outbox events), all in one commit. One result per input,
    /// in order. Safe under concurrent duplicates, within the batch and across processes.
    /// Returns only once the outcome is durable.
    async fn create_purchases(&self, batch: &[NewPurchase]) -> StoreResult<Vec<PurchaseResult>>;

    /// [`Store::create_purchases`], except that it may return once the batch is committed but
    /// before it is durable. The caller must not tell anyone about the outcome before
    /// [`Store::sync`] has returned. (The purchase writer uses this to start its next batch
    /// while this one's WAL flush is under way.)
    async fn create_purchases_unsynced(
        &self,
        batch: &[NewPurchase],
    ) -> StoreResult<Vec<PurchaseResult>> {
        self.create_purchases(batch).await
    }

    /// Returns once every transaction this store has committed so far is durable.
    async fn sync(&self) -> StoreResult<()> {
        Ok(())
    }

    /// A purchase of this organisation and environment.
    async fn get_purchase(
        &self,
        org_id: &str,
        env: Environment,
        id: &str,
    ) -> StoreResult<Option<PurchaseRecord>>;

    /// The organisation's purchases in this environment, newest first, and how many match.
    async fn list_purchases(
        &self,
        org_id: &str,
        env: Environment,
        filter: &PurchaseFilter,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<PurchaseRecord>, u64)>;

    /// Claims up to `limit` due fulfilment jobs for `owner` until `now + lease_ms`: jobs whose
    /// next attempt is due and whose lease (if any) has expired. Marks their purchases
    /// `PROCESSING`. Safe with several workers in several processes (each job goes to one).
    async fn claim_fulfilment_jobs(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedJob>>;

    /// Ends a purchase (see [`FinishPurchase`]). `false` when `owner` no longer holds the job.
    async fn finish_purchase(&self, f: &FinishPurchase) -> StoreResult<bool>;

    /// Ends several purchases in one transaction (one commit for a worker's round); one
    /// answer per input, as [`Store::finish_purchase`] would give.
    async fn finish_purchases(&self, batch: &[FinishPurchase]) -> StoreResult<Vec<bool>>;

    /// Releases a job for another attempt at `next_attempt_at`, recording `error`; `flag_at`
    /// marks it as stuck (the first flag time is kept). `false` when `owner` lost the job.
    async fn retry_fulfilment(
        &self,
        purchase_id: &str,
        owner: &str,
        next_attempt_at: Timestamp,
        error: &str,
        flag_at: Option<Timestamp>,
    ) -> StoreResult<bool>;

    /// How many purchases await fulfilment, and how many of those are flagged.
    async fn fulfilment_backlog(&self) -> StoreResult<FulfilmentBacklog>;

    /// The built-in issuer's signing keys, newest first.
    async fn issuer_keys(&self) -> StoreResult<Vec<IssuerKey>>;

    /// Stores `key` as the issuer key unless one already exists, and returns the key in force
    /// (the existing one if another process won the race).
    async fn ensure_issuer_key(&self, key: &IssuerKey) -> StoreResult<IssuerKey>;
}
