//! The facilitator over HTTP: `POST /verify`, `POST /settle`, `GET /supported`.

use axum::Router;
use axum::extract::rejection::JsonRejection;
use axum::extract::{Json, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use tokio::net::TcpListener;

use crate::facilitator::Facilitator;
use crate::wire::{FacilitatorRequest, SettleResponse, VerifyResponse};

/// Router with the three facilitator routes, to be nested (e.g. under `/x402`).
pub fn router(facilitator: Facilitator) -> Router {
    Router::new()
        .route("/verify", post(verify))
        .route("/settle", post(settle))
        .route("/supported", get(supported))
        .with_state(facilitator)
}

fn bad_body(settle: bool) -> Response {
    let body = if settle {
        serde_json::to_value(SettleResponse {
            success: false,
            error_reason: Some("invalid_payload".into()),
            error_message: Some("request body is not a valid facilitator request".into()),
            payer: None,
            transaction: String::new(),
            network: String::new(),
        })
    } else {
        serde_json::to_value(VerifyResponse {
            is_valid: false,
            invalid_reason: Some("invalid_payload".into()),
            invalid_message: Some("request body is not a valid facilitator request".into()),
            payer: None,
        })
    };
    (StatusCode::BAD_REQUEST, Json(body.unwrap_or_default())).into_response()
}

async fn verify(
    State(f): State<Facilitator>,
    body: Result<Json<FacilitatorRequest>, JsonRejection>,
) -> Response {
    let Ok(Json(req)) = body else {
        return bad_body(false);
    };
    Json(
        f.verify(&req.payment_payload, &req.payment_requirements)
            .await,
    )
    .into_response()
}

async fn settle(
    State(f): State<Facilitator>,
    body: Result<Json<FacilitatorRequest>, JsonRejection>,
) -> Response {
    let Ok(Json(req)) = body else {
        return bad_body(true);
    };
    Json(
        f.settle(&req.payment_payload, &req.payment_requirements)
            .await,
    )
    .into_response()
}

async fn supported(State(f): State<Facilitator>) -> Response {
    Json(f.supported()).into_response()
}

/// Runs a standalone facilitator (routes at the root and under `/x402`) on `listener` until
/// the future is dropped or the server fails. Resolves in-flight settlements first.
pub async fn serve(facilitator: Facilitator, listener: TcpListener) -> std::io::Result<()> {
    serve_with_shutdown(facilitator, listener, std::future::pending()).await
}

/// [`serve`] that stops gracefully when `shutdown` completes.
pub async fn serve_with_shutdown(
    facilitator: Facilitator,
    listener: TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    match facilitator.resume().await {
        Ok(r) => tracing::info!(
            settled = r.settled,
            failed = r.failed,
            pending = r.pending,
            "x402 resume"
        ),
        Err(e) => tracing::error!(error = %e, "x402 resume failed"),
    }
    let app = router(facilitator.clone()).nest("/x402", router(facilitator));
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

/// Builds the facilitator from `config` with `store` and serves it (what `cobro facilitator`
/// calls).
pub async fn serve_config(
    config: &crate::config::X402Config,
    store: std::sync::Arc<dyn crate::store::PaymentStore>,
    listener: TcpListener,
) -> Result<(), ServeError> {
    let f = Facilitator::new(config, store)?;
    serve(f, listener).await?;
    Ok(())
}

/// Failure of [`serve_config`].
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// Invalid configuration.
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    /// Socket failure.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}
