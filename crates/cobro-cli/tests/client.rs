//! The CLI as a client, run as the real binary against a real server: JSON output that
//! matches the API, `buy --wait` ending settled, errors exiting non-zero with the server's
//! message, profiles, and `webhook listen` receiving and verifying a delivery.

mod support;

use std::{
    io::{BufRead, BufReader},
    process::{Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use support::*;

struct Setup {
    _dir: tempfile::TempDir,
    server: Server,
    pk: String,
    sk: String,
    token: String,
}

fn setup() -> Setup {
    let dir = tempfile::tempdir().expect("tmp");
    let db = sqlite_url(dir.path());
    let Tenant { pk, sk, token, .. } = tenant(&db, "CLI client", "dev");
    let server = serve_with(
        &db,
        &[
            ("COBRO_DEMO_BOOTSTRAP", "false"),
            // No webhooks.allow_private_addresses: like a newcomer's server, this one listens
            // on loopback only, which is what lets `webhook listen` register a loopback URL.
            ("COBRO_WEBHOOKS_POLL_INTERVAL_MS", "50"),
        ],
    );
    Setup {
        _dir: dir,
        server,
        pk,
        sk,
        token,
    }
}

impl Setup {
    /// `cobro ARGS` as a client of this server (credentials in the environment).
    fn run(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .args(args)
            .env("COBRO_URL", &self.server.url)
            .env("COBRO_API_KEY", &self.pk)
            .env("COBRO_TOKEN", &self.token)
            .env("COBRO_SECRET_KEY", &self.sk)
            .env_remove("COBRO_PROFILE")
            .output()
            .expect("run cobro")
    }

    /// The API's own answer to a GET with the customer's credentials, through cobro-sdk (on a
    /// throw-away runtime, as these tests are synchronous).
    fn api_get(&self, path: &str, query: &[(&str, String)]) -> Value {
        let client = cobro_sdk::Client::new(&self.server.url)
            .expect("client")
            .with_api_key(&self.pk)
            .with_bearer(&self.token);
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime")
            .block_on(client.get(path, query))
            .expect("GET")
    }

    fn json(&self, args: &[&str]) -> Value {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "cobro {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).expect("JSON output")
    }
}

#[test]
fn json_output_matches_the_api_and_buy_wait_ends_settled() {
    let s = setup();
    let listed = s.json(&[
        "skus",
        "list",
        "--category",
        "RECARGAS",
        "--carrier",
        "telcel",
        "--limit",
        "5",
        "--json",
    ]);
    let direct = s.api_get(
        "/v1/skus",
        &[
            ("chipiCategory", "RECARGAS".into()),
            ("carrierName", "telcel".into()),
            ("limit", "5".into()),
        ],
    );
    assert_eq!(listed, direct, "the CLI prints what the API answers");
    assert!(listed["total"].as_u64().expect("total") > 0);

    let sku = s.json(&["skus", "get", "sku-tl-TEL010", "--json"]);
    assert_eq!(sku["id"], "sku-tl-TEL010");
    let usd = s.json(&["quote", "--amount", "200", "--currency", "MXN", "--json"]);
    assert!(usd.as_f64().expect("a number") > 0.0);

    let tx = s.json(&["buy", "sku-tl-TEL010", "5512345678", "--wait", "--json"]);
    assert_eq!(tx["status"], "SUCCESS");
    assert!(tx["skuFileNumber"].is_string());
    let again = s.json(&["purchases", "get", tx["id"].as_str().expect("id"), "--json"]);
    assert_eq!(again["id"], tx["id"]);
    let list = s.json(&["purchases", "list", "--json"]);
    assert_eq!(list["total"], 1);
    // The same idempotency key twice is one purchase.
    let k1 = s.json(&[
        "buy",
        "sku-tl-TEL010",
        "5512345678",
        "--idempotency-key",
        "cli-k",
        "--json",
    ]);
    let k2 = s.json(&[
        "buy",
        "sku-tl-TEL010",
        "5512345678",
        "--idempotency-key",
        "cli-k",
        "--json",
    ]);
    assert_eq!(k1["id"], k2["id"]);

    let balance = s.json(&["balance", "--json"]);
    assert!(balance["availableMicros"].is_number());
    let ledger = s.json(&["ledger", "--json"]);
    assert!(ledger["data"].is_array());
    let events = s.json(&["events", "list", "--json"]);
    assert_eq!(events["total"], 2, "two dev purchases, one event each");

    // Human output is a table.
    let out = s.run(&["skus", "list", "--carrier", "telcel", "--limit", "3"]);
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.starts_with("ID"), "{text}");
    assert!(text.contains("sku-tl-"), "{text}");
}

#[test]
fn errors_exit_non_zero_with_the_server_message_and_profiles_work() {
    let s = setup();
    let out = s.run(&["skus", "get", "sku-nope", "--json"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("SKU_NOT_FOUND") && err.contains("sku-nope"),
        "{err}"
    );

    let out = s.run(&["buy", "sku-tl-TEL010", "12", "--json"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("INVALID_PARAMETER"));

    // A profile file supplies the connection when nothing else does.
    let dir = tempfile::tempdir().expect("tmp");
    let file = dir.path().join("profiles.toml");
    std::fs::write(
        &file,
        format!(
            "[local]\nurl = \"{}\"\napi_key = \"{}\"\ntoken = \"{}\"\nsecret_key = \"{}\"\n",
            s.server.url, s.pk, s.token, s.sk
        ),
    )
    .expect("profiles");
    let out = Command::new(BIN)
        .args(["balance", "--profile", "local", "--json"])
        .env("COBRO_PROFILES", &file)
        .env_remove("COBRO_URL")
        .env_remove("COBRO_API_KEY")
        .env_remove("COBRO_TOKEN")
        .env_remove("COBRO_SECRET_KEY")
        .output()
        .expect("run");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = Command::new(BIN)
        .args(["balance", "--profile", "nope"])
        .env("COBRO_PROFILES", &file)
        .output()
        .expect("run");
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("no profile [nope]"));
}

#[test]
fn webhook_listen_receives_and_verifies_a_purchase_event() {
    let s = setup();
    let mut listen = Command::new(BIN)
        .args([
            "webhook",
            "listen",
            "--port",
            "0",
            "--register",
            "--count",
            "1",
        ])
        .env("COBRO_URL", &s.server.url)
        .env("COBRO_API_KEY", &s.pk)
        .env("COBRO_SECRET_KEY", &s.sk)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn listen");
    let stderr = listen.stderr.take().expect("stderr");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("listen reports that it listens");
        if line.starts_with("listening on") {
            assert!(line.contains("verifying signatures"), "{line}");
            break;
        }
    }
    let tx = s.json(&["buy", "sku-tl-TEL010", "5512345678", "--json"]);
    let out = listen
        .wait_with_output()
        .expect("listen exits after one delivery");
    assert!(out.status.success());
    let printed = String::from_utf8_lossy(&out.stdout);
    assert!(printed.contains("sku-purchase.completed"), "{printed}");
    assert!(
        printed.contains(tx["id"].as_str().expect("id")),
        "{printed}"
    );
    assert!(printed.contains("[verified]"), "{printed}");
    // The purchase's one event is listed.
    let events = s.json(&["events", "list", "--json"]);
    assert_eq!(events["total"], 1);
}
