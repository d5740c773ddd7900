//! Durable payment state machine, keyed by (payer, nonce):
//! `reserved → submitted(tx hash) → settled | failed`.
//!
//! The facilitator only ever talks to a [`PaymentStore`]; [`MemoryStore`] is the in-process
//! implementation for tests and benchmarks. A durable implementation must make
//! [`PaymentStore::reserve`] atomic (a unique key on `(payer, nonce)`), so that two concurrent
//! reservations of the same key can never both succeed.

use std::collections::HashMap;
use std::sync::Mutex;

use async_trait::async_trait;

/// Where a payment is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum PaymentState {
    /// The nonce is taken; nothing has been sent to the chain yet.
    Reserved,
    /// A transaction with `tx_hash` has been (or is about to be) sent; outcome unknown.
    Submitted,
    /// The transfer is confirmed on chain (or by the sandbox).
    Settled,
    /// The payment will not settle here (reverted, rejected, or consumed by a verify-only
    /// middleware, reason `verify_only`); the nonce stays consumed.
    Failed,
}

impl PaymentState {
    /// Stable lower-case name for storage (`reserved`, `submitted`, `settled`, `failed`).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Reserved => "reserved",
            Self::Submitted => "submitted",
            Self::Settled => "settled",
            Self::Failed => "failed",
        }
    }

    /// Inverse of [`PaymentState::as_str`].
    pub fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "reserved" => Self::Reserved,
            "submitted" => Self::Submitted,
            "settled" => Self::Settled,
            "failed" => Self::Failed,
            _ => return None,
        })
    }
}

/// One payment. All addresses and the nonce are canonical felt hex (`0x` + lowercase, no
/// leading zeros), so string equality is felt equality.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaymentRecord {
    /// Payer account address (key part 1).
    pub payer: String,
    /// Payment nonce (key part 2).
    pub nonce: String,
    /// Current state.
    pub state: PaymentState,
    /// Transaction hash once submitted (kept when settled or failed after submission).
    pub tx_hash: Option<String>,
    /// Chain name (`SN_MAIN` / `SN_SEPOLIA`).
    pub network: String,
    /// ERC-20 contract.
    pub asset: String,
    /// Recipient.
    pub pay_to: String,
    /// Amount in base units, decimal.
    pub amount: String,
    /// Why it failed (a safe, short code or message), when `Failed`.
    pub error: Option<String>,
    /// Unix seconds of the reservation.
    pub created_at: u64,
    /// Unix seconds of the last state change.
    pub updated_at: u64,
}

/// Result of [`PaymentStore::reserve`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReserveOutcome {
    /// This call took the key.
    Reserved,
    /// The key was already taken; the existing record is returned unchanged.
    AlreadyExists(Box<PaymentRecord>),
}

/// Storage failure (the text is for logs, never sent to clients).
#[derive(Debug, thiserror::Error)]
#[error("payment store: {0}")]
pub struct StoreError(pub String);

/// Durable store of payments keyed by (payer, nonce).
#[async_trait]
pub trait PaymentStore: Send + Sync + std::fmt::Debug {
    /// The record for (payer, nonce), if any.
    async fn get(&self, payer: &str, nonce: &str) -> Result<Option<PaymentRecord>, StoreError>;

    /// Atomically inserts `record` (whose state is `Reserved`) unless (payer, nonce) exists,
    /// in which case the existing record is returned and nothing changes.
    async fn reserve(&self, record: PaymentRecord) -> Result<ReserveOutcome, StoreError>;

    /// `Reserved → Submitted` with the transaction hash.
    async fn mark_submitted(
        &self,
        payer: &str,
        nonce: &str,
        tx_hash: &str,
    ) -> Result<(), StoreError>;

    /// `Reserved | Submitted → Settled` with the (final) transaction hash.
    async fn mark_settled(&self, payer: &str, nonce: &str, tx_hash: &str)
    -> Result<(), StoreError>;

    /// `Reserved | Submitted → Failed` with a short reason.
    async fn mark_failed(&self, payer: &str, nonce: &str, reason: &str) -> Result<(), StoreError>;

    /// All records in `Reserved` or `Submitted` (for resumption after a restart).
    async fn list_unfinished(&self) -> Result<Vec<PaymentRecord>, StoreError>;
}

/// In-memory [`PaymentStore`] (a `Mutex<HashMap>`); not durable.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<HashMap<(String, String), PaymentRecord>>,
}

impl MemoryStore {
    /// Empty store.
    pub fn new() -> Self {
        Self::default()
    }

    fn with<R>(
        &self,
        f: impl FnOnce(&mut HashMap<(String, String), PaymentRecord>) -> R,
    ) -> Result<R, StoreError> {
        let mut g = self
            .inner
            .lock()
            .map_err(|_| StoreError("memory store lock poisoned".into()))?;
        Ok(f(&mut g))
    }

    fn transition(
        &self,
        payer: &str,
        nonce: &str,
        state: PaymentState,
        tx_hash: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        self.with(|m| match m.get_mut(&(payer.to_owned(), nonce.to_owned())) {
            Some(r) => {
                r.state = state;
                if let Some(h) = tx_hash {
                    r.tx_hash = Some(h.to_owned());
                }
                if let Some(e) = error {
                    r.error = Some(e.to_owned());
                }
                r.updated_at = crate::now_unix();
                Ok(())
            }
            None => Err(StoreError(format!("no payment {payer}/{nonce}"))),
        })?
    }
}

#[async_trait]
impl PaymentStore for MemoryStore {
    async fn get(&self, payer: &str, nonce: &str) -> Result<Option<PaymentRecord>, StoreError> {
        self.with(|m| m.get(&(payer.to_owned(), nonce.to_owned())).cloned())
    }

    async fn reserve(&self, record: PaymentRecord) -> Result<ReserveOutcome, StoreError> {
        self.with(|m| {
            let key = (record.payer.clone(), record.nonce.clone());
            match m.get(&key) {
                Some(existing) => ReserveOutcome::AlreadyExists(Box::new(existing.clone())),
                None => {
                    m.insert(key, record);
                    ReserveOutcome::Reserved
                }
            }
        })
    }

    async fn mark_submitted(
        &self,
        payer: &str,
        nonce: &str,
        tx_hash: &str,
    ) -> Result<(), StoreError> {
        self.transition(payer, nonce, PaymentState::Submitted, Some(tx_hash), None)
    }

    async fn mark_settled(
        &self,
        payer: &str,
        nonce: &str,
        tx_hash: &str,
    ) -> Result<(), StoreError> {
        self.transition(payer, nonce, PaymentState::Settled, Some(tx_hash), None)
    }

    async fn mark_failed(&self, payer: &str, nonce: &str, reason: &str) -> Result<(), StoreError> {
        self.transition(payer, nonce, PaymentState::Failed, None, Some(reason))
    }

    async fn list_unfinished(&self) -> Result<Vec<PaymentRecord>, StoreError> {
        self.with(|m| {
            m.values()
                .filter(|r| matches!(r.state, PaymentState::Reserved | PaymentState::Submitted))
                .cloned()
                .collect()
        })
    }
}
