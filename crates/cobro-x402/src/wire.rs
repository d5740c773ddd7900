//! The three wire dialects (Chipi v1, x402 v1, x402 v2): types, parsing and emitting.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Chipi / x402 v1 network name for mainnet.
pub const NET_V1_MAIN: &str = "starknet-mainnet";
/// Chipi / x402 v1 network name for Sepolia.
pub const NET_V1_SEPOLIA: &str = "starknet-sepolia";
/// CAIP-2 mainnet.
pub const NET_V2_MAIN: &str = "starknet:SN_MAIN";
/// CAIP-2 Sepolia.
pub const NET_V2_SEPOLIA: &str = "starknet:SN_SEPOLIA";

/// Header names.
pub mod headers {
    /// Chipi raw-JSON requirement header (also the v2 header, case-insensitively the same name!).
    pub const PAYMENT_REQUIRED: &str = "payment-required";
    /// v1 / Chipi payment header.
    pub const X_PAYMENT: &str = "x-payment";
    /// v1 response header.
    pub const X_PAYMENT_RESPONSE: &str = "x-payment-response";
    /// v2 payment header.
    pub const PAYMENT_SIGNATURE: &str = "payment-signature";
    /// v2 response header.
    pub const PAYMENT_RESPONSE: &str = "payment-response";
}

/// Which dialect a payment arrived in (decides the response header).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Dialect {
    /// Raw JSON `X-PAYMENT` (Chipi SDKs).
    ChipiV1,
    /// base64 `X-PAYMENT`, x402 version 1.
    X402V1,
    /// `PAYMENT-SIGNATURE`, x402 version 2.
    X402V2,
}

/// Maps either network spelling (`starknet-mainnet` or `starknet:SN_MAIN`) to the chain
/// name (`SN_MAIN` / `SN_SEPOLIA`).
pub fn network_chain(network: &str) -> Option<&'static str> {
    match network {
        NET_V1_MAIN | NET_V2_MAIN => Some("SN_MAIN"),
        NET_V1_SEPOLIA | NET_V2_SEPOLIA => Some("SN_SEPOLIA"),
        _ => None,
    }
}

/// v1 network name of a chain name.
pub fn v1_network(chain: &str) -> &'static str {
    if chain == "SN_SEPOLIA" {
        NET_V1_SEPOLIA
    } else {
        NET_V1_MAIN
    }
}

/// CAIP-2 network name of a chain name.
pub fn v2_network(chain: &str) -> &'static str {
    if chain == "SN_SEPOLIA" {
        NET_V2_SEPOLIA
    } else {
        NET_V2_MAIN
    }
}

/// A payment requirement in a version-neutral form. Deserialises from both the v1 shape
/// (`maxAmountRequired`, `resource` string) and the v2 shape (`amount`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentRequirements {
    /// Always `exact` here.
    pub scheme: String,
    /// v1 (`starknet-mainnet`) or CAIP-2 (`starknet:SN_MAIN`) network.
    pub network: String,
    /// Amount in base units, as a decimal string.
    #[serde(alias = "maxAmountRequired")]
    pub amount: String,
    /// Resource URL (v1 carries it in the requirement).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    /// Human description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MIME type of the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
    /// Recipient address.
    pub pay_to: String,
    /// Longest validity window accepted, in seconds.
    pub max_timeout_seconds: u64,
    /// ERC-20 contract address.
    pub asset: String,
    /// Scheme-specific extras.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

impl PaymentRequirements {
    /// The v1 / Chipi JSON shape (`maxAmountRequired`, v1 network name).
    pub fn to_v1_json(&self) -> Value {
        let chain = network_chain(&self.network).unwrap_or("SN_MAIN");
        let mut v = serde_json::json!({
            "scheme": self.scheme,
            "network": v1_network(chain),
            "maxAmountRequired": self.amount,
            "resource": self.resource.clone().unwrap_or_default(),
            "payTo": self.pay_to,
            "maxTimeoutSeconds": self.max_timeout_seconds,
            "asset": self.asset,
        });
        if let Some(o) = v.as_object_mut() {
            if let Some(d) = &self.description {
                o.insert("description".into(), Value::String(d.clone()));
            }
            if let Some(m) = &self.mime_type {
                o.insert("mimeType".into(), Value::String(m.clone()));
            }
            if let Some(e) = &self.extra {
                o.insert("extra".into(), e.clone());
            }
        }
        v
    }

