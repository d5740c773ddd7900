//! Request ids, tracing spans and Prometheus metrics.
//!
//! Every response carries `x-request-id`: the caller's own id when it sent a reasonable one
//! (up to 128 characters of `[A-Za-z0-9._-]`), otherwise a new `req_…` id. The id is in the
//! request's tracing span and in every error body, so one string ties a client's report to
//! the server's logs.

use std::time::Instant;

use axum::{
    extract::{MatchedPath, Request, State},
    http::HeaderValue,
    middleware::Next,
    response::Response,
};
use prometheus_client::{
    encoding::EncodeLabelSet,
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};
use tracing::Instrument;

/// The id of the request being served (in request extensions).
#[derive(Debug, Clone)]
pub struct RequestId(pub String);

pub const REQUEST_ID_HEADER: &str = "x-request-id";

fn acceptable_request_id(v: &HeaderValue) -> Option<String> {
    let s = v.to_str().ok()?;
    let ok = !s.is_empty()
        && s.len() <= 128
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'));
    ok.then(|| s.to_string())
}

/// Assigns the request id, opens the request's span, and echoes the id on the response.
pub async fn request_id(mut req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID_HEADER)
        .and_then(acceptable_request_id)
        .unwrap_or_else(|| format!("req_{}", uuid::Uuid::now_v7().simple()));
    req.extensions_mut().insert(RequestId(id.clone()));
    let span = tracing::info_span!("request", method = %req.method(), path = %req.uri().path(), request_id = %id);
    let mut resp = next.run(req).instrument(span).await;
    if let Ok(v) = HeaderValue::from_str(&id) {
        resp.headers_mut().insert(REQUEST_ID_HEADER, v);
    }
    resp
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    method: String,
    route: String,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    method: String,
    route: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OutcomeLabels {
    pub outcome: String,
}

/// The server's metrics, rendered at `/metrics` in the Prometheus text format.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http_requests: Family<HttpLabels, Counter>,
    http_duration: Family<RouteLabels, Histogram>,
    /// JWKS fetches by outcome (`ok`, `error`, `rate_limited`).
    pub jwks_fetches: Family<OutcomeLabels, Counter>,
    /// Authentication failures by error code.
    pub auth_failures: Family<OutcomeLabels, Counter>,
    /// Active SKUs in the in-memory catalog.
    pub catalog_skus: Gauge,
    /// API keys in the in-memory snapshot (revoked included).
    pub api_keys: Gauge,
    /// Carrier call outcomes (`success`, `failed`, `pending`, `retry`, `unknown`, `not_found`).
    pub fulfilment_outcomes: Family<OutcomeLabels, Counter>,
    /// Purchases awaiting fulfilment.
    pub fulfilment_open: Gauge,
    /// Of those, purchases retried beyond the limit.
    pub fulfilment_flagged: Gauge,
    /// Webhook delivery attempts by outcome (`delivered`, `retry`, `failed`, `gone`).
    pub webhook_deliveries: Family<OutcomeLabels, Counter>,
    /// Webhook deliveries waiting for an attempt.
    pub webhook_queue_pending: Gauge,
    /// Age in seconds of the oldest pending webhook delivery (0 when none).
    pub webhook_queue_age_seconds: Gauge,
    /// Latency of webhook delivery attempts.
    pub webhook_attempt_duration: Histogram,
}

