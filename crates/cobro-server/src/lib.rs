//! The cobro HTTP server.
//!
//! A guided tour:
//! * [`server`]: builds the [`App`] (store, snapshots, verifier), the axum router with its
//!   middleware, and runs it with graceful shutdown and the background refresher;
//! * [`auth`]: the API-key + bearer guard (keys snapshot, JWKS cache, built-in issuer);
//! * [`routes`]: the handlers, grouped by resource; [`openapi`] describes them;
//! * [`error`]: the one error type and the middleware that renders every error body;
//! * [`extract`]: query and JSON extractors whose failures are API errors;
//! * [`telemetry`]: request ids, tracing, Prometheus metrics;
//! * [`config`]: the configuration and its sources;
//! * [`admin`] and [`bootstrap`]: operations the CLI runs on the database, and the first-start
//!   demo with its quickstart.
#![forbid(unsafe_code)]

pub mod admin;
pub mod auth;
pub mod bootstrap;
pub mod config;
pub mod error;
pub mod extract;
pub mod openapi;
pub mod purchases;
pub mod routes;
pub mod server;
pub mod store;
pub mod telemetry;
pub mod webhooks;
pub mod workers;

use std::sync::{Arc, Mutex, RwLock};

use cobro_domain::catalog::Catalog;
use cobro_store::{ChangeVersions, Store, StoreError};

pub use config::Config;
pub use server::{RunningServer, start};

use auth::{issuer::BuiltinIssuer, jwt::JwtVerifier, keyring::KeyRing};
use telemetry::Metrics;

/// The state shared by every request.
pub type AppState = Arc<App>;

/// Everything a request handler may need, built once per process.
#[derive(Debug)]
pub struct App {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub keys: KeyRing,
    pub jwt: JwtVerifier,
    pub issuer: BuiltinIssuer,
    pub metrics: Arc<Metrics>,
    /// Where exchange rates come from (a fixed table from `[fx]` by default).
    pub rates: Arc<dyn cobro_domain::pricing::RateSource>,
    /// Groups concurrent purchases into shared commits.
    pub writer: purchases::PurchaseWriter,
    /// The carrier for production purchases (`carrier.url`); `None` refuses them.
    pub carrier: Option<Arc<dyn cobro_carriers::Carrier>>,
    /// Notified when this process writes outbox events, so the webhook dispatcher starts at
    /// once instead of at its next poll.
    pub webhook_wake: Arc<tokio::sync::Notify>,
    /// The x402 facilitator (`x402.enabled`), on this database's payment records.
    pub x402: Option<cobro_x402::Facilitator>,
    catalog: RwLock<Arc<Catalog>>,
    markups: RwLock<Arc<MarkupSnapshot>>,
    versions: Mutex<ChangeVersions>,
}

/// Markup rules by (organisation, scope, target), from the store.
pub type MarkupSnapshot =
    std::collections::HashMap<(String, String, String), cobro_store::MarkupRule>;

