//! Tower layer protecting axum routes with an x402 price.

use std::convert::Infallible;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, request::Parts};
use axum::response::{IntoResponse, Response};
use tower::{Layer, Service};

use crate::config::X402Config;
use crate::facilitator::{Facilitator, Rejection};
use crate::wire::{
    Dialect, PaymentPayload, PaymentRequirements, SettleResponse, b64_json, decode_header_json,
    headers, payment_required_body, payment_required_chipi, payment_required_v2, v1_network,
    v2_network,
};

/// The paying account, inserted as a request extension for the handler.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payer {
    /// Payer account address (canonical hex).
    pub address: String,
    /// Payment nonce (canonical hex).
    pub nonce: String,
    /// Amount in base units: the signed amount (settle-after / verify-only modes) or the
    /// route price (settle-before mode; a Chipi payment may sign more than the price).
    pub amount: u128,
    /// Settlement transaction (None in verify-only mode and in settle-after mode, where the
    /// handler runs before settlement).
    pub transaction: Option<String>,
    /// Dialect the client used.
    pub dialect: Dialect,
}

/// A price computed from the request head (`None` = free).
pub type PriceFn = Arc<dyn Fn(&Parts) -> Option<u128> + Send + Sync>;

/// Price of a route, in base units of the asset.
#[derive(Clone)]
pub enum Price {
    /// Same price for every request.
    Static(u128),
    /// Computed from the request head; `None` means the request is free.
    Dynamic(PriceFn),
}

impl std::fmt::Debug for Price {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Static(p) => write!(f, "Price::Static({p})"),
            Self::Dynamic(_) => f.write_str("Price::Dynamic(..)"),
        }
    }
}

/// When the money moves relative to the handler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SettleMode {
    /// Settle, then run the handler (the default; the resource is never served unpaid).
    #[default]
    Before,
    /// Verify and reserve the nonce, run the handler, settle if it answered 2xx (its answer is
    /// replaced by a 402 if settlement fails; a non-2xx answer closes the reservation unsettled).
    After,
    /// Verify and consume the nonce atomically, run the handler, never settle.
    VerifyOnly,
}

/// How the `Payment-Required` / `PAYMENT-REQUIRED` header (one header: names are
/// case-insensitive) is written on a 402.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum RequiredHeader {
    /// Raw JSON v1 requirement, as Chipi's `X402Client` parses it (default). v2 clients find
    /// the v2 object in the body field `paymentRequiredV2`.
    #[default]
    ChipiJson,
    /// base64 v2 `PAYMENT-REQUIRED` as the x402 v2 standard has it.
    V2Base64,
}

#[derive(Debug)]
struct Settings {
    facilitator: Facilitator,
    price: Price,
    pay_to: String,
    asset: String,
    max_timeout_seconds: u64,
    description: Option<String>,
    mime_type: Option<String>,
    mode: SettleMode,
    required_header: RequiredHeader,
}

/// The layer. Build with [`PaymentLayer::new`] or [`PaymentLayer::from_config`].
#[derive(Debug, Clone)]
pub struct PaymentLayer {
    settings: Arc<Settings>,
}

impl PaymentLayer {
    /// Layer charging `price` to be paid to `pay_to` in `asset`.
    pub fn new(facilitator: Facilitator, pay_to: &str, asset: &str, price: Price) -> Self {
        Self {
            settings: Arc::new(Settings {
                facilitator,
                price,
                pay_to: pay_to.to_owned(),
                asset: asset.to_owned(),
                max_timeout_seconds: 300,
                description: None,
                mime_type: None,
                mode: SettleMode::Before,
                required_header: RequiredHeader::ChipiJson,
            }),
        }
    }

    /// Layer using `pay_to`, `asset`, `price` and `max_timeout_seconds` from the config.
    pub fn from_config(facilitator: Facilitator, config: &X402Config) -> Self {
        let price = crate::wire::parse_u128(&config.price).unwrap_or(u128::MAX);
        Self::new(
            facilitator,
            &config.pay_to,
            &config.asset,
            Price::Static(price),
        )
        .max_timeout_seconds(config.max_timeout_seconds)
    }

    fn edit(mut self, f: impl FnOnce(&mut Settings)) -> Self {
        if let Some(s) = Arc::get_mut(&mut self.settings) {
            f(s);
        }
        self
    }

