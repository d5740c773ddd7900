//! Test harness: a real cobro server on 127.0.0.1:0 with a fresh database, and a JWKS served
//! over HTTP by the test itself with RS256, ES256 and EdDSA signers.
//!
//! The database is SQLite in a temporary directory, or, when `COBRO_TEST_DATABASE_URL` is set,
//! a PostgreSQL database created for the test and dropped when the `TestApp` is dropped
//! (also when the test panics).

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex, OnceLock,
        atomic::{AtomicUsize, Ordering},
    },
};

use aws_lc_rs::{
    rand::SystemRandom,
    rsa::KeySize,
    signature::{self, EcdsaKeyPair, Ed25519KeyPair, KeyPair, RsaKeyPair},
};
use axum::{Json, Router, extract::State, routing::get};
use base64::Engine;
use cobro_server::{
    Config, RunningServer,
    admin::{self, KeyOptions},
};
use cobro_store::Store;
use cobro_store_postgres::test_db::TestDatabase;
use cobro_types::{ApiKeyCreated, Environment};
use serde_json::{Value, json};

pub fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock after 1970")
        .as_secs() as i64
}

/// A running server with a fresh database and a demo-like organisation.
pub struct TestApp {
    pub server: Option<RunningServer>,
    pub url: String,
    pub store: Arc<dyn Store>,
    pub org_id: String,
    /// Dev key pair trusting the built-in issuer.
    pub dev: ApiKeyCreated,
    /// Prod key pair of the same organisation, trusting the built-in issuer.
    pub prod: ApiKeyCreated,
    pub config: Config,
    _dir: Option<tempfile::TempDir>,
    pg: Option<TestDatabase>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(db) = self.pg.take() {
            // Dropping runs inside the test's runtime; use a thread with its own runtime.
            let _ = std::thread::spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(db.drop_database());
                }
            })
            .join();
        }
    }
}

/// Starts a server whose configuration `tune` may adjust (fast refresh intervals are preset).
pub async fn spawn_app_with(tune: impl FnOnce(&mut Config)) -> TestApp {
    let mut config = Config {
        listen: "127.0.0.1:0".into(),
        ..Config::default()
    };
    config.auth.refresh_interval_ms = 100;
    config.auth.jwks_min_refresh_interval_ms = 300;
    config.demo.bootstrap = false;
    let (dir, pg) = match TestDatabase::create().await {
        Some(db) => {
            config.database.url = db.url.clone();
            (None, Some(db))
        }
        None => {
            let dir = tempfile::tempdir().expect("temp dir");
            config.database.url = format!("sqlite://{}", dir.path().join("cobro.db").display());
            (Some(dir), None)
        }
    };
    tune(&mut config);
    let store = cobro_server::store::open(&config.database)
        .await
        .expect("open store");
    // The demo catalog, through the same import path operators use.
    admin::import_catalog(store.as_ref(), cobro_server::bootstrap::DEMO_CATALOG)
        .await
        .expect("import catalog");
    let org = admin::create_org(store.as_ref(), "Test org")
        .await
        .expect("org");
    let dev = admin::create_key(
        store.as_ref(),
        &org.id,
        Environment::Dev,
        &KeyOptions::default(),
    )
    .await
    .expect("dev key");
    let prod = admin::create_key(
        store.as_ref(),
        &org.id,
        Environment::Prod,
        &KeyOptions::default(),
    )
    .await
    .expect("prod key");
    let server = cobro_server::start(config.clone(), store.clone())
        .await
        .expect("server starts");
    let url = server.url();
    TestApp {
        server: Some(server),
        url,
        store,
        org_id: org.id,
        dev,
        prod,
        config,
        _dir: dir,
        pg,
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

impl TestApp {
    /// The running app state (for serving extra probe routes in tests).
    pub fn app(&self) -> cobro_server::AppState {
        self.server.as_ref().expect("running").app.clone()
    }

    /// A customer JWT for `key` from the built-in issuer, valid one hour.
    pub async fn token(&self, key: &ApiKeyCreated, sub: &str) -> String {
        admin::mint_token(
            self.store.as_ref(),
            &self.config,
            &key.public_key,
            sub,
            3600,
        )
        .await
        .expect("mint")
        .token
    }

    /// An SDK client with this key and bearer.
    pub fn client(&self, key: &str, bearer: &str) -> cobro_sdk::Client {
        cobro_sdk::Client::new(&self.url)
            .expect("client")
            .with_api_key(key)
            .with_bearer(bearer)
    }

    /// A client for the dev key with a valid customer JWT.
    pub async fn dev_client(&self) -> cobro_sdk::Client {
        let token = self.token(&self.dev, "customer-1").await;
        self.client(&self.dev.public_key, &token)
    }

    /// Creates another key pair of this organisation.
    pub async fn create_key(&self, env: Environment, opts: KeyOptions) -> ApiKeyCreated {
        admin::create_key(self.store.as_ref(), &self.org_id, env, &opts)
            .await
            .expect("create key")
    }

    /// Audits the organisation's ledger (balance == sum of entries, never negative, an unbroken
    /// chain), then shuts the server down. Every test ends with this.
    pub async fn stop(mut self) {
        audit(&self).await;
        if let Some(server) = self.server.take() {
            server.shutdown().await.expect("clean shutdown");
        }
    }
}

/// The signing algorithms the tests use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Alg {
    Rs256,
    Es256,
    EdDsa,
}

/// A private key that signs JWTs by hand (independently of the server's JWT library).
pub struct Signer {
    pub alg: Alg,
    pub kid: String,
    rsa: Option<RsaKeyPair>,
    ec: Option<EcdsaKeyPair>,
    ed: Option<Ed25519KeyPair>,
}

/// RSA key generation is slow; the tests share one RSA key per kid.
fn rsa_key() -> &'static Vec<u8> {
    static KEY: OnceLock<Vec<u8>> = OnceLock::new();
    KEY.get_or_init(|| {
        use aws_lc_rs::encoding::AsDer;
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).expect("rsa keygen");
        pair.as_der().expect("pkcs8").as_ref().to_vec()
    })
}

