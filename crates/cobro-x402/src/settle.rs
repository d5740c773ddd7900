//! Settlement backends: `sandbox` (synthetic, deterministic) and Starknet JSON-RPC.

use async_trait::async_trait;
use starknet_crypto::{Felt, poseidon_hash_many};

use crate::rpc::{InvokeV3, ResourceBounds, RpcClient, RpcError};
use crate::typed_data::{
    OutsideExecution, SELECTOR_EXECUTE_FROM_OUTSIDE_V2, SELECTOR_TRANSFER_EVENT,
    SELECTOR_TRANSFER_FROM, short_string,
};

/// What must move on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpectedTransfer {
    /// ERC-20.
    pub asset: Felt,
    /// Payer.
    pub from: Felt,
    /// Recipient.
    pub to: Felt,
    /// Amount (base units).
    pub amount: u128,
}

/// How the transfer is authorised on chain.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SettleAction {
    /// Chipi `Payment`: the relayer calls `transfer_from(payer, pay_to, amount)` on the asset
    /// (the payer must have approved the relayer).
    TransferFrom,
    /// SNIP-9: the relayer calls `execute_from_outside_v2` on the payer account.
    OutsideExecution {
        /// The signed struct.
        outside_execution: OutsideExecution,
        /// The payer's signature.
        signature: Vec<Felt>,
    },
}

/// A settlement to perform.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettlementRequest {
    /// The transfer.
    pub transfer: ExpectedTransfer,
    /// Payment nonce.
    pub nonce: Felt,
    /// Authorisation.
    pub action: SettleAction,
}

/// A transaction ready to send; its hash is known before sending, so it can be recorded first.
#[derive(Debug, Clone)]
pub struct Prepared {
    /// Transaction hash.
    pub tx_hash: Felt,
    /// Backend-specific transaction.
    pub tx: Option<InvokeV3>,
}

/// Chain outcome of a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Accepted and the expected `Transfer` event is present.
    Settled,
    /// Reverted, or accepted without the expected transfer.
    Failed(String),
    /// Not (yet) known.
    Pending,
}

/// Backend failure; `definitely_not_sent` tells whether the payment can be marked failed.
#[derive(Debug, thiserror::Error)]
#[error("settlement backend: {message}")]
pub struct BackendError {
    /// Internal message (logged only).
    pub message: String,
    /// True when the transaction certainly did not reach the chain.
    pub definitely_not_sent: bool,
}

impl From<RpcError> for BackendError {
    fn from(e: RpcError) -> Self {
        let definitely_not_sent = matches!(e, RpcError::Rejected { .. });
        Self {
            message: e.to_string(),
            definitely_not_sent,
        }
    }
}

/// A way of moving the money.
#[async_trait]
pub trait SettlementBackend: Send + Sync + std::fmt::Debug {
    /// Builds and signs the transaction; nothing is sent.
    async fn prepare(&self, req: &SettlementRequest) -> Result<Prepared, BackendError>;
    /// Sends a prepared transaction; returns the hash the chain reports when it differs from
    /// `prepared.tx_hash` (the facilitator then records and follows that one).
    async fn submit(&self, prepared: &Prepared) -> Result<Option<Felt>, BackendError>;
    /// Looks up what became of a transaction.
    async fn status(
        &self,
        tx_hash: Felt,
        expect: &ExpectedTransfer,
    ) -> Result<Outcome, BackendError>;
}

/// Development backend: settles at once with hash `poseidon("sandbox", payer, nonce)`.
#[derive(Debug, Default, Clone)]
pub struct SandboxBackend;

/// The synthetic transaction hash the sandbox uses for (payer, nonce).
pub fn sandbox_hash(payer: Felt, nonce: Felt) -> Felt {
    poseidon_hash_many(&[short_string("sandbox").unwrap_or(Felt::ZERO), payer, nonce])
}

#[async_trait]
impl SettlementBackend for SandboxBackend {
    async fn prepare(&self, req: &SettlementRequest) -> Result<Prepared, BackendError> {
        Ok(Prepared {
            tx_hash: sandbox_hash(req.transfer.from, req.nonce),
            tx: None,
        })
    }
    async fn submit(&self, _prepared: &Prepared) -> Result<Option<Felt>, BackendError> {
        Ok(None)
    }
    async fn status(
        &self,
        _tx_hash: Felt,
        _expect: &ExpectedTransfer,
    ) -> Result<Outcome, BackendError> {
        Ok(Outcome::Settled)
    }
}

