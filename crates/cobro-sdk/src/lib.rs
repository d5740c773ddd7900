//! An async Rust client for cobro (and for any server speaking Chipi's Bills API).
//!
//! ```no_run
//! # async fn demo() -> Result<(), cobro_sdk::Error> {
//! use cobro_sdk::{Client, SkuListQuery};
//! let client = Client::new("http://127.0.0.1:8080")?
//!     .with_api_key("pk_dev_…")
//!     .with_bearer("eyJ…"); // a customer JWT, or the secret key for catalog reads
//! let page = client
//!     .list_skus(&SkuListQuery { chipi_category: Some("RECARGAS".into()), ..Default::default() })
//!     .await?;
//! println!("{} SKUs", page.total);
//! # Ok(()) }
//! ```
//!
//! Every request carries `__chipi_api_version`, as the official SDKs do. Errors from the
//! server arrive as [`Error::Api`] with the server's stable `code`, `status`, `param` and
//! `request_id`.
//!
//! **Retries.** Connection failures, timeouts and 5xx answers are retried (by default twice,
//! with a growing pause) only for calls that are safe to repeat: reads, `PATCH`, `DELETE`, and
//! [`Client::create_purchase`], which always sends the same idempotency key
//! (`transactionHash`) so a repeat can only ever answer the same purchase. Other writes
//! (registering an endpoint, rotating a secret, redelivering) are sent once.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod webhooks;

use std::time::Duration;

use cobro_types::events::{
    CreateWebhookEndpoint, DeletedObject, EventDetail, EventView, RedeliverInput, Redelivery,
    UpdateWebhookEndpoint, WebhookEndpointView,
};
use cobro_types::{
    CHIPI_API_VERSION, CreateSkuPurchaseInput, ErrorBody, LedgerEntryView, OrgBalance, Paginated,
    Sku, Transaction,
};
use serde::de::DeserializeOwned;

/// What can go wrong when calling the API.
///
/// ```no_run
/// # async fn demo(client: cobro_sdk::Client) {
/// match client.get_sku("sku-nope", None).await {
///     Err(cobro_sdk::Error::Api { code, request_id, .. }) if code == "SKU_NOT_FOUND" => {
///         eprintln!("no such SKU (request {request_id:?})");
///     }
///     Err(other) => eprintln!("{other}"),
///     Ok(sku) => println!("{}", sku.name),
/// }
/// # }
/// ```
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The server answered with an error body.
    #[error("{status} {code}: {message}")]
    Api {
        /// The HTTP status.
        status: u16,
        /// The stable error code, e.g. `SKU_NOT_FOUND`.
        code: String,
        /// The server's explanation (wording may change; match on `code`).
        message: String,
        /// The parameter at fault, when the server named one.
        param: Option<String>,
        /// The request id, to quote when reporting a problem.
        request_id: Option<String>,
    },
    /// The request could not be sent or the response not read.
    #[error("transport error: {0}")]
    Transport(String),
    /// The server answered 2xx with a body this client could not decode.
    #[error("unexpected response: {0}")]
    Decode(String),
    /// The client was configured wrongly.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// [`Client::wait_for_settlement`] gave up before the purchase settled.
    #[error("purchase {id} still {status:?} after the timeout")]
    Timeout {
        /// The purchase id.
        id: String,
        /// Its last known status.
        status: cobro_types::PurchaseStatus,
    },
}

impl Error {
    /// The server's error code, if this is an API error.
    ///
    /// ```
    /// let e = cobro_sdk::Error::Transport("refused".into());
    /// assert_eq!(e.code(), None);
    /// ```
    pub fn code(&self) -> Option<&str> {
        match self {
            Error::Api { code, .. } => Some(code),
            _ => None,
        }
    }

    /// The HTTP status, if this is an API error.
    ///
    /// ```
    /// let e = cobro_sdk::Error::Config("bad".into());
    /// assert_eq!(e.status(), None);
    /// ```
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api { status, .. } => Some(*status),
            _ => None,
        }
    }
}

