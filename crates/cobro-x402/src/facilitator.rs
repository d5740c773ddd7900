//! The facilitator: `verify`, `settle`, `resume`.

use std::collections::HashMap;

use serde::Deserialize as _;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use starknet_crypto::Felt;

use crate::config::{ConfigError, X402Config};
use crate::rpc::RpcClient;
use crate::settle::{
    ExpectedTransfer, Outcome, RpcBackend, SandboxBackend, SettleAction, SettlementBackend,
    SettlementRequest,
};
use crate::store::{PaymentRecord, PaymentState, PaymentStore, ReserveOutcome};
use crate::typed_data::{
    ANY_CALLER, Call, DomainVariant, OutsideExecution, PaymentMessage, SELECTOR_GET_PUBLIC_KEY,
    SELECTOR_IS_VALID_SIGNATURE, SELECTOR_TRANSFER, VALID, felt_hex, outside_execution_domain_hash,
    outside_execution_hash_with_domain, parse_felt, payment_domain_hash, payment_hash_with_domain,
    verify_hash,
};
use crate::wire::{
    ChipiAuthorization, OutsideExecutionPayload, PaymentPayload, PaymentRequirements,
    SettleResponse, SupportedKind, SupportedResponse, VerifyResponse, network_chain, v1_network,
    v2_network,
};

/// The snake_case reasons a payment is refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Reason {
    /// Signature does not verify (or cannot be checked: fail closed).
    InvalidSignature,
    /// Amount below the requirement (or not equal, for the v2 exact scheme).
    InsufficientAmount,
    /// `toAddress` ≠ `payTo`.
    RecipientMismatch,
    /// Asset ≠ required/supported asset.
    AssetMismatch,
    /// `validUntil` passed (or not yet valid).
    PaymentExpired,
    /// (payer, nonce) already reserved or settled.
    NonceAlreadyUsed,
    /// A second settle of the same payment.
    DuplicateSettlement,
    /// Unsupported network / chain id.
    InvalidNetwork,
    /// Unsupported scheme.
    InvalidScheme,
    /// Unsupported protocol version.
    InvalidX402Version,
    /// Malformed payload, or validity window too long.
    InvalidPayload,
    /// Sent but not yet confirmed.
    SettlementPending,
    /// Settlement failed.
    UnexpectedSettleError,
}

impl Reason {
    /// The wire code.
    pub fn code(self) -> &'static str {
        match self {
            Self::InvalidSignature => "invalid_signature",
            Self::InsufficientAmount => "insufficient_amount",
            Self::RecipientMismatch => "recipient_mismatch",
            Self::AssetMismatch => "asset_mismatch",
            Self::PaymentExpired => "payment_expired",
            Self::NonceAlreadyUsed => "nonce_already_used",
            Self::DuplicateSettlement => "duplicate_settlement",
            Self::InvalidNetwork => "invalid_network",
            Self::InvalidScheme => "invalid_scheme",
            Self::InvalidX402Version => "invalid_x402_version",
            Self::InvalidPayload => "invalid_payload",
            Self::SettlementPending => "settlement_pending",
            Self::UnexpectedSettleError => "unexpected_settle_error",
        }
    }
}

/// A refusal: code plus a safe message (never internal error text).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    /// Code.
    pub reason: Reason,
    /// Safe message.
    pub message: &'static str,
    /// Payer, when known.
    pub payer: Option<String>,
}

fn rej(reason: Reason, message: &'static str) -> Rejection {
    Rejection {
        reason,
        message,
        payer: None,
    }
}

/// How the payment authorises the transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Authorization {
    Chipi { msg: PaymentMessage },
    Outside { oe: OutsideExecution },
}

/// A payment that passed parsing (not yet the checks).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Parsed {
    version: u64,
    payer: Felt,
    nonce: Felt,
    asset: Felt,
    to: Felt,
    amount: u128,
    valid_until: u64,
    chain_name: &'static str,
    auth: Authorization,
    signature: Vec<Felt>,
}