fn duration_histogram() -> Histogram {
    // 0.25 ms to ~8 s.
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_25, 2.0, 16,
    ))
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("cobro");
        let http_requests = Family::<HttpLabels, Counter>::default();
        let http_duration = Family::<RouteLabels, Histogram>::new_with_constructor(
            duration_histogram as fn() -> Histogram,
        );
        let jwks_fetches = Family::<OutcomeLabels, Counter>::default();
        let auth_failures = Family::<OutcomeLabels, Counter>::default();
        let catalog_skus = Gauge::default();
        let api_keys = Gauge::default();
        let fulfilment_outcomes = Family::<OutcomeLabels, Counter>::default();
        let fulfilment_open = Gauge::default();
        let fulfilment_flagged = Gauge::default();
        let webhook_deliveries = Family::<OutcomeLabels, Counter>::default();
        let webhook_queue_pending = Gauge::default();
        let webhook_queue_age_seconds = Gauge::default();
        let webhook_attempt_duration = duration_histogram();
        registry.register(
            "webhook_deliveries",
            "Webhook delivery attempts by outcome",
            webhook_deliveries.clone(),
        );
        registry.register(
            "webhook_queue_pending",
            "Webhook deliveries waiting for an attempt",
            webhook_queue_pending.clone(),
        );
        registry.register(
            "webhook_queue_age_seconds",
            "Age of the oldest pending webhook delivery",
            webhook_queue_age_seconds.clone(),
        );
        registry.register(
            "webhook_attempt_duration_seconds",
            "Latency of webhook delivery attempts",
            webhook_attempt_duration.clone(),
        );
        registry.register(
            "fulfilment_outcomes",
            "Carrier call outcomes",
            fulfilment_outcomes.clone(),
        );
        registry.register(
            "fulfilment_open",
            "Purchases awaiting fulfilment",
            fulfilment_open.clone(),
        );
        registry.register(
            "fulfilment_flagged",
            "Purchases retried beyond the limit",
            fulfilment_flagged.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by method, route template and status",
            http_requests.clone(),
        );
        registry.register(
            "http_request_duration_seconds",
            "HTTP request latency by route template",
            http_duration.clone(),
        );
        registry.register(
            "jwks_fetches",
            "JWKS fetches by outcome",
            jwks_fetches.clone(),
        );
        registry.register(
            "auth_failures",
            "Authentication failures by error code",
            auth_failures.clone(),
        );
        registry.register(
            "catalog_skus",
            "Active SKUs in the in-memory catalog",
            catalog_skus.clone(),
        );
        registry.register(
            "api_keys",
            "API keys in the in-memory snapshot",
            api_keys.clone(),
        );
        Metrics {
            registry,
            http_requests,
            http_duration,
            jwks_fetches,
            auth_failures,
            catalog_skus,
            api_keys,
            fulfilment_outcomes,
            fulfilment_open,
            fulfilment_flagged,
            webhook_deliveries,
            webhook_queue_pending,
            webhook_queue_age_seconds,
            webhook_attempt_duration,
        }
    }
}

impl Metrics {
    /// The Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        if let Err(e) = prometheus_client::encoding::text::encode(&mut out, &self.registry) {
            tracing::error!(error = %e, "could not encode metrics");
        }
        out
    }

    pub fn count(family: &Family<OutcomeLabels, Counter>, outcome: &str) {
        family
            .get_or_create(&OutcomeLabels {
                outcome: outcome.to_string(),
            })
            .inc();
    }
}

/// The method as a metric label: the standard ones by name, anything else as `OTHER`, so
/// made-up methods cannot grow the label set without bound.
fn method_label(m: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    match *m {
        Method::GET => "GET",
        Method::POST => "POST",
        Method::PUT => "PUT",
        Method::PATCH => "PATCH",
        Method::DELETE => "DELETE",
        Method::HEAD => "HEAD",
        Method::OPTIONS => "OPTIONS",
        _ => "OTHER",
    }
}

/// Records the count and latency of every routed request, labelled by route template.
pub async fn record_metrics(
    State(metrics): State<std::sync::Arc<Metrics>>,
    req: Request,
    next: Next,
) -> Response {
    let start = Instant::now();
    let method = method_label(req.method()).to_string();
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map_or_else(|| "unmatched".to_string(), |p| p.as_str().to_string());
    let resp = next.run(req).await;
    let elapsed = start.elapsed().as_secs_f64();
    metrics
        .http_requests
        .get_or_create(&HttpLabels {
            method: method.clone(),
            route: route.clone(),
            status: resp.status().as_u16(),
        })
        .inc();
    metrics
        .http_duration
        .get_or_create(&RouteLabels { method, route })
        .observe(elapsed);
    resp
}

/// Installs the global tracing subscriber (`text` or `json` to stderr).
pub fn init_tracing(format: &str, filter: &str) {
    use tracing_subscriber::{EnvFilter, fmt};
    let filter = EnvFilter::try_new(filter).unwrap_or_else(|_| EnvFilter::new("info"));
    use std::io::IsTerminal;
    let builder = fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal());
    let result = if format == "json" {
        builder.json().try_init()
    } else {
        builder.try_init()
    };
    if result.is_err() {
        // Already installed (tests, or a second call): keep the first.
    }
}
