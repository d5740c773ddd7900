//! Creating purchases: pricing, the DEV sandbox, the wire view, and group commit.
//!
//! A request is validated against the catalog snapshot (`cobro_domain::purchase`), priced
//! (`cobro_domain::pricing`: FX rate and the organisation's markup, rounded once), turned into
//! a [`PurchaseRecord`], and handed to the [`PurchaseWriter`]. The writer takes every purchase
//! waiting at that moment (up to `purchases.max_batch`) and stores them with one
//! `Store::create_purchases` call: one database commit for the whole group, each purchase still
//! all-or-nothing, each caller answered with its own outcome. Under light load a group is one
//! purchase; under heavy load the commit cost is shared.
//!
//! A dev key's purchase is the sandbox of the guides: no debit, no carrier, `SUCCESS` already
//! in the POST response, `ledgerEntryId` = `le-dev-<uuid>` (no ledger row), `skuFileNumber` =
//! `dev-sandbox-<unix-ms>`, and its `sku-purchase.completed` event in the outbox like any other.

use std::sync::Arc;

use cobro_domain::{
    pricing::{self, Markup, Quote, RateSource},
    purchase::ValidPurchase,
};
use cobro_store::{
    NewEvent, NewPurchase, PurchaseRecord, PurchaseResult, Store, StoreError, StoreResult,
};
use cobro_types::{Environment, ErrorCode, PurchaseStatus, Timestamp, Transaction};
use rust_decimal::Decimal;
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;

/// The wire view of a stored purchase.
pub fn to_transaction(r: &PurchaseRecord) -> Transaction {
    Transaction {
        id: r.id.clone(),
        kind: "SKU_PURCHASE".into(),
        status: r.status,
        chain: r.chain.clone(),
        token: r.token.clone(),
        transaction_hash: r.idempotency_key.clone(),
        sender_address: r.wallet_address.clone(),
        destination_address: "0x0".into(),
        amount: r.total.to_usd_string(),
        sku_id: r.sku_id.clone(),
        sku_reference: r.sku_reference.clone(),
        sku_purchase_amount: r.amount,
        sku_purchase_currency: r.currency,
        sku_file_number: r.file_number.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
        confirmed_at: r.confirmed_at,
        api_public_key: r.api_public_key.clone(),
        ledger_entry_id: r.ledger_entry_id.clone(),
        usd_amount: r.total,
        fx_rate: r.fx_rate.clone(),
        markup_usd: r.markup,
        error_message: r.error_message.clone(),
        customer_id: r.customer_id.clone(),
    }
}

/// The webhook body of an event about a purchase.
pub fn event(kind: &str, record: &PurchaseRecord) -> Result<NewEvent, ApiError> {
    let id = cobro_domain::keys::new_id("evt").map_err(|e| ApiError::internal("event id", e))?;
    let payload = serde_json::json!({
        "id": id,
        "type": kind,
        "createdAt": record.updated_at,
        "data": to_transaction(record),
    });
    Ok(NewEvent {
        id,
        kind: kind.to_string(),
        payload: payload.to_string(),
    })
}

/// Who is buying, from the authenticated caller.
#[derive(Debug, Clone)]
pub struct Buyer<'a> {
    pub org_id: &'a str,
    pub environment: Environment,
    pub api_public_key: &'a str,
    pub customer_id: &'a str,
}

/// Prices a validated request and builds the purchase to store.
pub fn build(
    buyer: &Buyer<'_>,
    valid: &ValidPurchase,
    rates: &dyn RateSource,
    markup: &Markup,
    now: Timestamp,
) -> Result<NewPurchase, ApiError> {
    let quote: Quote =
        pricing::quote(valid.amount, valid.currency, rates, markup).map_err(|e| match e {
            pricing::PricingError::NoRate(_) => {
                ApiError::new(ErrorCode::ServiceUnavailable, format!("{e}; retry later"))
            }
            other => ApiError::param(
                ErrorCode::InvalidParameter,
                "currencyAmount",
                other.to_string(),
            ),
        })?;
    let random = |prefix: &str| {
        cobro_domain::keys::new_id(prefix).map_err(|e| ApiError::internal("id generation", e))
    };
    let sandbox = buyer.environment == Environment::Dev;
    let id = random("tx")?.replacen('_', "-", 1);
    let ledger_entry_id = if sandbox {
        format!("le-dev-{}", uuid::Uuid::new_v4())
    } else {
        random("le")?
    };
    let record = PurchaseRecord {
        id,
        org_id: buyer.org_id.to_string(),
        environment: buyer.environment,
        idempotency_key: valid.idempotency_key.clone(),
        request_hash: valid.request_hash.clone(),
        status: if sandbox {
            PurchaseStatus::Success
        } else {
            PurchaseStatus::Pending
        },
        api_public_key: buyer.api_public_key.to_string(),
        customer_id: buyer.customer_id.to_string(),
        sku_id: valid.sku.id.clone(),
        sku_name: valid.sku.name.clone(),
        carrier_name: valid.sku.carrier_name.clone(),
        sku_reference: valid.reference.clone(),
        amount: quote.amount,
        currency: quote.currency,
        chain: valid.chain.clone(),
        token: valid.token.clone(),
        wallet_address: valid.wallet_address.clone(),
        fx_rate: quote.fx_rate.normalize().to_string(),
        base: quote.base,
        markup: quote.markup,
        total: quote.total,
        org_markup: valid.org_markup.clone(),
        ledger_entry_id,
        sandbox,
        file_number: sandbox.then(|| cobro_carriers::SandboxCarrier::file_number(now)),
        error_message: None,
        created_at: now,
        updated_at: now,
        confirmed_at: sandbox.then_some(now),
    };
    let events = if sandbox {
        vec![event("sku-purchase.completed", &record)?]
    } else {
        Vec::new()
    };
    Ok(NewPurchase { record, events })
}