/// A payment that passed every check.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedPayment {
    /// Payer (canonical hex).
    pub payer: String,
    /// Nonce (canonical hex).
    pub nonce: String,
    /// Amount.
    pub amount: u128,
    /// Chain name.
    pub network: String,
    request: SettlementRequest,
}

/// Verifies signatures: known key → local ECDSA; otherwise JSON-RPC (key read and cached, or
/// `is_valid_signature`); neither → refuse.
#[derive(Debug)]
struct SigVerifier {
    known: HashMap<Felt, Felt>,
    cache: Mutex<HashMap<Felt, (Felt, Instant)>>,
    ttl: Duration,
    rpc: Option<RpcClient>,
}

impl SigVerifier {
    /// `primary` is tried first; `alt` (computed only when needed) second.
    async fn check(
        &self,
        account: Felt,
        primary: Felt,
        alt: Option<&(dyn Fn() -> Felt + Sync)>,
        sig: &[Felt],
    ) -> Result<(), Rejection> {
        let local = |pk: &Felt| {
            sig.len() == 2
                && (verify_hash(pk, &primary, &sig[0], &sig[1])
                    || alt.is_some_and(|a| verify_hash(pk, &a(), &sig[0], &sig[1])))
        };
        if let Some(pk) = self.known.get(&account) {
            if local(pk) {
                return Ok(());
            }
            return Err(rej(
                Reason::InvalidSignature,
                "signature does not match the account key",
            ));
        }
        let Some(rpc) = &self.rpc else {
            return Err(rej(
                Reason::InvalidSignature,
                "account key unknown and no RPC configured; refusing to accept an unchecked signature",
            ));
        };
        if sig.len() == 2 {
            let cached = self.cached(account);
            let pk = match cached {
                Some(pk) => Some(pk),
                None => match rpc.call(account, SELECTOR_GET_PUBLIC_KEY, &[]).await {
                    Ok(v) if v.len() == 1 => {
                        if let Ok(mut c) = self.cache.lock() {
                            c.insert(account, (v[0], Instant::now()));
                        }
                        Some(v[0])
                    }
                    _ => None,
                },
            };
            if let Some(pk) = pk
                && local(&pk)
            {
                return Ok(());
            }
        }
        let mut hashes = vec![primary];
        if let Some(a) = alt {
            hashes.push(a());
        }
        for h in &hashes {
            let mut cd = vec![*h, Felt::from(sig.len())];
            cd.extend_from_slice(sig);
            match rpc.call(account, SELECTOR_IS_VALID_SIGNATURE, &cd).await {
                Ok(v) if v.first() == Some(&VALID) => return Ok(()),
                Ok(_) | Err(crate::rpc::RpcError::Rejected { .. }) => {}
                Err(e) => {
                    tracing::warn!(error = %e, "is_valid_signature call failed");
                    return Err(rej(
                        Reason::InvalidSignature,
                        "signature could not be checked",
                    ));
                }
            }
        }
        Err(rej(
            Reason::InvalidSignature,
            "signature rejected by the account",
        ))
    }

    fn cached(&self, account: Felt) -> Option<Felt> {
        let c = self.cache.lock().ok()?;
        c.get(&account)
            .filter(|(_, at)| at.elapsed() < self.ttl)
            .map(|(pk, _)| *pk)
    }
}

/// Verification and settlement of x402 payments.
#[derive(Debug, Clone)]
pub struct Facilitator {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    chain_name: &'static str,
    chain_id: Felt,
    /// Domain hashes: Payment variant C, Payment variant B, OutsideExecution.
    domains: [Felt; 3],
    asset: Felt,
    relayer: Option<Felt>,
    max_skew: u64,
    confirm_timeout: Duration,
    poll_interval: Duration,
    verifier: SigVerifier,
    store: Arc<dyn PaymentStore>,
    backend: Arc<dyn SettlementBackend>,
}

/// Counts from [`Facilitator::resume`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResumeReport {
    /// Submitted payments now confirmed.
    pub settled: usize,
    /// Payments marked failed (reverted, or interrupted before submission).
    pub failed: usize,
    /// Submitted payments still unconfirmed.
    pub pending: usize,
}

