//! The storage side of webhooks: endpoints, the routing of outbox events to endpoints, and
//! deliveries with their attempt log.
//!
//! The flow:
//! 1. a state change writes its event to `outbox_events` in its own transaction (purchases)
//!    and, in the same transaction, routes it: one pending delivery, due at once, per
//!    matching endpoint (same organisation and environment, enabled, event type in its
//!    filter, created no later than the event). An endpoint created later never receives
//!    the event; one disabled or deleted in between is skipped when claiming;
//! 3. [`WebhookStore::claim_deliveries`] leases due deliveries to one dispatcher (the lease is
//!    the delivery's `next_attempt_at` pushed into the future, so a crashed dispatcher's
//!    deliveries come due again by themselves);
//! 4. [`WebhookStore::record_deliveries`] appends each attempt to the log and moves the
//!    delivery on (delivered, retry later, failed for good) and disables an endpoint that
//!    answered 410, in one transaction per batch.

use async_trait::async_trait;
use cobro_types::{Environment, Timestamp};

use crate::StoreResult;

/// The event filter meaning "every event type".
pub const ALL_EVENTS: &str = "*";

/// A webhook endpoint of one organisation and environment.
#[derive(Clone, PartialEq, Eq)]
pub struct WebhookEndpoint {
    /// `we_…`.
    pub id: String,
    pub org_id: String,
    pub environment: Environment,
    pub url: String,
    pub description: Option<String>,
    /// Event types delivered; `["*"]` means all.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Why the endpoint was disabled, when the server disabled it (a 410 answer).
    pub disabled_reason: Option<String>,
    /// `whsec_<base64>`: signs every delivery.
    pub secret: String,
    /// The secret before the last rotation, still signing until `previous_secret_until`.
    pub previous_secret: Option<String>,
    pub previous_secret_until: Option<Timestamp>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

impl std::fmt::Debug for WebhookEndpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookEndpoint")
            .field("id", &self.id)
            .field("org_id", &self.org_id)
            .field("environment", &self.environment)
            .field("url", &self.url)
            .field("events", &self.events)
            .field("enabled", &self.enabled)
            .field("secret", &"<redacted>")
            .finish()
    }
}

impl WebhookEndpoint {
    /// Whether this endpoint wants events of type `kind`.
    pub fn wants(&self, kind: &str) -> bool {
        self.events.iter().any(|e| e == ALL_EVENTS || e == kind)
    }

    /// The secrets that sign a delivery made at `now`: the current one, then the previous
    /// one while its overlap lasts.
    pub fn signing_secrets(&self, now: Timestamp) -> Vec<&str> {
        let mut out = vec![self.secret.as_str()];
        if let (Some(prev), Some(until)) = (&self.previous_secret, self.previous_secret_until)
            && until > now
        {
            out.push(prev.as_str());
        }
        out
    }

    /// The filter as stored: `*` or `,type,type,` (so a `LIKE '%,type,%'` matches exactly).
    pub fn events_column(&self) -> String {
        if self.events.iter().any(|e| e == ALL_EVENTS) || self.events.is_empty() {
            ALL_EVENTS.to_string()
        } else {
            format!(",{},", self.events.join(","))
        }
    }

    /// The filter from its stored form.
    pub fn events_from_column(col: &str) -> Vec<String> {
        if col == ALL_EVENTS {
            vec![ALL_EVENTS.to_string()]
        } else {
            col.split(',')
                .filter(|s| !s.is_empty())
                .map(str::to_string)
                .collect()
        }
    }
}

/// An event from the outbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EventRecord {
    pub id: String,
    pub org_id: String,
    pub environment: Environment,
    /// e.g. `sku-purchase.completed`.
    pub kind: String,
    pub purchase_id: Option<String>,
    /// The exact body delivered to endpoints.
    pub payload: String,
    pub created_at: Timestamp,
}

/// Where a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryStatus {
    /// Waiting for its next attempt (or being attempted under a lease).
    Pending,
    /// The endpoint answered 2xx.
    Delivered,
    /// Every scheduled attempt failed, or the endpoint answered 410.
    Failed,
    /// The endpoint was deleted before the delivery succeeded.
    Cancelled,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Delivered => "delivered",
            DeliveryStatus::Failed => "failed",
            DeliveryStatus::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<DeliveryStatus> {
        Some(match s {
            "pending" => DeliveryStatus::Pending,
            "delivered" => DeliveryStatus::Delivered,
            "failed" => DeliveryStatus::Failed,
            "cancelled" => DeliveryStatus::Cancelled,
            _ => return None,
        })
    }
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryRecord {
    pub id: i64,
    pub event_id: String,
    pub endpoint_id: String,
    pub status: DeliveryStatus,
    /// Attempts made (or started) so far.
    pub attempts: u32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<Timestamp>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub finished_at: Option<Timestamp>,
}