impl Signer {
    pub fn new(alg: Alg, kid: &str) -> Signer {
        let rng = SystemRandom::new();
        let mut s = Signer {
            alg,
            kid: kid.to_string(),
            rsa: None,
            ec: None,
            ed: None,
        };
        match alg {
            Alg::Rs256 => s.rsa = Some(RsaKeyPair::from_pkcs8(rsa_key()).expect("rsa")),
            Alg::Es256 => {
                let doc =
                    EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
                        .expect("ec keygen");
                s.ec = Some(
                    EcdsaKeyPair::from_pkcs8(
                        &signature::ECDSA_P256_SHA256_FIXED_SIGNING,
                        doc.as_ref(),
                    )
                    .expect("ec"),
                );
            }
            Alg::EdDsa => {
                let doc = Ed25519KeyPair::generate_pkcs8(&rng).expect("ed keygen");
                s.ed = Some(Ed25519KeyPair::from_pkcs8(doc.as_ref()).expect("ed"));
            }
        }
        s
    }

    pub fn alg_name(&self) -> &'static str {
        match self.alg {
            Alg::Rs256 => "RS256",
            Alg::Es256 => "ES256",
            Alg::EdDsa => "EdDSA",
        }
    }

    /// The public JWK.
    pub fn jwk(&self) -> Value {
        match self.alg {
            Alg::Rs256 => {
                let pk = self.rsa.as_ref().expect("rsa").public_key();
                json!({"kty": "RSA", "kid": self.kid, "alg": "RS256", "use": "sig",
                       "n": b64(pk.modulus().big_endian_without_leading_zero()),
                       "e": b64(pk.exponent().big_endian_without_leading_zero())})
            }
            Alg::Es256 => {
                let pk = self.ec.as_ref().expect("ec").public_key().as_ref().to_vec(); // 04 || x || y
                json!({"kty": "EC", "crv": "P-256", "kid": self.kid, "alg": "ES256", "use": "sig",
                       "x": b64(&pk[1..33]), "y": b64(&pk[33..65])})
            }
            Alg::EdDsa => {
                let pk = self.ed.as_ref().expect("ed").public_key().as_ref().to_vec();
                json!({"kty": "OKP", "crv": "Ed25519", "kid": self.kid, "alg": "EdDSA", "use": "sig", "x": b64(&pk)})
            }
        }
    }

    /// Raw RSA public key bytes (what an attacker would HMAC with).
    pub fn public_bytes(&self) -> Vec<u8> {
        match self.alg {
            Alg::Rs256 => self
                .rsa
                .as_ref()
                .expect("rsa")
                .public_key()
                .as_ref()
                .to_vec(),
            Alg::Es256 => self.ec.as_ref().expect("ec").public_key().as_ref().to_vec(),
            Alg::EdDsa => self.ed.as_ref().expect("ed").public_key().as_ref().to_vec(),
        }
    }

    /// Signs `claims` with this key under an arbitrary header.
    pub fn sign_with_header(&self, header: &Value, claims: &Value) -> String {
        let input = format!(
            "{}.{}",
            b64(header.to_string().as_bytes()),
            b64(claims.to_string().as_bytes())
        );
        let sig = match self.alg {
            Alg::Rs256 => {
                let pair = self.rsa.as_ref().expect("rsa");
                let mut sig = vec![0; pair.public_modulus_len()];
                pair.sign(
                    &signature::RSA_PKCS1_SHA256,
                    &SystemRandom::new(),
                    input.as_bytes(),
                    &mut sig,
                )
                .expect("sign");
                sig
            }
            Alg::Es256 => self
                .ec
                .as_ref()
                .expect("ec")
                .sign(&SystemRandom::new(), input.as_bytes())
                .expect("sign")
                .as_ref()
                .to_vec(),
            Alg::EdDsa => self
                .ed
                .as_ref()
                .expect("ed")
                .sign(input.as_bytes())
                .as_ref()
                .to_vec(),
        };
        format!("{input}.{}", b64(&sig))
    }

    /// Signs `claims` with the standard header for this key.
    pub fn sign(&self, claims: &Value) -> String {
        self.sign_with_header(
            &json!({"alg": self.alg_name(), "typ": "JWT", "kid": self.kid}),
            claims,
        )
    }
}

