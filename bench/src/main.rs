//! `cobro-bench`: an open-loop load generator for the read path.
//!
//! Requests are sent at a fixed arrival rate, whatever the server's latency (a closed loop
//! would slow down with the server and hide queueing), and each latency is measured from the
//! request's *scheduled* start, so a stall shows up in the tail instead of vanishing.
//!
//! It runs several scenarios against one running server, one after another at the same rate,
//! so they can be compared as ratios measured in one run:
//! `healthz` (HTTP + middleware only), the same SKU read authenticated with the secret key,
//! with a built-in-issuer EdDSA JWT, and with an RS256 JWT verified against a JWKS served over
//! HTTP by this generator, and a filtered list page.
//!
//! Usage: see `bench/run`, which starts the server and prepares the keys.
#![forbid(unsafe_code)]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::Context;
use aws_lc_rs::{
    rand::SystemRandom,
    rsa::KeySize,
    signature::{KeyPair, RSA_PKCS1_SHA256, RsaKeyPair},
};
use axum::{Json, Router, routing::get};
use base64::Engine;
use clap::Parser;
use serde_json::json;

#[derive(Debug, Parser)]
struct Args {
    /// Base URL of the running server.
    #[arg(long)]
    url: String,
    /// Public key of a key pair that trusts the built-in issuer.
    #[arg(long)]
    public_key: String,
    /// Its secret key.
    #[arg(long)]
    secret_key: String,
    /// A built-in issuer JWT for that key.
    #[arg(long)]
    token: String,
    /// Public key of a key pair whose JWKS URL is this generator's (see --jwks-port).
    #[arg(long)]
    external_public_key: Option<String>,
    /// Port on 127.0.0.1 where this generator serves its JWKS.
    #[arg(long, default_value_t = 0)]
    jwks_port: u16,
    /// Requests per second.
    #[arg(long, default_value_t = 2000)]
    rate: u32,
    /// Seconds per scenario (after a two-second warm-up at the same rate).
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Only print the JWKS port and wait (for the set-up step).
    #[arg(long)]
    serve_jwks_only: bool,
    /// Process id of the server, to report its CPU time per request (Linux `/proc`).
    #[arg(long)]
    server_pid: Option<u32>,
}

/// User + system CPU seconds used so far by process `pid` (Linux), if readable.
fn cpu_seconds(pid: u32) -> Option<f64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesised command name; utime and stime are the 12th and 13th.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0) // USER_HZ is 100 on Linux
}

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

struct Rs256 {
    pair: RsaKeyPair,
}

impl Rs256 {
    fn new() -> anyhow::Result<Rs256> {
        Ok(Rs256 {
            pair: RsaKeyPair::generate(KeySize::Rsa2048)
                .map_err(|_| anyhow::anyhow!("RSA keygen"))?,
        })
    }

    fn jwks(&self) -> serde_json::Value {
        let pk = self.pair.public_key();
        json!({"keys": [{"kty": "RSA", "kid": "bench-rsa", "alg": "RS256", "use": "sig",
            "n": b64(pk.modulus().big_endian_without_leading_zero()),
            "e": b64(pk.exponent().big_endian_without_leading_zero())}]})
    }

    fn token(&self) -> anyhow::Result<String> {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs();
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": "bench-rsa"});
        let claims = json!({"sub": "bench", "aud": "bench", "iat": now, "exp": now + 3600});
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let mut sig = vec![0; self.pair.public_modulus_len()];
        self.pair
            .sign(
                &RSA_PKCS1_SHA256,
                &SystemRandom::new(),
                input.as_bytes(),
                &mut sig,
            )
            .map_err(|_| anyhow::anyhow!("RSA sign"))?;
        Ok(format!("{input}.{}", b64(&sig)))
    }
}

struct Scenario {
    name: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
}

