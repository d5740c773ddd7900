//! `[x402]` configuration.

use serde::{Deserialize, Serialize};

use crate::typed_data::{felt_hex, parse_felt};

/// Native USDC on Starknet mainnet (the default asset).
pub const USDC_MAINNET: &str = "0x033068F6539f8e6e6b131e6B2B814e6c34A5224bC66947c47DaB9dFeE93b35fb";

/// The `[x402]` table.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct X402Config {
    /// Mount `POST /x402/verify`, `POST /x402/settle`, `GET /x402/supported`.
    pub enabled: bool,
    /// `SN_MAIN` or `SN_SEPOLIA`.
    pub network: String,
    /// `sandbox` (synthetic hashes, no chain) or `rpc` (Starknet JSON-RPC relayer).
    pub settlement: String,
    /// Starknet JSON-RPC URL: used to read public keys / call `is_valid_signature` for
    /// unknown accounts, and for `rpc` settlement. Empty = none.
    pub rpc_url: String,
    /// Accounts whose public keys are known (verified locally, no RPC).
    pub accounts: Vec<AccountKey>,
    /// ERC-20 accepted (default: native USDC mainnet).
    pub asset: String,
    /// Recipient of payments for routes protected by the middleware (empty = unset).
    pub pay_to: String,
    /// Price of the paid route in base units (decimal string).
    pub price: String,
    /// `maxTimeoutSeconds` advertised by the middleware.
    pub max_timeout_seconds: u64,
    /// Clock skew tolerated on `validUntil`, seconds.
    pub max_skew_seconds: u64,
    /// Relayer account address for `rpc` settlement.
    pub relayer_address: String,
    /// Relayer STARK private key for `rpc` settlement (keep it out of files: use the env).
    pub relayer_private_key: String,
    /// How long `settle` waits for the receipt before answering `settlement_pending`, ms.
    pub confirm_timeout_ms: u64,
    /// Receipt polling interval, ms.
    pub poll_interval_ms: u64,
    /// How long a public key read from the chain stays cached, seconds.
    pub key_cache_seconds: u64,
}

/// A known account and its STARK public key.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct AccountKey {
    /// Account address.
    pub address: String,
    /// Its public key.
    pub public_key: String,
}

impl Default for X402Config {
    fn default() -> Self {
        Self {
            enabled: false,
            network: "SN_MAIN".into(),
            settlement: "sandbox".into(),
            rpc_url: String::new(),
            accounts: Vec::new(),
            asset: USDC_MAINNET.into(),
            pay_to: String::new(),
            price: "10000".into(),
            max_timeout_seconds: 300,
            max_skew_seconds: 30,
            relayer_address: String::new(),
            relayer_private_key: String::new(),
            confirm_timeout_ms: 60_000,
            poll_interval_ms: 1_000,
            key_cache_seconds: 3_600,
        }
    }
}

/// A configuration mistake, with the key at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("x402.{key}: {message}")]
pub struct ConfigError {
    /// Offending key.
    pub key: String,
    /// What is wrong.
    pub message: String,
}

fn err(key: &str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        key: key.into(),
        message: message.into(),
    }
}

impl X402Config {
    /// Checks every key; returns the first problem found.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if !matches!(self.network.as_str(), "SN_MAIN" | "SN_SEPOLIA") {
            return Err(err(
                "network",
                format!("must be SN_MAIN or SN_SEPOLIA, got {:?}", self.network),
            ));
        }
        if parse_felt(&self.asset).is_none() {
            return Err(err("asset", "must be a 0x address"));
        }
        if !self.pay_to.is_empty() && parse_felt(&self.pay_to).is_none() {
            return Err(err("pay_to", "must be a 0x address"));
        }
        match crate::wire::parse_u128(&self.price) {
            Some(p) if p > 0 => {}
            _ => {
                return Err(err(
                    "price",
                    "must be a positive integer amount in base units",
                ));
            }
        }
        if self.max_timeout_seconds == 0 {
            return Err(err("max_timeout_seconds", "must be positive"));
        }
        if !(self.rpc_url.is_empty()
            || self.rpc_url.starts_with("http://")
            || self.rpc_url.starts_with("https://"))
        {
            return Err(err("rpc_url", "must be an http:// or https:// URL"));
        }
        for (i, a) in self.accounts.iter().enumerate() {
            if parse_felt(&a.address).is_none() {
                return Err(err(
                    &format!("accounts[{i}].address"),
                    "must be a 0x address",
                ));
            }
            if parse_felt(&a.public_key).is_none() {
                return Err(err(
                    &format!("accounts[{i}].public_key"),
                    "must be a 0x felt",
                ));
            }
        }
        match self.settlement.as_str() {
            "sandbox" => {}
            "rpc" => {
                if self.rpc_url.is_empty() {
                    return Err(err("rpc_url", "required when settlement = \"rpc\""));
                }
                if parse_felt(&self.relayer_address).is_none() {
                    return Err(err(
                        "relayer_address",
                        "required (0x address) when settlement = \"rpc\"",
                    ));
                }
                if parse_felt(&self.relayer_private_key).is_none() {
                    return Err(err(
                        "relayer_private_key",
                        "required (0x felt) when settlement = \"rpc\"",
                    ));
                }
            }
            other => {
                return Err(err(
                    "settlement",
                    format!("must be \"sandbox\" or \"rpc\", got {other:?}"),
                ));
            }
        }
        if self.poll_interval_ms == 0 {
            return Err(err("poll_interval_ms", "must be positive"));
        }
        Ok(())
    }

    /// Canonical asset address.
    pub fn asset_hex(&self) -> String {
        parse_felt(&self.asset)
            .map(|f| felt_hex(&f))
            .unwrap_or_default()
    }
}
