//! The webhook dispatcher: delivers outbox events to endpoints, at least once.
//!
//! Events are routed where they are written: the transaction that writes an outbox event also
//! writes one pending delivery per matching endpoint (`cobro_store::webhooks`). One loop per
//! process then:
//! 1. wakes on this process's own writes of events, or every `poll_interval_ms`;
//! 2. **claims** due deliveries with a lease (`lease_ms`), at most `max_in_flight` in flight in
//!    the process and `max_in_flight_per_endpoint` per endpoint (claimed extras wait in memory
//!    for a slot of their endpoint);
//! 3. **send** each: `POST` of the event body with `chipi-signature`, `webhook-id`,
//!    `webhook-timestamp` and `webhook-signature`, a `timeout_ms` limit, no redirects;
//! 4. **record** the finished attempts in one transaction per batch: 2xx delivered; 410 fails
//!    the delivery and disables the endpoint; anything else (other statuses, timeouts,
//!    connection errors) is retried after the next delay of `retry_schedule_ms`, or later when
//!    the endpoint's `Retry-After` asks for more (capped at `max_retry_after_secs`); after the
//!    last delay the delivery fails for good (and can still be redelivered on request).
//!
//! A dispatcher that dies mid-delivery loses nothing: its leased deliveries come due again
//! when the lease ends, and are sent again (at-least-once; receivers deduplicate on
//! `webhook-id`, which is the event id and never changes).

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::{Duration, Instant},
};

use cobro_store::{
    Store,
    webhooks::{AttemptRecord, ClaimedDelivery, DeliveryResult, DeliveryVerdict},
};
use cobro_types::{Timestamp, webhook};
use futures::{FutureExt, StreamExt, future::BoxFuture, stream::FuturesUnordered};
use reqwest::header::{CONTENT_TYPE, HeaderMap, HeaderValue, RETRY_AFTER, USER_AGENT};
use tokio::sync::{Notify, watch};

use crate::{config::WebhooksConfig, telemetry::Metrics};

/// The most of a response body read (and thrown away) so the connection can be reused.
const MAX_RESPONSE_BYTES: usize = 64 * 1024;

/// Delivers webhooks for one process.
#[derive(Debug, Clone)]
pub struct Dispatcher {
    store: Arc<dyn Store>,
    cfg: WebhooksConfig,
    client: reqwest::Client,
    owner: String,
    metrics: Arc<Metrics>,
    wake: Arc<Notify>,
}

/// The delay before the attempt after failed attempt `attempt` (1-based), or `None` when the
/// schedule is exhausted. `retry_after` (seconds, from the endpoint) can only lengthen it.
pub fn next_delay(
    cfg: &WebhooksConfig,
    attempt: u32,
    retry_after: Option<u64>,
) -> Option<Duration> {
    let scheduled = *cfg.retry_schedule_ms.get(usize::try_from(attempt).ok()?)?;
    let asked = retry_after
        .map(|s| s.min(cfg.max_retry_after_secs).saturating_mul(1000))
        .unwrap_or(0);
    Some(Duration::from_millis(scheduled.max(asked)))
}

/// A `Retry-After` value in seconds: delta-seconds or an HTTP date.
fn parse_retry_after(v: &HeaderValue, now: Timestamp) -> Option<u64> {
    let s = v.to_str().ok()?.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Some(secs);
    }
    let when =
        time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc2822).ok()?;
    let ms = (when.unix_timestamp_nanos() / 1_000_000) as i64 - now.unix_millis();
    Some(u64::try_from(ms.max(0)).unwrap_or(0).div_ceil(1000))
}

impl Dispatcher {
    pub fn new(
        store: Arc<dyn Store>,
        cfg: WebhooksConfig,
        metrics: Arc<Metrics>,
        wake: Arc<Notify>,
    ) -> anyhow::Result<Dispatcher> {
        let mut builder = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .no_proxy()
            .timeout(Duration::from_millis(cfg.timeout_ms))
            .pool_max_idle_per_host(usize::try_from(cfg.max_in_flight_per_endpoint).unwrap_or(16));
        let policy = cfg.address_policy();
        if !policy.private {
            builder = builder.dns_resolver(super::PublicOnlyResolver { policy });
        }
        let client = builder.build()?;
        let suffix = cobro_domain::keys::random_base62(8).unwrap_or_else(|_| "0".into());
        Ok(Dispatcher {
            store,
            client,
            owner: format!("webhooks-{}-{suffix}", std::process::id()),
            cfg,
            metrics,
            wake,
        })
    }