/// Starknet JSON-RPC backend: a relayer account submits an invoke v3 transaction.
#[derive(Debug, Clone)]
pub struct RpcBackend {
    rpc: RpcClient,
    chain_id: Felt,
    relayer: Felt,
    relayer_key: Felt,
}

impl RpcBackend {
    /// Backend for `rpc`, relaying from `relayer` signed with `relayer_key`, on `chain_id`.
    pub fn new(rpc: RpcClient, chain_id: Felt, relayer: Felt, relayer_key: Felt) -> Self {
        Self {
            rpc,
            chain_id,
            relayer,
            relayer_key,
        }
    }

    fn execute_calldata(&self, req: &SettlementRequest) -> Vec<Felt> {
        let t = &req.transfer;
        let (to, selector, inner): (Felt, Felt, Vec<Felt>) = match &req.action {
            SettleAction::TransferFrom => (
                t.asset,
                SELECTOR_TRANSFER_FROM,
                vec![t.from, t.to, Felt::from(t.amount), Felt::ZERO],
            ),
            SettleAction::OutsideExecution {
                outside_execution,
                signature,
            } => {
                let mut v = outside_execution.to_calldata();
                v.push(Felt::from(signature.len()));
                v.extend_from_slice(signature);
                (t.from, SELECTOR_EXECUTE_FROM_OUTSIDE_V2, v)
            }
        };
        let mut cd = vec![Felt::ONE, to, selector, Felt::from(inner.len())];
        cd.extend(inner);
        cd
    }
}

/// Whether `events` hold an ERC-20 `Transfer(from, to, amount)` emitted by `asset`, in either
/// the Cairo 1 layout (from/to as keys) or the legacy one (all in data).
pub fn has_transfer_event(events: &[crate::rpc::Event], e: &ExpectedTransfer) -> bool {
    let amount = Felt::from(e.amount);
    events.iter().any(|ev| {
        ev.from_address == e.asset
            && ev.keys.first() == Some(&SELECTOR_TRANSFER_EVENT)
            && ((ev.keys.len() == 3
                && ev.keys[1] == e.from
                && ev.keys[2] == e.to
                && ev.data.first() == Some(&amount)
                && ev.data.get(1) == Some(&Felt::ZERO))
                || (ev.keys.len() == 1
                    && ev.data.len() == 4
                    && ev.data[0] == e.from
                    && ev.data[1] == e.to
                    && ev.data[2] == amount
                    && ev.data[3] == Felt::ZERO))
    })
}

#[async_trait]
impl SettlementBackend for RpcBackend {
    async fn prepare(&self, req: &SettlementRequest) -> Result<Prepared, BackendError> {
        let nonce = self.rpc.nonce(self.relayer).await?;
        let mut tx = InvokeV3 {
            sender: self.relayer,
            calldata: self.execute_calldata(req),
            nonce,
            bounds: ResourceBounds::default(),
            signature: Vec::new(),
        };
        let est = self.rpc.estimate_fee(&tx).await?;
        tx.bounds = ResourceBounds::from_estimate(&est);
        let tx_hash = tx
            .sign(self.chain_id, &self.relayer_key)
            .ok_or(BackendError {
                message: "relayer signing failed".into(),
                definitely_not_sent: true,
            })?;
        Ok(Prepared {
            tx_hash,
            tx: Some(tx),
        })
    }

    async fn submit(&self, prepared: &Prepared) -> Result<Option<Felt>, BackendError> {
        let tx = prepared.tx.as_ref().ok_or(BackendError {
            message: "nothing to submit".into(),
            definitely_not_sent: true,
        })?;
        let h = self.rpc.add_invoke(tx).await?;
        if h != prepared.tx_hash {
            tracing::warn!(expected = %prepared.tx_hash, got = %h, "node reported a different transaction hash");
            return Ok(Some(h));
        }
        Ok(None)
    }

    async fn status(
        &self,
        tx_hash: Felt,
        expect: &ExpectedTransfer,
    ) -> Result<Outcome, BackendError> {
        let Some(r) = self.rpc.receipt(tx_hash).await? else {
            return Ok(Outcome::Pending);
        };
        if r.execution_status == "REVERTED" {
            return Ok(Outcome::Failed("transaction_reverted".into()));
        }
        if !matches!(
            r.finality_status.as_str(),
            "ACCEPTED_ON_L2" | "ACCEPTED_ON_L1"
        ) {
            return Ok(Outcome::Pending);
        }
        if r.execution_status == "SUCCEEDED" && has_transfer_event(&r.events, expect) {
            Ok(Outcome::Settled)
        } else {
            Ok(Outcome::Failed("transfer_event_missing".into()))
        }
    }
}