fn felt_of(s: &str, what: &'static str) -> Result<Felt, Rejection> {
    parse_felt(s).ok_or_else(|| rej(Reason::InvalidPayload, what))
}

impl Facilitator {
    /// Facilitator for `config` (validated here) with the backend it names.
    pub fn new(config: &X402Config, store: Arc<dyn PaymentStore>) -> Result<Self, ConfigError> {
        config.validate()?;
        let backend: Arc<dyn SettlementBackend> = match config.settlement.as_str() {
            "rpc" => {
                let rpc = RpcClient::new(&config.rpc_url).map_err(|e| ConfigError {
                    key: "rpc_url".into(),
                    message: e.to_string(),
                })?;
                Arc::new(RpcBackend::new(
                    rpc,
                    crate::typed_data::chain_id(&config.network).unwrap_or(Felt::ZERO),
                    parse_felt(&config.relayer_address).unwrap_or(Felt::ZERO),
                    parse_felt(&config.relayer_private_key).unwrap_or(Felt::ZERO),
                ))
            }
            _ => Arc::new(SandboxBackend),
        };
        Self::with_backend(config, store, backend)
    }

    /// Facilitator with an explicit settlement backend.
    pub fn with_backend(
        config: &X402Config,
        store: Arc<dyn PaymentStore>,
        backend: Arc<dyn SettlementBackend>,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let chain_name = if config.network == "SN_SEPOLIA" {
            "SN_SEPOLIA"
        } else {
            "SN_MAIN"
        };
        let rpc = if config.rpc_url.is_empty() {
            None
        } else {
            Some(RpcClient::new(&config.rpc_url).map_err(|e| ConfigError {
                key: "rpc_url".into(),
                message: e.to_string(),
            })?)
        };
        let chain_id = crate::typed_data::chain_id(chain_name).unwrap_or(Felt::ZERO);
        let known = config
            .accounts
            .iter()
            .filter_map(|a| Some((parse_felt(&a.address)?, parse_felt(&a.public_key)?)))
            .collect();
        Ok(Self {
            inner: Arc::new(Inner {
                chain_name,
                chain_id,
                domains: [
                    payment_domain_hash(chain_id, DomainVariant::C),
                    payment_domain_hash(chain_id, DomainVariant::B),
                    outside_execution_domain_hash(chain_id),
                ],
                asset: parse_felt(&config.asset).unwrap_or(Felt::ZERO),
                relayer: parse_felt(&config.relayer_address),
                max_skew: config.max_skew_seconds,
                confirm_timeout: Duration::from_millis(config.confirm_timeout_ms),
                poll_interval: Duration::from_millis(config.poll_interval_ms.max(1)),
                verifier: SigVerifier {
                    known,
                    cache: Mutex::new(HashMap::new()),
                    ttl: Duration::from_secs(config.key_cache_seconds),
                    rpc,
                },
                store,
                backend,
            }),
        })
    }

    /// The store in use.
    pub fn store(&self) -> &Arc<dyn PaymentStore> {
        &self.inner.store
    }

