//! Webhook endpoints and events (secret key only), scoped to the caller's organisation and
//! environment: `/v1/webhook-endpoints[/{id}[/rotate-secret]]`, `/v1/events[/{id}[/redeliver]]`.

use axum::{
    Json,
    body::Bytes,
    extract::{Path, RawQuery, State},
    http::StatusCode,
};
use cobro_domain::catalog::{parse_limit, parse_offset, parse_page, window};
use cobro_store::webhooks::EventFilter;
use cobro_types::{
    ErrorBody, ErrorCode, Paginated, Timestamp,
    events::{
        CreateWebhookEndpoint, DeletedObject, EVENT_TYPES, EventDetail, EventView, RedeliverInput,
        Redelivery, UpdateWebhookEndpoint, WebhookEndpointView,
    },
};

use crate::{
    AppState,
    auth::{Caller, OrgCaller},
    error::ApiError,
    extract::{ApiJson, parse_json, query_pairs},
    webhooks::{attempt_view, delivery_view, endpoint_view, event_view, ops},
};

/// Registers an endpoint. The answer is the only time its secret is shown.
#[utoipa::path(
    post, path = "/v1/webhook-endpoints", tag = "webhooks",
    request_body = CreateWebhookEndpoint,
    responses(
        (status = 201, description = "Created; `secret` is shown only now", body = WebhookEndpointView),
        (status = 400, description = "A field is invalid; `param` names it", body = ErrorBody),
        (status = 409, description = "WEBHOOK_ENDPOINT_LIMIT", body = ErrorBody),
    ),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn create_endpoint(
    OrgCaller(caller): OrgCaller,
    State(app): State<AppState>,
    ApiJson(input): ApiJson<CreateWebhookEndpoint>,
) -> Result<(StatusCode, Json<WebhookEndpointView>), ApiError> {
    let cfg = &app.config.webhooks;
    let view = ops::create(
        app.store.as_ref(),
        cfg,
        caller.org_id(),
        caller.environment(),
        input,
    )
    .await?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// The organisation's endpoints in this environment (secrets are never listed).
#[utoipa::path(
    get, path = "/v1/webhook-endpoints", tag = "webhooks",
    responses((status = 200, body = Paginated<WebhookEndpointView>), (status = 401, body = ErrorBody)),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn list_endpoints(
    OrgCaller(caller): OrgCaller,
    State(app): State<AppState>,
) -> Result<Json<Paginated<WebhookEndpointView>>, ApiError> {
    let all = ops::list(app.store.as_ref(), caller.org_id(), caller.environment()).await?;
    let total = all.len() as u64;
    Ok(Json(Paginated {
        data: all,
        total,
        page: 1,
        limit: total.max(1),
        total_pages: u64::from(total > 0),
    }))
}

#[utoipa::path(
    get, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, body = WebhookEndpointView), (status = 404, description = "WEBHOOK_ENDPOINT_NOT_FOUND", body = ErrorBody)),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn get_endpoint(
    OrgCaller(caller): OrgCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpointView>, ApiError> {
    let e = ops::load(
        app.store.as_ref(),
        caller.org_id(),
        caller.environment(),
        &id,
    )
    .await?;
    Ok(Json(endpoint_view(&e)))
}

/// Changes an endpoint's URL, filter, description or enabled flag.
#[utoipa::path(
    patch, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path)),
    request_body = UpdateWebhookEndpoint,
    responses((status = 200, body = WebhookEndpointView), (status = 400, body = ErrorBody), (status = 404, body = ErrorBody)),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn update_endpoint(
    OrgCaller(caller): OrgCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
    ApiJson(input): ApiJson<UpdateWebhookEndpoint>,
) -> Result<Json<WebhookEndpointView>, ApiError> {
    let cfg = &app.config.webhooks;
    let view = ops::update(
        app.store.as_ref(),
        cfg,
        caller.org_id(),
        caller.environment(),
        &id,
        input,
    )
    .await?;
    Ok(Json(view))
}

