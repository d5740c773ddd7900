//! A webhook receiver in a few lines (axum): verifies both signature schemes over the raw body,
//! then acts on the event.
//!
//! ```sh
//! WHSEC=whsec_… cargo run -p cobro-sdk --example webhook_receiver   # listens on 127.0.0.1:8787
//! ```

use axum::{
    Router,
    body::Bytes,
    http::{HeaderMap, StatusCode},
    routing::post,
};

async fn hook(headers: HeaderMap, body: Bytes) -> StatusCode {
    let secret = std::env::var("WHSEC").unwrap_or_default();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    match cobro_sdk::webhooks::verify_headers(&secret, &body, &headers, now, 300) {
        Ok(()) => {
            // Deliveries are at least once: act once per `webhook-id`.
            println!("verified: {}", String::from_utf8_lossy(&body));
            StatusCode::OK
        }
        Err(e) => {
            println!("refused: {e}");
            StatusCode::BAD_REQUEST
        }
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> std::io::Result<()> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:8787").await?;
    println!("receiving on http://{}/", listener.local_addr()?);
    axum::serve(listener, Router::new().route("/", post(hook))).await
}