/// One attempt to deliver, as logged. Never edited.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRecord {
    pub delivery_id: i64,
    pub event_id: String,
    pub endpoint_id: String,
    /// 1 for the first attempt of the delivery.
    pub attempt: u32,
    pub attempted_at: Timestamp,
    /// The HTTP status, when an answer came.
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    /// What went wrong (connection refused, timeout, non-2xx), when something did.
    pub error: Option<String>,
}

/// A delivery leased to a dispatcher, with what it needs to send it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClaimedDelivery {
    pub delivery_id: i64,
    /// This attempt's number (1 on the first).
    pub attempt: u32,
    pub event: EventRecord,
    pub endpoint: WebhookEndpoint,
}

/// What an attempt means for its delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeliveryVerdict {
    Delivered,
    /// Try again at this time.
    Retry {
        next_attempt_at: Timestamp,
    },
    /// No more attempts (the schedule is exhausted).
    Failed,
    /// The endpoint answered 410 Gone: fail the delivery and disable the endpoint.
    DisableEndpoint,
}

/// The result of one attempt, to record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeliveryResult {
    /// The dispatcher holding the lease; a dispatcher that lost it only logs the attempt.
    pub owner: String,
    pub attempt: AttemptRecord,
    pub verdict: DeliveryVerdict,
}

/// Filters of the event list.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    pub kind: Option<String>,
    pub purchase_id: Option<String>,
}

/// The delivery queue at a glance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WebhookBacklog {
    /// Deliveries not yet delivered, failed or cancelled.
    pub pending: u64,
    /// When the oldest pending delivery was created.
    pub oldest_pending: Option<Timestamp>,
}

/// Webhook storage; every method is one atomic operation.
#[async_trait]
pub trait WebhookStore: Send + Sync {
    /// Stores a new endpoint (`NotFound` for an unknown organisation).
    async fn create_webhook_endpoint(&self, e: &WebhookEndpoint) -> StoreResult<()>;

    /// A live (not deleted) endpoint of this organisation and environment.
    async fn get_webhook_endpoint(
        &self,
        org_id: &str,
        env: Environment,
        id: &str,
    ) -> StoreResult<Option<WebhookEndpoint>>;

    /// The live endpoints of this organisation and environment, oldest first.
    async fn list_webhook_endpoints(
        &self,
        org_id: &str,
        env: Environment,
    ) -> StoreResult<Vec<WebhookEndpoint>>;

    /// Replaces the mutable fields (url, description, events, enabled, disabled reason,
    /// secrets, updated_at) of a live endpoint. `false` when there is no such endpoint.
    async fn update_webhook_endpoint(&self, e: &WebhookEndpoint) -> StoreResult<bool>;

    /// Deletes an endpoint and cancels its pending deliveries (its attempt log stays).
    /// `false` when there is no such live endpoint.
    async fn delete_webhook_endpoint(
        &self,
        org_id: &str,
        env: Environment,
        id: &str,
        at: Timestamp,
    ) -> StoreResult<bool>;

    /// Leases up to `limit` due deliveries of enabled endpoints (at most `per_endpoint` per
    /// endpoint) to `owner` until `now + lease_ms`, counting an attempt on each.
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
        per_endpoint: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>>;

    /// Logs every attempt and applies each verdict whose lease `owner` still holds, in one
    /// transaction. One answer per input: whether the verdict was applied.
    async fn record_deliveries(&self, results: &[DeliveryResult]) -> StoreResult<Vec<bool>>;

    /// The events of this organisation and environment, newest first, and how many match.
    async fn list_events(
        &self,
        org_id: &str,
        env: Environment,
        filter: &EventFilter,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<EventRecord>, u64)>;

    async fn get_event(
        &self,
        org_id: &str,
        env: Environment,
        id: &str,
    ) -> StoreResult<Option<EventRecord>>;

    /// An event's deliveries (oldest first) and its attempt log (in order).
    async fn event_deliveries(
        &self,
        event_id: &str,
    ) -> StoreResult<(Vec<DeliveryRecord>, Vec<AttemptRecord>)>;

    /// Queues a new delivery of an event, due at `now`, to `endpoint_id` or else to every
    /// enabled endpoint whose filter matches. Returns the new deliveries.
    async fn redeliver_event(
        &self,
        event: &EventRecord,
        endpoint_id: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Vec<DeliveryRecord>>;

    /// The delivery queue at a glance.
    async fn webhook_backlog(&self) -> StoreResult<WebhookBacklog>;
}
