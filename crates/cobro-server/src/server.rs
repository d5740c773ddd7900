//! Building and running the HTTP server.
//!
//! Middleware, outermost first: request id → error rendering → panic catcher → timeout →
//! body-size guard → (per route) metrics. Background work: one refresher task that polls the
//! store's change versions and reloads the key and catalog snapshots.

use std::{net::SocketAddr, sync::Arc, time::Duration};

use axum::{
    Router,
    extract::{DefaultBodyLimit, Request, State},
    http::header,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use cobro_store::Store;
use cobro_types::ErrorCode;
use tokio::{net::TcpListener, sync::watch, task::JoinHandle};
use tower_http::{catch_panic::CatchPanicLayer, timeout::TimeoutLayer};

use crate::{
    App, AppState, Config,
    error::{ApiError, render_errors},
    routes::{catalog, exchange, org, paid, purchases, system, webhooks},
    telemetry,
};

/// Refuses bodies whose declared length is over the limit before anything reads them.
async fn limit_declared_body(State(limit): State<usize>, req: Request, next: Next) -> Response {
    let declared = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("The request body is larger than the {limit}-byte limit."),
        )
        .into_response();
    }
    next.run(req).await
}

/// The complete router with its middleware.
pub fn router(app: AppState) -> Router {
    let limit = app.config.http.body_limit_bytes;
    let timeout = Duration::from_millis(app.config.http.request_timeout_ms);
    let metrics = app.metrics.clone();
    let mut paid = Router::new();
    let mut facilitator = None;
    if let Some(f) = app.x402.clone() {
        if !app.config.x402.pay_to.is_empty() {
            let layer = cobro_x402::PaymentLayer::from_config(f.clone(), &app.config.x402)
                .description("The cobro SKU catalog, all active SKUs");
            paid = paid.route("/v1/paid/catalog", get(paid::catalog).layer(layer));
        }
        facilitator = Some(cobro_x402::router(f));
    }
    let mut router = Router::new();
    if let Some(f) = facilitator {
        router = router.nest_service("/x402", f);
    }
    router
        .merge(paid)
        .route("/v1/skus", get(catalog::list_skus))
        .route("/v1/skus/{id}", get(catalog::get_sku))
        .route(
            "/v1/skus/{id}/check-reference",
            post(catalog::check_reference),
        )
        .route("/v1/exchanges/usd-amount", get(exchange::usd_amount))
        .route(
            "/v1/sku-purchases",
            post(purchases::create_purchase).get(purchases::list_purchases),
        )
        .route("/v1/sku-purchases/{id}", get(purchases::get_purchase))
        .route("/v1/balance", get(org::balance))
        .route("/v1/ledger-entries", get(org::ledger_entries))
        .route(
            "/v1/webhook-endpoints",
            post(webhooks::create_endpoint).get(webhooks::list_endpoints),
        )
        .route(
            "/v1/webhook-endpoints/{id}",
            get(webhooks::get_endpoint)
                .patch(webhooks::update_endpoint)
                .delete(webhooks::delete_endpoint),
        )
        .route(
            "/v1/webhook-endpoints/{id}/rotate-secret",
            post(webhooks::rotate_secret),
        )
        .route("/v1/events", get(webhooks::list_events))
        .route("/v1/events/{id}", get(webhooks::get_event))
        .route("/v1/events/{id}/redeliver", post(webhooks::redeliver_event))
        .route("/healthz", get(system::healthz))
        .route("/readyz", get(system::readyz))
        .route("/metrics", get(system::metrics))
        .route("/.well-known/jwks.json", get(system::jwks))
        .route("/openapi.json", get(system::openapi))
        .fallback(system::not_found)
        .with_state(app)
        .layer(middleware::from_fn_with_state(
            metrics,
            telemetry::record_metrics,
        ))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(limit, limit_declared_body))
        .layer(TimeoutLayer::with_status_code(
            axum::http::StatusCode::GATEWAY_TIMEOUT,
            timeout,
        ))
        .layer(CatchPanicLayer::new())
        .layer(middleware::from_fn(render_errors))
        .layer(middleware::from_fn(telemetry::request_id))
}

