//! A small Starknet JSON-RPC client (spec 0.8 shapes) over reqwest, with invoke v3 hashing
//! and signing for the relayer account.

use std::time::Duration;

use serde_json::{Value, json};
use starknet_crypto::{Felt, poseidon_hash_many};

use crate::typed_data::{felt_hex, parse_felt, short_string, sign_hash};

/// A JSON-RPC failure. `Rejected` means the node answered with an error (the request was
/// certainly not applied); `Transport` means the outcome is unknown.
#[derive(Debug, thiserror::Error)]
pub enum RpcError {
    /// The node answered with a JSON-RPC error.
    #[error("rpc error {code}: {message}")]
    Rejected {
        /// JSON-RPC error code.
        code: i64,
        /// Node's message (logged, never sent to clients).
        message: String,
    },
    /// Network / decoding problem.
    #[error("rpc transport: {0}")]
    Transport(String),
}

/// Starknet JSON-RPC client.
#[derive(Debug, Clone)]
pub struct RpcClient {
    url: String,
    http: reqwest::Client,
}

/// Result of `starknet_estimateFee` (only what the relayer needs).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FeeEstimate {
    /// L1 gas consumed.
    pub l1_gas: u64,
    /// L1 gas price.
    pub l1_gas_price: u128,
    /// L2 gas consumed.
    pub l2_gas: u64,
    /// L2 gas price.
    pub l2_gas_price: u128,
    /// L1 data gas consumed.
    pub l1_data_gas: u64,
    /// L1 data gas price.
    pub l1_data_gas_price: u128,
}

/// An emitted event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    /// Emitting contract.
    pub from_address: Felt,
    /// Keys.
    pub keys: Vec<Felt>,
    /// Data.
    pub data: Vec<Felt>,
}

/// The parts of a receipt the settlement backend looks at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// `SUCCEEDED` or `REVERTED`.
    pub execution_status: String,
    /// `PRE_CONFIRMED`, `ACCEPTED_ON_L2`, `ACCEPTED_ON_L1`, ….
    pub finality_status: String,
    /// Events.
    pub events: Vec<Event>,
}

fn felt_list(v: &Value) -> Result<Vec<Felt>, RpcError> {
    v.as_array()
        .ok_or_else(|| RpcError::Transport("expected an array of felts".into()))?
        .iter()
        .map(|x| {
            x.as_str()
                .and_then(parse_felt)
                .ok_or_else(|| RpcError::Transport("bad felt in response".into()))
        })
        .collect()
}

fn hex_u128(v: &Value) -> u128 {
    v.as_str()
        .and_then(crate::wire::parse_u128)
        .or_else(|| v.as_u64().map(u128::from))
        .unwrap_or(0)
}

fn felts_json(v: &[Felt]) -> Vec<String> {
    v.iter().map(felt_hex).collect()
}

/// Resource bounds of an invoke v3 transaction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ResourceBounds {
    /// (max amount, max price per unit) for L1 gas.
    pub l1_gas: (u64, u128),
    /// … for L2 gas.
    pub l2_gas: (u64, u128),
    /// … for L1 data gas.
    pub l1_data_gas: (u64, u128),
}

impl ResourceBounds {
    /// Bounds with a 50 % margin over an estimate.
    pub fn from_estimate(e: &FeeEstimate) -> Self {
        let m = |a: u64| a.saturating_add(a / 2).saturating_add(1);
        let p = |a: u128| a.saturating_add(a / 2).saturating_add(1);
        Self {
            l1_gas: (m(e.l1_gas), p(e.l1_gas_price)),
            l2_gas: (m(e.l2_gas), p(e.l2_gas_price)),
            l1_data_gas: (m(e.l1_data_gas), p(e.l1_data_gas_price)),
        }
    }

    fn to_json(self) -> Value {
        let b = |(a, p): (u64, u128)| json!({"max_amount": format!("{a:#x}"), "max_price_per_unit": format!("{p:#x}")});
        json!({"l1_gas": b(self.l1_gas), "l2_gas": b(self.l2_gas), "l1_data_gas": b(self.l1_data_gas)})
    }
}