impl App {
    /// Loads the snapshots and the issuer from the (migrated) store.
    pub async fn new(config: Config, store: Arc<dyn Store>) -> anyhow::Result<Arc<App>> {
        let metrics = Arc::new(Metrics::default());
        let issuer =
            BuiltinIssuer::load_or_create(store.as_ref(), &config.auth.builtin_issuer).await?;
        let settings = auth::jwt::JwtSettings {
            leeway_secs: config.auth.jwt_leeway_secs,
            cache_ttl: std::time::Duration::from_secs(config.auth.jwks_cache_ttl_secs),
            min_refresh_interval: std::time::Duration::from_millis(
                config.auth.jwks_min_refresh_interval_ms,
            ),
            fetch_timeout: std::time::Duration::from_millis(config.auth.jwks_fetch_timeout_ms),
            builtin_issuer: config.auth.builtin_issuer.clone(),
        };
        let jwt = JwtVerifier::new(settings, &issuer.jwks(), metrics.clone())
            .map_err(anyhow::Error::msg)?;
        let mxn_usd = rust_decimal::Decimal::from_str_exact(&config.fx.mxn_usd)
            .map_err(|e| anyhow::anyhow!("fx.mxn_usd: {e}"))?;
        let rates = Arc::new(
            cobro_domain::pricing::FixedRates::new(mxn_usd)
                .map_err(|e| anyhow::anyhow!("fx.mxn_usd: {e}"))?,
        );
        let webhook_wake = Arc::new(tokio::sync::Notify::new());
        let writer = purchases::PurchaseWriter::start(
            store.clone(),
            config.purchases.max_batch,
            webhook_wake.clone(),
        );
        let carrier: Option<Arc<dyn cobro_carriers::Carrier>> = if config.carrier.url.is_empty() {
            None
        } else {
            let timeout = std::time::Duration::from_millis(config.carrier.timeout_ms);
            Some(Arc::new(
                cobro_carriers::HttpCarrier::new(&config.carrier.url, timeout)
                    .map_err(anyhow::Error::msg)?,
            ))
        };
        let x402 = if config.x402.enabled {
            Some(cobro_x402::Facilitator::new(
                &config.x402,
                store.payments(),
            )?)
        } else {
            None
        };
        let app = App {
            x402,
            carrier,
            webhook_wake,
            rates,
            writer,
            config,
            store,
            keys: KeyRing::default(),
            jwt,
            issuer,
            metrics,
            catalog: RwLock::new(Arc::default()),
            markups: RwLock::new(Arc::default()),
            versions: Mutex::new(ChangeVersions {
                keys: -1,
                catalog: -1,
                markups: -1,
            }),
        };
        app.refresh().await?;
        Ok(Arc::new(app))
    }

    /// The current catalog snapshot.
    pub fn catalog(&self) -> Arc<Catalog> {
        self.catalog.read().map(|c| c.clone()).unwrap_or_default()
    }

    /// The organisation's markup rule for a SKU, else for its category (from memory).
    pub fn markup_rule(
        &self,
        org_id: &str,
        sku_id: &str,
        category: &str,
    ) -> Option<cobro_store::MarkupRule> {
        let snap = self.markups.read().map(|m| m.clone()).unwrap_or_default();
        snap.get(&(org_id.to_string(), "sku".to_string(), sku_id.to_string()))
            .or_else(|| {
                snap.get(&(
                    org_id.to_string(),
                    "category".to_string(),
                    category.to_string(),
                ))
            })
            .cloned()
    }

    /// Reloads whichever snapshot changed in the store since the last call.
    pub async fn refresh(&self) -> Result<(), StoreError> {
        let now = self.store.change_versions().await?;
        let seen = self.versions.lock().map(|v| *v).unwrap_or_default();
        if now.keys != seen.keys {
            let keys = self.store.list_api_keys().await?;
            self.metrics.api_keys.set(keys.len() as i64);
            self.keys.replace(keys);
            tracing::debug!(version = now.keys, "API keys reloaded");
        }
        if now.catalog != seen.catalog {
            let catalog = Catalog::new(self.store.list_catalog().await?);
            self.metrics.catalog_skus.set(catalog.len() as i64);
            if let Ok(mut guard) = self.catalog.write() {
                *guard = catalog;
            }
            tracing::debug!(version = now.catalog, "catalog reloaded");
        }
        if now.markups != seen.markups {
            let rules: MarkupSnapshot = self
                .store
                .list_markups()
                .await?
                .into_iter()
                .map(|r| ((r.org_id.clone(), r.scope.clone(), r.target.clone()), r))
                .collect();
            if let Ok(mut guard) = self.markups.write() {
                *guard = Arc::new(rules);
            }
        }
        if let Ok(mut v) = self.versions.lock() {
            *v = now;
        }
        Ok(())
    }
}