/// A server running in the background of the current tokio runtime.
#[derive(Debug)]
pub struct RunningServer {
    /// The address actually bound (useful with port 0).
    pub addr: SocketAddr,
    pub app: AppState,
    shutdown: watch::Sender<bool>,
    http: JoinHandle<std::io::Result<()>>,
    refresher: JoinHandle<()>,
    worker: Option<JoinHandle<()>>,
    dispatcher: Option<JoinHandle<()>>,
}

impl RunningServer {
    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting connections, lets in-flight requests finish, stops background tasks.
    pub async fn shutdown(self) -> anyhow::Result<()> {
        let _ = self.shutdown.send(true);
        self.refresher.await.ok();
        if let Some(worker) = self.worker {
            worker.await.ok();
        }
        if let Some(dispatcher) = self.dispatcher {
            dispatcher.await.ok();
        }
        self.http.await??;
        Ok(())
    }

    /// Runs until `signal` completes, then shuts down gracefully.
    pub async fn run_until(self, signal: impl Future<Output = ()>) -> anyhow::Result<()> {
        signal.await;
        tracing::info!("shutting down");
        self.shutdown().await
    }
}

/// Builds the app on a migrated `store`, binds `config.listen` and starts serving.
pub async fn start(mut config: Config, store: Arc<dyn Store>) -> anyhow::Result<RunningServer> {
    let listener = TcpListener::bind(&config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let addr = listener.local_addr()?;
    config.webhooks.allow_loopback = addr.ip().is_loopback();
    let app = App::new(config, store).await?;
    let (shutdown, mut stop_http) = watch::channel(false);

    let refresher = tokio::spawn(refresh_loop(app.clone(), shutdown.subscribe()));
    if let Some(f) = app.x402.clone() {
        // Settlements a previous process left in flight are resolved by asking the backend.
        tokio::spawn(async move {
            match f.resume().await {
                Ok(r) => tracing::info!(
                    settled = r.settled,
                    failed = r.failed,
                    pending = r.pending,
                    "x402 settlements resumed"
                ),
                Err(e) => tracing::error!(error = %e, "x402 resume failed"),
            }
        });
    }
    let worker = app.carrier.clone().map(|carrier| {
        let w = crate::workers::fulfilment::FulfilmentWorker::new(
            app.store.clone(),
            carrier,
            app.config.carrier.clone(),
            app.metrics.clone(),
            app.webhook_wake.clone(),
        );
        tokio::spawn(w.run(shutdown.subscribe()))
    });
    let dispatcher = if app.config.webhooks.enabled {
        let d = crate::webhooks::dispatch::Dispatcher::new(
            app.store.clone(),
            app.config.webhooks.clone(),
            app.metrics.clone(),
            app.webhook_wake.clone(),
        )?;
        Some(tokio::spawn(d.run(shutdown.subscribe())))
    } else {
        None
    };
    let service = router(app.clone());
    let http = tokio::spawn(async move {
        axum::serve(listener, service)
            .with_graceful_shutdown(async move {
                let _ = stop_http.wait_for(|stop| *stop).await;
            })
            .await
    });
    Ok(RunningServer {
        addr,
        app,
        shutdown,
        http,
        refresher,
        worker,
        dispatcher,
    })
}

async fn refresh_loop(app: AppState, mut stop: watch::Receiver<bool>) {
    let interval = Duration::from_millis(app.config.auth.refresh_interval_ms.max(50));
    loop {
        tokio::select! {
            _ = tokio::time::sleep(interval) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        match tokio::time::timeout(Duration::from_secs(5), app.refresh()).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                tracing::warn!(error = %e, "snapshot refresh failed; serving the previous snapshot")
            }
            Err(_) => tracing::warn!("snapshot refresh timed out; serving the previous snapshot"),
        }
    }
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM.
pub async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {}
        _ = term => {}
    }
}