    /// Sends one claimed delivery and judges the outcome.
    async fn attempt(&self, c: ClaimedDelivery) -> DeliveryResult {
        let started = Instant::now();
        let now = Timestamp::now();
        let (code, error, retry_after) = match self.send(&c, now).await {
            Ok((status, _)) if status.is_success() => (Some(status.as_u16()), None, None),
            Ok((status, retry_after)) => (
                Some(status.as_u16()),
                Some(format!("the endpoint answered HTTP {}", status.as_u16())),
                retry_after,
            ),
            Err(e) => (None, Some(e), None),
        };
        let latency = started.elapsed();
        self.metrics
            .webhook_attempt_duration
            .observe(latency.as_secs_f64());
        let verdict = match code {
            Some(200..=299) => DeliveryVerdict::Delivered,
            Some(410) => DeliveryVerdict::DisableEndpoint,
            _ => match next_delay(&self.cfg, c.attempt, retry_after) {
                Some(delay) => DeliveryVerdict::Retry {
                    next_attempt_at: Timestamp::from_unix_millis(
                        Timestamp::now()
                            .unix_millis()
                            .saturating_add(i64::try_from(delay.as_millis()).unwrap_or(i64::MAX)),
                    ),
                },
                None => DeliveryVerdict::Failed,
            },
        };
        let label = match verdict {
            DeliveryVerdict::Delivered => "delivered",
            DeliveryVerdict::Retry { .. } => "retry",
            DeliveryVerdict::Failed => "failed",
            DeliveryVerdict::DisableEndpoint => "gone",
        };
        Metrics::count(&self.metrics.webhook_deliveries, label);
        let latency_ms = u64::try_from(latency.as_millis()).unwrap_or(u64::MAX);
        self.result(&c, now, code, latency_ms, error, verdict)
    }

    /// The record of one attempt at `c` and what it means for the delivery.
    fn result(
        &self,
        c: &ClaimedDelivery,
        attempted_at: Timestamp,
        status_code: Option<u16>,
        latency_ms: u64,
        error: Option<String>,
        verdict: DeliveryVerdict,
    ) -> DeliveryResult {
        DeliveryResult {
            owner: self.owner.clone(),
            attempt: AttemptRecord {
                delivery_id: c.delivery_id,
                event_id: c.event.id.clone(),
                endpoint_id: c.endpoint.id.clone(),
                attempt: c.attempt,
                attempted_at,
                status_code,
                latency_ms,
                error,
            },
            verdict,
        }
    }

    /// What to record if an attempt's task dies (a bug): logged as an internal error and
    /// tried again when the lease would have ended.
    fn lost_attempt(&self, c: &ClaimedDelivery) -> DeliveryResult {
        let now = Timestamp::now();
        let lease = i64::try_from(self.cfg.lease_ms).unwrap_or(i64::MAX);
        let verdict = DeliveryVerdict::Retry {
            next_attempt_at: Timestamp::from_unix_millis(now.unix_millis().saturating_add(lease)),
        };
        let error = Some("internal error in the dispatcher; will retry".to_string());
        self.result(c, now, None, 0, error, verdict)
    }

