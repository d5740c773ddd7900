//! `cobro facilitator` runs the x402 facilitator alone on the database's payment records, and
//! `cobro x402 pay` refuses to pay more than its limit.

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use support::*;

#[tokio::test]
async fn the_facilitator_runs_alone_and_answers_the_x402_routes() {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let mut child = Command::new(BIN)
        .args(["facilitator", "--listen", "127.0.0.1:0"])
        .env("COBRO_DATABASE_URL", &db)
        .env("COBRO_LOG_FILTER", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let line = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("the facilitator printed its address");
    let url = line
        .rsplit_once("listening on ")
        .map(|(_, u)| u.trim().to_string())
        .expect("address");
    let http = reqwest::Client::new();
    for path in ["/supported", "/x402/supported"] {
        let resp = http.get(format!("{url}{path}")).send().await.expect("send");
        assert_eq!(resp.status().as_u16(), 200, "{path}");
        let body: serde_json::Value = resp.json().await.expect("json");
        assert!(!body["kinds"].as_array().expect("kinds").is_empty());
    }
    // A malformed request gets the spec's reason, not an internal error text.
    let resp = http
        .post(format!("{url}/verify"))
        .header("content-type", "application/json")
        .body("{\"x402Version\": 1}")
        .send()
        .await
        .expect("send");
    let body: serde_json::Value = resp.json().await.expect("json");
    assert_eq!(body["isValid"], false);
    assert_eq!(body["invalidReason"], "invalid_payload");
    let _ = child.kill();
    let _ = child.wait();

    // `cobro x402 pay` against a server with the paid route: refused above its limit, paid
    // within it (sandbox settlement; the account's public key is configured).
    let config = dir.path().join("cobro.toml");
    std::fs::write(
        &config,
        "[x402]\nenabled = true\npay_to = \"0x5678\"\nprice = \"10000\"\n\
         [[x402.accounts]]\naddress = \"0x1234\"\n\
         public_key = \"0x2abbefdcbf731195ee2acd186441eb536e86f888327b3655cffbd07b57dbf26\"\n",
    )
    .expect("config");
    let config = config.to_str().expect("utf-8 path");
    let mut server = Command::new(BIN)
        .args(["serve", "--listen", "127.0.0.1:0", "--config", config])
        .env("COBRO_DATABASE_URL", &db)
        .env("COBRO_LOG_FILTER", "warn")
        .env("COBRO_DEMO_BOOTSTRAP", "false")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn");
    let stdout = server.stdout.take().expect("stdout");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let base = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("cobro serve printed its address");
        if let Some(u) = line.strip_prefix("cobro listening on ") {
            break u.trim().to_string();
        }
    };
    let pay = |max: &str| {
        Command::new(BIN)
            .args([
                "x402",
                "pay",
                &format!("{base}/v1/paid/catalog"),
                "--account",
                "0x1234",
            ])
            .args(["--max-amount", max, "--allow", "0x5678"])
            .env("COBRO_X402_PRIVATE_KEY", "0x1234567890abcdef")
            .output()
            .expect("run")
    };
    let refused = pay("9999");
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("refused"));
    let paid = pay("10000");
    assert!(
        paid.status.success(),
        "{}",
        String::from_utf8_lossy(&paid.stderr)
    );
    let body: serde_json::Value = serde_json::from_slice(&paid.stdout).expect("json");
    assert_eq!(body["paidBy"], "0x1234");
    assert!(String::from_utf8_lossy(&paid.stderr).contains("success=true"));
    let _ = server.kill();
    let _ = server.wait();
}
