//! The `carrier-sim` binary: serves the simulator until SIGINT or SIGTERM.
#![forbid(unsafe_code)]

use std::{io::Write, process::ExitCode};

use carrier_sim::SimConfig;
use clap::Parser;

/// A carrier aggregator simulator with fault injection.
#[derive(Debug, Parser)]
#[command(name = "carrier-sim", version, about)]
struct Args {
    /// Address to listen on, e.g. 127.0.0.1:7070 (port 0 picks a free port).
    #[arg(long)]
    listen: String,
    /// Delay added before every answer, in milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Random extra delay in [0, N] milliseconds.
    #[arg(long, default_value_t = 0)]
    latency_jitter_ms: u64,
    /// Probability of a definitive refusal (422).
    #[arg(long, default_value_t = 0.0)]
    failure_rate: f64,
    /// Probability of a 503 (nothing processed).
    #[arg(long, default_value_t = 0.0)]
    unavailable_rate: f64,
    /// Probability of processing a recharge but answering only after --timeout-ms.
    #[arg(long, default_value_t = 0.0)]
    timeout_rate: f64,
    /// How long a "timeout" answer sleeps, in milliseconds.
    #[arg(long, default_value_t = 30_000)]
    timeout_ms: u64,
    /// Probability of processing a recharge but cutting its answer.
    #[arg(long, default_value_t = 0.0)]
    lost_rate: f64,
    /// Probability of answering 202 pending.
    #[arg(long, default_value_t = 0.0)]
    pending_rate: f64,
    /// How long a pending recharge stays pending, in milliseconds.
    #[arg(long, default_value_t = 2_000)]
    pending_ms: u64,
    /// Window of the DUPLICATE_RECHARGE rule in seconds (0 disables it).
    #[arg(long, default_value_t = 900)]
    duplicate_window_secs: u64,
    /// Seed of the random fault draws.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

impl Args {
    fn config(&self) -> SimConfig {
        SimConfig {
            latency_ms: self.latency_ms,
            latency_jitter_ms: self.latency_jitter_ms,
            failure_rate: self.failure_rate,
            unavailable_rate: self.unavailable_rate,
            timeout_rate: self.timeout_rate,
            timeout_ms: self.timeout_ms,
            lost_rate: self.lost_rate,
            pending_rate: self.pending_rate,
            pending_ms: self.pending_ms,
            duplicate_window_secs: self.duplicate_window_secs,
            seed: self.seed,
        }
    }
}

#[tokio::main]
async fn main() -> ExitCode {
    let args = Args::parse();
    let config = args.config();
    if let Err(e) = config.validate() {
        eprintln!("carrier-sim: {e}");
        return ExitCode::from(2);
    }
    let running = match carrier_sim::spawn(config, &args.listen).await {
        Ok(r) => r,
        Err(e) => {
            eprintln!("carrier-sim: cannot listen on {}: {e}", args.listen);
            return ExitCode::FAILURE;
        }
    };
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "carrier-sim listening on {}", running.url());
    let _ = out.flush();
    drop(out);
    shutdown_signal().await;
    running.shutdown().await;
    ExitCode::SUCCESS
}

/// Resolves on SIGINT (Ctrl-C) or, on Unix, SIGTERM.
async fn shutdown_signal() {
    let interrupt = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let terminate = async {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = interrupt => {}
        () = terminate => {}
    }
}
