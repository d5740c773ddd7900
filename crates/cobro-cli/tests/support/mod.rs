//! Helpers shared by the binary's end-to-end tests: run `cobro` commands, and start
//! `cobro serve` as a child process that is killed when its guard drops.
#![allow(dead_code)] // each test binary uses a different subset

use std::{
    io::{BufRead, BufReader},
    path::Path,
    process::{Child, Command, Stdio},
    sync::mpsc,
    time::Duration,
};

use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_cobro");

pub fn cobro(db: &str, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("COBRO_DATABASE_URL", db)
        .env_remove("COBRO_LISTEN")
        .output()
        .expect("run cobro")
}

pub fn json(db: &str, args: &[&str]) -> Value {
    let out = cobro(db, args);
    assert!(
        out.status.success(),
        "cobro {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "cobro {args:?} printed non-JSON ({e}): {}",
            String::from_utf8_lossy(&out.stdout)
        )
    })
}

pub fn sqlite_url(dir: &Path) -> String {
    format!("sqlite://{}", dir.join("cobro.db").display())
}

/// A server process that is killed on drop.
pub struct Server {
    pub child: Child,
    pub stdout: Vec<String>,
    pub url: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    /// SIGKILL: no shutdown, no flush, no goodbye.
    pub fn kill9(mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `cobro serve` on port 0 with extra environment and reads stdout until it says
/// where it listens.
pub fn serve_with(db: &str, env: &[(&str, &str)]) -> Server {
    let mut cmd = Command::new(BIN);
    cmd.args(["serve", "--listen", "127.0.0.1:0"])
        .env("COBRO_DATABASE_URL", db)
        .env("COBRO_LOG_FILTER", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    for (k, v) in env {
        cmd.env(k, v);
    }
    let mut child = cmd.spawn().expect("spawn cobro serve");
    let stdout = child.stdout.take().expect("stdout");
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut server = Server {
        child,
        stdout: Vec::new(),
        url: String::new(),
    };
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(60))
            .expect("cobro serve printed its address");
        if let Some(url) = line.strip_prefix("cobro listening on ") {
            server.url = url.trim().to_string();
            server.stdout.push(line);
            return server;
        }
        server.stdout.push(line);
    }
}

pub fn serve(db: &str) -> Server {
    serve_with(db, &[])
}

/// An organisation with one key pair and a customer JWT for it.
pub struct Tenant {
    pub org: String,
    pub pk: String,
    pub sk: String,
    pub token: String,
}

/// Migrates `db`, imports the demo catalog, and creates an organisation named `name` with a
/// key pair in `env` (`dev` or `prod`) and a one-hour customer JWT, all through the CLI.
pub fn tenant(db: &str, name: &str, env: &str) -> Tenant {
    assert!(cobro(db, &["migrate"]).status.success());
    let catalog = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../cobro-server/catalog/demo-catalog.json"
    );
    assert!(
        cobro(db, &["admin", "catalog", "import", catalog])
            .status
            .success()
    );
    let org = json(db, &["admin", "org", "create", name, "--json"])["id"]
        .as_str()
        .expect("id")
        .to_string();
    let key = json(
        db,
        &[
            "admin", "key", "create", "--org", &org, "--env", env, "--json",
        ],
    );
    let pk = key["publicKey"].as_str().expect("pk").to_string();
    let sk = key["secretKey"].as_str().expect("sk").to_string();
    let token = json(
        db,
        &[
            "admin", "token", "--key", &pk, "--sub", "cli-test", "--json",
        ],
    )["token"]
        .as_str()
        .expect("token")
        .to_string();
    Tenant { org, pk, sk, token }
}
