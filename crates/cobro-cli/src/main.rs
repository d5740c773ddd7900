//! `cobro`: run the server, migrate the database, and administer organisations, keys,
//! credits, tokens and the catalog.
//!
//! Configuration precedence: defaults < `--config FILE` < `COBRO_*` variables < flags.
#![forbid(unsafe_code)]

mod client;

/// mimalloc instead of the system allocator: the request path allocates many small, short-lived
/// buffers, and glibc's malloc/free took about a tenth of the server's CPU under purchase
/// load (docs/BENCHMARKS.md).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::{io::Write, net::SocketAddr, path::PathBuf, process::ExitCode};

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use cobro_server::{
    Config,
    admin::{self, KeyOptions},
    bootstrap, server, store, telemetry,
};
use cobro_types::Environment;
use serde::Serialize;

#[derive(Debug, Parser)]
#[command(
    name = "cobro",
    version,
    about = "Bill payments and pay-per-request gateway (Chipi Bills compatible)"
)]
struct Cli {
    /// Configuration file (TOML). Every option can also be set as a COBRO_* variable.
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Database URL: sqlite://PATH or postgres://… [env: COBRO_DATABASE_URL]
    #[arg(long, global = true, value_name = "URL")]
    database: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the HTTP server (migrates first; seeds a demo on an empty database).
    Serve {
        /// Address to listen on [env: COBRO_LISTEN] [default: 127.0.0.1:8080]
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Write the server's base URL to this file once it is listening (for scripts).
        #[arg(long, value_name = "PATH")]
        ready_file: Option<PathBuf>,
        /// Run the carrier simulator in-process and send production purchases to it (demos;
        /// nothing real is recharged).
        #[arg(long)]
        carrier_sim: bool,
    },
    /// Apply pending database migrations and exit.
    Migrate,
    /// Configuration helpers.
    #[command(subcommand)]
    Config(ConfigCommand),
    /// Administer the database directly.
    Admin(AdminArgs),
    /// Run the x402 facilitator alone (POST /verify, POST /settle, GET /supported, also under
    /// /x402), on the database's payment records and the [x402] configuration.
    Facilitator {
        /// Address to listen on.
        #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8402")]
        listen: String,
    },
    /// x402 client commands.
    #[command(subcommand)]
    X402(X402Command),
    /// Browse the catalog.
    #[command(subcommand)]
    Skus(client::SkusCommand),
    /// Convert an amount to USD at the server's rate.
    Quote {
        /// The amount, e.g. 200
        #[arg(long)]
        amount: String,
        /// MXN
        #[arg(long, default_value = "MXN")]
        currency: String,
        #[command(flatten)]
        remote: client::Remote,
    },
    /// Buy a SKU: cobro buy SKU REFERENCE [--amount N] [--wait]
    Buy(client::BuyArgs),
    /// Look up purchases.
    #[command(subcommand)]
    Purchases(client::PurchasesCommand),
    /// The organisation's credits (secret key).
    Balance {
        #[command(flatten)]
        remote: client::Remote,
    },
    /// The organisation's ledger, newest first (secret key).
    Ledger {
        #[command(flatten)]
        remote: client::Remote,
        #[command(flatten)]
        paging: client::Paging,
    },
    /// Events and their deliveries (secret key).
    #[command(subcommand)]
    Events(client::EventsCommand),
    /// Webhook tools for integrators.
    #[command(subcommand)]
    Webhook(WebhookClientCommand),
}

#[derive(Debug, Subcommand)]
enum WebhookClientCommand {
    /// Run a local receiver that verifies and prints deliveries.
    Listen(client::ListenArgs),
}

