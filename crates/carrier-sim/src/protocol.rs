//! The wire types of the aggregator protocol (see `docs/carrier-protocol.md`).

use serde::{Deserialize, Serialize};

/// `POST /v1/recharges` request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RechargeRequest {
    /// cobro's purchase id: the carrier-side idempotency key.
    pub reference: String,
    pub sku: String,
    pub account: String,
    /// A decimal string in major units.
    pub amount: String,
    pub currency: String,
}

/// Where a recharge stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    Success,
    Failed,
    Pending,
}

/// The answer about one recharge, to `POST /v1/recharges` and `GET /v1/recharges/{reference}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RechargeAnswer {
    pub reference: String,
    pub status: Status,
    /// The carrier's receipt, on success.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_number: Option<String>,
    /// Why it failed, on failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub code: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// `POST /v1/references/check` request body.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckRequest {
    pub sku: String,
    pub account: String,
}

/// `POST /v1/references/check` answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CheckAnswer {
    pub valid: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub holder: Option<String>,
    /// A decimal string in major units.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub amount_due: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// The body of an error that is not a recharge outcome (`400`, `404`, `503`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorBody {
    pub code: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// A bilingual message for a failure code.
pub fn failure_message(code: &str) -> &'static str {
    match code {
        "INVALID_NUMBER" => "Número inválido / Invalid number",
        "CARRIER_UNAVAILABLE" => "Compañía no disponible / Carrier unavailable",
        "DUPLICATE_RECHARGE" => {
            "Recarga duplicada en los últimos minutos / Duplicate recharge within the window"
        }
        "INVALID_AMOUNT" => "Monto inválido / Invalid amount",
        _ => "Recarga rechazada / Recharge refused",
    }
}

/// Parses a positive decimal amount with at most two decimals into minor units.
pub(crate) fn parse_cents(amount: &str) -> Option<u64> {
    let (int, frac) = match amount.split_once('.') {
        Some((i, f)) => (i, f),
        None => (amount, ""),
    };
    let digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
    if int.is_empty() || !digits(int) || !digits(frac) || frac.len() > 2 {
        return None;
    }
    if amount.contains('.') && frac.is_empty() {
        return None;
    }
    let units: u64 = int.parse().ok()?;
    let mut cents: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    if frac.len() == 1 {
        cents *= 10;
    }
    let total = units.checked_mul(100)?.checked_add(cents)?;
    (total > 0).then_some(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cents() {
        assert_eq!(parse_cents("10.00"), Some(1000));
        assert_eq!(parse_cents("10"), Some(1000));
        assert_eq!(parse_cents("10.5"), Some(1050));
        assert_eq!(parse_cents("0.01"), Some(1));
        for bad in [
            "", "0", "0.00", "-1", "1.", ".5", "1.234", "1e3", "abc", "1,00",
        ] {
            assert_eq!(parse_cents(bad), None, "{bad}");
        }
    }
}
