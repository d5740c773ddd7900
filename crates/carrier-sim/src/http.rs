//! The HTTP face of the simulator: the protocol routes, the `/_sim` admin routes, and
//! [`spawn`] to serve them in the background.

use std::{io, net::SocketAddr, time::Duration};

use axum::{
    Json, Router,
    body::{Body, Bytes},
    extract::{Path, State},
    http::{StatusCode, header},
    response::{IntoResponse, Response},
    routing::{get, post},
};
use serde::{Deserialize, Serialize, de::DeserializeOwned};
use tokio::{sync::watch, task::JoinHandle};

use crate::{
    config::SimConfig,
    fault::Fault,
    protocol::{CheckRequest, ErrorBody, RechargeAnswer, RechargeRequest, Status},
    sim::Sim,
};

/// The state of the routes: the simulator and the server's stop signal, which cuts the
/// long sleeps (timeouts, latency) short when the server shuts down.
#[derive(Debug, Clone)]
struct AppState {
    sim: Sim,
    stop: watch::Receiver<bool>,
}

/// The router of the protocol and admin routes over `sim`.
pub fn router(sim: Sim) -> Router {
    // The sender is dropped at once: nothing ever stops this router's sleeps early.
    let (_, stop) = watch::channel(false);
    router_with_stop(sim, stop)
}

fn router_with_stop(sim: Sim, stop: watch::Receiver<bool>) -> Router {
    Router::new()
        .route("/v1/recharges", post(post_recharge))
        .route("/v1/recharges/{reference}", get(get_recharge))
        .route("/v1/references/check", post(check_reference))
        .route("/_sim/fulfilments", get(get_fulfilments))
        .route("/_sim/config", get(get_config).put(put_config))
        .route("/_sim/plan", post(post_plan))
        .route("/_sim/reset", post(post_reset))
        .with_state(AppState { sim, stop })
}

/// A simulator serving in a background task. Dropping it stops serving.
#[derive(Debug)]
pub struct Running {
    /// The bound address (the actual port when bound to port 0).
    pub addr: SocketAddr,
    /// The served simulator, to inspect or steer in-process.
    pub sim: Sim,
    stop: watch::Sender<bool>,
    task: Option<JoinHandle<io::Result<()>>>,
}

impl Running {
    /// The base URL, e.g. `http://127.0.0.1:40123`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops accepting, cuts pending sleeps short, and waits (at most 5 s) for open
    /// connections to finish.
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            let abort = task.abort_handle();
            if tokio::time::timeout(Duration::from_secs(5), task)
                .await
                .is_err()
            {
                abort.abort();
            }
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// Binds `addr` (e.g. `127.0.0.1:0`) and serves a new simulator with `config` in a
/// background tokio task.
pub async fn spawn(config: SimConfig, addr: &str) -> io::Result<Running> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    let sim = Sim::new(config);
    let (stop, stop_rx) = watch::channel(false);
    let app = router_with_stop(sim.clone(), stop_rx.clone());
    let mut signal = stop_rx;
    let task = tokio::spawn(async move {
        axum::serve(listener, app)
            .with_graceful_shutdown(async move { stopped(&mut signal).await })
            .await
    });
    Ok(Running {
        addr,
        sim,
        stop,
        task: Some(task),
    })
}

/// Resolves once the stop signal is raised; never if its sender is gone without raising it.
async fn stopped(stop: &mut watch::Receiver<bool>) {
    if stop.wait_for(|s| *s).await.is_err() {
        std::future::pending::<()>().await;
    }
}

/// Sleeps `d`, or less if the server stops meanwhile.
async fn sleep(d: Duration, stop: &watch::Receiver<bool>) {
    if d.is_zero() {
        return;
    }
    let mut stop = stop.clone();
    tokio::select! {
        () = tokio::time::sleep(d) => {}
        () = stopped(&mut stop) => {}
    }
}

fn error(status: StatusCode, code: &str, message: impl Into<String>) -> Response {
    let body = ErrorBody {
        code: code.to_owned(),
        message: Some(message.into()),
    };
    (status, Json(body)).into_response()
}

/// A body that is not the expected JSON: answered `400`.
#[derive(Debug)]
struct BadRequest(String);