    /// Chain name (`SN_MAIN` / `SN_SEPOLIA`).
    pub fn chain_name(&self) -> &'static str {
        self.inner.chain_name
    }

    /// `GET /supported`.
    pub fn supported(&self) -> SupportedResponse {
        let c = self.inner.chain_name;
        SupportedResponse {
            kinds: vec![
                SupportedKind {
                    x402_version: 1,
                    scheme: "exact".into(),
                    network: v1_network(c).into(),
                    extra: None,
                },
                SupportedKind {
                    x402_version: 2,
                    scheme: "exact".into(),
                    network: v2_network(c).into(),
                    extra: None,
                },
            ],
        }
    }

    fn parse(&self, p: &PaymentPayload, req: &PaymentRequirements) -> Result<Parsed, Rejection> {
        if !matches!(p.x402_version, 1 | 2) {
            return Err(rej(
                Reason::InvalidX402Version,
                "x402Version must be 1 or 2",
            ));
        }
        if p.scheme() != Some("exact") || req.scheme != "exact" {
            return Err(rej(
                Reason::InvalidScheme,
                "only the exact scheme is supported",
            ));
        }
        let chain = p.network().and_then(network_chain);
        let req_chain = network_chain(&req.network);
        if chain.is_none() || chain != req_chain || chain != Some(self.inner.chain_name) {
            return Err(rej(
                Reason::InvalidNetwork,
                "network not supported by this facilitator",
            ));
        }
        let chain_name = self.inner.chain_name;
        if p.payload.get("outsideExecution").is_some() {
            let oep = OutsideExecutionPayload::deserialize(&p.payload).map_err(|_| {
                rej(
                    Reason::InvalidPayload,
                    "malformed outside-execution payload",
                )
            })?;
            if let Some(cid) = &oep.chain_id {
                let ok = parse_felt(cid)
                    .or_else(|| crate::typed_data::short_string(cid))
                    .is_some_and(|f| f == self.inner.chain_id);
                if !ok {
                    return Err(rej(
                        Reason::InvalidNetwork,
                        "chainId does not match the network",
                    ));
                }
            }
            let payer = felt_of(&oep.from, "bad payer address")?;
            let o = &oep.outside_execution;
            let calls = o
                .calls
                .iter()
                .map(|c| {
                    Ok(Call {
                        to: felt_of(&c.to, "bad call address")?,
                        selector: felt_of(&c.selector, "bad selector")?,
                        calldata: c
                            .calldata
                            .iter()
                            .map(|x| felt_of(x, "bad calldata"))
                            .collect::<Result<_, _>>()?,
                    })
                })
                .collect::<Result<Vec<_>, Rejection>>()?;
            let to_u64 =
                |n: &crate::wire::NumOrString| n.as_u128().and_then(|v| u64::try_from(v).ok());
            let oe = OutsideExecution {
                caller: felt_of(&o.caller, "bad caller")?,
                nonce: felt_of(&o.nonce, "bad nonce")?,
                execute_after: to_u64(&o.execute_after)
                    .ok_or(rej(Reason::InvalidPayload, "bad executeAfter"))?,
                execute_before: to_u64(&o.execute_before)
                    .ok_or(rej(Reason::InvalidPayload, "bad executeBefore"))?,
                calls,
            };
            let [call] = oe.calls.as_slice() else {
                return Err(rej(Reason::InvalidPayload, "exactly one call is required"));
            };
            if call.selector != SELECTOR_TRANSFER || call.calldata.len() != 3 {
                return Err(rej(
                    Reason::InvalidPayload,
                    "the call must be transfer(payTo, amount)",
                ));
            }
            let high = call.calldata[2];
            let amount = u128::try_from(call.calldata[1])
                .ok()
                .filter(|_| high == Felt::ZERO)
                .ok_or(rej(Reason::InvalidPayload, "amount out of range"))?;
            let signature = oep
                .signature
                .iter()
                .map(|s| felt_of(s, "bad signature element"))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Parsed {
                version: p.x402_version,
                payer,
                nonce: oe.nonce,
                asset: call.to,
                to: call.calldata[0],
                amount,
                valid_until: oe.execute_before,
                chain_name,
                auth: Authorization::Outside { oe: oe.clone() },
                signature,
            })
        } else {
            let c = ChipiAuthorization::deserialize(&p.payload)
                .map_err(|_| rej(Reason::InvalidPayload, "malformed payment payload"))?;
            let amount = c
                .amount
                .as_u128()
                .ok_or(rej(Reason::InvalidPayload, "bad amount"))?;
            let valid_until = c
                .valid_until
                .as_u128()
                .and_then(|v| u64::try_from(v).ok())
                .ok_or(rej(Reason::InvalidPayload, "bad validUntil"))?;
            let msg = PaymentMessage {
                from_address: felt_of(&c.from_address, "bad fromAddress")?,
                to_address: felt_of(&c.to_address, "bad toAddress")?,
                amount_low: amount,
                amount_high: 0,
                asset: felt_of(&c.asset, "bad asset")?,
                valid_until: u128::from(valid_until),
                nonce: felt_of(&c.nonce, "nonce must be a felt (hex, decimal or UUID)")?,
            };
            let signature = c
                .signature
                .parts()
                .into_iter()
                .map(|s| felt_of(s, "bad signature element"))
                .collect::<Result<Vec<_>, _>>()?;
            Ok(Parsed {
                version: p.x402_version,
                payer: msg.from_address,
                nonce: msg.nonce,
                asset: msg.asset,
                to: msg.to_address,
                amount,
                valid_until,
                chain_name,
                auth: Authorization::Chipi { msg },
                signature,
            })
        }
    }

    /// Every check except the nonce; returns the verified payment.
    async fn check(
        &self,
        p: &PaymentPayload,
        req: &PaymentRequirements,
    ) -> Result<VerifiedPayment, Rejection> {
        let parsed = self.parse(p, req)?;
        let payer_hex = felt_hex(&parsed.payer);
        let with_payer = |mut r: Rejection| {
            r.payer = Some(payer_hex.clone());
            r
        };
        self.check_parsed(&parsed, req).await.map_err(with_payer)?;
        let action = match &parsed.auth {
            Authorization::Chipi { .. } => SettleAction::TransferFrom,
            Authorization::Outside { oe } => SettleAction::OutsideExecution {
                outside_execution: oe.clone(),
                signature: parsed.signature.clone(),
            },
        };
        Ok(VerifiedPayment {
            payer: payer_hex,
            nonce: felt_hex(&parsed.nonce),
            amount: parsed.amount,
            network: parsed.chain_name.to_owned(),
            request: SettlementRequest {
                transfer: ExpectedTransfer {
                    asset: parsed.asset,
                    from: parsed.payer,
                    to: parsed.to,
                    amount: parsed.amount,
                },
                nonce: parsed.nonce,
                action,
            },
        })
    }

    async fn check_parsed(
        &self,
        parsed: &Parsed,
        req: &PaymentRequirements,
    ) -> Result<(), Rejection> {
        let req_asset = felt_of(&req.asset, "bad required asset")?;
        if parsed.asset != req_asset || req_asset != self.inner.asset {
            return Err(rej(
                Reason::AssetMismatch,
                "asset does not match the requirement",
            ));
        }
        let pay_to = felt_of(&req.pay_to, "bad payTo")?;
        if parsed.to != pay_to {
            return Err(rej(
                Reason::RecipientMismatch,
                "recipient does not match payTo",
            ));
        }
        let required = crate::wire::parse_u128(&req.amount)
            .ok_or(rej(Reason::InvalidPayload, "bad required amount"))?;
        let exact_v2 = matches!(parsed.auth, Authorization::Outside { .. });
        if parsed.amount < required {
            return Err(rej(
                Reason::InsufficientAmount,
                "amount below the required amount",
            ));
        }
        if exact_v2 && parsed.amount != required {
            return Err(rej(
                Reason::InvalidPayload,
                "exact scheme amount must equal the required amount",
            ));
        }
        let now = crate::now_unix();
        if parsed.valid_until <= now {
            return Err(rej(Reason::PaymentExpired, "payment validity has passed"));
        }
        if parsed.valid_until > now + req.max_timeout_seconds + self.inner.max_skew {
            return Err(rej(
                Reason::InvalidPayload,
                "validity window longer than maxTimeoutSeconds",
            ));
        }
        if let Authorization::Outside { oe } = &parsed.auth {
            if oe.execute_after > now + self.inner.max_skew {
                return Err(rej(
                    Reason::InvalidPayload,
                    "outside execution not valid yet",
                ));
            }
            if oe.caller != ANY_CALLER && Some(oe.caller) != self.inner.relayer {
                return Err(rej(
                    Reason::InvalidPayload,
                    "outside execution caller must be ANY_CALLER or the relayer",
                ));
            }
        }
        let v = &self.inner.verifier;
        match &parsed.auth {
            Authorization::Chipi { msg } => {
                let primary = payment_hash_with_domain(msg, self.inner.domains[0]);
                let alt = || payment_hash_with_domain(msg, self.inner.domains[1]);
                v.check(parsed.payer, primary, Some(&alt), &parsed.signature)
                    .await
            }
            Authorization::Outside { oe } => {
                let h = outside_execution_hash_with_domain(oe, parsed.payer, self.inner.domains[2]);
                v.check(parsed.payer, h, None, &parsed.signature).await
            }
        }
    }

    async fn nonce_free(&self, v: &VerifiedPayment) -> Result<(), Rejection> {
        match self.inner.store.get(&v.payer, &v.nonce).await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err(Rejection {
                reason: Reason::NonceAlreadyUsed,
                message: "this payment nonce was already used",
                payer: Some(v.payer.clone()),
            }),
            Err(e) => {
                tracing::error!(error = %e, "payment store lookup failed");
                Err(Rejection {
                    reason: Reason::UnexpectedSettleError,
                    message: "payment store unavailable",
                    payer: Some(v.payer.clone()),
                })
            }
        }
    }

    /// Checks a payment fully, including that its nonce is unused, without consuming it.
    pub async fn verify_payment(
        &self,
        p: &PaymentPayload,
        req: &PaymentRequirements,
    ) -> Result<VerifiedPayment, Rejection> {
        let v = self.check(p, req).await?;
        self.nonce_free(&v).await?;
        Ok(v)
    }

    /// `POST /verify`.
    pub async fn verify(&self, p: &PaymentPayload, req: &PaymentRequirements) -> VerifyResponse {
        match self.verify_payment(p, req).await {
            Ok(v) => VerifyResponse {
                is_valid: true,
                invalid_reason: None,
                invalid_message: None,
                payer: Some(v.payer),
            },
            Err(r) => VerifyResponse {
                is_valid: false,
                invalid_reason: Some(r.reason.code().into()),
                invalid_message: Some(r.message.into()),
                payer: r.payer,
            },
        }
    }

    fn record(&self, v: &VerifiedPayment) -> PaymentRecord {
        let now = crate::now_unix();
        let t = &v.request.transfer;
        PaymentRecord {
            payer: v.payer.clone(),
            nonce: v.nonce.clone(),
            state: PaymentState::Reserved,
            tx_hash: None,
            network: v.network.clone(),
            asset: felt_hex(&t.asset),
            pay_to: felt_hex(&t.to),
            amount: t.amount.to_string(),
            error: None,
            created_at: now,
            updated_at: now,
        }
    }

    /// Verifies and atomically consumes the nonce without settling (verify-only middleware).
    pub async fn verify_and_reserve(
        &self,
        p: &PaymentPayload,
        req: &PaymentRequirements,
    ) -> Result<VerifiedPayment, Rejection> {
        let v = self.verify_payment(p, req).await?;
        self.reserve(&v).await?;
        // Terminal at once: the nonce stays consumed and `resume` leaves it alone.
        if let Err(e) = self
            .inner
            .store
            .mark_failed(&v.payer, &v.nonce, "verify_only")
            .await
        {
            tracing::warn!(error = %e, "could not close a verify-only reservation");
        }
        Ok(v)
    }

    async fn reserve(&self, v: &VerifiedPayment) -> Result<(), Rejection> {
        match self.inner.store.reserve(self.record(v)).await {
            Ok(ReserveOutcome::Reserved) => Ok(()),
            Ok(ReserveOutcome::AlreadyExists(_)) => Err(Rejection {
                reason: Reason::NonceAlreadyUsed,
                message: "this payment nonce was already used",
                payer: Some(v.payer.clone()),
            }),
            Err(e) => {
                tracing::error!(error = %e, "payment store reserve failed");
                Err(Rejection {
                    reason: Reason::UnexpectedSettleError,
                    message: "payment store unavailable",
                    payer: Some(v.payer.clone()),
                })
            }
        }
    }

    /// `POST /settle`: verify, reserve (payer, nonce), submit, wait for confirmation.
    pub async fn settle(&self, p: &PaymentPayload, req: &PaymentRequirements) -> SettleResponse {
        let network = p.network().unwrap_or(&req.network).to_owned();
        let fail =
            |reason: Reason, message: &str, payer: Option<String>, tx: String| SettleResponse {
                success: false,
                error_reason: Some(reason.code().into()),
                error_message: Some(message.into()),
                payer,
                transaction: tx,
                network: network.clone(),
            };
        let v = match self.check(p, req).await {
            Ok(v) => v,
            Err(r) => return fail(r.reason, r.message, r.payer, String::new()),
        };
        match self.inner.store.reserve(self.record(&v)).await {
            Ok(ReserveOutcome::Reserved) => {}
            Ok(ReserveOutcome::AlreadyExists(existing)) => {
                return fail(
                    Reason::DuplicateSettlement,
                    match existing.state {
                        PaymentState::Settled => {
                            "payment already settled; see the original transaction"
                        }
                        PaymentState::Submitted => {
                            "payment already submitted; see the original transaction"
                        }
                        PaymentState::Reserved => "payment nonce already consumed",
                        PaymentState::Failed => "payment already attempted and failed",
                    },
                    Some(v.payer),
                    existing.tx_hash.unwrap_or_default(),
                );
            }
            Err(e) => {
                tracing::error!(error = %e, "payment store reserve failed");
                return fail(
                    Reason::UnexpectedSettleError,
                    "payment store unavailable",
                    Some(v.payer),
                    String::new(),
                );
            }
        }
        self.settle_reserved_payment(&v, &network).await
    }

    /// Verifies a payment and reserves its (payer, nonce) for a later
    /// [`Facilitator::settle_reserved_payment`] (the settle-after-handler middleware mode).
    pub async fn reserve_for_settlement(
        &self,
        p: &PaymentPayload,
        req: &PaymentRequirements,
    ) -> Result<VerifiedPayment, Rejection> {
        let v = self.verify_payment(p, req).await?;
        self.reserve(&v).await?;
        Ok(v)
    }

    /// Settles a payment reserved by [`Facilitator::reserve_for_settlement`]; `network` is
    /// echoed in the answer.
    pub async fn settle_reserved_payment(
        &self,
        v: &VerifiedPayment,
        network: &str,
    ) -> SettleResponse {
        match self.settle_reserved(v).await {
            Ok(tx) => SettleResponse {
                success: true,
                error_reason: None,
                error_message: None,
                payer: Some(v.payer.clone()),
                transaction: tx,
                network: network.to_owned(),
            },
            Err((reason, msg, tx)) => SettleResponse {
                success: false,
                error_reason: Some(reason.code().into()),
                error_message: Some(msg.into()),
                payer: Some(v.payer.clone()),
                transaction: tx,
                network: network.to_owned(),
            },
        }
    }

    /// Closes a reserved payment that will not be settled (e.g. the handler failed); its
    /// nonce stays consumed.
    pub async fn abandon(&self, v: &VerifiedPayment, reason: &str) {
        if let Err(e) = self
            .inner
            .store
            .mark_failed(&v.payer, &v.nonce, reason)
            .await
        {
            tracing::warn!(error = %e, "could not close an abandoned reservation");
        }
    }

    async fn settle_reserved(
        &self,
        v: &VerifiedPayment,
    ) -> Result<String, (Reason, &'static str, String)> {
        let store = &self.inner.store;
        let backend = &self.inner.backend;
        let prepared = match backend.prepare(&v.request).await {
            Ok(p) => p,
            Err(e) => {
                tracing::error!(error = %e, "settlement prepare failed");
                let _ = store
                    .mark_failed(&v.payer, &v.nonce, "prepare_failed")
                    .await;
                return Err((
                    Reason::UnexpectedSettleError,
                    "settlement could not be prepared",
                    String::new(),
                ));
            }
        };
        let tx = felt_hex(&prepared.tx_hash);
        // Record the hash before sending, so a crash after sending can be resolved on restart.
        if let Err(e) = store.mark_submitted(&v.payer, &v.nonce, &tx).await {
            tracing::error!(error = %e, "payment store mark_submitted failed");
            let _ = store.mark_failed(&v.payer, &v.nonce, "store_failed").await;
            return Err((
                Reason::UnexpectedSettleError,
                "payment store unavailable",
                String::new(),
            ));
        }
        let mut tx = tx;
        let mut tx_hash = prepared.tx_hash;
        match backend.submit(&prepared).await {
            Ok(None) => {}
            Ok(Some(reported)) => {
                tx_hash = reported;
                tx = felt_hex(&reported);
                if let Err(e) = store.mark_submitted(&v.payer, &v.nonce, &tx).await {
                    tracing::error!(error = %e, "payment store mark_submitted failed");
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "settlement submit failed");
                if e.definitely_not_sent {
                    let _ = store
                        .mark_failed(&v.payer, &v.nonce, "submit_rejected")
                        .await;
                    return Err((
                        Reason::UnexpectedSettleError,
                        "settlement transaction was rejected",
                        tx,
                    ));
                }
                return Err((
                    Reason::SettlementPending,
                    "settlement outcome unknown; it will be resolved",
                    tx,
                ));
            }
        }
        let deadline = Instant::now() + self.inner.confirm_timeout;
        loop {
            match backend.status(tx_hash, &v.request.transfer).await {
                Ok(Outcome::Settled) => {
                    if let Err(e) = store.mark_settled(&v.payer, &v.nonce, &tx).await {
                        tracing::error!(error = %e, "payment store mark_settled failed");
                    }
                    return Ok(tx);
                }
                Ok(Outcome::Failed(why)) => {
                    let _ = store.mark_failed(&v.payer, &v.nonce, &why).await;
                    return Err((
                        Reason::UnexpectedSettleError,
                        "settlement transaction failed",
                        tx,
                    ));
                }
                Ok(Outcome::Pending) => {}
                Err(e) => tracing::warn!(error = %e, "settlement status check failed"),
            }
            if Instant::now() >= deadline {
                return Err((
                    Reason::SettlementPending,
                    "settlement submitted but not yet confirmed",
                    tx,
                ));
            }
            tokio::time::sleep(self.inner.poll_interval).await;
        }
    }

    /// After a restart: `submitted` payments are resolved by asking the backend (settled,
    /// failed, or left pending); `reserved` ones never reached the chain (the hash is recorded
    /// before sending) and are marked failed.
    pub async fn resume(&self) -> Result<ResumeReport, crate::store::StoreError> {
        let mut report = ResumeReport::default();
        for r in self.inner.store.list_unfinished().await? {
            match r.state {
                PaymentState::Reserved => {
                    // Another instance may be between reserve and submit: only stale ones.
                    if crate::now_unix().saturating_sub(r.updated_at) > 600 {
                        self.inner
                            .store
                            .mark_failed(&r.payer, &r.nonce, "interrupted_before_submission")
                            .await?;
                        report.failed += 1;
                    } else {
                        report.pending += 1;
                    }
                }
                PaymentState::Submitted => {
                    let (Some(tx), Some(from), Some(to), Some(asset), Some(amount)) = (
                        r.tx_hash.as_deref().and_then(parse_felt),
                        parse_felt(&r.payer),
                        parse_felt(&r.pay_to),
                        parse_felt(&r.asset),
                        r.amount.parse::<u128>().ok(),
                    ) else {
                        self.inner
                            .store
                            .mark_failed(&r.payer, &r.nonce, "unreadable_record")
                            .await?;
                        report.failed += 1;
                        continue;
                    };
                    let expect = ExpectedTransfer {
                        asset,
                        from,
                        to,
                        amount,
                    };
                    match self.inner.backend.status(tx, &expect).await {
                        Ok(Outcome::Settled) => {
                            self.inner
                                .store
                                .mark_settled(&r.payer, &r.nonce, &felt_hex(&tx))
                                .await?;
                            report.settled += 1;
                        }
                        Ok(Outcome::Failed(why)) => {
                            self.inner
                                .store
                                .mark_failed(&r.payer, &r.nonce, &why)
                                .await?;
                            report.failed += 1;
                        }
                        Ok(Outcome::Pending) | Err(_) => report.pending += 1,
                    }
                }
                PaymentState::Settled | PaymentState::Failed => {}
            }
        }
        Ok(report)
    }
}
