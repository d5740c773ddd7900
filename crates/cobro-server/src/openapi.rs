//! The OpenAPI 3.1 document, generated from the handlers' annotations and served at
//! `/openapi.json`.

use cobro_types::{
    CreateSkuPurchaseInput, Currency, ErrorBody, ErrorClass, LedgerEntryView, OrgBalance,
    Paginated, Provider, PurchaseStatus, Sku, SkuCategory, Transaction,
};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use cobro_types::events::{
    AttemptView, CreateWebhookEndpoint, DeletedObject, DeliveryView, EventDetail, EventView,
    RedeliverInput, Redelivery, UpdateWebhookEndpoint, WebhookEndpointView,
};

use crate::routes::{catalog, exchange, org, purchases, system, webhooks};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "cobro",
        description = "Bill payments and pay-per-request gateway, wire-compatible with Chipi Pay's Bills API. \
                       Every error has the `ErrorBody` shape; match on its `code`.",
    ),
    paths(
        catalog::list_skus, catalog::get_sku, catalog::check_reference, exchange::usd_amount,
        purchases::create_purchase, purchases::get_purchase, purchases::list_purchases,
        org::balance, org::ledger_entries,
        webhooks::create_endpoint, webhooks::list_endpoints, webhooks::get_endpoint,
        webhooks::update_endpoint, webhooks::delete_endpoint, webhooks::rotate_secret,
        webhooks::list_events, webhooks::get_event, webhooks::redeliver_event,
        system::healthz, system::readyz, system::jwks,
    ),
    components(schemas(
        ErrorBody, ErrorClass, Sku, SkuCategory, Provider, Currency, Paginated<Sku>,
        CreateSkuPurchaseInput, Transaction, PurchaseStatus, OrgBalance, LedgerEntryView,
        WebhookEndpointView, CreateWebhookEndpoint, UpdateWebhookEndpoint, DeletedObject,
        EventView, EventDetail, DeliveryView, AttemptView, RedeliverInput, Redelivery,
    )),
    modifiers(&Security),
    tags(
        (name = "catalog", description = "The SKUs that can be bought"),
        (name = "purchases", description = "Buying SKUs with the organisation's credits"),
        (name = "organisation", description = "Credits and ledger (secret key)"),
        (name = "webhooks", description = "Webhook endpoints, events and deliveries (secret key)"),
        (name = "operations", description = "Health, readiness, keys"),
    )
)]
pub struct ApiDoc;

struct Security;

impl Modify for Security {
    fn modify(&self, openapi: &mut utoipa::openapi::OpenApi) {
        let components = openapi.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "apiKey",
            SecurityScheme::ApiKey(ApiKey::Header(ApiKeyValue::with_description(
                "x-api-key",
                "Your public key, pk_dev_… or pk_prod_…",
            ))),
        );
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "A customer JWT, or (where allowed) your secret key sk_…",
                    ))
                    .build(),
            ),
        );
    }
}