    /// Settlement mode.
    pub fn mode(self, mode: SettleMode) -> Self {
        self.edit(|s| s.mode = mode)
    }
    /// `maxTimeoutSeconds` advertised.
    pub fn max_timeout_seconds(self, secs: u64) -> Self {
        self.edit(|s| s.max_timeout_seconds = secs)
    }
    /// Description advertised.
    pub fn description(self, d: &str) -> Self {
        let d = d.to_owned();
        self.edit(|s| s.description = Some(d))
    }
    /// MIME type advertised.
    pub fn mime_type(self, m: &str) -> Self {
        let m = m.to_owned();
        self.edit(|s| s.mime_type = Some(m))
    }
    /// Form of the requirement header.
    pub fn required_header(self, h: RequiredHeader) -> Self {
        self.edit(|s| s.required_header = h)
    }
}

impl<S> Layer<S> for PaymentLayer {
    type Service = PaymentService<S>;
    fn layer(&self, inner: S) -> Self::Service {
        PaymentService {
            inner,
            settings: self.settings.clone(),
        }
    }
}

/// The service produced by [`PaymentLayer`].
#[derive(Debug, Clone)]
pub struct PaymentService<S> {
    inner: S,
    settings: Arc<Settings>,
}

impl Settings {
    fn requirements(&self, parts: &Parts, amount: u128) -> PaymentRequirements {
        PaymentRequirements {
            scheme: "exact".into(),
            network: v1_network(self.facilitator.chain_name()).into(),
            amount: amount.to_string(),
            resource: Some(parts.uri.to_string()),
            description: self.description.clone(),
            mime_type: self.mime_type.clone(),
            pay_to: self.pay_to.clone(),
            max_timeout_seconds: self.max_timeout_seconds,
            asset: self.asset.clone(),
            extra: None,
        }
    }

    fn payment_required(
        &self,
        req: &PaymentRequirements,
        error: &str,
        message: Option<&str>,
    ) -> Response {
        let mut body = payment_required_body(req, error);
        let v2 = serde_json::json!({
            "x402Version": 2,
            "error": error,
            "resource": {"url": req.resource.clone().unwrap_or_default()},
            "accepts": [req.to_v2_json()],
        });
        if let Some(o) = body.as_object_mut() {
            o.insert("paymentRequiredV2".into(), v2);
            if let Some(m) = message {
                o.insert("errorMessage".into(), serde_json::Value::String(m.into()));
            }
        }
        let header = match self.required_header {
            RequiredHeader::ChipiJson => payment_required_chipi(req),
            RequiredHeader::V2Base64 => payment_required_v2(req, error),
        };
        let mut resp = (StatusCode::PAYMENT_REQUIRED, axum::Json(body)).into_response();
        if let Ok(v) = HeaderValue::from_str(&header) {
            resp.headers_mut().insert(headers::PAYMENT_REQUIRED, v);
        }
        resp
    }
}

fn extract_payment(h: &HeaderMap) -> Option<(Dialect, Option<PaymentPayload>)> {
    if let Some(v) = h.get(headers::PAYMENT_SIGNATURE) {
        return Some((
            Dialect::X402V2,
            v.to_str().ok().and_then(decode_header_json),
        ));
    }
    let v = h.get(headers::X_PAYMENT)?;
    let s = v.to_str().ok();
    let dialect = if s.is_some_and(|s| s.trim_start().starts_with('{')) {
        Dialect::ChipiV1
    } else {
        Dialect::X402V1
    };
    Some((dialect, s.and_then(decode_header_json)))
}

fn set_response_header(resp: &mut Response, dialect: Dialect, s: &SettleResponse) {
    let name = match dialect {
        Dialect::X402V2 => headers::PAYMENT_RESPONSE,
        Dialect::ChipiV1 | Dialect::X402V1 => headers::X_PAYMENT_RESPONSE,
    };
    if let Ok(v) = HeaderValue::from_str(&b64_json(s)) {
        resp.headers_mut().insert(name, v);
    }
}

type BoxFuture = Pin<Box<dyn Future<Output = Result<Response, Infallible>> + Send>>;

