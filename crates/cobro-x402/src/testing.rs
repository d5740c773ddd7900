//! Test support (feature `testing`): a Starknet JSON-RPC stand-in on 127.0.0.1.
//!
//! It is not a Starknet node. It implements, over plain JSON, the handful of methods this
//! crate uses: `starknet_chainId`, `starknet_call` (`get_public_key`, `is_valid_signature`),
//! `starknet_getNonce`, `starknet_estimateFee`, `starknet_addInvokeTransaction` and
//! `starknet_getTransactionReceipt`. Accounts are plain key holders (single-key, or
//! multi-key expecting one `(r, s)` pair per key). An invoke is checked the way an account
//! would: the relayer's signature over the invoke v3 hash, and for `execute_from_outside_v2`
//! the payer's signature over the SNIP-12 hash; a successful transfer emits a Cairo 1 ERC-20
//! `Transfer` event in the receipt.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{Value, json};
use starknet_crypto::Felt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::rpc::{InvokeV3, ResourceBounds};
use crate::typed_data::{
    Call, OutsideExecution, SELECTOR_EXECUTE_FROM_OUTSIDE_V2, SELECTOR_GET_PUBLIC_KEY,
    SELECTOR_IS_VALID_SIGNATURE, SELECTOR_TRANSFER, SELECTOR_TRANSFER_EVENT,
    SELECTOR_TRANSFER_FROM, VALID, felt_hex, outside_execution_hash, parse_felt, verify_hash,
};

/// Mutable state of the stand-in.
#[derive(Debug, Default)]
pub struct StandInState {
    /// Chain id returned and used for hashes.
    pub chain_id: Felt,
    /// Account → its public keys (one key = standard account).
    pub accounts: HashMap<Felt, Vec<Felt>>,
    /// Account nonces.
    pub nonces: HashMap<Felt, Felt>,
    /// Receipts by transaction hash.
    pub receipts: HashMap<Felt, Value>,
    /// When true, receipts of accepted transactions go to `withheld` (to test pending).
    pub withhold_receipts: bool,
    /// Receipts held back; [`StandIn::release`] publishes them.
    pub withheld: HashMap<Felt, Value>,
    /// When true, transactions revert.
    pub revert: bool,
    /// Method names called, in order.
    pub calls: Vec<String>,
}

/// A running stand-in; the server stops when this is dropped.
#[derive(Debug)]
pub struct StandIn {
    /// `http://127.0.0.1:PORT/rpc`.
    pub url: String,
    /// Shared state (inspect or change between requests).
    pub state: Arc<Mutex<StandInState>>,
    task: JoinHandle<()>,
}

impl Drop for StandIn {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl StandIn {
    /// Starts on 127.0.0.1 port 0 for `chain_id` (e.g. `SN_MAIN`).
    pub async fn start(chain: &str) -> std::io::Result<Self> {
        let state = Arc::new(Mutex::new(StandInState {
            chain_id: crate::typed_data::short_string(chain).unwrap_or(Felt::ZERO),
            ..Default::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let app = Router::new()
            .route("/rpc", post(handle))
            .with_state(state.clone());
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Ok(Self {
            url: format!("http://{addr}/rpc"),
            state,
            task,
        })
    }

    /// Registers an account with its key(s).
    pub fn add_account(&self, address: Felt, keys: Vec<Felt>) {
        if let Ok(mut s) = self.state.lock() {
            s.accounts.insert(address, keys);
        }
    }

    /// Publishes withheld receipts and stops withholding.
    pub fn release(&self) {
        if let Ok(mut s) = self.state.lock() {
            s.withhold_receipts = false;
            let w: Vec<_> = s.withheld.drain().collect();
            s.receipts.extend(w);
        }
    }

    /// Runs `f` on the state.
    pub fn with<R>(&self, f: impl FnOnce(&mut StandInState) -> R) -> Option<R> {
        self.state.lock().ok().map(|mut s| f(&mut s))
    }
}

fn err(code: i64, msg: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "error": {"code": code, "message": msg}})
}

fn ok(v: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": 1, "result": v})
}

fn felts(v: &Value) -> Vec<Felt> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|x| x.as_str().and_then(parse_felt))
                .collect()
        })
        .unwrap_or_default()
}

