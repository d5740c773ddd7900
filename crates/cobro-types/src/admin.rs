//! Shapes printed by the admin commands with `--json`, and the environment of a key.
//! Scripts and tests depend on these; add fields, never rename them.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::UsdMicros;

/// The environment an API key belongs to. `dev` keys are sandboxed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    Dev,
    Prod,
}

impl Environment {
    pub const fn as_str(self) -> &'static str {
        match self {
            Environment::Dev => "dev",
            Environment::Prod => "prod",
        }
    }

    pub fn parse(s: &str) -> Option<Environment> {
        match s {
            "dev" => Some(Environment::Dev),
            "prod" => Some(Environment::Prod),
            _ => None,
        }
    }
}

impl std::fmt::Display for Environment {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// `cobro admin org create NAME --json`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct OrgCreated {
    pub id: String,
}

/// `cobro admin key create ... --json`. The secret key is shown here once and never again.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ApiKeyCreated {
    pub public_key: String,
    pub secret_key: String,
    pub environment: Environment,
    pub org_id: String,
}

/// An organisation's credits. `availableUsd` is what purchases can spend.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Balance {
    pub org_id: String,
    /// Spendable credits in USD (a JSON number with up to 6 decimals).
    pub available_usd: UsdMicros,
    /// The same amount in micro-dollars, exact.
    pub available_micros: i64,
}

/// `cobro admin token ... --json`
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TokenIssued {
    pub token: String,
    /// Unix seconds at which the token expires.
    pub expires_at: i64,
}
