//! Webhooks survive SIGKILL: events written before a crash are delivered after the restart,
//! whether the crash came before the dispatcher routed them or while their deliveries were in
//! flight. The server is a real child process; the receivers run in this test.
//! With `COBRO_TEST_DATABASE_URL` set the database is a fresh PostgreSQL one.

mod support;

use std::{
    collections::BTreeSet,
    sync::{
        Arc, Mutex,
        atomic::{AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
use serde_json::{Value, json};
use support::*;

type Got = Arc<Mutex<Vec<(HeaderMap, Bytes)>>>;

/// A receiver that answers 200 and records every delivery.
async fn receiver() -> (String, Got) {
    async fn hook(State(got): State<Got>, headers: HeaderMap, body: Bytes) -> &'static str {
        got.lock().expect("lock").push((headers, body));
        "ok"
    }
    let got: Got = Arc::default();
    let app = Router::new()
        .route("/hook", post(hook))
        .with_state(got.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    tokio::spawn(async move { axum::serve(listener, app).await.ok() });
    (url, got)
}

/// A receiver that accepts connections and never answers: deliveries hang in flight.
async fn black_hole() -> (String, Arc<AtomicUsize>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let url = format!("http://{}/hook", listener.local_addr().expect("addr"));
    let accepted = Arc::new(AtomicUsize::new(0));
    let count = accepted.clone();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            count.fetch_add(1, Ordering::SeqCst);
            held.push(socket);
        }
    });
    (url, accepted)
}

fn purchase(key: &str) -> Value {
    json!({
        "transactionHash": key, "skuId": "sku-tl-TEL010", "skuReference": "5512345678",
        "currencyAmount": 10, "chain": "STARKNET", "token": "USDC", "walletAddress": "0x0",
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn events_written_before_a_sigkill_are_delivered_after_the_restart() {
    let dir = tempfile::tempdir().expect("tmp");
    let pg = cobro_store_postgres::test_db::TestDatabase::create().await;
    let db = pg
        .as_ref()
        .map(|p| p.url.clone())
        .unwrap_or_else(|| sqlite_url(dir.path()));
    let (hole_url, accepted) = black_hole().await;

    let setup = {
        let db = db.clone();
        let hole_url = hole_url.clone();
        tokio::task::spawn_blocking(move || {
            let Tenant { org, pk, token, .. } = tenant(&db, "Webhook crash", "dev");
            // The admin command follows the same policy as the server: configured to listen
            // beyond loopback (it binds nothing itself), it refuses a loopback endpoint.
            let refused = std::process::Command::new(BIN)
                .args([
                    "admin", "webhook", "create", "--org", &org, "--env", "dev", "--url", &hole_url,
                ])
                .env("COBRO_DATABASE_URL", &db)
                .env("COBRO_LISTEN", "0.0.0.0:8080")
                .output()
                .expect("run cobro");
            assert!(!refused.status.success());
            assert!(String::from_utf8_lossy(&refused.stderr).contains("INVALID_PARAMETER"));
            let out = std::process::Command::new(BIN)
                .args([
                    "admin", "webhook", "create", "--org", &org, "--env", "dev", "--url",
                    &hole_url, "--json",
                ])
                .env("COBRO_DATABASE_URL", &db)
                .env("COBRO_WEBHOOKS_ALLOW_PRIVATE_ADDRESSES", "true")
                .output()
                .expect("run cobro");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let endpoint: Value = serde_json::from_slice(&out.stdout).expect("json");
            (org, pk, token, endpoint)
        })
        .await
        .expect("setup")
    };
    let (org, pk, token, endpoint) = setup;
    let secret = endpoint["secret"].as_str().expect("secret").to_string();
    let endpoint_id = endpoint["id"].as_str().expect("id").to_string();
    let http = reqwest::Client::new();
    let buy = |base: String, key: String| {
        let http = http.clone();
        let pk = pk.clone();
        let token = token.clone();
        async move {
            let resp = http
                .post(format!("{base}/v1/sku-purchases"))
                .header("x-api-key", pk)
                .bearer_auth(token)
                .json(&purchase(&key))
                .send()
                .await
                .expect("send");
            assert_eq!(resp.status().as_u16(), 201);
            let tx: Value = resp.json().await.expect("json");
            tx["id"].as_str().expect("id").to_string()
        }
    };
    let mut purchases = BTreeSet::new();
    let fast = [
        ("COBRO_WEBHOOKS_ALLOW_PRIVATE_ADDRESSES", "true"),
        ("COBRO_WEBHOOKS_TIMEOUT_MS", "1000"),
        ("COBRO_WEBHOOKS_LEASE_MS", "2500"),
        ("COBRO_WEBHOOKS_POLL_INTERVAL_MS", "20"),
        (
            "COBRO_WEBHOOKS_RETRY_SCHEDULE_MS",
            "[0, 100, 200, 400, 800]",
        ),
        ("COBRO_DEMO_BOOTSTRAP", "false"),
    ];

    // 1. The dispatcher is off: the events and their deliveries wait in the database. SIGKILL.
    let mut off = fast.to_vec();
    off.push(("COBRO_WEBHOOKS_ENABLED", "false"));
    let first = serve_with(&db, &off);
    for i in 0..10 {
        purchases.insert(buy(first.url.clone(), format!("before-dispatch-{i}")).await);
    }
    first.kill9();

    // 2. The dispatcher is on and the receiver hangs: deliveries are in flight. SIGKILL.
    let second = serve_with(&db, &fast);
    for i in 0..10 {
        purchases.insert(buy(second.url.clone(), format!("in-flight-{i}")).await);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while accepted.load(Ordering::SeqCst) == 0 {
        assert!(
            Instant::now() < deadline,
            "no delivery reached the receiver"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    second.kill9();

    // 3. The receiver is fixed; restart: every event is delivered, signed.
    let (good_url, got) = receiver().await;
    {
        let db = db.clone();
        let org = org.clone();
        let endpoint_id = endpoint_id.clone();
        tokio::task::spawn_blocking(move || {
            let out = std::process::Command::new(BIN)
                .args([
                    "admin",
                    "webhook",
                    "update",
                    &endpoint_id,
                    "--org",
                    &org,
                    "--env",
                    "dev",
                    "--url",
                    &good_url,
                    "--json",
                ])
                .env("COBRO_DATABASE_URL", &db)
                .env("COBRO_WEBHOOKS_ALLOW_PRIVATE_ADDRESSES", "true")
                .output()
                .expect("run cobro");
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
        })
        .await
        .expect("update");
    }
    let third = serve_with(&db, &fast);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let delivered: BTreeSet<String> = got
            .lock()
            .expect("lock")
            .iter()
            .map(|(_, body)| {
                let v: Value = serde_json::from_slice(body).expect("json body");
                v["data"]["id"].as_str().expect("purchase id").to_string()
            })
            .collect();
        if delivered == purchases {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{} of {} purchases' events delivered after the restart",
            delivered.len(),
            purchases.len()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs() as i64;
    for (headers, body) in got.lock().expect("lock").iter() {
        cobro_types::webhook::verify(
            &secret,
            body,
            |name| headers.get(name).and_then(|v| v.to_str().ok()),
            now,
            300,
        )
        .expect("signed with the endpoint's secret");
    }
    drop(third);
    if let Some(pg) = pg {
        pg.drop_database().await;
    }
}