/// An invoke v3 transaction from `sender` executing `calldata` (already `__execute__` encoded).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvokeV3 {
    /// Account.
    pub sender: Felt,
    /// `__execute__` calldata.
    pub calldata: Vec<Felt>,
    /// Account nonce.
    pub nonce: Felt,
    /// Fee bounds.
    pub bounds: ResourceBounds,
    /// Signature.
    pub signature: Vec<Felt>,
}

fn two_pow(n: u32) -> Felt {
    let mut f = Felt::ONE;
    for _ in 0..n {
        f = f + f;
    }
    f
}

impl InvokeV3 {
    /// Transaction hash (Starknet invoke v3, tip 0, no paymaster data, L1 DA modes).
    pub fn hash(&self, chain_id: Felt, query: bool) -> Felt {
        let bound = |name: &str, (a, p): (u64, u128)| {
            short_string(name).unwrap_or(Felt::ZERO) * two_pow(192)
                + Felt::from(a) * two_pow(128)
                + Felt::from(p)
        };
        let fee_hash = poseidon_hash_many(&[
            Felt::ZERO,
            bound("L1_GAS", self.bounds.l1_gas),
            bound("L2_GAS", self.bounds.l2_gas),
            bound("L1_DATA", self.bounds.l1_data_gas),
        ]);
        let version = if query {
            two_pow(128) + Felt::THREE
        } else {
            Felt::THREE
        };
        poseidon_hash_many(&[
            short_string("invoke").unwrap_or(Felt::ZERO),
            version,
            self.sender,
            fee_hash,
            poseidon_hash_many(&[]),
            chain_id,
            self.nonce,
            Felt::ZERO,
            poseidon_hash_many(&[]),
            poseidon_hash_many(&self.calldata),
        ])
    }

    /// Signs the transaction hash with `private_key` (RFC 6979).
    pub fn sign(&mut self, chain_id: Felt, private_key: &Felt) -> Option<Felt> {
        let h = self.hash(chain_id, false);
        let (r, s) = sign_hash(private_key, &h)?;
        self.signature = vec![r, s];
        Some(h)
    }

    fn to_json(&self, query: bool) -> Value {
        json!({
            "type": "INVOKE",
            "version": if query { "0x100000000000000000000000000000003" } else { "0x3" },
            "sender_address": felt_hex(&self.sender),
            "calldata": felts_json(&self.calldata),
            "signature": felts_json(&self.signature),
            "nonce": felt_hex(&self.nonce),
            "resource_bounds": self.bounds.to_json(),
            "tip": "0x0",
            "paymaster_data": [],
            "account_deployment_data": [],
            "nonce_data_availability_mode": "L1",
            "fee_data_availability_mode": "L1",
        })
    }
}