    /// The v2 JSON shape (`amount`, CAIP-2 network, no resource).
    pub fn to_v2_json(&self) -> Value {
        let chain = network_chain(&self.network).unwrap_or("SN_MAIN");
        let mut v = serde_json::json!({
            "scheme": self.scheme,
            "network": v2_network(chain),
            "amount": self.amount,
            "asset": self.asset,
            "payTo": self.pay_to,
            "maxTimeoutSeconds": self.max_timeout_seconds,
        });
        if let (Some(o), Some(e)) = (v.as_object_mut(), &self.extra) {
            o.insert("extra".into(), e.clone());
        }
        v
    }
}

/// v2 resource description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct ResourceInfo {
    /// URL of the resource.
    pub url: String,
    /// Description.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// MIME type.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mime_type: Option<String>,
}

/// A payment as sent by a client, in any dialect: `{x402Version, scheme?, network?,
/// accepted?, payload, resource?}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PaymentPayload {
    /// 1 or 2.
    pub x402_version: u64,
    /// v1: scheme.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scheme: Option<String>,
    /// v1: network.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub network: Option<String>,
    /// v2: the requirement the client accepted.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub accepted: Option<PaymentRequirements>,
    /// Scheme payload: a Chipi transfer authorisation or a SNIP-9 outside execution.
    pub payload: Value,
    /// v2: the resource.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<ResourceInfo>,
}

impl PaymentPayload {
    /// Scheme named by the payload (v1 top level, else v2 `accepted`).
    pub fn scheme(&self) -> Option<&str> {
        self.scheme
            .as_deref()
            .or(self.accepted.as_ref().map(|a| a.scheme.as_str()))
    }
    /// Network named by the payload (v1 top level, else v2 `accepted`).
    pub fn network(&self) -> Option<&str> {
        self.network
            .as_deref()
            .or(self.accepted.as_ref().map(|a| a.network.as_str()))
    }
}

/// `{r, s}` as strings (decimal or hex).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RsSignature {
    /// r.
    pub r: String,
    /// s.
    pub s: String,
}

/// Chipi's transfer authorisation (`payload` of the Chipi and v1 dialects).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ChipiAuthorization {
    /// `{r, s}`; a plain array of felts is also accepted (multisig accounts).
    pub signature: SignatureField,
    /// Payer.
    pub from_address: String,
    /// Recipient.
    pub to_address: String,
    /// Amount, decimal string (numbers accepted).
    pub amount: NumOrString,
    /// ERC-20.
    pub asset: String,
    /// Unix seconds.
    pub valid_until: NumOrString,
    /// Felt nonce (hex, decimal or UUID).
    pub nonce: String,
}

/// A signature either as `{r, s}` or as an array of felts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum SignatureField {
    /// `{r, s}`.
    Rs(RsSignature),
    /// `["0x…", …]`.
    Felts(Vec<String>),
}

impl SignatureField {
    /// The signature as a list of strings.
    pub fn parts(&self) -> Vec<&str> {
        match self {
            Self::Rs(rs) => vec![rs.r.as_str(), rs.s.as_str()],
            Self::Felts(v) => v.iter().map(String::as_str).collect(),
        }
    }
}

/// A JSON number or string.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum NumOrString {
    /// Number.
    Num(u64),
    /// String.
    Str(String),
}

impl NumOrString {
    /// Parses as u128 (decimal or 0x hex).
    pub fn as_u128(&self) -> Option<u128> {
        match self {
            Self::Num(n) => Some(u128::from(*n)),
            Self::Str(s) => parse_u128(s),
        }
    }
}

/// Parses a decimal or `0x` hex unsigned integer.
pub fn parse_u128(s: &str) -> Option<u128> {
    let s = s.trim();
    if let Some(h) = s.strip_prefix("0x") {
        u128::from_str_radix(h, 16).ok()
    } else if !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()) {
        s.parse().ok()
    } else {
        None
    }
}

/// SNIP-9 outside-execution payload of the registered v2 `exact` Starknet scheme as this
/// crate emits it: `{from, chainId?, outsideExecution:{caller, nonce, executeAfter,
/// executeBefore, calls:[{to, selector, calldata}]}, signature:[…]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutsideExecutionPayload {
    /// Payer account.
    pub from: String,
    /// Chain id the client signed for (optional; checked when present).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chain_id: Option<String>,
    /// The signed struct.
    pub outside_execution: OutsideExecutionJson,
    /// Account signature (any length).
    pub signature: Vec<String>,
}