/// Filters and pagination of `GET /v1/skus` (all optional).
///
/// ```
/// let q = cobro_sdk::SkuListQuery { chipi_category: Some("RECARGAS".into()), limit: Some(20), ..Default::default() };
/// assert_eq!(q.page, None);
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SkuListQuery {
    /// 1-based page.
    pub page: Option<u64>,
    /// Page size (1..=100).
    pub limit: Option<u64>,
    /// Items to skip (instead of `page`).
    pub offset: Option<u64>,
    /// `TET` or `CHIPI`.
    pub provider: Option<String>,
    /// A `SkuCategory` wire name, e.g. `TELEFONIA`.
    pub category: Option<String>,
    /// e.g. `RECARGAS`, `GIFT_CARDS`.
    pub chipi_category: Option<String>,
    /// Case-insensitive substring of the carrier name.
    pub carrier_name: Option<String>,
    /// `en` or `es`.
    pub locale: Option<String>,
}

impl SkuListQuery {
    fn pairs(&self) -> Vec<(&'static str, String)> {
        let mut v = Vec::new();
        let nums = [
            ("page", self.page),
            ("limit", self.limit),
            ("offset", self.offset),
        ];
        for (k, n) in nums {
            if let Some(n) = n {
                v.push((k, n.to_string()));
            }
        }
        let texts = [
            ("provider", &self.provider),
            ("category", &self.category),
            ("chipiCategory", &self.chipi_category),
            ("carrierName", &self.carrier_name),
            ("locale", &self.locale),
        ];
        for (k, s) in texts {
            if let Some(s) = s {
                v.push((k, s.clone()));
            }
        }
        v
    }
}

/// A client bound to one server and one API key; cheap to clone (connections are shared).
///
/// ```
/// let client = cobro_sdk::Client::new("http://127.0.0.1:8080")?.with_api_key("pk_dev_…").with_bearer("eyJ…");
/// let for_org = client.clone().with_bearer("sk_dev_…");
/// # Ok::<(), cobro_sdk::Error>(())
/// ```
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    api_key: Option<String>,
    bearer: Option<String>,
    retries: u32,
}

/// A new idempotency key for a purchase (`cobro-` and 32 random hex digits).
///
/// ```
/// let k = cobro_sdk::new_idempotency_key();
/// assert!(k.starts_with("cobro-") && k.len() == 38);
/// ```
pub fn new_idempotency_key() -> String {
    format!("cobro-{}", uuid::Uuid::new_v4().simple())
}

