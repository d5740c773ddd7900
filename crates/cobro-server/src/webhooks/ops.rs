//! Endpoint operations shared by the HTTP API and `cobro admin webhook`.

use cobro_store::{Store, webhooks::WebhookEndpoint};
use cobro_types::{
    Environment, ErrorCode, Timestamp,
    events::{CreateWebhookEndpoint, DeletedObject, UpdateWebhookEndpoint, WebhookEndpointView},
};

use super::{check_events, check_url, endpoint_view};
use crate::{config::WebhooksConfig, error::ApiError};

fn new_secret() -> Result<String, ApiError> {
    cobro_types::webhook::new_secret().map_err(|e| ApiError::internal("secret generation", e))
}

fn endpoint_not_found(id: &str) -> ApiError {
    ApiError::new(
        ErrorCode::WebhookEndpointNotFound,
        format!("No webhook endpoint with id '{id}'."),
    )
}

/// A live endpoint of this organisation and environment, or `WEBHOOK_ENDPOINT_NOT_FOUND`.
pub async fn load(
    store: &dyn Store,
    org_id: &str,
    env: Environment,
    id: &str,
) -> Result<WebhookEndpoint, ApiError> {
    store
        .get_webhook_endpoint(org_id, env, id)
        .await?
        .ok_or_else(|| endpoint_not_found(id))
}

fn url_param(cfg: &WebhooksConfig, url: &str) -> Result<String, ApiError> {
    check_url(url, cfg.address_policy())
        .map(|_| url.to_string())
        .map_err(|msg| ApiError::param(ErrorCode::InvalidParameter, "url", msg))
}

fn events_param(events: &[String]) -> Result<Vec<String>, ApiError> {
    check_events(events).map_err(|msg| ApiError::param(ErrorCode::InvalidParameter, "events", msg))
}

fn description_param(d: Option<String>) -> Result<Option<String>, ApiError> {
    match d {
        Some(d) if d.chars().count() > 500 => Err(ApiError::param(
            ErrorCode::InvalidParameter,
            "description",
            "description must be at most 500 characters",
        )),
        Some(d) if d.is_empty() => Ok(None),
        other => Ok(other),
    }
}

/// Registers an endpoint; the answer holds its secret (shown only now).
pub async fn create(
    store: &dyn Store,
    cfg: &WebhooksConfig,
    org_id: &str,
    env: Environment,
    input: CreateWebhookEndpoint,
) -> Result<WebhookEndpointView, ApiError> {
    let url = url_param(cfg, &input.url)?;
    let events = events_param(input.events.as_deref().unwrap_or(&[]))?;
    let description = description_param(input.description)?;
    let existing = store.list_webhook_endpoints(org_id, env).await?;
    if existing.len() >= usize::try_from(cfg.max_endpoints).unwrap_or(16) {
        return Err(ApiError::new(
            ErrorCode::WebhookEndpointLimit,
            format!(
                "This organisation already has {} webhook endpoints in this environment; delete one first.",
                existing.len()
            ),
        ));
    }
    let now = Timestamp::now();
    let endpoint = WebhookEndpoint {
        id: cobro_domain::keys::new_id("we").map_err(|e| ApiError::internal("endpoint id", e))?,
        org_id: org_id.to_string(),
        environment: env,
        url,
        description,
        events,
        enabled: input.enabled.unwrap_or(true),
        disabled_reason: None,
        secret: new_secret()?,
        previous_secret: None,
        previous_secret_until: None,
        created_at: now,
        updated_at: now,
    };
    store.create_webhook_endpoint(&endpoint).await?;
    let mut view = endpoint_view(&endpoint);
    view.secret = Some(endpoint.secret.clone());
    Ok(view)
}

/// The live endpoints of this organisation and environment, oldest first.
pub async fn list(
    store: &dyn Store,
    org_id: &str,
    env: Environment,
) -> Result<Vec<WebhookEndpointView>, ApiError> {
    let all = store.list_webhook_endpoints(org_id, env).await?;
    Ok(all.iter().map(endpoint_view).collect())
}

/// Changes an endpoint's URL, filter, description or enabled flag.
pub async fn update(
    store: &dyn Store,
    cfg: &WebhooksConfig,
    org_id: &str,
    env: Environment,
    id: &str,
    input: UpdateWebhookEndpoint,
) -> Result<WebhookEndpointView, ApiError> {
    let mut e = load(store, org_id, env, id).await?;
    if let Some(url) = &input.url {
        e.url = url_param(cfg, url)?;
    }
    if let Some(events) = &input.events {
        e.events = events_param(events)?;
    }
    if input.description.is_some() {
        e.description = description_param(input.description)?;
    }
    if let Some(enabled) = input.enabled {
        e.enabled = enabled;
        if enabled {
            e.disabled_reason = None;
        }
    }
    e.updated_at = Timestamp::now();
    if !store.update_webhook_endpoint(&e).await? {
        return Err(endpoint_not_found(id));
    }
    Ok(endpoint_view(&e))
}

/// Deletes an endpoint; its pending deliveries are cancelled, its attempt log stays.
pub async fn delete(
    store: &dyn Store,
    org_id: &str,
    env: Environment,
    id: &str,
) -> Result<DeletedObject, ApiError> {
    if !store
        .delete_webhook_endpoint(org_id, env, id, Timestamp::now())
        .await?
    {
        return Err(endpoint_not_found(id));
    }
    Ok(DeletedObject {
        id: id.to_string(),
        deleted: true,
    })
}

/// Replaces the secret. The previous one keeps signing (a second signature in each header)
/// for `webhooks.rotation_overlap_secs`, so receivers can switch without missing a delivery.
pub async fn rotate(
    store: &dyn Store,
    cfg: &WebhooksConfig,
    org_id: &str,
    env: Environment,
    id: &str,
) -> Result<WebhookEndpointView, ApiError> {
    let mut e = load(store, org_id, env, id).await?;
    let now = Timestamp::now();
    let overlap_ms =
        i64::try_from(cfg.rotation_overlap_secs.saturating_mul(1000)).unwrap_or(i64::MAX);
    let until = Timestamp::from_unix_millis(now.unix_millis().saturating_add(overlap_ms));
    e.previous_secret = Some(std::mem::replace(&mut e.secret, new_secret()?));
    e.previous_secret_until = Some(until);
    e.updated_at = now;
    if !store.update_webhook_endpoint(&e).await? {
        return Err(endpoint_not_found(id));
    }
    let mut view = endpoint_view(&e);
    view.secret = Some(e.secret.clone());
    view.previous_secret_expires_at = Some(until);
    Ok(view)
}