impl IntoResponse for BadRequest {
    fn into_response(self) -> Response {
        error(StatusCode::BAD_REQUEST, "BAD_REQUEST", self.0)
    }
}

/// Parses a JSON body; garbage is a `400`, whatever the content type says.
fn parse<T: DeserializeOwned>(body: &[u8]) -> Result<T, BadRequest> {
    serde_json::from_slice(body).map_err(|e| BadRequest(format!("invalid JSON body: {e}")))
}

fn status_of(answer: &RechargeAnswer) -> StatusCode {
    match answer.status {
        Status::Success => StatusCode::OK,
        Status::Failed => StatusCode::UNPROCESSABLE_ENTITY,
        Status::Pending => StatusCode::ACCEPTED,
    }
}

/// A response whose headers and the start of its body go out, then the connection is cut:
/// the client sees a status but cannot read the answer.
fn lost(status: StatusCode) -> Response {
    use futures::StreamExt;

    let head =
        futures::stream::once(async { Ok::<_, io::Error>(Bytes::from_static(b"{\"reference\":")) });
    // The pause lets the server flush the headers and the first bytes before the error.
    let cut = futures::stream::once(async {
        tokio::time::sleep(Duration::from_millis(20)).await;
        Err(io::Error::new(
            io::ErrorKind::ConnectionAborted,
            "carrier-sim: answer lost",
        ))
    });
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        Body::from_stream(head.chain(cut)),
    )
        .into_response()
}

async fn post_recharge(State(app): State<AppState>, body: Bytes) -> Response {
    let req: RechargeRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    if req.reference.trim().is_empty() {
        return error(
            StatusCode::BAD_REQUEST,
            "BAD_REQUEST",
            "reference must not be empty",
        );
    }
    let decision = app.sim.decide(&req);
    sleep(decision.latency, &app.stop).await;
    if decision.unavailable {
        return error(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "Servicio no disponible, intente más tarde / Service unavailable, try again later",
        );
    }
    let answer = app.sim.process(&req, &decision);
    if let Some(t) = decision.timeout {
        sleep(t, &app.stop).await;
    }
    let status = status_of(&answer);
    if decision.lost {
        return lost(status);
    }
    (status, Json(answer)).into_response()
}

async fn get_recharge(State(app): State<AppState>, Path(reference): Path<String>) -> Response {
    sleep(app.sim.ambient_latency(&reference), &app.stop).await;
    match app.sim.outcome(&reference) {
        Some(answer) => (StatusCode::OK, Json(answer)).into_response(),
        None => error(
            StatusCode::NOT_FOUND,
            "NOT_FOUND",
            "Referencia no recibida / Reference never received",
        ),
    }
}

async fn check_reference(State(app): State<AppState>, body: Bytes) -> Response {
    let req: CheckRequest = match parse(&body) {
        Ok(r) => r,
        Err(e) => return e.into_response(),
    };
    sleep(app.sim.ambient_latency(&req.account), &app.stop).await;
    Json(app.sim.check(&req.account)).into_response()
}

async fn get_fulfilments(State(app): State<AppState>) -> Response {
    Json(app.sim.fulfilments()).into_response()
}

async fn get_config(State(app): State<AppState>) -> Response {
    Json(app.sim.config()).into_response()
}

async fn put_config(State(app): State<AppState>, body: Bytes) -> Response {
    let config: SimConfig = match parse(&body) {
        Ok(c) => c,
        Err(e) => return e.into_response(),
    };
    if let Err(e) = config.validate() {
        return error(StatusCode::BAD_REQUEST, "BAD_REQUEST", e.to_string());
    }
    app.sim.set_config(config);
    Json(app.sim.config()).into_response()
}

/// `POST /_sim/plan` body (and answer).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct PlanRequest {
    account: String,
    fault: Fault,
    #[serde(default = "one")]
    times: u32,
}

fn one() -> u32 {
    1
}

async fn post_plan(State(app): State<AppState>, body: Bytes) -> Response {
    let plan: PlanRequest = match parse(&body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    app.sim.plan(&plan.account, plan.fault.clone(), plan.times);
    Json(plan).into_response()
}

async fn post_reset(State(app): State<AppState>) -> Response {
    app.sim.reset();
    StatusCode::NO_CONTENT.into_response()
}