impl Client {
    /// A client for the server at `base_url` (`http://host:port`; a trailing `/v1` is allowed).
    ///
    /// ```
    /// let client = cobro_sdk::Client::new("http://127.0.0.1:8080")?;
    /// assert_eq!(client.base_url(), "http://127.0.0.1:8080");
    /// # Ok::<(), cobro_sdk::Error>(())
    /// ```
    pub fn new(base_url: &str) -> Result<Client, Error> {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .user_agent(concat!("cobro-sdk/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| Error::Config(e.to_string()))?;
        let base = base_url
            .trim_end_matches('/')
            .trim_end_matches("/v1")
            .to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(Error::Config(format!(
                "the base URL must be http(s): {base_url}"
            )));
        }
        Ok(Client {
            http,
            base,
            api_key: None,
            bearer: None,
            retries: 2,
        })
    }

    /// How many times a call that is safe to repeat is retried after a connection error, a
    /// timeout or a 5xx answer (default 2; 0 disables retries).
    ///
    /// ```
    /// let c = cobro_sdk::Client::new("http://127.0.0.1:8080")?.with_retries(5);
    /// # Ok::<(), cobro_sdk::Error>(())
    /// ```
    pub fn with_retries(mut self, retries: u32) -> Client {
        self.retries = retries;
        self
    }

    /// Sends `x-api-key: key` on every request.
    ///
    /// ```
    /// let client = cobro_sdk::Client::new("http://127.0.0.1:8080")?.with_api_key("pk_dev_…");
    /// # Ok::<(), cobro_sdk::Error>(())
    /// ```
    pub fn with_api_key(mut self, key: impl Into<String>) -> Client {
        self.api_key = Some(key.into());
        self
    }

    /// Sends `Authorization: Bearer token` on every request.
    ///
    /// ```
    /// let client = cobro_sdk::Client::new("http://127.0.0.1:8080")?
    ///     .with_api_key("pk_dev_…")
    ///     .with_bearer("eyJ…"); // a customer JWT, or sk_… for organisation calls
    /// # Ok::<(), cobro_sdk::Error>(())
    /// ```
    pub fn with_bearer(mut self, token: impl Into<String>) -> Client {
        self.bearer = Some(token.into());
        self
    }

    /// The base URL requests go to.
    ///
    /// ```
    /// let client = cobro_sdk::Client::new("http://127.0.0.1:8080/v1/")?;
    /// assert_eq!(client.base_url(), "http://127.0.0.1:8080");
    /// # Ok::<(), cobro_sdk::Error>(())
    /// ```
    pub fn base_url(&self) -> &str {
        &self.base
    }

    /// Lists SKUs.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let page = client
    ///     .list_skus(&cobro_sdk::SkuListQuery { carrier_name: Some("telcel".into()), ..Default::default() })
    ///     .await?;
    /// println!("{} of {}", page.data.len(), page.total);
    /// # Ok(()) }
    /// ```
    pub async fn list_skus(&self, query: &SkuListQuery) -> Result<Paginated<Sku>, Error> {
        self.get("/v1/skus", &query.pairs()).await
    }

    /// Fetches one SKU, optionally in a language (`es`).
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let sku = client.get_sku("sku-tl-TEL010", Some("es")).await?;
    /// println!("{}", sku.name);
    /// # Ok(()) }
    /// ```
    pub async fn get_sku(&self, id: &str, locale: Option<&str>) -> Result<Sku, Error> {
        let path = format!("/v1/skus/{}", encode_path_segment(id));
        let query: Vec<(&'static str, String)> = locale
            .map(|l| ("locale", l.to_string()))
            .into_iter()
            .collect();
        self.get(&path, &query).await
    }

    /// Converts an amount to USD at the server's current rate (`getUsdAmount`).
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let usd = client.usd_amount("200", "MXN").await?;
    /// println!("200 MXN = {usd} USD");
    /// # Ok(()) }
    /// ```
    pub async fn usd_amount(&self, currency_amount: &str, currency: &str) -> Result<f64, Error> {
        let q = [
            ("currencyAmount", currency_amount.to_string()),
            ("currency", currency.to_string()),
        ];
        self.get("/v1/exchanges/usd-amount", &q).await
    }

    /// Buys a SKU. An empty `transactionHash` (the idempotency key) is replaced by a new
    /// one ([`new_idempotency_key`]); the same key is used for every retry, so a retried POST
    /// can never buy twice. The answer says whether it was a replay of an earlier request with
    /// the same key.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let input: cobro_types::CreateSkuPurchaseInput = serde_json::from_value(serde_json::json!({
    ///     "transactionHash": "", "skuId": "sku-tl-TEL010", "skuReference": "5512345678",
    ///     "currencyAmount": 10, "chain": "STARKNET", "token": "USDC", "walletAddress": "0x0",
    /// })).expect("valid body");
    /// let created = client.create_purchase(&input).await?;
    /// let settled = client
    ///     .wait_for_settlement(&created.value.id, std::time::Duration::from_secs(60))
    ///     .await?;
    /// println!("{:?} {:?}", settled.status, settled.sku_file_number);
    /// # Ok(()) }
    /// ```
    pub async fn create_purchase(
        &self,
        input: &CreateSkuPurchaseInput,
    ) -> Result<Created<Transaction>, Error> {
        let keyed;
        let input = if input.transaction_hash.is_empty() {
            keyed = CreateSkuPurchaseInput {
                transaction_hash: new_idempotency_key(),
                ..input.clone()
            };
            &keyed
        } else {
            input
        };
        let (value, headers) = self
            .request(
                reqwest::Method::POST,
                "/v1/sku-purchases",
                &[],
                Some(input),
                true,
            )
            .await?;
        let replayed = headers
            .get("idempotent-replayed")
            .is_some_and(|v| v.as_bytes() == b"true");
        Ok(Created { value, replayed })
    }

    /// One purchase.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let tx = client.get_purchase("tx-…").await?;
    /// println!("{:?}", tx.status);
    /// # Ok(()) }
    /// ```
    pub async fn get_purchase(&self, id: &str) -> Result<Transaction, Error> {
        self.get(
            &format!("/v1/sku-purchases/{}", encode_path_segment(id)),
            &[],
        )
        .await
    }

    /// Purchases, newest first; `query` holds `page`, `limit`, `status`, `skuId`, … pairs.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let page = client.list_purchases(&[("status", "SUCCESS".to_string())]).await?;
    /// println!("{} purchases", page.total);
    /// # Ok(()) }
    /// ```
    pub async fn list_purchases(
        &self,
        query: &[(&str, String)],
    ) -> Result<Paginated<Transaction>, Error> {
        self.get("/v1/sku-purchases", query).await
    }

    /// Polls a purchase until it is `SUCCESS` or `FAILED` (or `CANCELLED`), waiting 100 ms,
    /// then longer (up to 2 s) between polls; [`Error::Timeout`] after `timeout`.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let tx = client.wait_for_settlement("tx-…", std::time::Duration::from_secs(30)).await?;
    /// # Ok(()) }
    /// ```
    pub async fn wait_for_settlement(
        &self,
        id: &str,
        timeout: Duration,
    ) -> Result<Transaction, Error> {
        let deadline = std::time::Instant::now() + timeout;
        let mut pause = Duration::from_millis(100);
        loop {
            let tx = self.get_purchase(id).await?;
            if tx.status.is_terminal() {
                return Ok(tx);
            }
            let now = std::time::Instant::now();
            if now >= deadline {
                return Err(Error::Timeout {
                    id: id.to_string(),
                    status: tx.status,
                });
            }
            tokio::time::sleep(pause.min(deadline - now)).await;
            pause = (pause * 2).min(Duration::from_secs(2));
        }
    }

    /// Asks the biller whether a reference (phone number, account) is valid before buying,
    /// where the SKU allows it (`canCheckSkuReference`).
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let check = client.check_reference("sku-cfe-LUZ", "123456789012").await?;
    /// println!("valid: {}, due: {:?}", check.valid, check.amount_due);
    /// # Ok(()) }
    /// ```
    pub async fn check_reference(
        &self,
        sku_id: &str,
        reference: &str,
    ) -> Result<cobro_types::catalog::ReferenceCheck, Error> {
        let path = format!("/v1/skus/{}/check-reference", encode_path_segment(sku_id));
        let body = serde_json::json!({ "reference": reference });
        self.request(reqwest::Method::POST, &path, &[], Some(&body), true)
            .await
            .map(|(v, _)| v)
    }

    /// The organisation's credits (secret key).
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let b = client.balance().await?; // with the secret key as bearer
    /// println!("{} USD", b.available_usd.to_usd_string());
    /// # Ok(()) }
    /// ```
    pub async fn balance(&self) -> Result<OrgBalance, Error> {
        self.get("/v1/balance", &[]).await
    }

    /// The organisation's ledger, newest first (secret key).
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let page = client.ledger_entries(&[("limit", "20".to_string())]).await?;
    /// for e in &page.data {
    ///     println!("{} {}", e.kind, e.amount_usd.to_usd_string());
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn ledger_entries(
        &self,
        query: &[(&str, String)],
    ) -> Result<Paginated<LedgerEntryView>, Error> {
        self.get("/v1/ledger-entries", query).await
    }

    /// Registers a webhook endpoint (secret key). The answer holds its secret, shown once.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// use cobro_types::events::CreateWebhookEndpoint;
    /// let e = client
    ///     .create_webhook_endpoint(&CreateWebhookEndpoint {
    ///         url: "https://example.com/hooks".into(),
    ///         events: Some(vec!["sku-purchase.completed".into()]),
    ///         description: None,
    ///         enabled: None,
    ///     })
    ///     .await?;
    /// println!("store this secret: {:?}", e.secret);
    /// # Ok(()) }
    /// ```
    pub async fn create_webhook_endpoint(
        &self,
        input: &CreateWebhookEndpoint,
    ) -> Result<WebhookEndpointView, Error> {
        self.send(
            reqwest::Method::POST,
            "/v1/webhook-endpoints",
            &[],
            Some(input),
        )
        .await
        .map(|(v, _)| v)
    }

    /// The organisation's webhook endpoints in this key's environment.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// for e in client.list_webhook_endpoints().await?.data {
    ///     println!("{} {} enabled={}", e.id, e.url, e.enabled);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn list_webhook_endpoints(&self) -> Result<Paginated<WebhookEndpointView>, Error> {
        self.get("/v1/webhook-endpoints", &[]).await
    }

    /// One webhook endpoint.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let e = client.get_webhook_endpoint("we_…").await?;
    /// println!("{:?}", e.disabled_reason);
    /// # Ok(()) }
    /// ```
    pub async fn get_webhook_endpoint(&self, id: &str) -> Result<WebhookEndpointView, Error> {
        let path = format!("/v1/webhook-endpoints/{}", encode_path_segment(id));
        self.get(&path, &[]).await
    }

    /// Changes the fields present in `input`.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// use cobro_types::events::UpdateWebhookEndpoint;
    /// let patch = UpdateWebhookEndpoint { enabled: Some(true), ..Default::default() };
    /// client.update_webhook_endpoint("we_…", &patch).await?;
    /// # Ok(()) }
    /// ```
    pub async fn update_webhook_endpoint(
        &self,
        id: &str,
        input: &UpdateWebhookEndpoint,
    ) -> Result<WebhookEndpointView, Error> {
        let path = format!("/v1/webhook-endpoints/{}", encode_path_segment(id));
        self.send(reqwest::Method::PATCH, &path, &[], Some(input))
            .await
            .map(|(v, _)| v)
    }

    /// Deletes an endpoint (its pending deliveries are cancelled).
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// client.delete_webhook_endpoint("we_…").await?;
    /// # Ok(()) }
    /// ```
    pub async fn delete_webhook_endpoint(&self, id: &str) -> Result<DeletedObject, Error> {
        let path = format!("/v1/webhook-endpoints/{}", encode_path_segment(id));
        self.send::<_, ()>(reqwest::Method::DELETE, &path, &[], None)
            .await
            .map(|(v, _)| v)
    }

    /// Rotates an endpoint's secret; the old one keeps signing during the server's overlap.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let e = client.rotate_webhook_secret("we_…").await?;
    /// println!("new secret {:?}, old one valid until {:?}", e.secret, e.previous_secret_expires_at);
    /// # Ok(()) }
    /// ```
    pub async fn rotate_webhook_secret(&self, id: &str) -> Result<WebhookEndpointView, Error> {
        let path = format!(
            "/v1/webhook-endpoints/{}/rotate-secret",
            encode_path_segment(id)
        );
        self.send::<_, ()>(reqwest::Method::POST, &path, &[], None)
            .await
            .map(|(v, _)| v)
    }

    /// Events, newest first; `query` holds `type`, `purchaseId`, `page`, `limit` pairs.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let page = client
    ///     .list_events(&[("type", "sku-purchase.failed".to_string())])
    ///     .await?;
    /// println!("{} failed purchases to reconcile", page.total);
    /// # Ok(()) }
    /// ```
    pub async fn list_events(
        &self,
        query: &[(&str, String)],
    ) -> Result<Paginated<EventView>, Error> {
        self.get("/v1/events", query).await
    }

    /// One event with its deliveries and attempt log.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let e = client.get_event("evt_…").await?;
    /// for a in &e.attempts {
    ///     println!("{} {:?} {} ms", a.attempt, a.status_code, a.latency_ms);
    /// }
    /// # Ok(()) }
    /// ```
    pub async fn get_event(&self, id: &str) -> Result<EventDetail, Error> {
        self.get(&format!("/v1/events/{}", encode_path_segment(id)), &[])
            .await
    }

    /// Queues an event again, to one endpoint or to every matching one.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let r = client.redeliver_event("evt_…", None).await?;
    /// println!("{} deliveries queued", r.deliveries.len());
    /// # Ok(()) }
    /// ```
    pub async fn redeliver_event(
        &self,
        id: &str,
        endpoint_id: Option<&str>,
    ) -> Result<Redelivery, Error> {
        let path = format!("/v1/events/{}/redeliver", encode_path_segment(id));
        let body = RedeliverInput {
            endpoint_id: endpoint_id.map(str::to_string),
        };
        self.send(reqwest::Method::POST, &path, &[], Some(&body))
            .await
            .map(|(v, _)| v)
    }

    /// A GET on any API path, decoded as `T`.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let v: serde_json::Value = client.get("/v1/skus", &[("limit", "1".to_string())]).await?;
    /// # Ok(()) }
    /// ```
    pub async fn get<T: DeserializeOwned>(
        &self,
        path: &str,
        query: &[(&str, String)],
    ) -> Result<T, Error> {
        self.send::<T, ()>(reqwest::Method::GET, path, query, None)
            .await
            .map(|(v, _)| v)
    }

    /// Any request, decoded as `T`, with the response headers. GET, PUT, PATCH and DELETE are
    /// retried (see the crate docs); POST is sent once.
    ///
    /// ```no_run
    /// # async fn demo(client: cobro_sdk::Client) -> Result<(), cobro_sdk::Error> {
    /// let (v, headers): (serde_json::Value, _) = client
    ///     .send::<_, ()>(reqwest::Method::GET, "/v1/balance", &[], None)
    ///     .await?;
    /// println!("{v} {:?}", headers.get("x-request-id"));
    /// # Ok(()) }
    /// ```
    pub async fn send<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<(T, reqwest::header::HeaderMap), Error> {
        let repeatable = method != reqwest::Method::POST;
        self.request(method, path, query, body, repeatable).await
    }

    async fn request<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
        repeatable: bool,
    ) -> Result<(T, reqwest::header::HeaderMap), Error> {
        let attempts = if repeatable { self.retries + 1 } else { 1 };
        let mut pause = Duration::from_millis(200);
        let mut attempt = 1;
        loop {
            let result = self.once(method.clone(), path, query, body).await;
            let retryable = match &result {
                Err(Error::Transport(_)) => true,
                Err(Error::Api { status, .. }) => *status >= 500,
                _ => false,
            };
            if !retryable || attempt >= attempts {
                return result;
            }
            tokio::time::sleep(pause).await;
            pause *= 2;
            attempt += 1;
        }
    }

