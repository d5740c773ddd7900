//! `cobro-bench-purchases`: how many production purchases per second a server accepts.
//!
//! A closed loop of `--concurrency` clients, each POSTing purchases back to back for
//! `--seconds` (after a warm-up), with unique idempotency keys and phone numbers. Every
//! purchase is a real production purchase: validated, priced, debited with its ledger entry,
//! stored with its fulfilment job, durably committed (SQLite `synchronous=FULL`, or PostgreSQL)
//! before the 201, and then fulfilled by the server's worker through the carrier simulator.
//! The client count is the same one `pgbench -c` gets, so the two can be compared.
#![forbid(unsafe_code)]

use std::{
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;

#[derive(Debug, Parser)]
struct Args {
    #[arg(long)]
    url: String,
    /// A prod public key.
    #[arg(long)]
    public_key: String,
    /// A customer JWT for it.
    #[arg(long)]
    token: String,
    #[arg(long, default_value_t = 32)]
    concurrency: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// A label printed with the results (e.g. the backend).
    #[arg(long, default_value = "")]
    label: String,
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

async fn client(
    http: reqwest::Client,
    args: Arc<Args>,
    next: Arc<AtomicU64>,
    until: Instant,
    record: bool,
) -> (Vec<u64>, u64) {
    let mut latencies = Vec::new();
    let mut errors = 0;
    while Instant::now() < until {
        let n = next.fetch_add(1, Ordering::Relaxed);
        let body = serde_json::json!({
            "transactionHash": format!("bench-{}-{n}", std::process::id()),
            "skuId": "sku-tl-TEL010",
            "skuReference": format!("55{:08}", n % 100_000_000),
            "currencyAmount": 10, "chain": "STARKNET", "token": "USDC", "walletAddress": "0x0",
        });
        let start = Instant::now();
        let ok = match http
            .post(format!("{}/v1/sku-purchases", args.url))
            .header("x-api-key", &args.public_key)
            .bearer_auth(&args.token)
            .json(&body)
            .send()
            .await
        {
            Ok(r) => r.status().as_u16() == 201 && r.bytes().await.is_ok(),
            Err(_) => false,
        };
        if !ok {
            errors += 1;
        } else if record {
            latencies.push(start.elapsed().as_micros() as u64);
        }
    }
    (latencies, errors)
}

async fn phase(
    http: &reqwest::Client,
    args: &Arc<Args>,
    next: &Arc<AtomicU64>,
    secs: u64,
    record: bool,
) -> (Vec<u64>, u64, Duration) {
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..args.concurrency)
        .map(|_| {
            tokio::spawn(client(
                http.clone(),
                args.clone(),
                next.clone(),
                until,
                record,
            ))
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((l, e)) = t.await {
            all.extend(l);
            errors += e;
        }
    }
    all.sort_unstable();
    (all, errors, start.elapsed())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Arc::new(Args::parse());
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.concurrency * 2)
        .build()?;
    let next = Arc::new(AtomicU64::new(0));
    phase(&http, &args, &next, 2, false).await; // warm-up: connections, caches
    let (lat, errors, elapsed) = phase(&http, &args, &next, args.seconds, true).await;
    println!(
        "| {} | {} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {} |",
        args.label,
        args.concurrency,
        lat.len(),
        lat.len() as f64 / elapsed.as_secs_f64(),
        percentile(&lat, 0.50),
        percentile(&lat, 0.99),
        percentile(&lat, 0.999),
        errors
    );
    Ok(())
}