fn sig_ok(keys: &[Felt], hash: &Felt, sig: &[Felt]) -> bool {
    !keys.is_empty()
        && sig.len() == keys.len() * 2
        && keys
            .iter()
            .enumerate()
            .all(|(i, k)| verify_hash(k, hash, &sig[2 * i], &sig[2 * i + 1]))
}

fn bounds(v: &Value) -> ResourceBounds {
    let b = |k: &str| {
        let a = v[k]["max_amount"]
            .as_str()
            .and_then(crate::wire::parse_u128)
            .unwrap_or(0);
        let p = v[k]["max_price_per_unit"]
            .as_str()
            .and_then(crate::wire::parse_u128)
            .unwrap_or(0);
        (u64::try_from(a).unwrap_or(0), p)
    };
    ResourceBounds {
        l1_gas: b("l1_gas"),
        l2_gas: b("l2_gas"),
        l1_data_gas: b("l1_data_gas"),
    }
}

/// Parses `__execute__` calldata `[n, (to, selector, len, data…)…]`.
fn parse_calls(cd: &[Felt]) -> Option<Vec<Call>> {
    let n = usize::try_from(u64::try_from(*cd.first()?).ok()?).ok()?;
    let mut i = 1;
    let mut out = Vec::new();
    for _ in 0..n {
        let to = *cd.get(i)?;
        let selector = *cd.get(i + 1)?;
        let len = usize::try_from(u64::try_from(*cd.get(i + 2)?).ok()?).ok()?;
        let data = cd.get(i + 3..i + 3 + len)?.to_vec();
        i += 3 + len;
        out.push(Call {
            to,
            selector,
            calldata: data,
        });
    }
    Some(out)
}

fn transfer_event(asset: Felt, from: Felt, to: Felt, low: Felt, high: Felt) -> Value {
    json!({
        "from_address": felt_hex(&asset),
        "keys": [felt_hex(&SELECTOR_TRANSFER_EVENT), felt_hex(&from), felt_hex(&to)],
        "data": [felt_hex(&low), felt_hex(&high)],
    })
}

/// Executes one call made by `caller`; returns its events or None when it fails.
fn execute(s: &StandInState, caller: Felt, c: &Call) -> Option<Vec<Value>> {
    if c.selector == SELECTOR_TRANSFER_FROM && c.calldata.len() == 4 {
        let d = &c.calldata;
        return Some(vec![transfer_event(c.to, d[0], d[1], d[2], d[3])]);
    }
    if c.selector == SELECTOR_TRANSFER && c.calldata.len() == 3 {
        let d = &c.calldata;
        return Some(vec![transfer_event(c.to, caller, d[0], d[1], d[2])]);
    }
    if c.selector == SELECTOR_EXECUTE_FROM_OUTSIDE_V2 {
        let d = &c.calldata;
        let head = d.get(0..4)?;
        let calls = parse_calls(d.get(4..)?)?;
        let consumed = 4 + 1 + calls.iter().map(|c| 3 + c.calldata.len()).sum::<usize>();
        let sig_len = usize::try_from(u64::try_from(*d.get(consumed)?).ok()?).ok()?;
        let sig = d.get(consumed + 1..consumed + 1 + sig_len)?;
        let oe = OutsideExecution {
            caller: head[0],
            nonce: head[1],
            execute_after: u64::try_from(head[2]).ok()?,
            execute_before: u64::try_from(head[3]).ok()?,
            calls,
        };
        let keys = s.accounts.get(&c.to)?;
        let h = outside_execution_hash(&oe, c.to, s.chain_id);
        if !sig_ok(keys, &h, sig) {
            return None;
        }
        let mut events = Vec::new();
        for inner in &oe.calls {
            events.extend(execute(s, c.to, inner)?);
        }
        return Some(events);
    }
    None
}

