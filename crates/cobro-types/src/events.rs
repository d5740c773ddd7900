//! Webhook endpoints and events on the wire: `/v1/webhook-endpoints` and `/v1/events`.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::{Environment, Timestamp};

/// The event types cobro emits.
pub const EVENT_TYPES: [&str; 3] = [
    "sku-purchase.completed",
    "sku-purchase.failed",
    "sku-purchase.refunded",
];

/// A webhook endpoint. `secret` is present only in the answers of create and rotate-secret.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebhookEndpointView {
    /// `we_…`.
    pub id: String,
    pub url: String,
    #[serde(default)]
    pub description: Option<String>,
    /// Event types delivered; `["*"]` means all.
    pub events: Vec<String>,
    pub enabled: bool,
    /// Why the server disabled the endpoint (it answered 410), when it did.
    #[serde(default)]
    pub disabled_reason: Option<String>,
    #[schema(value_type = String)]
    pub environment: Environment,
    /// `whsec_…`: shown once, when created or rotated.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Until when the previous secret also signs deliveries (after a rotation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>)]
    pub previous_secret_expires_at: Option<Timestamp>,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[schema(value_type = String)]
    pub updated_at: Timestamp,
}

/// The body of `POST /v1/webhook-endpoints`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateWebhookEndpoint {
    /// `https://…` (or `http://…`); private and loopback hosts are refused unless the server
    /// allows them.
    pub url: String,
    /// Event types to deliver (default: all, `["*"]`).
    #[serde(default)]
    pub events: Option<Vec<String>>,
    #[serde(default)]
    pub description: Option<String>,
    /// Default `true`.
    #[serde(default)]
    pub enabled: Option<bool>,
}

/// The body of `PATCH /v1/webhook-endpoints/{id}`: only the fields present change.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateWebhookEndpoint {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub events: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// `true` re-enables an endpoint the server disabled, and clears `disabledReason`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub enabled: Option<bool>,
}

/// The answer of `DELETE /v1/webhook-endpoints/{id}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletedObject {
    pub id: String,
    pub deleted: bool,
}

/// An event, as listed and as delivered (the delivery body is `{id, type, createdAt, data}`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventView {
    /// `evt_…`; also the `webhook-id` of its deliveries.
    pub id: String,
    #[serde(rename = "type")]
    pub kind: String,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[serde(default)]
    pub purchase_id: Option<String>,
    /// The purchase (`Transaction`) as it was when the event happened.
    pub data: serde_json::Value,
}

/// One event's delivery to one endpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryView {
    /// `dlv_…`.
    pub id: String,
    pub endpoint_id: String,
    /// `pending`, `delivered`, `failed` or `cancelled`.
    pub status: String,
    pub attempts: u32,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub next_attempt_at: Option<Timestamp>,
    #[serde(default)]
    pub last_status_code: Option<u16>,
    #[serde(default)]
    pub last_error: Option<String>,
    #[schema(value_type = String)]
    pub created_at: Timestamp,
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    pub finished_at: Option<Timestamp>,
}

/// One delivery attempt, as logged.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptView {
    pub delivery_id: String,
    pub endpoint_id: String,
    pub attempt: u32,
    #[schema(value_type = String)]
    pub attempted_at: Timestamp,
    #[serde(default)]
    pub status_code: Option<u16>,
    pub latency_ms: u64,
    #[serde(default)]
    pub error: Option<String>,
}

/// `GET /v1/events/{id}`: the event with its deliveries and attempt log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct EventDetail {
    #[serde(flatten)]
    pub event: EventView,
    pub deliveries: Vec<DeliveryView>,
    pub attempts: Vec<AttemptView>,
}

/// The body of `POST /v1/events/{id}/redeliver` (optional).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RedeliverInput {
    /// Redeliver to this endpoint only (default: every enabled endpoint whose filter matches).
    #[serde(default)]
    pub endpoint_id: Option<String>,
}

/// The answer of a redelivery: the new deliveries, due at once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Redelivery {
    pub deliveries: Vec<DeliveryView>,
}