/// Deletes an endpoint; its pending deliveries are cancelled, its attempt log stays.
#[utoipa::path(
    delete, path = "/v1/webhook-endpoints/{id}", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, body = DeletedObject), (status = 404, body = ErrorBody)),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn delete_endpoint(
    OrgCaller(caller): OrgCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<DeletedObject>, ApiError> {
    Ok(Json(
        ops::delete(
            app.store.as_ref(),
            caller.org_id(),
            caller.environment(),
            &id,
        )
        .await?,
    ))
}

/// Replaces the secret. The previous one keeps signing (a second signature in each header)
/// for `webhooks.rotation_overlap_secs`, so receivers can switch without missing a delivery.
#[utoipa::path(
    post, path = "/v1/webhook-endpoints/{id}/rotate-secret", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, description = "The new secret, shown only now", body = WebhookEndpointView), (status = 404, body = ErrorBody)),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn rotate_secret(
    OrgCaller(caller): OrgCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<WebhookEndpointView>, ApiError> {
    let cfg = &app.config.webhooks;
    Ok(Json(
        ops::rotate(
            app.store.as_ref(),
            cfg,
            caller.org_id(),
            caller.environment(),
            &id,
        )
        .await?,
    ))
}

/// The organisation's events, newest first: what was (or will be) delivered, for
/// reconciliation. Filters: `type`, `purchaseId`.
#[utoipa::path(
    get, path = "/v1/events", tag = "webhooks",
    params(
        ("type" = Option<String>, Query), ("purchaseId" = Option<String>, Query),
        ("page" = Option<u64>, Query), ("limit" = Option<u64>, Query), ("offset" = Option<u64>, Query)
    ),
    responses((status = 200, body = Paginated<EventView>), (status = 400, body = ErrorBody), (status = 401, body = ErrorBody)),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn list_events(
    OrgCaller(caller): OrgCaller,
    State(app): State<AppState>,
    RawQuery(raw): RawQuery,
) -> Result<Json<Paginated<EventView>>, ApiError> {
    let (mut page, mut limit, mut offset) = (None, None, None);
    let mut filter = EventFilter::default();
    for (k, v) in query_pairs(raw.as_deref())? {
        match (k.as_str(), v.is_empty()) {
            ("page", false) => page = Some(parse_page(&v)?),
            ("limit", false) => limit = Some(parse_limit(&v)?),
            ("offset", false) => offset = Some(parse_offset(&v)?),
            ("type", false) => {
                if !EVENT_TYPES.contains(&v.as_str()) {
                    return Err(ApiError::param(
                        ErrorCode::InvalidParameter,
                        "type",
                        format!("type must be one of {}", EVENT_TYPES.join(", ")),
                    ));
                }
                filter.kind = Some(v);
            }
            ("purchaseId", false) => filter.purchase_id = Some(v),
            _ => {}
        }
    }
    let (offset, limit, page) = window(page, limit, offset);
    let (events, total) = app
        .store
        .list_events(
            caller.org_id(),
            caller.environment(),
            &filter,
            u32::try_from(limit).unwrap_or(100),
            offset,
        )
        .await?;
    Ok(Json(Paginated {
        data: events.iter().map(event_view).collect(),
        total,
        page,
        limit,
        total_pages: total.div_ceil(limit),
    }))
}

async fn load_event(
    app: &AppState,
    caller: &Caller,
    id: &str,
) -> Result<cobro_store::webhooks::EventRecord, ApiError> {
    app.store
        .get_event(caller.org_id(), caller.environment(), id)
        .await?
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::EventNotFound,
                format!("No event with id '{id}'."),
            )
        })
}

/// One event with its deliveries and every attempt (time, status code, latency, error).
#[utoipa::path(
    get, path = "/v1/events/{id}", tag = "webhooks",
    params(("id" = String, Path)),
    responses((status = 200, body = EventDetail), (status = 404, description = "EVENT_NOT_FOUND", body = ErrorBody)),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn get_event(
    OrgCaller(caller): OrgCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<EventDetail>, ApiError> {
    let event = load_event(&app, &caller, &id).await?;
    let (deliveries, attempts) = app.store.event_deliveries(&event.id).await?;
    Ok(Json(EventDetail {
        event: event_view(&event),
        deliveries: deliveries.iter().map(delivery_view).collect(),
        attempts: attempts.iter().map(attempt_view).collect(),
    }))
}

/// Queues the event again, at once: to one endpoint (`endpointId`), or to every enabled
/// endpoint whose filter matches. Receivers see the same `webhook-id`.
#[utoipa::path(
    post, path = "/v1/events/{id}/redeliver", tag = "webhooks",
    params(("id" = String, Path)),
    request_body(content = Option<RedeliverInput>, description = "Optional"),
    responses(
        (status = 202, description = "Queued", body = Redelivery),
        (status = 404, description = "EVENT_NOT_FOUND or WEBHOOK_ENDPOINT_NOT_FOUND", body = ErrorBody),
        (status = 409, description = "WEBHOOK_ENDPOINT_DISABLED", body = ErrorBody),
    ),
    security(("apiKey" = [], "bearer" = []))
)]
pub async fn redeliver_event(
    OrgCaller(caller): OrgCaller,
    State(app): State<AppState>,
    Path(id): Path<String>,
    body: Bytes,
) -> Result<(StatusCode, Json<Redelivery>), ApiError> {
    let input: RedeliverInput = if body.iter().all(u8::is_ascii_whitespace) {
        RedeliverInput::default()
    } else {
        parse_json(&body)?
    };
    let event = load_event(&app, &caller, &id).await?;
    if let Some(ep) = &input.endpoint_id {
        let endpoint = ops::load(
            app.store.as_ref(),
            caller.org_id(),
            caller.environment(),
            ep,
        )
        .await?;
        if !endpoint.enabled {
            return Err(ApiError::param(
                ErrorCode::WebhookEndpointDisabled,
                "endpointId",
                format!("Webhook endpoint '{ep}' is disabled; enable it first."),
            ));
        }
    }
    let deliveries = app
        .store
        .redeliver_event(&event, input.endpoint_id.as_deref(), Timestamp::now())
        .await?;
    app.webhook_wake.notify_one();
    Ok((
        StatusCode::ACCEPTED,
        Json(Redelivery {
            deliveries: deliveries.iter().map(delivery_view).collect(),
        }),
    ))
}