async fn handle(
    State(state): State<Arc<Mutex<StandInState>>>,
    Json(req): Json<Value>,
) -> Json<Value> {
    let Ok(mut s) = state.lock() else {
        return Json(err(-32603, "poisoned"));
    };
    let method = req["method"].as_str().unwrap_or("").to_owned();
    s.calls.push(method.clone());
    let p = &req["params"];
    let out = match method.as_str() {
        "starknet_chainId" => ok(json!(felt_hex(&s.chain_id))),
        "starknet_getNonce" => {
            let a = p[1].as_str().and_then(parse_felt).unwrap_or(Felt::ZERO);
            ok(json!(felt_hex(
                &s.nonces.get(&a).copied().unwrap_or(Felt::ZERO)
            )))
        }
        "starknet_call" => {
            let c = &p[0];
            let to = c["contract_address"]
                .as_str()
                .and_then(parse_felt)
                .unwrap_or(Felt::ZERO);
            let sel = c["entry_point_selector"]
                .as_str()
                .and_then(parse_felt)
                .unwrap_or(Felt::ZERO);
            let cd = felts(&c["calldata"]);
            match (s.accounts.get(&to), sel) {
                (None, _) => err(20, "Contract not found"),
                (Some(keys), x) if x == SELECTOR_GET_PUBLIC_KEY => {
                    if keys.len() == 1 {
                        ok(json!([felt_hex(&keys[0])]))
                    } else {
                        err(40, "Contract error: entry point not found")
                    }
                }
                (Some(keys), x) if x == SELECTOR_IS_VALID_SIGNATURE => {
                    let good = cd.len() >= 2 && {
                        let n = usize::try_from(u64::try_from(cd[1]).unwrap_or(0)).unwrap_or(0);
                        cd.len() == 2 + n && sig_ok(keys, &cd[0], &cd[2..])
                    };
                    if good {
                        ok(json!([felt_hex(&VALID)]))
                    } else {
                        err(40, "Contract error: invalid signature")
                    }
                }
                _ => err(40, "Contract error: entry point not found"),
            }
        }
        "starknet_estimateFee" => ok(json!([{
            "l1_gas_consumed": "0x0", "l1_gas_price": "0x1",
            "l2_gas_consumed": "0x100000", "l2_gas_price": "0x10",
            "l1_data_gas_consumed": "0x80", "l1_data_gas_price": "0x2",
            "overall_fee": "0x1000100", "unit": "FRI",
        }])),
        "starknet_addInvokeTransaction" => {
            let t = &p[0];
            let tx = InvokeV3 {
                sender: t["sender_address"]
                    .as_str()
                    .and_then(parse_felt)
                    .unwrap_or(Felt::ZERO),
                calldata: felts(&t["calldata"]),
                nonce: t["nonce"]
                    .as_str()
                    .and_then(parse_felt)
                    .unwrap_or(Felt::ZERO),
                bounds: bounds(&t["resource_bounds"]),
                signature: felts(&t["signature"]),
            };
            let hash = tx.hash(s.chain_id, false);
            let expected_nonce = s.nonces.get(&tx.sender).copied().unwrap_or(Felt::ZERO);
            match s.accounts.get(&tx.sender) {
                None => err(55, "Account validation failed"),
                Some(keys) if !sig_ok(keys, &hash, &tx.signature) => {
                    err(55, "Account validation failed")
                }
                Some(_) if tx.nonce != expected_nonce => err(52, "Invalid transaction nonce"),
                Some(_) => {
                    s.nonces.insert(tx.sender, expected_nonce + Felt::ONE);
                    let events = parse_calls(&tx.calldata).and_then(|calls| {
                        let mut ev = Vec::new();
                        for c in &calls {
                            ev.extend(execute(&s, tx.sender, c)?);
                        }
                        Some(ev)
                    });
                    let receipt = match (events, s.revert) {
                        (Some(ev), false) => json!({
                            "type": "INVOKE", "transaction_hash": felt_hex(&hash),
                            "execution_status": "SUCCEEDED", "finality_status": "ACCEPTED_ON_L2", "events": ev,
                        }),
                        _ => json!({
                            "type": "INVOKE", "transaction_hash": felt_hex(&hash),
                            "execution_status": "REVERTED", "finality_status": "ACCEPTED_ON_L2", "events": [],
                            "revert_reason": "execution failed",
                        }),
                    };
                    if s.withhold_receipts {
                        s.withheld.insert(hash, receipt);
                    } else {
                        s.receipts.insert(hash, receipt);
                    }
                    ok(json!({"transaction_hash": felt_hex(&hash)}))
                }
            }
        }
        "starknet_getTransactionReceipt" => {
            let h = p[0].as_str().and_then(parse_felt).unwrap_or(Felt::ZERO);
            match s.receipts.get(&h) {
                Some(r) => ok(r.clone()),
                None => err(29, "Transaction hash not found"),
            }
        }
        _ => err(-32601, "Method not found"),
    };
    Json(out)
}