impl<S> Service<Request<Body>> for PaymentService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<Body>) -> Self::Future {
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let settings = self.settings.clone();
        Box::pin(async move {
            let (mut parts, body) = req.into_parts();
            let amount = match &settings.price {
                Price::Static(p) => Some(*p),
                Price::Dynamic(f) => f(&parts),
            };
            let Some(amount) = amount else {
                return inner.call(Request::from_parts(parts, body)).await;
            };
            let requirements = settings.requirements(&parts, amount);
            let Some((dialect, payload)) = extract_payment(&parts.headers) else {
                return Ok(settings.payment_required(&requirements, "Payment Required", None));
            };
            let Some(payload) = payload else {
                return Ok(settings.payment_required(
                    &requirements,
                    "invalid_payload",
                    Some("payment header could not be decoded"),
                ));
            };
            let mut req_for = requirements.clone();
            if dialect == Dialect::X402V2 {
                req_for.network = v2_network(settings.facilitator.chain_name()).into();
            }
            let reject = |r: Rejection| {
                settings.payment_required(&requirements, r.reason.code(), Some(r.message))
            };
            let f = &settings.facilitator;
            match settings.mode {
                SettleMode::Before => {
                    let s = f.settle(&payload, &req_for).await;
                    if !s.success {
                        let mut resp = settings.payment_required(
                            &requirements,
                            s.error_reason
                                .as_deref()
                                .unwrap_or("unexpected_settle_error"),
                            s.error_message.as_deref(),
                        );
                        set_response_header(&mut resp, dialect, &s);
                        return Ok(resp);
                    }
                    parts.extensions.insert(Payer {
                        address: s.payer.clone().unwrap_or_default(),
                        nonce: nonce_of(&payload),
                        amount,
                        transaction: Some(s.transaction.clone()),
                        dialect,
                    });
                    let mut resp = inner.call(Request::from_parts(parts, body)).await?;
                    set_response_header(&mut resp, dialect, &s);
                    Ok(resp)
                }
                SettleMode::VerifyOnly => {
                    let v = match f.verify_and_reserve(&payload, &req_for).await {
                        Ok(v) => v,
                        Err(r) => return Ok(reject(r)),
                    };
                    parts.extensions.insert(Payer {
                        address: v.payer.clone(),
                        nonce: v.nonce.clone(),
                        amount: v.amount,
                        transaction: None,
                        dialect,
                    });
                    let mut resp = inner.call(Request::from_parts(parts, body)).await?;
                    let s = SettleResponse {
                        success: true,
                        error_reason: None,
                        error_message: None,
                        payer: Some(v.payer),
                        transaction: String::new(),
                        network: req_for.network.clone(),
                    };
                    set_response_header(&mut resp, dialect, &s);
                    Ok(resp)
                }
                SettleMode::After => {
                    // Consume the nonce before the handler runs, settle after it succeeded.
                    let v = match f.reserve_for_settlement(&payload, &req_for).await {
                        Ok(v) => v,
                        Err(r) => return Ok(reject(r)),
                    };
                    parts.extensions.insert(Payer {
                        address: v.payer.clone(),
                        nonce: v.nonce.clone(),
                        amount: v.amount,
                        transaction: None,
                        dialect,
                    });
                    let mut resp = inner.call(Request::from_parts(parts, body)).await?;
                    if !resp.status().is_success() {
                        f.abandon(&v, "handler_failed").await;
                        return Ok(resp);
                    }
                    let s = f.settle_reserved_payment(&v, &req_for.network).await;
                    if !s.success {
                        let mut r = settings.payment_required(
                            &requirements,
                            s.error_reason
                                .as_deref()
                                .unwrap_or("unexpected_settle_error"),
                            s.error_message.as_deref(),
                        );
                        set_response_header(&mut r, dialect, &s);
                        return Ok(r);
                    }
                    set_response_header(&mut resp, dialect, &s);
                    Ok(resp)
                }
            }
        })
    }
}

fn nonce_of(p: &PaymentPayload) -> String {
    let raw = p
        .payload
        .get("nonce")
        .or_else(|| {
            p.payload
                .get("outsideExecution")
                .and_then(|o| o.get("nonce"))
        })
        .and_then(|v| v.as_str())
        .unwrap_or("");
    crate::typed_data::parse_felt(raw)
        .map(|f| crate::typed_data::felt_hex(&f))
        .unwrap_or_default()
}