/// Standard valid claims.
pub fn claims(sub: &str, iss: &str, aud: &str) -> Value {
    let t = now();
    json!({"sub": sub, "iss": iss, "aud": aud, "iat": t, "nbf": t - 5, "exp": t + 600})
}

/// A JWKS document served over HTTP on 127.0.0.1:0, counting fetches.
pub struct JwksServer {
    pub addr: SocketAddr,
    keys: Arc<Mutex<Vec<Value>>>,
    hits: Arc<AtomicUsize>,
    delay_ms: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for JwksServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl JwksServer {
    pub async fn start(keys: Vec<Value>) -> JwksServer {
        let keys = Arc::new(Mutex::new(keys));
        let hits = Arc::new(AtomicUsize::new(0));
        let delay_ms = Arc::new(AtomicUsize::new(0));
        type Shared = (Arc<Mutex<Vec<Value>>>, Arc<AtomicUsize>, Arc<AtomicUsize>);
        async fn serve(State((keys, hits, delay_ms)): State<Shared>) -> Json<Value> {
            hits.fetch_add(1, Ordering::SeqCst);
            let delay = delay_ms.load(Ordering::SeqCst) as u64;
            tokio::time::sleep(std::time::Duration::from_millis(delay)).await;
            let keys = keys.lock().expect("lock").clone();
            Json(json!({ "keys": keys }))
        }
        let router = Router::new().route("/jwks.json", get(serve)).with_state((
            keys.clone(),
            hits.clone(),
            delay_ms.clone(),
        ));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, router).await;
        });
        JwksServer {
            addr,
            keys,
            hits,
            delay_ms,
            task,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/jwks.json", self.addr)
    }

    pub fn set_keys(&self, keys: Vec<Value>) {
        *self.keys.lock().expect("lock") = keys;
    }

    /// Makes every JWKS answer take this long.
    pub fn set_delay_ms(&self, ms: usize) {
        self.delay_ms.store(ms, Ordering::SeqCst);
    }

    pub fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }
}

/// Serves `router` on 127.0.0.1:0 and returns its base URL (the task ends with the test).
pub async fn serve_router(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, router).await;
    });
    format!("http://{addr}")
}

/// Asserts that `result` is an API error with this status and code.
#[track_caller]
pub fn assert_api_error<T: std::fmt::Debug>(
    result: Result<T, cobro_sdk::Error>,
    status: u16,
    code: &str,
) {
    match result {
        Err(cobro_sdk::Error::Api {
            status: s,
            code: c,
            request_id,
            ..
        }) => {
            assert_eq!((s, c.as_str()), (status, code));
            assert!(
                request_id.is_some_and(|r| !r.is_empty()),
                "error bodies carry the request id"
            );
        }
        other => panic!("expected {status} {code}, got {other:?}"),
    }
}

/// The auditor: recomputes the organisation's balance from its ledger entries alone.
pub async fn audit(app: &TestApp) {
    cobro_store::conformance::audit_ledger(app.store.as_ref(), &app.org_id).await;
}