struct Outcome {
    sent: usize,
    ok: usize,
    errors: usize,
    elapsed: Duration,
    latencies_us: Vec<u64>,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

/// Sends `rate` requests per second for `duration`, open loop.
async fn run(
    client: &reqwest::Client,
    base: &str,
    s: &Scenario,
    rate: u32,
    duration: Duration,
) -> Outcome {
    let interval = Duration::from_secs_f64(1.0 / f64::from(rate.max(1)));
    let total = (duration.as_secs_f64() * f64::from(rate)) as usize;
    let start = Instant::now();
    let mut tasks = Vec::with_capacity(total);
    for i in 0..total {
        let scheduled = start + interval.mul_f64(i as f64);
        tokio::time::sleep_until(scheduled.into()).await;
        let mut req = client.get(format!("{base}{}", s.path));
        for (k, v) in &s.headers {
            req = req.header(*k, v);
        }
        tasks.push(tokio::spawn(async move {
            let ok = match req.send().await {
                Ok(r) => r.status().is_success() && r.bytes().await.is_ok(),
                Err(_) => false,
            };
            (ok, scheduled.elapsed().as_micros() as u64)
        }));
    }
    let mut latencies_us = Vec::with_capacity(total);
    let (mut ok, mut errors) = (0, 0);
    for t in tasks {
        match t.await {
            Ok((true, us)) => {
                ok += 1;
                latencies_us.push(us);
            }
            _ => errors += 1,
        }
    }
    latencies_us.sort_unstable();
    Outcome {
        sent: total,
        ok,
        errors,
        elapsed: start.elapsed(),
        latencies_us,
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let rsa = Arc::new(Rs256::new()?);
    let jwks = rsa.jwks();
    let app = Router::new().route(
        "/jwks.json",
        get(move || {
            let jwks = jwks.clone();
            async move { Json(jwks) }
        }),
    );
    let listener = tokio::net::TcpListener::bind(("127.0.0.1", args.jwks_port))
        .await
        .context("bind JWKS port")?;
    let jwks_addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    if args.serve_jwks_only {
        println!("jwks http://{jwks_addr}/jwks.json");
        std::future::pending::<()>().await;
    }

    let sku = "/v1/skus/sku-tl-TEL010?__chipi_api_version=2025-12-30";
    let auth = |bearer: &str, key: &str| {
        vec![
            ("x-api-key", key.to_string()),
            ("authorization", format!("Bearer {bearer}")),
        ]
    };
    let mut scenarios = vec![
        Scenario {
            name: "healthz (no auth)",
            path: "/healthz".into(),
            headers: vec![],
        },
        Scenario {
            name: "get SKU, secret key",
            path: sku.into(),
            headers: auth(&args.secret_key, &args.public_key),
        },
        Scenario {
            name: "get SKU, EdDSA JWT (built-in)",
            path: sku.into(),
            headers: auth(&args.token, &args.public_key),
        },
    ];
    if let Some(ext) = &args.external_public_key {
        scenarios.push(Scenario {
            name: "get SKU, RS256 JWT (JWKS)",
            path: sku.into(),
            headers: auth(&rsa.token()?, ext),
        });
    }
    scenarios.push(Scenario {
        name: "list 20 SKUs, filtered, secret key",
        path: "/v1/skus?chipiCategory=RECARGAS&limit=20&__chipi_api_version=2025-12-30".into(),
        headers: auth(&args.secret_key, &args.public_key),
    });

    let client = reqwest::Client::builder()
        .pool_max_idle_per_host(512)
        .build()?;
    println!(
        "rate {} req/s, {} s per scenario, open loop; latency from scheduled start",
        args.rate, args.seconds
    );
    println!(
        "| scenario | sent | ok | errors | achieved req/s | server CPU µs/req | p50 ms | p99 ms | p99.9 ms | max ms |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
    for s in &scenarios {
        // warm-up at the full rate (connection pool, JWKS fetch, caches), not measured
        let _ = run(&client, &args.url, s, args.rate, Duration::from_secs(2)).await;
        let cpu_before = args.server_pid.and_then(cpu_seconds);
        let o = run(
            &client,
            &args.url,
            s,
            args.rate,
            Duration::from_secs(args.seconds),
        )
        .await;
        let cpu_per_req = match (cpu_before, args.server_pid.and_then(cpu_seconds)) {
            (Some(a), Some(b)) if o.sent > 0 => format!("{:.0}", (b - a) * 1e6 / o.sent as f64),
            _ => "n/a".to_string(),
        };
        let ms = |us: u64| us as f64 / 1000.0;
        let l = &o.latencies_us;
        println!(
            "| {} | {} | {} | {} | {:.0} | {} | {:.2} | {:.2} | {:.2} | {:.2} |",
            s.name,
            o.sent,
            o.ok,
            o.errors,
            o.ok as f64 / o.elapsed.as_secs_f64(),
            cpu_per_req,
            ms(percentile(l, 0.50)),
            ms(percentile(l, 0.99)),
            ms(percentile(l, 0.999)),
            ms(l.last().copied().unwrap_or(0)),
        );
    }
    Ok(())
}