#[derive(Debug, Subcommand)]
enum X402Command {
    /// GET a URL, paying its 402 (if any) from a Starknet account, within limits.
    Pay {
        url: String,
        /// The paying account's address.
        #[arg(long)]
        account: String,
        /// The account's STARK private key [env: COBRO_X402_PRIVATE_KEY]; prefer the variable.
        #[arg(long)]
        private_key: Option<String>,
        /// The most this command may pay, in base units of the asset (USDC: 6 decimals).
        #[arg(long)]
        max_amount: u128,
        /// Only pay these recipients (repeat the flag; default: any).
        #[arg(long = "allow", value_name = "ADDRESS")]
        allow: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Print every option with its default and its environment variable.
    PrintDefault,
}

#[derive(Debug, Args)]
struct AdminArgs {
    /// Print one JSON object instead of text.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: AdminCommand,
}

#[derive(Debug, Subcommand)]
enum AdminCommand {
    /// Organisations.
    #[command(subcommand)]
    Org(OrgCommand),
    /// API key pairs.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Organisation credits.
    #[command(subcommand)]
    Credits(CreditsCommand),
    /// Mint a customer JWT from the built-in issuer.
    Token {
        /// The public key the token is for (it must trust the built-in issuer).
        #[arg(long)]
        key: String,
        /// The customer id (`sub`).
        #[arg(long)]
        sub: String,
        /// Lifetime, e.g. 90s, 30m, 1h, 7d.
        #[arg(long, default_value = "1h")]
        ttl: String,
    },
    /// The SKU catalog.
    #[command(subcommand)]
    Catalog(CatalogCommand),
    /// Per-SKU or per-category markups.
    #[command(subcommand)]
    Markup(MarkupCommand),
    /// Webhook endpoints (the same rules as /v1/webhook-endpoints).
    #[command(subcommand)]
    Webhook(WebhookCommand),
}

/// Which organisation and environment a webhook command is about.
#[derive(Debug, Args)]
struct Scope {
    #[arg(long)]
    org: String,
    #[arg(long, value_parser = ["dev", "prod"])]
    env: String,
}

impl Scope {
    fn env(&self) -> anyhow::Result<Environment> {
        Environment::parse(&self.env).context("--env must be dev or prod")
    }
}

#[derive(Debug, Subcommand)]
enum WebhookCommand {
    /// Register an endpoint (its secret is shown once).
    Create {
        #[command(flatten)]
        scope: Scope,
        #[arg(long)]
        url: String,
        /// Comma-separated event types (default: all).
        #[arg(long, value_delimiter = ',')]
        events: Vec<String>,
        #[arg(long)]
        description: Option<String>,
    },
    /// List the endpoints.
    List {
        #[command(flatten)]
        scope: Scope,
    },
    /// Change an endpoint.
    Update {
        id: String,
        #[command(flatten)]
        scope: Scope,
        #[arg(long)]
        url: Option<String>,
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        #[arg(long)]
        description: Option<String>,
        #[arg(long, conflicts_with = "disable")]
        enable: bool,
        #[arg(long)]
        disable: bool,
    },
    /// Delete an endpoint (pending deliveries are cancelled).
    Delete {
        id: String,
        #[command(flatten)]
        scope: Scope,
    },
    /// Replace the secret; the old one keeps signing during the configured overlap.
    RotateSecret {
        id: String,
        #[command(flatten)]
        scope: Scope,
    },
}

#[derive(Debug, Subcommand)]
enum MarkupCommand {
    /// Set an organisation's markup for a SKU or a category (a SKU rule wins).
    Set {
        #[arg(long)]
        org: String,
        #[arg(
            long,
            conflicts_with = "category",
            required_unless_present = "category"
        )]
        sku: Option<String>,
        #[arg(long)]
        category: Option<String>,
        /// Percentage of the converted amount, e.g. 2.5.
        #[arg(long)]
        percent: Option<String>,
        /// Fixed USD per purchase, e.g. 0.10.
        #[arg(long)]
        usd: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum OrgCommand {
    /// Create an organisation.
    Create { name: String },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create a public/secret key pair (the secret is shown once).
    Create {
        #[arg(long)]
        org: String,
        #[arg(long, value_parser = ["dev", "prod"])]
        env: String,
        /// Verify customer JWTs against this JWKS (default: the built-in issuer).
        #[arg(long)]
        jwks_url: Option<String>,
        /// Required `iss` of customer JWTs.
        #[arg(long)]
        issuer: Option<String>,
        /// Required `aud` of customer JWTs.
        #[arg(long)]
        audience: Option<String>,
    },
    /// Revoke a key pair (running servers refuse it within seconds).
    Revoke { public_key: String },
}

#[derive(Debug, Subcommand)]
enum CreditsCommand {
    /// Add credits to an organisation.
    Add {
        #[arg(long)]
        org: String,
        /// Amount in USD, e.g. 100 or 12.50 (up to 6 decimals).
        #[arg(long)]
        usd: String,
        #[arg(long)]
        note: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
enum CatalogCommand {
    /// Insert or update SKUs from a JSON file (an array of catalog records).
    Import { file: PathBuf },
    /// Print the whole catalog as JSON (the import format).
    Export,
}

fn load_config(cli: &Cli) -> anyhow::Result<Config> {
    let mut config =
        Config::load(cli.config.as_deref()).map_err(|e| anyhow::anyhow!("configuration: {e}"))?;
    if let Some(db) = &cli.database {
        config.database.url = db.clone();
    }
    Ok(config)
}

fn print_out<T: Serialize>(
    json: bool,
    value: &T,
    text: impl FnOnce() -> String,
) -> anyhow::Result<()> {
    if json {
        println!("{}", serde_json::to_string(value)?);
    } else {
        println!("{}", text());
    }
    Ok(())
}

/// The URL clients on this machine use to reach a server bound to `addr`.
fn local_url(addr: SocketAddr) -> String {
    let ip = if addr.ip().is_unspecified() {
        "127.0.0.1".to_string()
    } else {
        addr.ip().to_string()
    };
    if addr.is_ipv6() && !addr.ip().is_unspecified() {
        format!("http://[{ip}]:{}", addr.port())
    } else {
        format!("http://{ip}:{}", addr.port())
    }
}

async fn serve(
    mut config: Config,
    listen: Option<String>,
    ready_file: Option<PathBuf>,
    carrier_sim: bool,
) -> anyhow::Result<()> {
    if let Some(listen) = listen {
        config.listen = listen;
    }
    telemetry::init_tracing(&config.log.format, &config.log.filter);
    let sim = if carrier_sim {
        let sim = carrier_sim::spawn(carrier_sim::SimConfig::default(), "127.0.0.1:0")
            .await
            .context("starting the in-process carrier simulator")?;
        config.carrier.url = sim.url();
        Some(sim)
    } else {
        None
    };
    tracing::info!(database = %cobro_server::config::redact_url(&config.database.url), "opening database");
    let store = store::open(&config.database)
        .await
        .context("opening the database")?;
    let demo = bootstrap::bootstrap_demo(store.as_ref(), &config)
        .await
        .context("seeding the demo")?;
    let running = server::start(config, store).await?;
    let url = local_url(running.addr);
    let mut stdout = std::io::stdout().lock();
    if let Some(demo) = &demo {
        writeln!(stdout, "{}", bootstrap::quickstart(demo, &url))?;
    }
    match (&sim, running.app.config.carrier.url.as_str()) {
        (Some(sim), _) => writeln!(
            stdout,
            "carrier: carrier-sim, in-process at {} (SIMULATED: production purchases are not real recharges)",
            sim.url()
        )?,
        (None, "") => {} // the default: later starts print only where the server listens
        (None, carrier) => writeln!(stdout, "carrier: {carrier}")?,
    }
    writeln!(stdout, "cobro listening on {url}")?;
    stdout.flush()?;
    drop(stdout);
    if let Some(path) = ready_file {
        std::fs::write(&path, &url).with_context(|| format!("writing {}", path.display()))?;
    }
    running.run_until(server::shutdown_signal()).await
}

async fn admin(config: Config, args: AdminArgs) -> anyhow::Result<()> {
    let store = store::open(&config.database)
        .await
        .context("opening the database")?;
    let store = store.as_ref();
    let json = args.json;
    match args.command {
        AdminCommand::Org(OrgCommand::Create { name }) => {
            let org = admin::create_org(store, &name).await?;
            print_out(json, &org, || format!("created organisation {}", org.id))
        }
        AdminCommand::Key(KeyCommand::Create {
            org,
            env,
            jwks_url,
            issuer,
            audience,
        }) => {
            let env = Environment::parse(&env).context("--env must be dev or prod")?;
            if jwks_url.is_some() && issuer.is_none() && audience.is_none() {
                eprintln!(
                    "warning: neither --issuer nor --audience is set, so any token signed by a key in that \
                     JWKS is accepted; with a JWKS shared by many tenants, set at least one"
                );
            }
            let key = admin::create_key(
                store,
                &org,
                env,
                &KeyOptions {
                    jwks_url,
                    issuer,
                    audience,
                },
            )
            .await?;
            print_out(json, &key, || {
                format!(
                    "public key  {}\nsecret key  {}\n(the secret key is shown only this once)",
                    key.public_key, key.secret_key
                )
            })
        }
        AdminCommand::Key(KeyCommand::Revoke { public_key }) => {
            admin::revoke_key(store, &public_key).await?;
            let out = serde_json::json!({ "publicKey": public_key, "revoked": true });
            print_out(json, &out, || format!("revoked {public_key}"))
        }
        AdminCommand::Credits(CreditsCommand::Add { org, usd, note }) => {
            let balance = admin::add_credits(store, &org, &usd, note.as_deref()).await?;
            print_out(json, &balance, || {
                format!(
                    "{} now has {} USD available",
                    balance.org_id,
                    balance.available_usd.to_usd_string()
                )
            })
        }
        AdminCommand::Token { key, sub, ttl } => {
            let ttl = admin::parse_ttl(&ttl)?;
            let token = admin::mint_token(store, &config, &key, &sub, ttl).await?;
            print_out(json, &token, || token.token.clone())
        }
        AdminCommand::Catalog(CatalogCommand::Import { file }) => {
            let text = std::fs::read_to_string(&file)
                .with_context(|| format!("reading {}", file.display()))?;
            let summary = admin::import_catalog(store, &text).await?;
            print_out(json, &summary, || {
                format!(
                    "imported {} SKUs ({} active)",
                    summary.imported, summary.active
                )
            })
        }
        AdminCommand::Markup(MarkupCommand::Set {
            org,
            sku,
            category,
            percent,
            usd,
        }) => {
            let target = match (sku, category) {
                (Some(id), _) => admin::MarkupTarget::Sku(id),
                (None, Some(c)) => admin::MarkupTarget::Category(c),
                (None, None) => anyhow::bail!("give --sku or --category"),
            };
            let rule =
                admin::set_markup(store, &org, target, percent.as_deref(), usd.as_deref()).await?;
            let out = serde_json::json!({
                "orgId": rule.org_id, "scope": rule.scope, "target": rule.target,
                "percent": rule.percent, "usd": rule.fixed,
            });
            print_out(json, &out, || {
                format!(
                    "{} {}: {} % + {} USD",
                    rule.scope,
                    rule.target,
                    rule.percent,
                    rule.fixed.to_usd_string()
                )
            })
        }
        AdminCommand::Webhook(cmd) => webhook_admin(store, &config, json, cmd).await,
        AdminCommand::Catalog(CatalogCommand::Export) => {
            let entries = admin::export_catalog(store).await?;
            println!("{}", serde_json::to_string_pretty(&entries)?);
            Ok(())
        }
    }
}

fn endpoint_text(e: &cobro_types::events::WebhookEndpointView) -> String {
    let mut out = format!(
        "{}  {}  events={}  {}",
        e.id,
        e.url,
        e.events.join(","),
        if e.enabled { "enabled" } else { "disabled" }
    );
    if let Some(reason) = &e.disabled_reason {
        out.push_str(&format!(" ({reason})"));
    }
    if let Some(secret) = &e.secret {
        out.push_str(&format!(
            "\nsecret  {secret}\n(the secret is shown only this once)"
        ));
    }
    out
}

async fn webhook_admin(
    store: &dyn cobro_store::Store,
    config: &Config,
    json: bool,
    cmd: WebhookCommand,
) -> anyhow::Result<()> {
    use cobro_server::webhooks::ops;
    use cobro_types::events::{CreateWebhookEndpoint, UpdateWebhookEndpoint};
    let cfg = &config.webhooks;
    let api = |e: cobro_server::error::ApiError| anyhow::anyhow!("{}: {}", e.code, e.message);
    match cmd {
        WebhookCommand::Create {
            scope,
            url,
            events,
            description,
        } => {
            let input = CreateWebhookEndpoint {
                url,
                events: Some(events),
                description,
                enabled: None,
            };
            let e = ops::create(store, cfg, &scope.org, scope.env()?, input)
                .await
                .map_err(api)?;
            print_out(json, &e, || endpoint_text(&e))
        }
        WebhookCommand::List { scope } => {
            let all = ops::list(store, &scope.org, scope.env()?)
                .await
                .map_err(api)?;
            print_out(json, &all, || {
                all.iter().map(endpoint_text).collect::<Vec<_>>().join("\n")
            })
        }
        WebhookCommand::Update {
            id,
            scope,
            url,
            events,
            description,
            enable,
            disable,
        } => {
            let input = UpdateWebhookEndpoint {
                url,
                events,
                description,
                enabled: (enable || disable).then_some(enable),
            };
            let e = ops::update(store, cfg, &scope.org, scope.env()?, &id, input)
                .await
                .map_err(api)?;
            print_out(json, &e, || endpoint_text(&e))
        }
        WebhookCommand::Delete { id, scope } => {
            let d = ops::delete(store, &scope.org, scope.env()?, &id)
                .await
                .map_err(api)?;
            print_out(json, &d, || format!("deleted {}", d.id))
        }
        WebhookCommand::RotateSecret { id, scope } => {
            let e = ops::rotate(store, cfg, &scope.org, scope.env()?, &id)
                .await
                .map_err(api)?;
            print_out(json, &e, || endpoint_text(&e))
        }
    }
}

async fn facilitator(config: Config, listen: &str) -> anyhow::Result<()> {
    telemetry::init_tracing(&config.log.format, &config.log.filter);
    let mut x402 = config.x402.clone();
    x402.enabled = true;
    x402.validate()?;
    let store = store::open(&config.database)
        .await
        .context("opening the database")?;
    let f = cobro_x402::Facilitator::new(&x402, store.payments())?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let url = local_url(listener.local_addr()?);
    println!(
        "cobro facilitator ({} settlement, {}) listening on {url}",
        x402.settlement, x402.network
    );
    std::io::stdout().flush()?;
    cobro_x402::serve_with_shutdown(f, listener, server::shutdown_signal()).await?;
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let config = load_config(&cli)?;
    match cli.command {
        Command::Serve {
            listen,
            ready_file,
            carrier_sim,
        } => serve(config, listen, ready_file, carrier_sim).await,
        Command::Migrate => {
            store::open(&config.database)
                .await
                .context("migrating the database")?;
            println!(
                "migrations applied to {}",
                cobro_server::config::redact_url(&config.database.url)
            );
            Ok(())
        }
        Command::Config(ConfigCommand::PrintDefault) => {
            print!("{}", Config::default_toml());
            Ok(())
        }
        Command::Admin(args) => admin(config, args).await,
        Command::Facilitator { listen } => facilitator(config, &listen).await,
        Command::Skus(cmd) => client::skus(cmd).await,
        Command::Quote {
            amount,
            currency,
            remote,
        } => client::quote(remote, amount, currency).await,
        Command::Buy(args) => client::buy(args).await,
        Command::Purchases(cmd) => client::purchases(cmd).await,
        Command::Balance { remote } => client::balance(remote).await,
        Command::Ledger { remote, paging } => client::ledger(remote, paging).await,
        Command::Events(cmd) => client::events(cmd).await,
        Command::Webhook(WebhookClientCommand::Listen(args)) => client::listen(args).await,
        Command::X402(X402Command::Pay {
            url,
            account,
            private_key,
            max_amount,
            allow,
        }) => {
            let key = match private_key {
                Some(k) => k,
                None => std::env::var("COBRO_X402_PRIVATE_KEY")
                    .context("give --private-key or set COBRO_X402_PRIVATE_KEY")?,
            };
            let result = cobro_x402::pay(&url, &key, &account, max_amount, &allow)
                .await
                .map_err(|e| anyhow::anyhow!("payment refused: {e}"))?;
            if let Some(s) = &result.settlement {
                eprintln!(
                    "paid: success={} transaction={} payer={}",
                    s.success,
                    s.transaction,
                    s.payer.as_deref().unwrap_or("-")
                );
            }
            std::io::stdout().write_all(&result.body)?;
            if !(200..300).contains(&result.status) {
                anyhow::bail!("the server answered HTTP {}", result.status);
            }
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
