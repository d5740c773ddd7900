//! The CLI as an API client: `cobro skus`, `quote`, `buy`, `purchases`, `balance`, `ledger`,
//! `events`, and `webhook listen`.
//!
//! Where to connect: flags, else `COBRO_URL` / `COBRO_API_KEY` / `COBRO_TOKEN` /
//! `COBRO_SECRET_KEY`, else the profile (`--profile NAME` or `COBRO_PROFILE`) in
//! `~/.config/cobro/profiles.toml` (or the file `COBRO_PROFILES` names):
//!
//! ```toml
//! [dev]
//! url = "http://127.0.0.1:8080"
//! api_key = "pk_dev_…"
//! token = "eyJ…"        # a customer JWT: purchases
//! secret_key = "sk_dev_…" # the organisation's secret key: balance, ledger, events
//! ```
//!
//! Output is a human table by default and the API's JSON with `--json`. Failures exit
//! non-zero with the server's code and message.

use std::{collections::BTreeMap, path::PathBuf, time::Duration};

use anyhow::{Context, bail};
use clap::{Args, Subcommand};
use cobro_sdk::{Client, SkuListQuery};
use cobro_types::{CreateSkuPurchaseInput, PurchaseStatus, Transaction};
use serde::{Deserialize, Serialize};

/// Connection options shared by every client command.
#[derive(Debug, Clone, Args)]
pub struct Remote {
    /// Server base URL [env: COBRO_URL]
    #[arg(long, value_name = "URL")]
    pub url: Option<String>,
    /// Public key pk_… [env: COBRO_API_KEY]
    #[arg(long, value_name = "KEY")]
    pub api_key: Option<String>,
    /// Customer JWT, for purchases [env: COBRO_TOKEN]
    #[arg(long, value_name = "JWT")]
    pub token: Option<String>,
    /// Secret key sk_…, for balance, ledger and events [env: COBRO_SECRET_KEY]
    #[arg(long, value_name = "KEY")]
    pub secret_key: Option<String>,
    /// A profile of the profiles file [env: COBRO_PROFILE]
    #[arg(long, value_name = "NAME")]
    pub profile: Option<String>,
    /// Print the API's JSON instead of a table.
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Profile {
    url: Option<String>,
    api_key: Option<String>,
    token: Option<String>,
    secret_key: Option<String>,
}

/// Which credential a command presents as its bearer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bearer {
    /// A customer JWT (purchases); the secret key if no JWT is set.
    Customer,
    /// The secret key (organisation endpoints); the JWT if no secret key is set.
    Organisation,
}