impl RpcClient {
    /// Client for `url` with a 10 s request timeout.
    pub fn new(url: &str) -> Result<Self, RpcError> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        Ok(Self {
            url: url.to_owned(),
            http,
        })
    }

    /// Raw JSON-RPC call.
    pub async fn request(&self, method: &str, params: Value) -> Result<Value, RpcError> {
        let body = json!({"jsonrpc": "2.0", "id": 1, "method": method, "params": params});
        let resp = self
            .http
            .post(&self.url)
            .json(&body)
            .send()
            .await
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        let v: Value = resp
            .json()
            .await
            .map_err(|e| RpcError::Transport(e.to_string()))?;
        if let Some(e) = v.get("error") {
            return Err(RpcError::Rejected {
                code: e.get("code").and_then(Value::as_i64).unwrap_or(0),
                message: e
                    .get("message")
                    .and_then(Value::as_str)
                    .unwrap_or("")
                    .to_owned(),
            });
        }
        v.get("result")
            .cloned()
            .ok_or_else(|| RpcError::Transport("response without result".into()))
    }

    /// `starknet_chainId`.
    pub async fn chain_id(&self) -> Result<Felt, RpcError> {
        let v = self.request("starknet_chainId", json!([])).await?;
        v.as_str()
            .and_then(parse_felt)
            .ok_or_else(|| RpcError::Transport("bad chain id".into()))
    }

    /// `starknet_call` at the latest block.
    pub async fn call(
        &self,
        to: Felt,
        selector: Felt,
        calldata: &[Felt],
    ) -> Result<Vec<Felt>, RpcError> {
        let v = self
            .request(
                "starknet_call",
                json!([{
                    "contract_address": felt_hex(&to),
                    "entry_point_selector": felt_hex(&selector),
                    "calldata": felts_json(calldata),
                }, "latest"]),
            )
            .await?;
        felt_list(&v)
    }

    /// `starknet_getNonce` at the latest block.
    pub async fn nonce(&self, address: Felt) -> Result<Felt, RpcError> {
        let v = self
            .request("starknet_getNonce", json!(["latest", felt_hex(&address)]))
            .await?;
        v.as_str()
            .and_then(parse_felt)
            .ok_or_else(|| RpcError::Transport("bad nonce".into()))
    }

    /// `starknet_estimateFee` for an unsigned query version of `tx` (validation skipped).
    pub async fn estimate_fee(&self, tx: &InvokeV3) -> Result<FeeEstimate, RpcError> {
        let v = self
            .request(
                "starknet_estimateFee",
                json!([[tx.to_json(true)], ["SKIP_VALIDATE"], "latest"]),
            )
            .await?;
        let e = v
            .as_array()
            .and_then(|a| a.first())
            .ok_or_else(|| RpcError::Transport("empty fee estimate".into()))?;
        let u = |k: &str| u64::try_from(hex_u128(&e[k])).unwrap_or(u64::MAX);
        Ok(FeeEstimate {
            l1_gas: u("l1_gas_consumed"),
            l1_gas_price: hex_u128(&e["l1_gas_price"]),
            l2_gas: u("l2_gas_consumed"),
            l2_gas_price: hex_u128(&e["l2_gas_price"]),
            l1_data_gas: u("l1_data_gas_consumed"),
            l1_data_gas_price: hex_u128(&e["l1_data_gas_price"]),
        })
    }

    /// `starknet_addInvokeTransaction`; returns the hash the node reports.
    pub async fn add_invoke(&self, tx: &InvokeV3) -> Result<Felt, RpcError> {
        let v = self
            .request("starknet_addInvokeTransaction", json!([tx.to_json(false)]))
            .await?;
        v.get("transaction_hash")
            .and_then(Value::as_str)
            .and_then(parse_felt)
            .ok_or_else(|| RpcError::Transport("bad transaction hash".into()))
    }

    /// `starknet_getTransactionReceipt`; `Ok(None)` when the node does not know the hash.
    pub async fn receipt(&self, hash: Felt) -> Result<Option<Receipt>, RpcError> {
        match self
            .request("starknet_getTransactionReceipt", json!([felt_hex(&hash)]))
            .await
        {
            Ok(v) => {
                let s = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
                let mut events = Vec::new();
                for e in v
                    .get("events")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    events.push(Event {
                        from_address: e
                            .get("from_address")
                            .and_then(Value::as_str)
                            .and_then(parse_felt)
                            .unwrap_or(Felt::ZERO),
                        keys: felt_list(&e["keys"]).unwrap_or_default(),
                        data: felt_list(&e["data"]).unwrap_or_default(),
                    });
                }
                Ok(Some(Receipt {
                    execution_status: s("execution_status"),
                    finality_status: s("finality_status"),
                    events,
                }))
            }
            Err(RpcError::Rejected { code: 29, .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invoke_v3_hash_matches_starknet_js() {
        // starknet.js 9.2.1 hash.calculateInvokeTransactionHash with the same fields.
        let tx = InvokeV3 {
            sender: Felt::from(0x7e1a7e1u64),
            calldata: vec![Felt::ONE, Felt::TWO, Felt::THREE],
            nonce: Felt::from(5u8),
            bounds: ResourceBounds {
                l1_gas: (0x10, 0x20),
                l2_gas: (0x30, 0x40),
                l1_data_gas: (0x50, 0x60),
            },
            signature: vec![],
        };
        let chain = short_string("SN_MAIN").unwrap_or(Felt::ZERO);
        assert_eq!(
            felt_hex(&tx.hash(chain, false)),
            "0x5389dcc37d14ac470bbad43a98ebdb785b83894a917a905491b19e7adcdbd19"
        );
    }
}
