//! A reqwest wrapper that pays 402 answers automatically, within limits.

use std::sync::atomic::{AtomicU64, Ordering};

use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Value, json};
use starknet_crypto::{Felt, poseidon_hash_many};

use crate::typed_data::{
    ANY_CALLER, Call, DomainVariant, OutsideExecution, PaymentMessage, SELECTOR_TRANSFER, chain_id,
    felt_hex, outside_execution_hash, parse_felt, payment_message_hash, sign_hash,
};
use crate::wire::{
    OutsideExecutionJson, OutsideExecutionPayload, PaymentPayload, PaymentRequirements,
    SettleResponse, b64_json, decode_header_json, headers, network_chain, parse_u128,
};

/// Limits and identity of a paying client.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// STARK private key (0x hex).
    pub private_key: String,
    /// Account address that signs.
    pub account_address: String,
    /// Largest amount (base units) the client will pay for one request.
    pub max_amount: u128,
    /// Recipients the client will pay; empty = any recipient.
    pub allowed_recipients: Vec<String>,
}

/// Why the client did not pay (or could not make the request).
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Bad key or address.
    #[error("invalid client configuration: {0}")]
    Config(&'static str),
    /// HTTP failure.
    #[error("http: {0}")]
    Http(#[from] reqwest::Error),
    /// The 402 carried no requirement this client understands.
    #[error("no usable payment requirement in the 402 answer")]
    NoRequirement,
    /// Price above `max_amount`.
    #[error("required amount {required} exceeds the maximum {max}")]
    AmountTooHigh {
        /// Asked.
        required: u128,
        /// Allowed.
        max: u128,
    },
    /// Recipient not allowed.
    #[error("recipient {0} is not in the allow-list")]
    RecipientNotAllowed(String),
    /// Signing failed.
    #[error("signing failed")]
    Signing,
}

/// Which dialect the client paid in.
pub use crate::wire::Dialect;

/// Outcome of a (possibly paid) request.
#[derive(Debug, Clone)]
pub struct PayResult {
    /// Final HTTP status.
    pub status: u16,
    /// Final response headers.
    pub headers: Vec<(String, String)>,
    /// Final body.
    pub body: Vec<u8>,
    /// The dialect used when a payment was sent.
    pub paid_with: Option<Dialect>,
    /// Decoded `PAYMENT-RESPONSE` / `X-PAYMENT-RESPONSE`, when present.
    pub settlement: Option<SettleResponse>,
}

/// The paying client.
#[derive(Debug)]
pub struct X402Client {
    http: reqwest::Client,
    key: Felt,
    account: Felt,
    max_amount: u128,
    allowed: Vec<Felt>,
    counter: AtomicU64,
}

/// One offer extracted from a 402.
#[derive(Debug, Clone)]
struct Offer {
    dialect: Dialect,
    req: PaymentRequirements,
    resource: Option<Value>,
}

fn offers(headers: &HeaderMap, body: &[u8]) -> Vec<Offer> {
    let mut out = Vec::new();
    let body: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let push_v2 = |v: &Value, out: &mut Vec<Offer>| {
        if v.get("x402Version").and_then(Value::as_u64) == Some(2) {
            for a in v
                .get("accepts")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if let Ok(req) = serde_json::from_value::<PaymentRequirements>(a.clone()) {
                    out.push(Offer {
                        dialect: Dialect::X402V2,
                        req,
                        resource: v.get("resource").cloned(),
                    });
                }
            }
        }
    };
    let header = headers
        .get(headers::PAYMENT_REQUIRED)
        .and_then(|v| v.to_str().ok());
    let header_json: Option<Value> = header.and_then(decode_header_json);
    if let Some(h) = &header_json {
        push_v2(h, &mut out);
    }
    if let Some(v2) = body.get("paymentRequiredV2") {
        push_v2(v2, &mut out);
    }
    if body.get("x402Version").and_then(Value::as_u64) == Some(1) {
        for a in body
            .get("accepts")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            if let Ok(req) = serde_json::from_value::<PaymentRequirements>(a.clone()) {
                out.push(Offer {
                    dialect: Dialect::X402V1,
                    req,
                    resource: None,
                });
            }
        }
    }
    if let Some(h) = header_json.as_ref().filter(|h| h.get("scheme").is_some())
        && let Ok(req) = serde_json::from_value::<PaymentRequirements>(h.clone())
    {
        out.push(Offer {
            dialect: Dialect::ChipiV1,
            req,
            resource: None,
        });
    }
    out
}

