//! Carriers: whoever actually tops up the phone or pays the bill.
//!
//! [`Carrier`] is the seam: `purchase` submits a recharge under cobro's purchase id (the
//! carrier-side idempotency reference), `status` asks what became of a reference, and
//! `check_reference` validates an account before purchase where the biller allows it.
//! Implementations: [`SandboxCarrier`] (deterministic success, the DEV sandbox) and
//! [`HttpCarrier`], the adapter for the aggregator protocol in `docs/carrier-protocol.md`
//! (TET's real API is private; `carrier-sim` implements this protocol for tests and demos).
//!
//! The outcome types separate what the worker must treat differently: a definitive answer
//! (`Success`, `Failed`), "try again, nothing happened" (`Retry`), and "we do not know"
//! (`Unknown`), after which the worker asks `status` before it ever resubmits.
#![forbid(unsafe_code)]

use std::time::Duration;

use async_trait::async_trait;
use cobro_types::{Currency, MinorAmount, Timestamp};
use serde::Deserialize;

/// One recharge or bill payment to submit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierRequest {
    /// cobro's purchase id: the carrier-side idempotency key.
    pub reference: String,
    pub sku_id: String,
    /// The phone number or account (the purchase's `skuReference`).
    pub account: String,
    pub amount: MinorAmount,
    pub currency: Currency,
}

/// What the carrier said, or could not say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Fulfilled; `file_number` is the carrier's receipt.
    Success { file_number: String },
    /// Refused for good (the money goes back to the organisation).
    Failed { code: String, message: String },
    /// Accepted and still processing: ask `status` later.
    Pending,
    /// Not processed (the carrier is unavailable): submitting again is safe.
    Retry { detail: String },
    /// It may or may not have been processed: ask `status` before resubmitting.
    Unknown { detail: String },
    /// (`status` only) the carrier never received this reference: submitting is safe.
    NotFound,
}

/// The answer of a reference check (the wire type, shared with the SDK).
pub use cobro_types::catalog::ReferenceCheck;

/// Why a reference check could not be answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CarrierUnavailable(pub String);

impl std::fmt::Display for CarrierUnavailable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "carrier unavailable: {}", self.0)
    }
}

/// A carrier aggregator.
#[async_trait]
pub trait Carrier: Send + Sync + std::fmt::Debug + 'static {
    /// A short name for logs and metrics.
    fn name(&self) -> &'static str;
    /// Submits a recharge. Submitting the same reference twice must not fulfil twice.
    async fn purchase(&self, req: &CarrierRequest) -> Outcome;
    /// What became of `reference`.
    async fn status(&self, reference: &str) -> Outcome;
    /// Validates an account for a SKU before purchase.
    async fn check_reference(
        &self,
        sku_id: &str,
        account: &str,
    ) -> Result<ReferenceCheck, CarrierUnavailable>;
}

/// The DEV sandbox: every purchase succeeds at once with a `dev-sandbox-<unix-ms>` receipt.
/// No network, no state.
#[derive(Debug, Clone, Copy, Default)]
pub struct SandboxCarrier;

impl SandboxCarrier {
    /// The receipt of a sandbox purchase made at `at`.
    pub fn file_number(at: Timestamp) -> String {
        format!("dev-sandbox-{}", at.unix_millis())
    }
}

#[async_trait]
impl Carrier for SandboxCarrier {
    fn name(&self) -> &'static str {
        "sandbox"
    }

    async fn purchase(&self, _req: &CarrierRequest) -> Outcome {
        Outcome::Success {
            file_number: SandboxCarrier::file_number(Timestamp::now()),
        }
    }

    async fn status(&self, _reference: &str) -> Outcome {
        Outcome::NotFound
    }

    async fn check_reference(
        &self,
        _sku_id: &str,
        account: &str,
    ) -> Result<ReferenceCheck, CarrierUnavailable> {
        Ok(ReferenceCheck {
            valid: !account.is_empty(),
            holder: Some("Sandbox customer".into()),
            amount_due: None,
            message: None,
        })
    }
}

