//! The fulfilment worker: takes production purchases to the carrier and records the outcome.
//!
//! Each round it claims due jobs (a lease of `carrier.lease_ms`; the purchase becomes
//! `PROCESSING`) and works them concurrently:
//!
//! * first attempt: submit the recharge, with the purchase id as the carrier-side reference;
//! * any later attempt: **ask the carrier for the status first**, and resubmit only when the
//!   carrier says it never received the reference. A crash, a timeout or a lost answer can
//!   therefore never cause a second fulfilment (and the carrier deduplicates by reference too).
//!
//! Outcomes: success → `SUCCESS` with the receipt and a `sku-purchase.completed` event; a
//! definitive refusal → `FAILED` with the reason, a reversing `refund` ledger entry and
//! `sku-purchase.failed` + `sku-purchase.refunded` events, all in one transaction; anything
//! else (pending, unavailable, unknown) → another attempt after an exponential backoff
//! (`carrier.retry_base_ms` doubling up to `carrier.retry_max_ms`). A purchase still open after
//! `carrier.flag_after_attempts` attempts is flagged (metric and log), and keeps being retried:
//! nothing is ever silently dropped.

use std::{sync::Arc, time::Duration};

use cobro_carriers::{Carrier, CarrierRequest, Outcome};
use cobro_store::{ClaimedJob, FinishPurchase, PurchaseRecord, Store, StoreError};
use cobro_types::{PurchaseStatus, Timestamp};
use tokio::sync::watch;

use crate::{config::CarrierConfig, purchases, telemetry::Metrics};

/// Works the fulfilment queue of one process.
#[derive(Debug, Clone)]
pub struct FulfilmentWorker {
    store: Arc<dyn Store>,
    carrier: Arc<dyn Carrier>,
    owner: String,
    cfg: CarrierConfig,
    metrics: Arc<Metrics>,
    wake: Arc<tokio::sync::Notify>,
}

/// The delay before attempt `attempt + 1`.
pub fn backoff(cfg: &CarrierConfig, attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(20);
    let ms = cfg
        .retry_base_ms
        .saturating_mul(1u64 << exp)
        .min(cfg.retry_max_ms);
    Duration::from_millis(ms)
}

impl FulfilmentWorker {
    pub fn new(
        store: Arc<dyn Store>,
        carrier: Arc<dyn Carrier>,
        cfg: CarrierConfig,
        metrics: Arc<Metrics>,
        wake: Arc<tokio::sync::Notify>,
    ) -> Self {
        let suffix = cobro_domain::keys::random_base62(8).unwrap_or_else(|_| "0".into());
        let owner = format!("worker-{}-{suffix}", std::process::id());
        FulfilmentWorker {
            store,
            carrier,
            owner,
            cfg,
            metrics,
            wake,
        }
    }

    /// One round: claims due jobs and works them. Returns how many were worked.
    pub async fn run_once(&self) -> Result<usize, StoreError> {
        let now = Timestamp::now();
        let lease_ms = i64::try_from(self.cfg.lease_ms).unwrap_or(i64::MAX);
        let jobs = self
            .store
            .claim_fulfilment_jobs(&self.owner, now, lease_ms, self.cfg.batch)
            .await?;
        let n = jobs.len();
        // The carrier calls run concurrently; the round's endings are written in one commit.
        let decisions = futures::future::join_all(jobs.into_iter().map(|job| self.work(job))).await;
        let mut finishes = Vec::new();
        for decision in decisions {
            if let Some(f) = decision? {
                finishes.push(f);
            }
        }
        if !finishes.is_empty() {
            let done = self.store.finish_purchases(&finishes).await?;
            if done.iter().any(|d| *d) {
                self.wake.notify_one();
            }
            for (f, done) in finishes.iter().zip(done) {
                if done {
                    tracing::info!(purchase = %f.purchase_id, status = f.status.as_str(), "purchase finished");
                } else {
                    tracing::warn!(purchase = %f.purchase_id, "lease lost before finishing; another worker owns it now");
                }
            }
        }
        Ok(n)
    }

    /// Runs rounds until `stop` turns true; sleeps `poll_interval_ms` when there is no work,
    /// and `linger_ms` after a round that was not full.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let idle = Duration::from_millis(self.cfg.poll_interval_ms.max(10));
        // The backlog gauges cost a count of the queue: at most once a second while busy.
        let mut gauged: Option<std::time::Instant> = None;
        loop {
            if *stop.borrow() {
                return;
            }
            let worked = match self.run_once().await {
                Ok(n) => n,
                Err(e) => {
                    tracing::warn!(error = %e, "fulfilment round failed; retrying");
                    0
                }
            };
            let gauge_due =
                worked == 0 || gauged.is_none_or(|t| t.elapsed() >= Duration::from_secs(1));
            if gauge_due && let Ok(b) = self.store.fulfilment_backlog().await {
                gauged = Some(std::time::Instant::now());
                self.metrics
                    .fulfilment_open
                    .set(i64::try_from(b.open).unwrap_or(i64::MAX));
                self.metrics
                    .fulfilment_flagged
                    .set(i64::try_from(b.flagged).unwrap_or(i64::MAX));
            }
            let pause = if worked == 0 {
                idle
            } else if worked < usize::try_from(self.cfg.batch).unwrap_or(usize::MAX) {
                Duration::from_millis(self.cfg.linger_ms)
            } else {
                Duration::ZERO
            };
            if !pause.is_zero() {
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        }
    }