/// JSON form of a SNIP-9 v2 `OutsideExecution`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct OutsideExecutionJson {
    /// Caller (`0x414e595f43414c4c4552` = ANY_CALLER).
    pub caller: String,
    /// Nonce.
    pub nonce: String,
    /// Unix seconds.
    pub execute_after: NumOrString,
    /// Unix seconds.
    pub execute_before: NumOrString,
    /// Calls.
    pub calls: Vec<CallJson>,
}

/// JSON form of a call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CallJson {
    /// Contract.
    pub to: String,
    /// Selector (felt).
    pub selector: String,
    /// Calldata.
    pub calldata: Vec<String>,
}

/// Facilitator request body for `/verify` and `/settle`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FacilitatorRequest {
    /// Protocol version of the request.
    #[serde(default)]
    pub x402_version: Option<u64>,
    /// The client's payment.
    pub payment_payload: PaymentPayload,
    /// What the resource server requires.
    pub payment_requirements: PaymentRequirements,
}

/// `/verify` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct VerifyResponse {
    /// Whether the payment is acceptable.
    pub is_valid: bool,
    /// snake_case reason when invalid.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_reason: Option<String>,
    /// Safe human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub invalid_message: Option<String>,
    /// Payer address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
}

/// `/settle` answer (also the body of `X-PAYMENT-RESPONSE` / `PAYMENT-RESPONSE`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SettleResponse {
    /// Whether this call settled the payment.
    pub success: bool,
    /// snake_case reason when not.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_reason: Option<String>,
    /// Safe human-readable message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_message: Option<String>,
    /// Payer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub payer: Option<String>,
    /// Transaction hash (the original one for duplicates / pending); empty when none.
    pub transaction: String,
    /// Network of the payment.
    pub network: String,
}

/// One supported kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SupportedKind {
    /// Protocol version.
    pub x402_version: u64,
    /// Scheme.
    pub scheme: String,
    /// Network.
    pub network: String,
    /// Extras.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra: Option<Value>,
}

/// `/supported` answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SupportedResponse {
    /// Supported kinds.
    pub kinds: Vec<SupportedKind>,
}

/// base64(JSON) of a serialisable value.
pub fn b64_json<T: Serialize>(v: &T) -> String {
    B64.encode(serde_json::to_vec(v).unwrap_or_default())
}

/// Decodes a payment header: raw JSON when its first non-space byte is `{`, else base64 JSON.
pub fn decode_header_json<T: for<'de> Deserialize<'de>>(raw: &str) -> Option<T> {
    let t = raw.trim();
    if t.starts_with('{') {
        serde_json::from_str(t).ok()
    } else {
        let bytes = B64
            .decode(t)
            .or_else(|_| base64::engine::general_purpose::URL_SAFE.decode(t))
            .or_else(|_| base64::engine::general_purpose::STANDARD_NO_PAD.decode(t))
            .ok()?;
        serde_json::from_slice(&bytes).ok()
    }
}

/// The body of a 402 answer readable by all three kinds of client:
/// `{x402Version:1, error, accepts:[v1 requirement], paymentRequirement}`.
pub fn payment_required_body(req: &PaymentRequirements, error: &str) -> Value {
    let v1 = req.to_v1_json();
    serde_json::json!({
        "x402Version": 1,
        "error": error,
        "accepts": [v1.clone()],
        "paymentRequirement": v1,
    })
}

/// The v2 `PAYMENT-REQUIRED` header value (base64 JSON).
pub fn payment_required_v2(req: &PaymentRequirements, error: &str) -> String {
    let body = serde_json::json!({
        "x402Version": 2,
        "error": error,
        "resource": {
            "url": req.resource.clone().unwrap_or_default(),
            "description": req.description,
            "mimeType": req.mime_type,
        },
        "accepts": [req.to_v2_json()],
    });
    B64.encode(body.to_string())
}

/// The Chipi raw-JSON `Payment-Required` header value.
///
/// Note: HTTP header names are case-insensitive, so Chipi's `Payment-Required` and v2's
/// `PAYMENT-REQUIRED` are the same header; the middleware sends the v2 base64 form as the
/// first value and the raw JSON as the second (see the crate README).
pub fn payment_required_chipi(req: &PaymentRequirements) -> String {
    req.to_v1_json().to_string()
}
