//! `cobro-bench-webhooks`: the two halves of the webhook benchmark (driven by `bench/webhooks`).
//!
//! * `create`: makes `--events` dev-key purchases (each writes one `sku-purchase.completed`
//!   event to the outbox) with `--concurrency` clients;
//! * `receive`: a webhook receiver on `--listen` that answers 200, verifies nothing (the
//!   signatures are tested elsewhere), and reports when `--expect` distinct events have arrived:
//!   the time of the first and last delivery and the delivery rate between them.
#![forbid(unsafe_code)]

use std::{
    collections::HashSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use axum::{Router, extract::State, http::HeaderMap, routing::post};
use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
struct Args {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    Create {
        #[arg(long)]
        url: String,
        #[arg(long)]
        public_key: String,
        #[arg(long)]
        token: String,
        #[arg(long)]
        events: u64,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    Receive {
        #[arg(long)]
        listen: String,
        #[arg(long)]
        expect: usize,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

fn unix_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0)
}

async fn create(
    url: String,
    public_key: String,
    token: String,
    events: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency * 2)
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let (http, next, errors) = (http.clone(), next.clone(), errors.clone());
            let (url, pk, token) = (url.clone(), public_key.clone(), token.clone());
            tokio::spawn(async move {
                loop {
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    if n >= events {
                        return;
                    }
                    let body = serde_json::json!({
                        "transactionHash": format!("wh-bench-{}-{n}", std::process::id()),
                        "skuId": "sku-tl-TEL010", "skuReference": "5512345678",
                        "currencyAmount": 10, "chain": "STARKNET", "token": "USDC",
                        "walletAddress": "0x0",
                    });
                    let ok = match http
                        .post(format!("{url}/v1/sku-purchases"))
                        .header("x-api-key", &pk)
                        .bearer_auth(&token)
                        .json(&body)
                        .send()
                        .await
                    {
                        Ok(r) => r.status().as_u16() == 201 && r.bytes().await.is_ok(),
                        Err(_) => false,
                    };
                    if !ok {
                        errors.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    for t in tasks {
        t.await?;
    }
    let secs = started.elapsed().as_secs_f64();
    println!(
        "created {events} events in {secs:.1} s ({:.0}/s), {} errors",
        events as f64 / secs,
        errors.load(Ordering::Relaxed)
    );
    Ok(())
}

#[derive(Default)]
struct Seen {
    ids: HashSet<String>,
    deliveries: u64,
    first_ms: Option<u128>,
    last_ms: u128,
}

async fn receive(listen: String, expect: usize, timeout: u64) -> anyhow::Result<()> {
    let seen = Arc::new(Mutex::new(Seen::default()));
    async fn hook(State(seen): State<Arc<Mutex<Seen>>>, headers: HeaderMap) -> &'static str {
        let id = headers
            .get("webhook-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        if let Ok(mut s) = seen.lock() {
            let now = unix_ms();
            s.first_ms.get_or_insert(now);
            s.last_ms = now;
            s.deliveries += 1;
            s.ids.insert(id);
        }
        "ok"
    }
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(seen.clone());
    let listener = tokio::net::TcpListener::bind(&listen).await?;
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    println!("receiver ready at {} (unix ms)", unix_ms());
    let deadline = Instant::now() + Duration::from_secs(timeout);
    loop {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let done = seen.lock().map(|s| s.ids.len() >= expect).unwrap_or(false);
        if done || Instant::now() > deadline {
            break;
        }
    }
    let s = seen
        .lock()
        .map_err(|_| anyhow::anyhow!("receiver state poisoned"))?;
    let first = s.first_ms.unwrap_or(0);
    let span = (s.last_ms.saturating_sub(first)) as f64 / 1000.0;
    println!(
        "received {} distinct events in {} deliveries; first at {first}, last at {} (unix ms); {:.0} deliveries/s between them",
        s.ids.len(),
        s.deliveries,
        s.last_ms,
        s.deliveries as f64 / span.max(0.001)
    );
    if s.ids.len() < expect {
        anyhow::bail!("only {} of {expect} events arrived", s.ids.len());
    }
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Args::parse().cmd {
        Cmd::Create {
            url,
            public_key,
            token,
            events,
            concurrency,
        } => create(url, public_key, token, events, concurrency).await,
        Cmd::Receive {
            listen,
            expect,
            timeout,
        } => receive(listen, expect, timeout).await,
    }
}