    /// Asks the carrier about one job. Returns how the purchase ends, or `None` when it was
    /// rescheduled for another attempt.
    async fn work(&self, job: ClaimedJob) -> Result<Option<FinishPurchase>, StoreError> {
        let p = &job.purchase;
        let req = CarrierRequest {
            reference: p.id.clone(),
            sku_id: p.sku_id.clone(),
            account: p.sku_reference.clone(),
            amount: p.amount,
            currency: p.currency,
        };
        let outcome = if job.attempt <= 1 {
            self.carrier.purchase(&req).await
        } else {
            // A previous attempt may have reached the carrier: never resubmit blindly.
            match self.carrier.status(&p.id).await {
                Outcome::NotFound => self.carrier.purchase(&req).await,
                known => known,
            }
        };
        Metrics::count(&self.metrics.fulfilment_outcomes, outcome_label(&outcome));
        let now = Timestamp::now();
        let msg = match outcome {
            Outcome::Success { file_number } => {
                return self
                    .ending(p, PurchaseStatus::Success, Some(file_number), None, now)
                    .map(Some);
            }
            Outcome::Failed { code, message } => {
                let reason = Some(format!("{code}: {message}"));
                return self
                    .ending(p, PurchaseStatus::Failed, None, reason, now)
                    .map(Some);
            }
            Outcome::Pending => "the carrier is still processing".to_string(),
            Outcome::Retry { detail } => format!("carrier unavailable: {detail}"),
            Outcome::Unknown { detail } => format!("outcome unknown: {detail}"),
            Outcome::NotFound => "the carrier does not know the purchase yet".to_string(),
        };
        self.retry(&job, &msg, now).await.map(|()| None)
    }

    /// How a purchase ends: its final state, the refund for a failed real purchase, and the
    /// events, built from the final record.
    fn ending(
        &self,
        p: &PurchaseRecord,
        status: PurchaseStatus,
        file_number: Option<String>,
        error_message: Option<String>,
        at: Timestamp,
    ) -> Result<FinishPurchase, StoreError> {
        let mut fin = p.clone();
        fin.status = status;
        fin.file_number = file_number.clone();
        fin.error_message = error_message.clone();
        fin.updated_at = at;
        fin.confirmed_at = (status == PurchaseStatus::Success).then_some(at);
        let kinds: &[&str] = if status == PurchaseStatus::Success {
            &["sku-purchase.completed"]
        } else {
            &["sku-purchase.failed", "sku-purchase.refunded"]
        };
        let mut events = Vec::with_capacity(kinds.len());
        for kind in kinds {
            events.push(purchases::event(kind, &fin).map_err(|e| StoreError::Rejected(e.message))?);
        }
        let refund_entry_id = if status == PurchaseStatus::Failed && !p.sandbox {
            Some(
                cobro_domain::keys::new_id("le")
                    .map_err(|e| StoreError::Rejected(e.to_string()))?,
            )
        } else {
            None
        };
        Ok(FinishPurchase {
            purchase_id: p.id.clone(),
            owner: self.owner.clone(),
            status,
            file_number,
            error_message,
            at,
            refund_entry_id,
            events,
        })
    }

    async fn retry(&self, job: &ClaimedJob, error: &str, now: Timestamp) -> Result<(), StoreError> {
        let delay = backoff(&self.cfg, job.attempt);
        let next = Timestamp::from_unix_millis(
            now.unix_millis()
                .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
        );
        let flag = job.attempt >= self.cfg.flag_after_attempts;
        if flag {
            tracing::warn!(purchase = %job.purchase.id, attempts = job.attempt, error, "purchase is stuck; flagged, still retrying");
        }
        self.store
            .retry_fulfilment(
                &job.purchase.id,
                &self.owner,
                next,
                error,
                flag.then_some(now),
            )
            .await?;
        Ok(())
    }
}

fn outcome_label(o: &Outcome) -> &'static str {
    match o {
        Outcome::Success { .. } => "success",
        Outcome::Failed { .. } => "failed",
        Outcome::Pending => "pending",
        Outcome::Retry { .. } => "retry",
        Outcome::Unknown { .. } => "unknown",
        Outcome::NotFound => "not_found",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_and_is_capped() {
        let cfg = CarrierConfig {
            retry_base_ms: 500,
            retry_max_ms: 8_000,
            ..CarrierConfig::default()
        };
        let ms: Vec<u128> = (1..=7).map(|a| backoff(&cfg, a).as_millis()).collect();
        assert_eq!(ms, [500, 1_000, 2_000, 4_000, 8_000, 8_000, 8_000]);
        assert_eq!(backoff(&cfg, u32::MAX).as_millis(), 8_000);
    }
}