    async fn once<T: DeserializeOwned, B: serde::Serialize>(
        &self,
        method: reqwest::Method,
        path: &str,
        query: &[(&str, String)],
        body: Option<&B>,
    ) -> Result<(T, reqwest::header::HeaderMap), Error> {
        let mut req = self
            .http
            .request(method, format!("{}{}", self.base, path))
            .query(&[("__chipi_api_version", CHIPI_API_VERSION)])
            .query(query);
        if let Some(k) = &self.api_key {
            req = req.header("x-api-key", k);
        }
        if let Some(t) = &self.bearer {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.json(b);
        }
        let resp = req
            .send()
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        let status = resp.status();
        let headers = resp.headers().clone();
        let request_id = headers
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let bytes = resp
            .bytes()
            .await
            .map_err(|e| Error::Transport(e.to_string()))?;
        if status.is_success() {
            let value = serde_json::from_slice(&bytes).map_err(|e| Error::Decode(e.to_string()))?;
            return Ok((value, headers));
        }
        Err(match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(b) => Error::Api {
                status: status.as_u16(),
                code: b.code,
                message: b.message,
                param: b.param,
                request_id: b.request_id.or(request_id),
            },
            Err(_) => Error::Api {
                status: status.as_u16(),
                code: format!("HTTP_{}", status.as_u16()),
                message: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                param: None,
                request_id,
            },
        })
    }
}

/// A created resource, and whether the answer was an idempotent replay.
///
/// ```
/// let c = cobro_sdk::Created { value: 1, replayed: false };
/// assert!(!c.replayed);
/// ```
#[derive(Debug, Clone, PartialEq)]
pub struct Created<T> {
    /// The resource.
    pub value: T,
    /// `true` when the server answered with an existing resource (`Idempotent-Replayed: true`).
    pub replayed: bool,
}

/// Percent-encodes one path segment (RFC 3986 unreserved characters pass through).
fn encode_path_segment(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn path_segments_are_encoded() {
        assert_eq!(encode_path_segment("sku-tl-TEL010"), "sku-tl-TEL010");
        assert_eq!(encode_path_segment("a/b c"), "a%2Fb%20c");
    }

    #[test]
    fn base_urls_are_normalised() {
        let c = Client::new("http://localhost:8080/v1/").expect("valid");
        assert_eq!(c.base_url(), "http://localhost:8080");
        assert!(Client::new("localhost:8080").is_err());
    }
}