impl X402Client {
    /// Client from `config`.
    pub fn new(config: &ClientConfig) -> Result<Self, ClientError> {
        let key = parse_felt(&config.private_key)
            .ok_or(ClientError::Config("private key must be a felt"))?;
        let account = parse_felt(&config.account_address)
            .ok_or(ClientError::Config("bad account address"))?;
        let allowed = config
            .allowed_recipients
            .iter()
            .map(|a| parse_felt(a).ok_or(ClientError::Config("bad allow-list address")))
            .collect::<Result<_, _>>()?;
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(90))
            .build()?;
        Ok(Self {
            http,
            key,
            account,
            max_amount: config.max_amount,
            allowed,
            counter: AtomicU64::new(0),
        })
    }

    fn fresh_nonce(&self) -> Felt {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or(0);
        let n = self.counter.fetch_add(1, Ordering::Relaxed);
        let h = poseidon_hash_many(&[self.account, Felt::from(nanos), Felt::from(n), self.key]);
        // Keep it to 128 bits so it also reads as a UUID-sized nonce.
        let bytes = h.to_bytes_be();
        Felt::from_bytes_be_slice(&bytes[16..])
    }

    fn acceptable(&self, o: &Offer) -> Result<(u128, Felt, Felt, &'static str), ClientError> {
        let chain = network_chain(&o.req.network).ok_or(ClientError::NoRequirement)?;
        if o.req.scheme != "exact" {
            return Err(ClientError::NoRequirement);
        }
        let amount = parse_u128(&o.req.amount).ok_or(ClientError::NoRequirement)?;
        if amount > self.max_amount {
            return Err(ClientError::AmountTooHigh {
                required: amount,
                max: self.max_amount,
            });
        }
        let pay_to = parse_felt(&o.req.pay_to).ok_or(ClientError::NoRequirement)?;
        if !self.allowed.is_empty() && !self.allowed.contains(&pay_to) {
            return Err(ClientError::RecipientNotAllowed(o.req.pay_to.clone()));
        }
        let asset = parse_felt(&o.req.asset).ok_or(ClientError::NoRequirement)?;
        Ok((amount, pay_to, asset, chain))
    }

    /// Builds the payment header (name, value) answering `offer`.
    fn payment_header(&self, o: &Offer) -> Result<(&'static str, String), ClientError> {
        let (amount, pay_to, asset, chain) = self.acceptable(o)?;
        let cid = chain_id(chain).ok_or(ClientError::NoRequirement)?;
        let now = crate::now_unix();
        let nonce = self.fresh_nonce();
        match o.dialect {
            Dialect::X402V2 => {
                let oe = OutsideExecution {
                    caller: ANY_CALLER,
                    nonce,
                    execute_after: now.saturating_sub(300),
                    execute_before: now + o.req.max_timeout_seconds,
                    calls: vec![Call {
                        to: asset,
                        selector: SELECTOR_TRANSFER,
                        calldata: vec![pay_to, Felt::from(amount), Felt::ZERO],
                    }],
                };
                let h = outside_execution_hash(&oe, self.account, cid);
                let (r, s) = sign_hash(&self.key, &h).ok_or(ClientError::Signing)?;
                let payload = OutsideExecutionPayload {
                    from: felt_hex(&self.account),
                    chain_id: Some(chain.to_owned()),
                    outside_execution: OutsideExecutionJson {
                        caller: felt_hex(&oe.caller),
                        nonce: felt_hex(&oe.nonce),
                        execute_after: crate::wire::NumOrString::Num(oe.execute_after),
                        execute_before: crate::wire::NumOrString::Num(oe.execute_before),
                        calls: oe
                            .calls
                            .iter()
                            .map(|c| crate::wire::CallJson {
                                to: felt_hex(&c.to),
                                selector: felt_hex(&c.selector),
                                calldata: c.calldata.iter().map(felt_hex).collect(),
                            })
                            .collect(),
                    },
                    signature: vec![felt_hex(&r), felt_hex(&s)],
                };
                let p = json!({
                    "x402Version": 2,
                    "accepted": o.req.to_v2_json(),
                    "payload": payload,
                    "resource": o.resource,
                });
                Ok((headers::PAYMENT_SIGNATURE, b64_json(&p)))
            }
            Dialect::X402V1 | Dialect::ChipiV1 => {
                let valid_until = now + o.req.max_timeout_seconds;
                let msg = PaymentMessage {
                    from_address: self.account,
                    to_address: pay_to,
                    amount_low: amount,
                    amount_high: 0,
                    asset,
                    valid_until: u128::from(valid_until),
                    nonce,
                };
                let h = payment_message_hash(&msg, cid, DomainVariant::C);
                let (r, s) = sign_hash(&self.key, &h).ok_or(ClientError::Signing)?;
                let p = PaymentPayload {
                    x402_version: 1,
                    scheme: Some("exact".into()),
                    network: Some(o.req.network.clone()),
                    accepted: None,
                    payload: json!({
                        "signature": {"r": felt_hex(&r), "s": felt_hex(&s)},
                        "fromAddress": felt_hex(&self.account),
                        "toAddress": o.req.pay_to,
                        "amount": amount.to_string(),
                        "asset": o.req.asset,
                        "validUntil": valid_until,
                        "nonce": felt_hex(&nonce),
                    }),
                    resource: None,
                };
                if o.dialect == Dialect::ChipiV1 {
                    Ok((
                        headers::X_PAYMENT,
                        serde_json::to_string(&p).unwrap_or_default(),
                    ))
                } else {
                    Ok((headers::X_PAYMENT, b64_json(&p)))
                }
            }
        }
    }

    /// The payment header `(name, value, dialect)` this client would send in answer to a 402
    /// with these headers and body (preferring v2, then v1, then Chipi; or only `only`).
    pub fn payment_for(
        &self,
        headers: &HeaderMap,
        body: &[u8],
        only: Option<Dialect>,
    ) -> Result<(&'static str, String, Dialect), ClientError> {
        let mut last_err = ClientError::NoRequirement;
        for o in offers(headers, body)
            .into_iter()
            .filter(|o| only.is_none_or(|d| d == o.dialect))
        {
            match self.payment_header(&o) {
                Ok((n, v)) => return Ok((n, v, o.dialect)),
                Err(e) => last_err = e,
            }
        }
        Err(last_err)
    }

    /// Sends a request; on 402 pays (preferring v2, then v1, then Chipi) and retries once.
    pub async fn request(
        &self,
        method: Method,
        url: &str,
        extra_headers: HeaderMap,
        body: Option<Vec<u8>>,
    ) -> Result<PayResult, ClientError> {
        self.request_with(method, url, extra_headers, body, None)
            .await
    }

    /// Like [`X402Client::request`] but restricted to one dialect when `only` is set.
    pub async fn request_with(
        &self,
        method: Method,
        url: &str,
        extra_headers: HeaderMap,
        body: Option<Vec<u8>>,
        only: Option<Dialect>,
    ) -> Result<PayResult, ClientError> {
        let send = |h: HeaderMap| {
            let mut rb = self.http.request(method.clone(), url).headers(h);
            if let Some(b) = &body {
                rb = rb.body(b.clone());
            }
            rb.send()
        };
        let first = send(extra_headers.clone()).await?;
        if first.status().as_u16() != 402 {
            return finish(first, None).await;
        }
        let hdrs = first.headers().clone();
        let bytes = first.bytes().await?;
        let (name, value, dialect) = self.payment_for(&hdrs, &bytes, only)?;
        let mut h = extra_headers;
        if let Ok(v) = HeaderValue::from_str(&value) {
            h.insert(HeaderName::from_static(name), v);
        }
        let second = send(h).await?;
        finish(second, Some(dialect)).await
    }

    /// GET `url`, paying if asked.
    pub async fn get(&self, url: &str) -> Result<PayResult, ClientError> {
        self.request(Method::GET, url, HeaderMap::new(), None).await
    }
}

async fn finish(
    resp: reqwest::Response,
    paid_with: Option<Dialect>,
) -> Result<PayResult, ClientError> {
    let status = resp.status().as_u16();
    let headers: Vec<(String, String)> = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let settlement = resp
        .headers()
        .get(headers::PAYMENT_RESPONSE)
        .or_else(|| resp.headers().get(headers::X_PAYMENT_RESPONSE))
        .and_then(|v| v.to_str().ok())
        .and_then(decode_header_json);
    let body = resp.bytes().await?.to_vec();
    Ok(PayResult {
        status,
        headers,
        body,
        paid_with,
        settlement,
    })
}

/// `cobro x402 pay URL`: GET `url`, paying up to `max_amount` to an allowed recipient.
pub async fn pay(
    url: &str,
    private_key: &str,
    account_address: &str,
    max_amount: u128,
    allowed_recipients: &[String],
) -> Result<PayResult, ClientError> {
    let c = X402Client::new(&ClientConfig {
        private_key: private_key.to_owned(),
        account_address: account_address.to_owned(),
        max_amount,
        allowed_recipients: allowed_recipients.to_vec(),
    })?;
    c.get(url).await
}