    /// The HTTP exchange: the status and any `Retry-After`, or why there was no answer.
    async fn send(
        &self,
        c: &ClaimedDelivery,
        now: Timestamp,
    ) -> Result<(reqwest::StatusCode, Option<u64>), String> {
        super::check_url(&c.endpoint.url, self.cfg.address_policy())?;
        let secs = now.unix_millis().div_euclid(1000);
        let body = c.event.payload.as_bytes();
        let (chipi, standard) =
            webhook::sign(&c.endpoint.signing_secrets(now), &c.event.id, secs, body)
                .map_err(|e| format!("cannot sign: {e}"))?;
        let mut headers = HeaderMap::new();
        let mut put = |name: &'static str, value: &str| -> Result<(), String> {
            let v = HeaderValue::from_str(value).map_err(|e| format!("bad header {name}: {e}"))?;
            headers.insert(name, v);
            Ok(())
        };
        put(webhook::CHIPI_SIGNATURE, &chipi)?;
        put(webhook::WEBHOOK_ID, &c.event.id)?;
        put(webhook::WEBHOOK_TIMESTAMP, &secs.to_string())?;
        put(webhook::WEBHOOK_SIGNATURE, &standard)?;
        headers.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(USER_AGENT, HeaderValue::from_static("cobro-webhooks/1"));
        let mut resp = self
            .client
            .post(&c.endpoint.url)
            .headers(headers)
            .body(c.event.payload.clone())
            .send()
            .await
            .map_err(|e| describe(&e, self.cfg.timeout_ms))?;
        let status = resp.status();
        let retry_after = resp
            .headers()
            .get(RETRY_AFTER)
            .and_then(|v| parse_retry_after(v, Timestamp::now()));
        // Read a bounded amount of the answer so the connection can be reused.
        let mut read = 0usize;
        while read < MAX_RESPONSE_BYTES {
            match resp.chunk().await {
                Ok(Some(chunk)) => read += chunk.len(),
                _ => break,
            }
        }
        Ok((status, retry_after))
    }

    /// Runs until `stop` turns true. Deliveries in flight at that moment are finished and
    /// recorded (bounded by the attempt timeout); claimed ones not yet started come due again
    /// when their lease ends.
    pub async fn run(self, mut stop: watch::Receiver<bool>) {
        let this = Arc::new(self);
        let mut inflight: FuturesUnordered<BoxFuture<'static, DeliveryResult>> =
            FuturesUnordered::new();
        let mut busy: HashMap<String, u32> = HashMap::new();
        let mut waiting: HashMap<String, VecDeque<ClaimedDelivery>> = HashMap::new();
        let mut waiting_total = 0usize;
        // Finished attempts are recorded by a separate task in batches, so recording never
        // holds up starting the next delivery.
        let (results, mut finished_rx) = tokio::sync::mpsc::unbounded_channel::<DeliveryResult>();
        let recorder = {
            let me = this.clone();
            tokio::spawn(async move {
                let mut batch = Vec::new();
                while finished_rx.recv_many(&mut batch, 512).await > 0 {
                    me.record(&mut batch).await;
                }
            })
        };
        let max = usize::try_from(this.cfg.max_in_flight).unwrap_or(256);
        let per = this.cfg.max_in_flight_per_endpoint;
        let poll = Duration::from_millis(this.cfg.poll_interval_ms);
        let mut last_gauge = Instant::now() - Duration::from_secs(60);

        let start =
            |c: ClaimedDelivery,
             busy: &mut HashMap<String, u32>,
             inflight: &mut FuturesUnordered<BoxFuture<'static, DeliveryResult>>| {
                *busy.entry(c.endpoint.id.clone()).or_default() += 1;
                let me = this.clone();
                // Each attempt runs as its own task, so HTTP exchanges progress while this
                // loop waits on the database.
                let lost = me.lost_attempt(&c);
                let task = tokio::spawn(async move { me.attempt(c).await });
                inflight.push(async move { task.await.unwrap_or(lost) }.boxed());
            };

        // A finished attempt: free its endpoint slot, start what waited for it, record it.
        let complete =
            |r: DeliveryResult,
             busy: &mut HashMap<String, u32>,
             waiting: &mut HashMap<String, VecDeque<ClaimedDelivery>>,
             waiting_total: &mut usize,
             inflight: &mut FuturesUnordered<BoxFuture<'static, DeliveryResult>>| {
                let mut ready = Vec::new();
                finished(&r, busy, waiting, waiting_total, &mut ready);
                for c in ready {
                    start(c, busy, inflight);
                }
                let _ = results.send(r);
            };

        loop {
            let stopping = *stop.borrow();
            let mut progressed = false;
            if !stopping {
                let free = max.saturating_sub(inflight.len() + waiting_total);
                // Claim when a good share of the slots is free, so a busy dispatcher does not
                // run a claim transaction per finished delivery.
                let few_waiting = waiting_total < usize::try_from(per).unwrap_or(16);
                if free > 0 && few_waiting && (free >= max.div_ceil(4) || inflight.is_empty()) {
                    let lease = i64::try_from(this.cfg.lease_ms).unwrap_or(i64::MAX);
                    let limit = u32::try_from(free).unwrap_or(u32::MAX);
                    match this
                        .store
                        .claim_deliveries(&this.owner, Timestamp::now(), lease, limit, per)
                        .await
                    {
                        Ok(claimed) => {
                            progressed |= !claimed.is_empty();
                            for c in claimed {
                                if busy.get(&c.endpoint.id).copied().unwrap_or(0) < per {
                                    start(c, &mut busy, &mut inflight);
                                } else {
                                    waiting_total += 1;
                                    waiting
                                        .entry(c.endpoint.id.clone())
                                        .or_default()
                                        .push_back(c);
                                }
                            }
                        }
                        Err(e) => tracing::warn!(error = %e, "claiming webhook deliveries failed"),
                    }
                }
            }

            // Collect what has finished, without waiting.
            loop {
                let next = inflight.next().now_or_never();
                let Some(Some(r)) = next else { break };
                complete(
                    r,
                    &mut busy,
                    &mut waiting,
                    &mut waiting_total,
                    &mut inflight,
                );
                progressed = true;
            }
            if last_gauge.elapsed() >= Duration::from_secs(1) {
                last_gauge = Instant::now();
                this.update_gauges().await;
            }
            if stopping {
                if inflight.is_empty() {
                    drop(results);
                    recorder.await.ok();
                    return;
                }
                if let Some(r) = inflight.next().await {
                    busy.remove(&r.attempt.endpoint_id);
                    let _ = results.send(r);
                }
                continue;
            }
            if progressed {
                continue;
            }
            let woke = tokio::select! {
                Some(r) = inflight.next(), if !inflight.is_empty() => Some(r),
                _ = this.wake.notified() => None,
                _ = tokio::time::sleep(poll) => None,
                _ = stop.wait_for(|s| *s) => None,
            };
            if let Some(r) = woke {
                complete(
                    r,
                    &mut busy,
                    &mut waiting,
                    &mut waiting_total,
                    &mut inflight,
                );
            }
        }
    }

    /// Records finished attempts, retrying a failed write for up to about 10 s (the attempts
    /// happened and should be logged). If the database stays down the batch is dropped with an
    /// error log: its deliveries are still leased, so they are sent again when the leases end
    /// (at-least-once holds; only those attempts' log lines are lost).
    async fn record(&self, results: &mut Vec<DeliveryResult>) {
        for _ in 0..100 {
            if results.is_empty() {
                return;
            }
            self.record_once(results).await;
        }
        if !results.is_empty() {
            tracing::error!(
                lost = results.len(),
                "could not record webhook attempts; their deliveries will be retried"
            );
            results.clear();
        }
    }

    async fn record_once(&self, results: &mut Vec<DeliveryResult>) {
        match self.store.record_deliveries(results).await {
            Ok(applied) => {
                for (r, ok) in results.iter().zip(applied) {
                    if !ok {
                        tracing::warn!(
                            delivery = r.attempt.delivery_id,
                            "webhook lease lost before recording; attempt logged only"
                        );
                    }
                }
                results.clear();
            }
            Err(e) => {
                tracing::warn!(error = %e, pending = results.len(), "recording webhook attempts failed; will retry");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }

    async fn update_gauges(&self) {
        match self.store.webhook_backlog().await {
            Ok(b) => {
                self.metrics
                    .webhook_queue_pending
                    .set(i64::try_from(b.pending).unwrap_or(i64::MAX));
                let age = b
                    .oldest_pending
                    .map(|t| (Timestamp::now().unix_millis() - t.unix_millis()).max(0) / 1000)
                    .unwrap_or(0);
                self.metrics.webhook_queue_age_seconds.set(age);
            }
            Err(e) => tracing::debug!(error = %e, "webhook backlog unavailable"),
        }
    }
}

/// Frees the finished delivery's endpoint slot and hands over the next delivery waiting for it.
fn finished(
    r: &DeliveryResult,
    busy: &mut HashMap<String, u32>,
    waiting: &mut HashMap<String, VecDeque<ClaimedDelivery>>,
    waiting_total: &mut usize,
    ready: &mut Vec<ClaimedDelivery>,
) {
    let ep = &r.attempt.endpoint_id;
    if let Some(n) = busy.get_mut(ep) {
        *n = n.saturating_sub(1);
        if *n == 0 {
            busy.remove(ep);
        }
    }
    if let Some(queue) = waiting.get_mut(ep) {
        if let Some(next) = queue.pop_front() {
            *waiting_total -= 1;
            ready.push(next);
        }
        if queue.is_empty() {
            waiting.remove(ep);
        }
    }
}

/// A short, safe description of a failed exchange.
fn describe(e: &reqwest::Error, timeout_ms: u64) -> String {
    if e.is_timeout() {
        format!("no answer within {timeout_ms} ms")
    } else if e.is_connect() {
        let mut msg = String::from("could not connect");
        let mut source = std::error::Error::source(e);
        while let Some(s) = source {
            msg = format!("could not connect: {s}");
            source = s.source();
        }
        msg
    } else {
        format!("request failed: {e}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schedule_is_followed_and_retry_after_can_only_lengthen_it() {
        let cfg = WebhooksConfig::default();
        let secs = |a, ra| next_delay(&cfg, a, ra).map(|d| d.as_secs());
        assert_eq!(secs(1, None), Some(5));
        assert_eq!(secs(2, None), Some(300));
        assert_eq!(secs(9, None), Some(24 * 3600));
        assert_eq!(secs(10, None), None, "ten attempts, then failed");
        assert_eq!(secs(1, Some(60)), Some(60));
        assert_eq!(secs(2, Some(60)), Some(300));
        assert_eq!(secs(1, Some(10 * 86_400)), Some(86_400), "capped");
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let now = Timestamp::from_unix_millis(784_111_777_000); // Sun, 06 Nov 1994 08:49:37 GMT
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("120"), now),
            Some(120)
        );
        assert_eq!(
            parse_retry_after(
                &HeaderValue::from_static("Sun, 06 Nov 1994 08:50:37 GMT"),
                now
            ),
            Some(60)
        );
        assert_eq!(
            parse_retry_after(&HeaderValue::from_static("soon"), now),
            None
        );
    }
}
