//! x402 pay-per-request on Starknet for cobro: SNIP-12 hashing, the three wire dialects,
//! a fail-closed facilitator (library + axum router), a tower middleware and a paying client.
//! See README.md.

pub mod client;
pub mod config;
pub mod facilitator;
pub mod http;
pub mod middleware;
pub mod rpc;
pub mod settle;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod typed_data;
pub mod wire;

pub use client::{ClientConfig, PayResult, X402Client, pay};
pub use config::{AccountKey, ConfigError, X402Config};
pub use facilitator::{Facilitator, Reason, Rejection, ResumeReport, VerifiedPayment};
pub use http::{router, serve, serve_config, serve_with_shutdown};
pub use middleware::{Payer, PaymentLayer, Price, SettleMode};
pub use starknet_crypto::Felt;
pub use store::{
    MemoryStore, PaymentRecord, PaymentState, PaymentStore, ReserveOutcome, StoreError,
};

/// Seconds since the Unix epoch (0 if the clock is before it).
pub fn now_unix() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}