/// The HTTP adapter for the aggregator protocol.
#[derive(Debug, Clone)]
pub struct HttpCarrier {
    base: String,
    http: reqwest::Client,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Answer {
    status: Option<String>,
    file_number: Option<String>,
    code: Option<String>,
    message: Option<String>,
}

impl HttpCarrier {
    /// An adapter for the aggregator at `base_url`, giving up on a call after `timeout`.
    pub fn new(base_url: &str, timeout: Duration) -> Result<HttpCarrier, String> {
        let http = reqwest::Client::builder()
            .timeout(timeout)
            .connect_timeout(timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("cobro/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| e.to_string())?;
        Ok(HttpCarrier {
            base: base_url.trim_end_matches('/').to_string(),
            http,
        })
    }

    /// Turns an HTTP answer into an outcome. `submitted`: whether the request may have been
    /// processed (a POST), which decides between `Retry` and `Unknown` on errors.
    async fn outcome(resp: Result<reqwest::Response, reqwest::Error>, submitted: bool) -> Outcome {
        let resp = match resp {
            Ok(r) => r,
            // A connection that never opened cannot have delivered the request.
            Err(e) if e.is_connect() => {
                return Outcome::Retry {
                    detail: e.to_string(),
                };
            }
            Err(e) if submitted => {
                return Outcome::Unknown {
                    detail: e.to_string(),
                };
            }
            Err(e) => {
                return Outcome::Retry {
                    detail: e.to_string(),
                };
            }
        };
        let status = resp.status().as_u16();
        let body = match resp.bytes().await {
            Ok(b) => b,
            Err(e) if submitted => {
                return Outcome::Unknown {
                    detail: format!("unreadable answer: {e}"),
                };
            }
            Err(e) => {
                return Outcome::Retry {
                    detail: format!("unreadable answer: {e}"),
                };
            }
        };
        let answer: Option<Answer> = serde_json::from_slice(&body).ok();
        let field = |f: fn(&Answer) -> Option<&String>| answer.as_ref().and_then(|a| f(a).cloned());
        match (status, field(|a| a.status.as_ref()).as_deref()) {
            (200, Some("success")) => match field(|a| a.file_number.as_ref()) {
                Some(file_number) if !file_number.is_empty() => Outcome::Success { file_number },
                _ => Outcome::Unknown {
                    detail: "success without a file number".into(),
                },
            },
            (200 | 422, Some("failed")) => Outcome::Failed {
                code: field(|a| a.code.as_ref()).unwrap_or_else(|| "FAILED".into()),
                message: field(|a| a.message.as_ref())
                    .unwrap_or_else(|| "the carrier refused the recharge".into()),
            },
            (200 | 202, Some("pending")) => Outcome::Pending,
            (404, _) if !submitted => Outcome::NotFound,
            (429 | 502 | 503, _) => Outcome::Retry {
                detail: format!("HTTP {status}"),
            },
            (400, _) => Outcome::Failed {
                code: field(|a| a.code.as_ref()).unwrap_or_else(|| "REJECTED".into()),
                message: field(|a| a.message.as_ref())
                    .unwrap_or_else(|| "the carrier rejected the request".into()),
            },
            _ if submitted => Outcome::Unknown {
                detail: format!("unexpected answer: HTTP {status}"),
            },
            _ => Outcome::Retry {
                detail: format!("unexpected answer: HTTP {status}"),
            },
        }
    }
}

#[async_trait]
impl Carrier for HttpCarrier {
    fn name(&self) -> &'static str {
        "http"
    }

    async fn purchase(&self, req: &CarrierRequest) -> Outcome {
        let body = serde_json::json!({
            "reference": req.reference,
            "sku": req.sku_id,
            "account": req.account,
            "amount": format!("{}.{:02}", req.amount.0 / 100, req.amount.0 % 100),
            "currency": req.currency.as_str(),
        });
        let resp = self
            .http
            .post(format!("{}/v1/recharges", self.base))
            .json(&body)
            .send()
            .await;
        HttpCarrier::outcome(resp, true).await
    }

    async fn status(&self, reference: &str) -> Outcome {
        let encoded: String = reference
            .bytes()
            .map(|b| {
                if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        let resp = self
            .http
            .get(format!("{}/v1/recharges/{encoded}", self.base))
            .send()
            .await;
        HttpCarrier::outcome(resp, false).await
    }

    async fn check_reference(
        &self,
        sku_id: &str,
        account: &str,
    ) -> Result<ReferenceCheck, CarrierUnavailable> {
        let resp = self
            .http
            .post(format!("{}/v1/references/check", self.base))
            .json(&serde_json::json!({ "sku": sku_id, "account": account }))
            .send()
            .await
            .map_err(|e| CarrierUnavailable(e.to_string()))?;
        if !resp.status().is_success() {
            return Err(CarrierUnavailable(format!("HTTP {}", resp.status())));
        }
        resp.json()
            .await
            .map_err(|e| CarrierUnavailable(format!("unreadable answer: {e}")))
    }
}