fn profiles_path() -> Option<PathBuf> {
    if let Ok(p) = std::env::var("COBRO_PROFILES") {
        return Some(PathBuf::from(p));
    }
    std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config/cobro/profiles.toml"))
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

impl Remote {
    fn profile(&self) -> anyhow::Result<Profile> {
        let Some(name) = self.profile.clone().or_else(|| env("COBRO_PROFILE")) else {
            return Ok(Profile::default());
        };
        let path = profiles_path().context("no profiles file: set COBRO_PROFILES")?;
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading profiles from {}", path.display()))?;
        let mut all: BTreeMap<String, Profile> =
            toml::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
        all.remove(&name)
            .with_context(|| format!("no profile [{name}] in {}", path.display()))
    }

    /// An SDK client for this command.
    pub fn client(&self, bearer: Bearer) -> anyhow::Result<Client> {
        let p = self.profile()?;
        let pick = |flag: &Option<String>, var: &str, file: &Option<String>| {
            flag.clone().or_else(|| env(var)).or_else(|| file.clone())
        };
        let url = pick(&self.url, "COBRO_URL", &p.url)
            .unwrap_or_else(|| "http://127.0.0.1:8080".to_string());
        let api_key = pick(&self.api_key, "COBRO_API_KEY", &p.api_key)
            .context("no API key: give --api-key, set COBRO_API_KEY, or use a profile")?;
        let token = pick(&self.token, "COBRO_TOKEN", &p.token);
        let secret = pick(&self.secret_key, "COBRO_SECRET_KEY", &p.secret_key);
        let bearer = match bearer {
            Bearer::Customer => token.or(secret),
            Bearer::Organisation => secret.or(token),
        }
        .context("no credential: give --token (a customer JWT) or --secret-key")?;
        Ok(Client::new(&url)?.with_api_key(api_key).with_bearer(bearer))
    }
}

/// `cobro skus …`
#[derive(Debug, Subcommand)]
pub enum SkusCommand {
    /// List SKUs, filtered.
    List {
        #[command(flatten)]
        remote: Remote,
        /// RECARGAS, SERVICIOS, … (chipiCategory)
        #[arg(long)]
        category: Option<String>,
        /// Carrier name, e.g. telcel
        #[arg(long)]
        carrier: Option<String>,
        /// Provider, e.g. TET
        #[arg(long)]
        provider: Option<String>,
        /// en or es
        #[arg(long)]
        locale: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// One SKU.
    Get {
        id: String,
        #[command(flatten)]
        remote: Remote,
        #[arg(long)]
        locale: Option<String>,
    },
}

/// `cobro purchases …`
#[derive(Debug, Subcommand)]
pub enum PurchasesCommand {
    /// One purchase.
    Get {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Purchases, newest first.
    List {
        #[command(flatten)]
        remote: Remote,
        /// PENDING, PROCESSING, SUCCESS, FAILED
        #[arg(long)]
        status: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
}

/// `cobro events …`
#[derive(Debug, Subcommand)]
pub enum EventsCommand {
    /// Events, newest first.
    List {
        #[command(flatten)]
        remote: Remote,
        /// sku-purchase.completed, .failed or .refunded
        #[arg(long = "type")]
        kind: Option<String>,
        #[arg(long)]
        purchase: Option<String>,
        #[command(flatten)]
        paging: Paging,
    },
    /// One event with its deliveries and attempts.
    Get {
        id: String,
        #[command(flatten)]
        remote: Remote,
    },
    /// Deliver an event again.
    Redeliver {
        id: String,
        #[command(flatten)]
        remote: Remote,
        /// Only to this endpoint.
        #[arg(long)]
        endpoint: Option<String>,
    },
}

fn print_json<T: Serialize>(v: &T) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(v)?);
    Ok(())
}

/// Prints rows as aligned columns.
fn table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (w, cell) in widths.iter_mut().zip(row) {
            *w = (*w).max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let padded: Vec<String> = cells
            .iter()
            .zip(&widths)
            .map(|(c, w)| format!("{c:<w$}"))
            .collect();
        println!("{}", padded.join("  ").trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}

/// A page of a list: the API's JSON with `--json`, else a table with one row per item and a
/// footer line (`page 1 of 4 (12 SKUs)`).
fn print_page<T: Serialize>(
    json: bool,
    list: &cobro_types::Paginated<T>,
    headers: &[&str],
    noun: &str,
    row: impl Fn(&T) -> Vec<String>,
) -> anyhow::Result<()> {
    if json {
        return print_json(list);
    }
    let rows: Vec<Vec<String>> = list.data.iter().map(row).collect();
    table(headers, &rows);
    println!(
        "page {} of {} ({} {noun})",
        list.page, list.total_pages, list.total
    );
    Ok(())
}

/// `--page N --limit N` of every list command.
#[derive(Debug, Args)]
pub struct Paging {
    #[arg(long)]
    pub page: Option<u64>,
    #[arg(long)]
    pub limit: Option<u64>,
}

impl Paging {
    /// Adds the set ones to a query.
    fn push(&self, q: &mut Vec<(&'static str, String)>) {
        if let Some(p) = self.page {
            q.push(("page", p.to_string()));
        }
        if let Some(l) = self.limit {
            q.push(("limit", l.to_string()));
        }
    }
}

fn tx_row(t: &Transaction) -> Vec<String> {
    vec![
        t.id.clone(),
        t.status.as_str().to_string(),
        t.sku_id.clone(),
        t.sku_reference.clone(),
        t.amount.clone(),
        t.sku_file_number.clone().unwrap_or_default(),
        t.created_at.to_rfc3339(),
    ]
}

const TX_HEADERS: [&str; 7] = [
    "ID",
    "STATUS",
    "SKU",
    "REFERENCE",
    "USD",
    "RECEIPT",
    "CREATED",
];

pub async fn skus(cmd: SkusCommand) -> anyhow::Result<()> {
    match cmd {
        SkusCommand::List {
            remote,
            category,
            carrier,
            provider,
            locale,
            paging,
        } => {
            let client = remote.client(Bearer::Customer)?;
            let q = SkuListQuery {
                chipi_category: category,
                carrier_name: carrier,
                provider,
                locale,
                page: paging.page,
                limit: paging.limit,
                ..Default::default()
            };
            let list = client.list_skus(&q).await?;
            print_page(
                remote.json,
                &list,
                &["ID", "NAME", "CARRIER", "CATEGORY", "AMOUNT", "CURRENCY"],
                "SKUs",
                |s| {
                    vec![
                        s.id.clone(),
                        s.name.clone(),
                        s.carrier_name.clone(),
                        s.chipi_category.clone(),
                        s.fixed_amount
                            .map(|a| a.to_major_string())
                            .unwrap_or_else(|| "any".into()),
                        s.currency.as_str().to_string(),
                    ]
                },
            )
        }
        SkusCommand::Get { id, remote, locale } => {
            let client = remote.client(Bearer::Customer)?;
            let sku = client.get_sku(&id, locale.as_deref()).await?;
            if remote.json {
                return print_json(&sku);
            }
            let v = serde_json::to_value(&sku)?;
            if let Some(map) = v.as_object() {
                let rows: Vec<Vec<String>> = map
                    .iter()
                    .map(|(k, v)| {
                        let text = v.as_str().map_or_else(|| v.to_string(), str::to_string);
                        vec![k.clone(), text]
                    })
                    .collect();
                table(&["FIELD", "VALUE"], &rows);
            }
            Ok(())
        }
    }
}

pub async fn quote(remote: Remote, amount: String, currency: String) -> anyhow::Result<()> {
    let client = remote.client(Bearer::Customer)?;
    let usd = client.usd_amount(&amount, &currency).await?;
    if remote.json {
        return print_json(&usd);
    }
    println!("{amount} {currency} = {usd} USD");
    Ok(())
}

/// `cobro buy SKU REFERENCE`.
#[derive(Debug, Args)]
pub struct BuyArgs {
    pub sku: String,
    pub reference: String,
    #[command(flatten)]
    pub remote: Remote,
    /// Amount in the SKU's currency (default: the SKU's fixed amount).
    #[arg(long)]
    pub amount: Option<String>,
    /// The idempotency key (default: a new one); repeat it to retry safely.
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Wait until the purchase settles, then print its final state and receipt.
    #[arg(long)]
    pub wait: bool,
    /// How long --wait waits, in seconds.
    #[arg(long, default_value_t = 120)]
    pub timeout: u64,
}

pub async fn buy(a: BuyArgs) -> anyhow::Result<()> {
    let client = a.remote.client(Bearer::Customer)?;
    let amount = match a.amount {
        Some(x) => x,
        None => {
            let sku = client.get_sku(&a.sku, None).await?;
            match sku.fixed_amount {
                Some(fixed) => fixed.to_major_string(),
                None => bail!("{} has no fixed amount: give --amount", a.sku),
            }
        }
    };
    let number: serde_json::Number = amount
        .parse()
        .with_context(|| format!("--amount {amount:?} is not a number"))?;
    let input = CreateSkuPurchaseInput {
        transaction_hash: a
            .idempotency_key
            .unwrap_or_else(cobro_sdk::new_idempotency_key),
        sku_id: a.sku,
        sku_reference: a.reference,
        currency_amount: number,
        chain: "STARKNET".into(),
        token: "USDC".into(),
        wallet_address: "0x0".into(),
        currency: None,
        org_markup: None,
    };
    let created = client.create_purchase(&input).await?;
    let mut tx = created.value;
    if !a.remote.json {
        eprintln!(
            "{} {} (idempotency key {})",
            if created.replayed {
                "replayed"
            } else {
                "created"
            },
            tx.id,
            input.transaction_hash
        );
    }
    if a.wait && !tx.status.is_terminal() {
        let spinner = indicatif::ProgressBar::new_spinner();
        spinner.enable_steady_tick(Duration::from_millis(100));
        spinner.set_message(format!("waiting for {} to settle", tx.id));
        let waited = client
            .wait_for_settlement(&tx.id, Duration::from_secs(a.timeout))
            .await;
        spinner.finish_and_clear();
        tx = waited?;
    }
    if a.remote.json {
        return print_json(&tx);
    }
    table(&TX_HEADERS, &[tx_row(&tx)]);
    if tx.status == PurchaseStatus::Failed {
        bail!(
            "the purchase failed: {}",
            tx.error_message.as_deref().unwrap_or("no reason given")
        );
    }
    Ok(())
}

pub async fn purchases(cmd: PurchasesCommand) -> anyhow::Result<()> {
    match cmd {
        PurchasesCommand::Get { id, remote } => {
            let tx = remote.client(Bearer::Customer)?.get_purchase(&id).await?;
            if remote.json {
                return print_json(&tx);
            }
            table(&TX_HEADERS, &[tx_row(&tx)]);
            Ok(())
        }
        PurchasesCommand::List {
            remote,
            status,
            paging,
        } => {
            let mut q = Vec::new();
            if let Some(s) = status {
                q.push(("status", s));
            }
            paging.push(&mut q);
            let list = remote.client(Bearer::Customer)?.list_purchases(&q).await?;
            print_page(remote.json, &list, &TX_HEADERS, "purchases", tx_row)
        }
    }
}

pub async fn balance(remote: Remote) -> anyhow::Result<()> {
    let b = remote.client(Bearer::Organisation)?.balance().await?;
    if remote.json {
        return print_json(&b);
    }
    println!(
        "{} USD available ({})",
        b.available_usd.to_usd_string(),
        b.org_id
    );
    Ok(())
}

pub async fn ledger(remote: Remote, paging: Paging) -> anyhow::Result<()> {
    let mut q = Vec::new();
    paging.push(&mut q);
    let list = remote
        .client(Bearer::Organisation)?
        .ledger_entries(&q)
        .await?;
    print_page(
        remote.json,
        &list,
        &["ID", "TYPE", "USD", "BALANCE", "PURCHASE", "CREATED"],
        "entries",
        |e| {
            vec![
                e.id.clone(),
                e.kind.clone(),
                e.amount_usd.to_usd_string(),
                e.balance_after_usd.to_usd_string(),
                e.purchase_id.clone().unwrap_or_default(),
                e.created_at.to_rfc3339(),
            ]
        },
    )
}

pub async fn events(cmd: EventsCommand) -> anyhow::Result<()> {
    match cmd {
        EventsCommand::List {
            remote,
            kind,
            purchase,
            paging,
        } => {
            let mut q = Vec::new();
            if let Some(k) = kind {
                q.push(("type", k));
            }
            if let Some(p) = purchase {
                q.push(("purchaseId", p));
            }
            paging.push(&mut q);
            let list = remote.client(Bearer::Organisation)?.list_events(&q).await?;
            print_page(
                remote.json,
                &list,
                &["ID", "TYPE", "PURCHASE", "CREATED"],
                "events",
                |e| {
                    vec![
                        e.id.clone(),
                        e.kind.clone(),
                        e.purchase_id.clone().unwrap_or_default(),
                        e.created_at.to_rfc3339(),
                    ]
                },
            )
        }
        EventsCommand::Get { id, remote } => {
            let e = remote.client(Bearer::Organisation)?.get_event(&id).await?;
            if remote.json {
                return print_json(&e);
            }
            println!(
                "{} {} {}",
                e.event.id,
                e.event.kind,
                e.event.created_at.to_rfc3339()
            );
            let rows: Vec<Vec<String>> = e
                .attempts
                .iter()
                .map(|a| {
                    vec![
                        a.delivery_id.clone(),
                        a.endpoint_id.clone(),
                        a.attempt.to_string(),
                        a.attempted_at.to_rfc3339(),
                        a.status_code
                            .map(|c| c.to_string())
                            .unwrap_or_else(|| "-".into()),
                        format!("{} ms", a.latency_ms),
                        a.error.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            table(
                &[
                    "DELIVERY", "ENDPOINT", "ATTEMPT", "AT", "STATUS", "LATENCY", "ERROR",
                ],
                &rows,
            );
            Ok(())
        }
        EventsCommand::Redeliver {
            id,
            remote,
            endpoint,
        } => {
            let r = remote
                .client(Bearer::Organisation)?
                .redeliver_event(&id, endpoint.as_deref())
                .await?;
            if remote.json {
                return print_json(&r);
            }
            for d in &r.deliveries {
                println!("queued {} to {}", d.id, d.endpoint_id);
            }
            Ok(())
        }
    }
}

/// `cobro webhook listen`: a local receiver that verifies and prints deliveries.
#[derive(Debug, Args)]
pub struct ListenArgs {
    /// Port to listen on (127.0.0.1).
    #[arg(long, default_value_t = 8787)]
    pub port: u16,
    /// The endpoint's secret (whsec_…) to verify signatures [env: COBRO_WEBHOOK_SECRET].
    #[arg(long)]
    pub secret: Option<String>,
    /// Register this receiver as an endpoint first (needs the secret key), use its secret, and
    /// delete the endpoint on exit. The server accepts this loopback URL when it listens on
    /// loopback only (the default) or has webhooks.allow_private_addresses set.
    #[arg(long)]
    pub register: bool,
    #[command(flatten)]
    pub remote: Remote,
    /// Stop after this many deliveries (default: run until Ctrl-C).
    #[arg(long)]
    pub count: Option<u64>,
}

pub async fn listen(a: ListenArgs) -> anyhow::Result<()> {
    use axum::{Router, body::Bytes, extract::State, http::HeaderMap, routing::post};
    use std::sync::Arc;
    use tokio::sync::mpsc;

    let listener = tokio::net::TcpListener::bind(("127.0.0.1", a.port))
        .await
        .with_context(|| format!("cannot listen on 127.0.0.1:{}", a.port))?;
    let addr = listener.local_addr()?;
    let url = format!("http://{addr}/");
    let mut secret = a.secret.clone().or_else(|| env("COBRO_WEBHOOK_SECRET"));
    let mut registered = None;
    if a.register {
        let client = a.remote.client(Bearer::Organisation)?;
        let created = client
            .create_webhook_endpoint(&cobro_types::events::CreateWebhookEndpoint {
                url: url.clone(),
                events: None,
                description: Some("cobro webhook listen".into()),
                enabled: None,
            })
            .await?;
        secret = created.secret.clone();
        eprintln!("registered endpoint {} for {url}", created.id);
        registered = Some((client, created.id));
    }
    eprintln!(
        "listening on {url}{}",
        if secret.is_some() {
            " (verifying signatures)"
        } else {
            " (no secret: signatures not checked)"
        }
    );
    let (tx, mut rx) = mpsc::unbounded_channel::<(HeaderMap, Bytes)>();
    async fn hook(
        State(tx): State<Arc<mpsc::UnboundedSender<(HeaderMap, Bytes)>>>,
        headers: HeaderMap,
        body: Bytes,
    ) -> &'static str {
        let _ = tx.send((headers, body));
        "ok"
    }
    let app = Router::new()
        .route("/", post(hook))
        .route("/{*path}", post(hook))
        .with_state(Arc::new(tx));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    let mut seen = 0u64;
    let json = a.remote.json;
    loop {
        let next = tokio::select! {
            d = rx.recv() => d,
            _ = tokio::signal::ctrl_c() => None,
        };
        let Some((headers, body)) = next else { break };
        seen += 1;
        let verdict = match &secret {
            Some(s) => {
                let now = time::OffsetDateTime::now_utc().unix_timestamp();
                match cobro_sdk::webhooks::verify_headers(s, &body, &headers, now, 300) {
                    Ok(()) => "verified".to_string(),
                    Err(e) => format!("NOT VERIFIED ({e})"),
                }
            }
            None => "unverified".to_string(),
        };
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
        if json {
            println!(
                "{}",
                serde_json::json!({ "signature": verdict, "event": v })
            );
        } else {
            println!(
                "{} {} {} purchase={} status={} [{}]",
                v["createdAt"].as_str().unwrap_or("-"),
                v["id"].as_str().unwrap_or("-"),
                v["type"].as_str().unwrap_or("-"),
                v["data"]["id"].as_str().unwrap_or("-"),
                v["data"]["status"].as_str().unwrap_or("-"),
                verdict
            );
        }
        if a.count.is_some_and(|c| seen >= c) {
            break;
        }
    }
    server.abort();
    if let Some((client, id)) = registered {
        client.delete_webhook_endpoint(&id).await?;
        eprintln!("deleted endpoint {id}");
    }
    Ok(())
}
