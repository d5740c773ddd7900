//! `carrier-sim`: a simulator of the carrier aggregator protocol (`docs/carrier-protocol.md`)
//! with fault injection, for tests, demos and benchmarks.
//!
//! A guided tour:
//! * [`Sim`] holds the state: recorded outcomes (the reference is the idempotency key, so a
//!   reference is fulfilled at most once), fulfilment [`Counts`], and per-account planned
//!   [`Fault`]s;
//! * [`SimConfig`] sets latency and the rates of random faults, drawn from a PRNG seeded by
//!   `seed` (same seed, same requests, same outcomes);
//! * [`router`] serves the protocol routes and the `/_sim` admin routes, and [`spawn`] runs
//!   them in a background task (tests use `spawn(SimConfig::default(), "127.0.0.1:0")`).
//!
//! A recharge goes through: latency → `503` if unavailable (nothing processed) → the stored
//! outcome if the reference is known → `DUPLICATE_RECHARGE` (same account and amount under
//! another reference within the window) → a failure draw → a pending draw → success. A
//! "timeout" or "lost" recharge is processed like any other; only its answer is late or cut.
#![forbid(unsafe_code)]

pub mod config;
pub mod fault;
pub mod http;
pub mod protocol;
mod rng;
pub mod sim;

pub use config::{ConfigError, SimConfig};
pub use fault::{Fault, ParseFaultError};
pub use http::{Running, router, spawn};
pub use sim::{Counts, Sim};
