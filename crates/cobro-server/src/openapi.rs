//! The OpenAPI 3.1 document, generated from the handlers' annotations and served at
//! `/openapi.json`.

use cobro_types::{Currency, ErrorBody, ErrorClass, Paginated, Provider, Sku, SkuCategory};
use utoipa::{
    Modify, OpenApi,
    openapi::security::{ApiKey, ApiKeyValue, HttpAuthScheme, HttpBuilder, SecurityScheme},
};

use crate::routes::{catalog, system};

#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "cobro",
        description = "Bill payments and pay-per-request gateway, wire-compatible with Chipi Pay's Bills API. \
                       Every error has the `ErrorBody` shape; match on its `code`.",
    ),
    paths(catalog::list_skus, catalog::get_sku, system::healthz, system::readyz, system::jwks),
    components(schemas(ErrorBody, ErrorClass, Sku, SkuCategory, Provider, Currency, Paginated<Sku>)),
    modifiers(&Security),
    tags(
        (name = "catalog", description = "The SKUs that can be bought"),
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
