//! The rules of cobro that need no I/O.
//!
//! * [`catalog`]: the in-memory catalog, its list query (filters, pagination, locale) and the
//!   checks a catalog record must pass before it is stored.
//! * [`keys`]: the shapes of API keys and ids, how they are generated and how a secret key is
//!   hashed for storage.
//!
//! Everything here is deterministic given its inputs (randomness is asked for explicitly), so
//! the rules can be tested without a server or a database.
#![forbid(unsafe_code)]

pub mod catalog;
pub mod keys;
pub mod pricing;
pub mod purchase;

/// A rule violation that names the request parameter at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{param}: {message}")]
pub struct ParamError {
    pub param: String,
    pub message: String,
}

impl ParamError {
    pub fn new(param: impl Into<String>, message: impl Into<String>) -> Self {
        ParamError {
            param: param.into(),
            message: message.into(),
        }
    }
}