/// Parses a stored markup rule into the pricing shape.
pub fn markup_from(rule: Option<cobro_store::MarkupRule>) -> Result<Markup, ApiError> {
    match rule {
        None => Ok(Markup::default()),
        Some(r) => Ok(Markup {
            percent: Decimal::from_str_exact(&r.percent)
                .map_err(|e| ApiError::internal("stored markup percent", e))?,
            fixed: r.fixed,
        }),
    }
}

type Job = (NewPurchase, oneshot::Sender<StoreResult<PurchaseResult>>);

/// Stores one batch and answers each of its callers.
async fn write_batch(
    store: &dyn Store,
    wake: &tokio::sync::Notify,
    jobs: Vec<Job>,
    permit: tokio::sync::OwnedSemaphorePermit,
) {
    let (batch, replies): (Vec<NewPurchase>, Vec<_>) = jobs.into_iter().unzip();
    let written = store.create_purchases_unsynced(&batch).await;
    // The next batch can start while this one waits for its flush.
    drop(permit);
    let written = match written {
        Ok(results) => store.sync().await.map(|()| results),
        Err(e) => Err(e),
    };
    match written {
        Ok(results) => {
            // The dispatcher has something to deliver only if a created purchase wrote events
            // (the sandbox's `completed`; production purchases write theirs when they end).
            if batch
                .iter()
                .zip(&results)
                .any(|(p, r)| !p.events.is_empty() && matches!(r, PurchaseResult::Created(_)))
            {
                wake.notify_one();
            }
            for (reply, result) in replies.into_iter().zip(results) {
                let _ = reply.send(Ok(result));
            }
        }
        Err(e) => {
            let msg = e.to_string();
            for reply in replies {
                let _ = reply.send(Err(StoreError::Database(msg.clone())));
            }
        }
    }
}

/// Groups concurrent purchases into shared commits.
#[derive(Debug, Clone)]
pub struct PurchaseWriter {
    tx: mpsc::Sender<Job>,
}

impl PurchaseWriter {
    /// Starts the writer task on the current runtime. It ends when every sender is dropped.
    /// `wake` is notified after every commit that created purchases (their events are in
    /// the outbox, for the webhook dispatcher).
    pub fn start(
        store: Arc<dyn Store>,
        max_batch: usize,
        wake: Arc<tokio::sync::Notify>,
    ) -> PurchaseWriter {
        let (tx, mut rx) = mpsc::channel::<Job>(max_batch.max(1) * 8);
        // One batch is written at a time, and the next is formed only when it is committed,
        // so under load each batch takes everything that queued meanwhile. Its durability
        // wait (`Store::sync`) overlaps the next batch. Measured on PostgreSQL: two batches
        // written at once made smaller batches and lost about 5 % (docs/BENCHMARKS.md).
        let writing = Arc::new(tokio::sync::Semaphore::new(1));
        tokio::spawn(async move {
            loop {
                let Ok(permit) = writing.clone().acquire_owned().await else {
                    return;
                };
                let mut jobs: Vec<Job> = Vec::with_capacity(max_batch);
                if rx.recv_many(&mut jobs, max_batch.max(1)).await == 0 {
                    return;
                }
                let (store, wake) = (store.clone(), wake.clone());
                tokio::spawn(async move {
                    write_batch(&*store, &wake, jobs, permit).await;
                });
            }
        });
        PurchaseWriter { tx }
    }

    /// Stores one purchase (possibly together with others) and returns its outcome.
    pub async fn create(&self, purchase: NewPurchase) -> StoreResult<PurchaseResult> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((purchase, reply))
            .await
            .map_err(|_| StoreError::Database("the purchase writer has stopped".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Database("the purchase writer dropped a purchase".into()))?
    }
}
