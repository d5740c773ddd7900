//! The SQLite implementation of the cobro [`Store`]: the embedded default, so that
//! `cobro serve` needs nothing installed.
//!
//! The database runs in WAL mode with `synchronous=FULL` (a committed purchase survives a
//! power cut) and foreign keys on. Every write transaction starts with `BEGIN IMMEDIATE`:
//! SQLite allows one writer at a time, and taking the write lock up front turns would-be
//! deadlocks between readers that upgrade into plain waits bounded by `busy_timeout`.
#![forbid(unsafe_code)]

mod webhooks;
mod x402;

pub use x402::*;

use std::{
    borrow::Cow,
    collections::{HashMap, HashSet},
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use cobro_store::{
    ApiKeyRecord, ChangeVersions, ClaimedJob, DemoBootstrap, FinishPurchase, FulfilmentBacklog,
    IssuerKey, LedgerEntry, MarkupRule, NewEvent, NewLedgerEntry, NewPurchase, Org, PurchaseFilter,
    PurchaseRecord, PurchaseResult, Store, StoreError, StoreResult, batch, codec,
};
use cobro_types::{CatalogEntry, Environment, MinorAmount, PurchaseStatus, Timestamp, UsdMicros};
use serde_json::{Value, json};
use sqlx::{
    Row, SqlSafeStr, SqliteConnection,
    migrate::{Migration, MigrationType, Migrator},
    sqlite::{
        SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
        SqliteSynchronous,
    },
};

/// The migrations, compiled into the binary.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "foundation",
        include_str!("../migrations/0001_foundation.sql"),
    ),
    (
        2,
        "purchases",
        include_str!("../migrations/0002_purchases.sql"),
    ),
    (
        3,
        "webhooks",
        include_str!("../migrations/0003_webhooks.sql"),
    ),
    (4, "x402", include_str!("../migrations/0004_x402.sql")),
    // (5 is PostgreSQL's purchase key index; SQLite needs none.)
    (
        6,
        "route on write",
        include_str!("../migrations/0006_route_on_write.sql"),
    ),
];

fn migrator() -> Migrator {
    Migrator::with_migrations(
        MIGRATIONS
            .iter()
            .map(|(version, name, sql)| {
                Migration::new(
                    *version,
                    Cow::Borrowed(*name),
                    MigrationType::Simple,
                    sqlx::AssertSqlSafe(*sql).into_sql_str(),
                    false,
                )
            })
            .collect(),
    )
}

pub(crate) fn db_err(e: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(d) = &e {
        if d.is_unique_violation() {
            return StoreError::Conflict(d.message().to_string());
        }
        if d.is_foreign_key_violation() {
            return StoreError::NotFound(d.message().to_string());
        }
        if d.is_check_violation() {
            return StoreError::Rejected(d.message().to_string());
        }
    }
    StoreError::Database(e.to_string())
}

/// Options for opening a SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    pub max_connections: u32,
    pub busy_timeout: Duration,
}

impl Default for SqliteOptions {
    fn default() -> Self {
        SqliteOptions {
            max_connections: 8,
            busy_timeout: Duration::from_secs(10),
        }
    }
}

/// A cobro store on one SQLite database file.
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pub(crate) pool: SqlitePool,
    /// Serialises this process's write transactions. SQLite allows one writer at a time; a
    /// second `BEGIN IMMEDIATE` would get `SQLITE_BUSY` and sleep in SQLite's busy handler
    /// (1 ms, then longer), leaving the database idle. Waiting here instead hands the lock over
    /// at once. Other processes on the same file still meet the busy timeout.
    writer: Arc<tokio::sync::Mutex<()>>,
    /// Dropped with the last clone of the store, which stops the checkpointer.
    _checkpointer: Arc<tokio::sync::oneshot::Sender<()>>,
}

/// How often the background checkpointer copies the WAL into the database file.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Checkpoints the WAL every `every` with `PRAGMA wal_checkpoint(PASSIVE)` on a pooled
/// connection, until the returned sender is dropped.
///
/// SQLite's automatic checkpoint runs inside the commit that crosses its threshold, so one
/// unlucky group of purchases also paid for copying and syncing the whole WAL, while holding
/// the write lock. A passive checkpoint from another connection never blocks writers, and
/// running it on a timer copies a page that many commits changed once instead of once per
/// threshold crossing.
fn spawn_checkpointer(pool: SqlitePool, every: Duration) -> tokio::sync::oneshot::Sender<()> {
    let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stopped => return,
                _ = tick.tick() => {}
            }
            if pool.is_closed() {
                return;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
                .execute(&pool)
                .await
            {
                tracing::warn!(error = %e, "WAL checkpoint failed; retrying");
            }
        }
    });
    stop
}

/// A write transaction holding this process's writer lock until it is committed or dropped
/// (dropping rolls back).
pub(crate) struct WriteTx {
    tx: sqlx::Transaction<'static, sqlx::Sqlite>,
    _writer: tokio::sync::OwnedMutexGuard<()>,
}

impl WriteTx {
    pub(crate) async fn commit(self) -> Result<(), sqlx::Error> {
        self.tx.commit().await
    }

    pub(crate) async fn rollback(self) -> Result<(), sqlx::Error> {
        self.tx.rollback().await
    }
}

impl std::ops::Deref for WriteTx {
    type Target = SqliteConnection;
    fn deref(&self) -> &SqliteConnection {
        &self.tx
    }
}

impl std::ops::DerefMut for WriteTx {
    fn deref_mut(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }
}

impl SqliteStore {
    /// Opens (creating if missing) the database at `url` (`sqlite://PATH` or `sqlite:PATH`).
    /// Does not migrate; call [`SqliteStore::migrate`].
    pub async fn connect(url: &str, opts: &SqliteOptions) -> StoreResult<SqliteStore> {
        let connect = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad SQLite URL {url:?}: {e}")))?
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            // 64 MiB of page cache per connection (the default is 2 MiB): the purchase
            // indexes' hot pages stay in memory instead of being re-read from the OS.
            .pragma("cache_size", "-65536")
            // Statement journals (multi-row statements inside a transaction) in memory.
            .pragma("temp_store", "memory")
            // The WAL is checkpointed by a background task (see `spawn_checkpointer`), off
            // the commit path; this is only a backstop should that task fall far behind.
            .pragma("wal_autocheckpoint", "16384")
            .busy_timeout(opts.busy_timeout);
        let pool = SqlitePoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            .connect_with(connect)
            .await
            .map_err(db_err)?;
        let checkpointer = spawn_checkpointer(pool.clone(), CHECKPOINT_EVERY);
        Ok(SqliteStore {
            pool,
            writer: Arc::default(),
            _checkpointer: Arc::new(checkpointer),
        })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> StoreResult<()> {
        migrator()
            .run(&self.pool)
            .await
            .map_err(|e| StoreError::Database(format!("migration failed: {e}")))
    }

    /// Closes the pool, waiting for connections to be returned.
    pub async fn close(&self) {
        self.pool.close().await;
    }

    pub(crate) async fn begin_write(&self) -> StoreResult<WriteTx> {
        let writer = self.writer.clone().lock_owned().await;
        let tx = self
            .pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(db_err)?;
        Ok(WriteTx {
            tx,
            _writer: writer,
        })
    }
}

async fn bump(conn: &mut SqliteConnection, name: &'static str) -> StoreResult<()> {
    sqlx::query("UPDATE change_versions SET version = version + 1 WHERE name = ?")
        .bind(name)
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

async fn insert_org(conn: &mut SqliteConnection, org: &Org) -> StoreResult<()> {
    sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES (?, ?, ?)")
        .bind(&org.id)
        .bind(&org.name)
        .bind(org.created_at.unix_millis())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    sqlx::query("INSERT INTO org_balances (org_id, available_micros, updated_at) VALUES (?, 0, ?)")
        .bind(&org.id)
        .bind(org.created_at.unix_millis())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

async fn insert_key(conn: &mut SqliteConnection, k: &ApiKeyRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (public_key, org_id, environment, secret_hash, jwks_url, issuer,
                               audience, created_at, revoked_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(&k.public_key)
    .bind(&k.org_id)
    .bind(k.environment.as_str())
    .bind(&k.secret_hash)
    .bind(&k.jwks_url)
    .bind(&k.issuer)
    .bind(&k.audience)
    .bind(k.created_at.unix_millis())
    .bind(k.revoked_at.map(Timestamp::unix_millis))
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    bump(conn, "keys").await
}

/// Appends a ledger entry and moves the balance, in the caller's transaction.
async fn append_entry(
    conn: &mut SqliteConnection,
    e: &NewLedgerEntry<'_>,
) -> StoreResult<LedgerEntry> {
    let NewLedgerEntry {
        id: entry_id,
        org_id,
        kind,
        amount,
        note,
        purchase_id,
        at,
    } = *e;
    let row = sqlx::query(
        "UPDATE org_balances SET available_micros = available_micros + ?, updated_at = ?
         WHERE org_id = ? RETURNING available_micros",
    )
    .bind(amount.0)
    .bind(at.unix_millis())
    .bind(org_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(|e| match db_err(e) {
        StoreError::Rejected(_) if amount.0 < 0 => {
            StoreError::Rejected("insufficient balance".into())
        }
        StoreError::Rejected(_) => {
            StoreError::Rejected("the balance would exceed its maximum".into())
        }
        other => other,
    })?
    .ok_or_else(|| StoreError::NotFound(format!("organisation {org_id}")))?;
    let balance_after: i64 = row.try_get(0).map_err(db_err)?;
    sqlx::query(
        "INSERT INTO ledger_entries (id, org_id, kind, amount_micros, balance_after_micros, note,
                                     purchase_id, created_at)
         VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(entry_id)
    .bind(org_id)
    .bind(kind)
    .bind(amount.0)
    .bind(balance_after)
    .bind(note)
    .bind(purchase_id)
    .bind(at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(LedgerEntry {
        id: entry_id.to_string(),
        org_id: org_id.to_string(),
        kind: kind.to_string(),
        amount,
        balance_after: UsdMicros(balance_after),
        note: note.map(str::to_string),
        purchase_id: purchase_id.map(str::to_string),
        created_at: at,
    })
}

async fn upsert_skus(
    conn: &mut SqliteConnection,
    entries: &[CatalogEntry],
    at: Timestamp,
) -> StoreResult<usize> {
    for e in entries {
        let doc = codec::encode_catalog_entry(e)?;
        sqlx::query(
            "INSERT INTO skus (id, doc, active, created_at, updated_at) VALUES (?, ?, ?, ?, ?)
             ON CONFLICT (id) DO UPDATE SET doc = excluded.doc, active = excluded.active,
                                            updated_at = excluded.updated_at",
        )
        .bind(&e.id)
        .bind(doc)
        .bind(e.active)
        .bind(at.unix_millis())
        .bind(at.unix_millis())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    bump(conn, "catalog").await?;
    Ok(entries.len())
}

fn key_from_row(row: &SqliteRow) -> StoreResult<ApiKeyRecord> {
    let env: String = row.try_get("environment").map_err(db_err)?;
    Ok(ApiKeyRecord {
        public_key: row.try_get("public_key").map_err(db_err)?,
        org_id: row.try_get("org_id").map_err(db_err)?,
        environment: codec::decode_environment(&env)?,
        secret_hash: row.try_get("secret_hash").map_err(db_err)?,
        jwks_url: row.try_get("jwks_url").map_err(db_err)?,
        issuer: row.try_get("issuer").map_err(db_err)?,
        audience: row.try_get("audience").map_err(db_err)?,
        created_at: Timestamp::from_unix_millis(row.try_get("created_at").map_err(db_err)?),
        revoked_at: row
            .try_get::<Option<i64>, _>("revoked_at")
            .map_err(db_err)?
            .map(Timestamp::from_unix_millis),
    })
}

fn entry_from_row(row: &SqliteRow) -> StoreResult<LedgerEntry> {
    Ok(LedgerEntry {
        id: row.try_get("id").map_err(db_err)?,
        org_id: row.try_get("org_id").map_err(db_err)?,
        kind: row.try_get("kind").map_err(db_err)?,
        amount: UsdMicros(row.try_get("amount_micros").map_err(db_err)?),
        balance_after: UsdMicros(row.try_get("balance_after_micros").map_err(db_err)?),
        note: row.try_get("note").map_err(db_err)?,
        purchase_id: row.try_get("purchase_id").map_err(db_err)?,
        created_at: Timestamp::from_unix_millis(row.try_get("created_at").map_err(db_err)?),
    })
}

fn issuer_key_from_row(row: &SqliteRow) -> StoreResult<IssuerKey> {
    Ok(IssuerKey {
        kid: row.try_get("kid").map_err(db_err)?,
        alg: row.try_get("alg").map_err(db_err)?,
        private_pkcs8: row.try_get("private_pkcs8").map_err(db_err)?,
        public_jwk: row.try_get("public_jwk").map_err(db_err)?,
        created_at: Timestamp::from_unix_millis(row.try_get("created_at").map_err(db_err)?),
    })
}

/// The purchase list's filter, with numbered parameters (unset filters are NULL).
const LIST_WHERE: &str = "WHERE org_id = ?1 AND environment = ?2 AND (?3 IS NULL OR status = ?3) \
    AND (?4 IS NULL OR sku_id = ?4) AND (?5 IS NULL OR sku_reference = ?5) \
    AND (?6 IS NULL OR created_at >= ?6) AND (?7 IS NULL OR created_at <= ?7)";
const LIST_PAGE: &str = "LIMIT ?8 OFFSET ?9";

const PURCHASE_COLUMNS: &str = "id, org_id, environment, idempotency_key, request_hash, status, api_public_key, \
    customer_id, sku_id, sku_name, carrier_name, sku_reference, amount_minor, currency, chain, token, wallet_address, \
    fx_rate, base_micros, markup_micros, total_micros, org_markup, ledger_entry_id, sandbox, file_number, error_message, \
    created_at, updated_at, confirmed_at";

fn purchase_from_row(row: &SqliteRow) -> StoreResult<PurchaseRecord> {
    let text = |c: &str| row.try_get::<String, _>(c).map_err(db_err);
    let int = |c: &str| row.try_get::<i64, _>(c).map_err(db_err);
    Ok(PurchaseRecord {
        id: text("id")?,
        org_id: text("org_id")?,
        environment: codec::decode_environment(&text("environment")?)?,
        idempotency_key: text("idempotency_key")?,
        request_hash: text("request_hash")?,
        status: codec::decode_status(&text("status")?)?,
        api_public_key: text("api_public_key")?,
        customer_id: text("customer_id")?,
        sku_id: text("sku_id")?,
        sku_name: text("sku_name")?,
        carrier_name: text("carrier_name")?,
        sku_reference: text("sku_reference")?,
        amount: MinorAmount(int("amount_minor")?),
        currency: codec::decode_currency(&text("currency")?)?,
        chain: text("chain")?,
        token: text("token")?,
        wallet_address: text("wallet_address")?,
        fx_rate: text("fx_rate")?,
        base: UsdMicros(int("base_micros")?),
        markup: UsdMicros(int("markup_micros")?),
        total: UsdMicros(int("total_micros")?),
        org_markup: row.try_get("org_markup").map_err(db_err)?,
        ledger_entry_id: text("ledger_entry_id")?,
        sandbox: row.try_get::<bool, _>("sandbox").map_err(db_err)?,
        file_number: row.try_get("file_number").map_err(db_err)?,
        error_message: row.try_get("error_message").map_err(db_err)?,
        created_at: Timestamp::from_unix_millis(int("created_at")?),
        updated_at: Timestamp::from_unix_millis(int("updated_at")?),
        confirmed_at: row
            .try_get::<Option<i64>, _>("confirmed_at")
            .map_err(db_err)?
            .map(Timestamp::from_unix_millis),
    })
}

/// `value->>0, value->>1, …` for `n` columns of a `json_each` row that is a JSON array.
fn json_columns(n: usize) -> String {
    (0..n)
        .map(|i| format!("value->>{i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// The stored purchases under the keys of `batch`, in one query.
async fn find_by_keys(
    conn: &mut SqliteConnection,
    batch: &[NewPurchase],
) -> StoreResult<HashMap<batch::PurchaseKey, PurchaseRecord>> {
    let keys = Value::Array(
        batch
            .iter()
            .map(|p| {
                let r = &p.record;
                json!([r.org_id, r.environment.as_str(), r.idempotency_key])
            })
            .collect(),
    );
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE (org_id, environment, idempotency_key) IN \
         (SELECT value->>0, value->>1, value->>2 FROM json_each(?))"
    ));
    let mut found = HashMap::new();
    for row in sqlx::query(sql)
        .bind(keys.to_string())
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?
    {
        let r = purchase_from_row(&row)?;
        found.insert(batch::key_of(&r), r);
    }
    Ok(found)
}

/// Writes the accepted purchases of a batch plan with one statement per table: ledger debits
/// (real purchases; the balance rows were already moved for the whole batch), purchase rows,
/// fulfilment jobs and outbox events. Each statement reads its rows from one JSON array
/// parameter, so the SQL text (and the prepared statement) is the same for every batch size.
async fn write_accepted(
    conn: &mut SqliteConnection,
    batch: &[NewPurchase],
    accepted: &[batch::Accepted],
) -> StoreResult<()> {
    let mut ledger = Vec::new();
    let mut purchases = Vec::with_capacity(accepted.len());
    let mut jobs = Vec::new();
    let mut events = Vec::new();
    for a in accepted {
        let p = &batch[a.index];
        let r = &p.record;
        if let Some(after) = a.balance_after {
            ledger.push(json!([
                r.ledger_entry_id,
                r.org_id,
                -r.total.0,
                after,
                r.id,
                r.created_at.unix_millis()
            ]));
        }
        purchases.push(json!([
            r.id,
            r.org_id,
            r.environment.as_str(),
            r.idempotency_key,
            r.request_hash,
            r.status.as_str(),
            r.api_public_key,
            r.customer_id,
            r.sku_id,
            r.sku_name,
            r.carrier_name,
            r.sku_reference,
            r.amount.0,
            r.currency.as_str(),
            r.chain,
            r.token,
            r.wallet_address,
            r.fx_rate,
            r.base.0,
            r.markup.0,
            r.total.0,
            r.org_markup,
            r.ledger_entry_id,
            r.sandbox,
            r.file_number,
            r.error_message,
            r.created_at.unix_millis(),
            r.updated_at.unix_millis(),
            r.confirmed_at.map(Timestamp::unix_millis)
        ]));
        if !r.sandbox && !r.status.is_terminal() {
            jobs.push(json!([r.id, r.created_at.unix_millis()]));
        }
        for e in &p.events {
            events.push(event_row(
                e,
                &r.org_id,
                r.environment.as_str(),
                &r.id,
                r.updated_at,
            ));
        }
    }
    if !ledger.is_empty() {
        sqlx::query(
            "INSERT INTO ledger_entries (id, org_id, kind, amount_micros, balance_after_micros, note, purchase_id, created_at)
             SELECT value->>0, value->>1, 'purchase', value->>2, value->>3, NULL, value->>4, value->>5
             FROM json_each(?) ORDER BY key",
        )
        .bind(Value::Array(ledger).to_string())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    let sql = sqlx::AssertSqlSafe(format!(
        "INSERT INTO purchases ({PURCHASE_COLUMNS}) SELECT {} FROM json_each(?) ORDER BY key",
        json_columns(29)
    ));
    sqlx::query(sql)
        .bind(Value::Array(purchases).to_string())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    if !jobs.is_empty() {
        sqlx::query(
            "INSERT INTO fulfilment_jobs (purchase_id, next_attempt_at)
             SELECT value->>0, value->>1 FROM json_each(?) ORDER BY key",
        )
        .bind(Value::Array(jobs).to_string())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }
    insert_events(conn, events).await
}

/// The usual batch without reads: production purchases of one organisation, under keys that
/// are new and distinct, that the balance covers. The debit goes first (its RETURNING gives
/// the balance every ledger entry is computed from), then the entries, purchase rows and
/// jobs, for `org` (the batch's `batch::single_payer`). `Ok(None)`: a statement found the
/// batch was not of that kind (a key already stored: unique violation; the balance too low:
/// CHECK violation; no balance row); the caller then rolls the transaction back and decides
/// the batch purchase by purchase.
async fn try_one_pass(
    conn: &mut SqliteConnection,
    batch: &[NewPurchase],
    org: &str,
) -> StoreResult<Option<Vec<PurchaseResult>>> {
    let Some(first) = batch.first() else {
        return Ok(None);
    };
    let spent: i64 = batch.iter().map(|p| p.record.total.0).sum();
    let debited = sqlx::query(
        "UPDATE org_balances SET available_micros = available_micros - ?, updated_at = ?
         WHERE org_id = ? RETURNING available_micros",
    )
    .bind(spent)
    .bind(first.record.created_at.unix_millis())
    .bind(org)
    .fetch_optional(&mut *conn)
    .await;
    let after_all: i64 = match debited {
        Ok(Some(row)) => row.try_get(0).map_err(db_err)?,
        Ok(None) => return Ok(None),
        Err(sqlx::Error::Database(d)) if d.is_check_violation() => return Ok(None),
        Err(e) => return Err(db_err(e)),
    };
    let mut balance = after_all + spent;
    let accepted: Vec<batch::Accepted> = batch
        .iter()
        .enumerate()
        .map(|(index, p)| {
            balance -= p.record.total.0;
            batch::Accepted {
                index,
                balance_after: Some(balance),
            }
        })
        .collect();
    match write_accepted(conn, batch, &accepted).await {
        Ok(()) => Ok(Some(
            batch
                .iter()
                .map(|p| PurchaseResult::Created(p.record.clone()))
                .collect(),
        )),
        Err(StoreError::Conflict(_)) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Claims due jobs: the single SQLite writer makes the select-then-update atomic.
const CLAIM_SQL: &str = "UPDATE fulfilment_jobs SET lease_owner = ?1, lease_until = ?2, attempts = attempts + 1 \
    WHERE purchase_id IN (SELECT purchase_id FROM fulfilment_jobs \
        WHERE next_attempt_at <= ?3 AND (lease_until IS NULL OR lease_until < ?3) \
        ORDER BY next_attempt_at LIMIT ?4) \
    RETURNING purchase_id, attempts";

/// Ends a batch of purchases inside the caller's transaction (see `FinishPurchase`), with a
/// few set-based statements. `false` for a purchase whose job the caller no longer holds
/// (nothing is written for it then).
async fn finish_many(
    conn: &mut SqliteConnection,
    batch: &[FinishPurchase],
) -> StoreResult<Vec<bool>> {
    if batch.is_empty() {
        return Ok(Vec::new());
    }
    let leases = Value::Array(
        batch
            .iter()
            .map(|f| json!([f.purchase_id, f.owner]))
            .collect(),
    );
    let rows = sqlx::query(
        "DELETE FROM fulfilment_jobs WHERE (purchase_id, lease_owner) IN
             (SELECT value->>0, value->>1 FROM json_each(?))
         RETURNING purchase_id",
    )
    .bind(leases.to_string())
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)?;
    let mut held = HashSet::with_capacity(rows.len());
    for row in &rows {
        held.insert(row.try_get::<String, _>(0).map_err(db_err)?);
    }
    // A job ends once: a purchase named twice in the batch is held by its first entry only
    // (`remove`), and the lease moved to another worker (or the job is done) when not held.
    let done: Vec<bool> = batch.iter().map(|f| held.remove(&f.purchase_id)).collect();
    let mine: Vec<&FinishPurchase> = batch
        .iter()
        .zip(&done)
        .filter_map(|(f, d)| d.then_some(f))
        .collect();
    if mine.is_empty() {
        return Ok(done);
    }
    let endings = Value::Array(
        mine.iter()
            .map(|f| {
                json!([
                    f.purchase_id,
                    f.status.as_str(),
                    f.file_number,
                    f.error_message,
                    f.at.unix_millis(),
                    (f.status == PurchaseStatus::Success).then(|| f.at.unix_millis())
                ])
            })
            .collect(),
    );
    let rows = sqlx::query(
        "UPDATE purchases SET status = j.value->>1, file_number = j.value->>2,
             error_message = j.value->>3, updated_at = j.value->>4, confirmed_at = j.value->>5
         FROM json_each(?) AS j
         WHERE purchases.id = j.value->>0 AND purchases.status IN ('PENDING', 'PROCESSING')
         RETURNING purchases.id, purchases.org_id, purchases.total_micros, purchases.environment",
    )
    .bind(endings.to_string())
    .fetch_all(&mut *conn)
    .await
    .map_err(db_err)?;
    let mut ended = HashMap::with_capacity(rows.len());
    for row in &rows {
        let id: String = row.try_get(0).map_err(db_err)?;
        let org_id: String = row.try_get(1).map_err(db_err)?;
        let total: i64 = row.try_get(2).map_err(db_err)?;
        let env: String = row.try_get(3).map_err(db_err)?;
        ended.insert(id, (org_id, total, env));
    }
    let mut events = Vec::new();
    for f in mine {
        let Some((org_id, total, env)) = ended.get(&f.purchase_id) else {
            return Err(StoreError::Corrupt(format!(
                "purchase {} had a job but is already final",
                f.purchase_id
            )));
        };
        if let Some(refund) = f.refund(org_id, *total) {
            append_entry(conn, &refund).await?;
        }
        for e in &f.events {
            events.push(event_row(e, org_id, env, &f.purchase_id, f.at));
        }
    }
    insert_events(conn, events).await?;
    Ok(done)
}

fn markup_from_row(r: &SqliteRow) -> StoreResult<MarkupRule> {
    Ok(MarkupRule {
        org_id: r.try_get("org_id").map_err(db_err)?,
        scope: r.try_get("scope").map_err(db_err)?,
        target: r.try_get("target").map_err(db_err)?,
        percent: r.try_get("percent").map_err(db_err)?,
        fixed: UsdMicros(r.try_get("fixed_micros").map_err(db_err)?),
        updated_at: Timestamp::from_unix_millis(r.try_get("updated_at").map_err(db_err)?),
    })
}

/// One outbox row for [`insert_events`].
fn event_row(e: &NewEvent, org_id: &str, env: &str, purchase_id: &str, at: Timestamp) -> Value {
    json!([
        e.id,
        org_id,
        env,
        e.kind,
        purchase_id,
        e.payload,
        at.unix_millis()
    ])
}

/// Writes events to the outbox (inside the caller's transaction), in order, and routes them
/// at once: one pending delivery per matching endpoint (see `cobro_store::webhooks`), due at
/// the event's time, and the event marked routed. Two statements, whatever the number of
/// events.
async fn insert_events(conn: &mut SqliteConnection, rows: Vec<Value>) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    let rows = Value::Array(rows).to_string();
    sqlx::query(
        "INSERT INTO outbox_events (id, org_id, environment, type, purchase_id, payload, created_at, routed_at)
         SELECT value->>0, value->>1, value->>2, value->>3, value->>4, value->>5, value->>6, value->>6
         FROM json_each(?) ORDER BY key",
    )
    .bind(&rows)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO webhook_deliveries (event_seq, endpoint_id, status, attempts, next_attempt_at, created_at)
         SELECT e.seq, w.id, 'pending', 0, e.created_at, e.created_at
         FROM outbox_events e
         JOIN webhook_endpoints w ON w.org_id = e.org_id AND w.environment = e.environment
         WHERE e.id IN (SELECT value->>0 FROM json_each(?)) AND w.enabled = 1 AND w.deleted_at IS NULL
           AND w.created_at <= e.created_at AND {}
         ORDER BY e.seq, w.id",
        webhooks::WANTS
    )))
    .bind(&rows)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

const KEY_COLUMNS: &str = "public_key, org_id, environment, secret_hash, jwks_url, issuer, audience, created_at, revoked_at";

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    fn payments(&self) -> std::sync::Arc<dyn cobro_x402::PaymentStore> {
        std::sync::Arc::new(SqlitePayments(self.clone()))
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }

    async fn create_org(&self, org: &Org) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_org(&mut tx, org).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn get_org(&self, id: &str) -> StoreResult<Option<Org>> {
        let row = sqlx::query("SELECT id, name, created_at FROM orgs WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?;
        row.map(|r| {
            Ok(Org {
                id: r.try_get("id").map_err(db_err)?,
                name: r.try_get("name").map_err(db_err)?,
                created_at: Timestamp::from_unix_millis(r.try_get("created_at").map_err(db_err)?),
            })
        })
        .transpose()
    }

    async fn bootstrap_if_empty(&self, demo: &DemoBootstrap) -> StoreResult<bool> {
        // BEGIN IMMEDIATE holds the write lock, so two processes cannot both see zero orgs.
        let mut tx = self.begin_write().await?;
        let existing: i64 = sqlx::query("SELECT COUNT(*) FROM orgs")
            .fetch_one(&mut *tx)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db_err)?;
        if existing > 0 {
            return Ok(false);
        }
        insert_org(&mut tx, &demo.org).await?;
        for key in &demo.keys {
            insert_key(&mut tx, key).await?;
        }
        if demo.credits.0 > 0 {
            append_entry(
                &mut tx,
                &NewLedgerEntry {
                    id: &demo.credits_entry_id,
                    org_id: &demo.org.id,
                    kind: "topup",
                    amount: demo.credits,
                    note: Some("demo credits"),
                    purchase_id: None,
                    at: demo.org.created_at,
                },
            )
            .await?;
        }
        upsert_skus(&mut tx, &demo.catalog, demo.org.created_at).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn create_api_key(&self, key: &ApiKeyRecord) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        insert_key(&mut tx, key).await?;
        tx.commit().await.map_err(db_err)
    }

    async fn revoke_api_key(&self, public_key: &str, at: Timestamp) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let found = sqlx::query("SELECT revoked_at FROM api_keys WHERE public_key = ?")
            .bind(public_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let Some(row) = found else { return Ok(false) };
        let revoked: Option<i64> = row.try_get(0).map_err(db_err)?;
        if revoked.is_none() {
            sqlx::query("UPDATE api_keys SET revoked_at = ? WHERE public_key = ?")
                .bind(at.unix_millis())
                .bind(public_key)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            bump(&mut tx, "keys").await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(true)
    }

    async fn get_api_key(&self, public_key: &str) -> StoreResult<Option<ApiKeyRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE public_key = ?"
        ));
        sqlx::query(sql)
            .bind(public_key)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(key_from_row)
            .transpose()
    }

    async fn list_api_keys(&self) -> StoreResult<Vec<ApiKeyRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {KEY_COLUMNS} FROM api_keys ORDER BY created_at"
        ));
        sqlx::query(sql)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(key_from_row)
            .collect()
    }

    async fn change_versions(&self) -> StoreResult<ChangeVersions> {
        let rows = sqlx::query("SELECT name, version FROM change_versions")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let mut v = ChangeVersions::default();
        for r in rows {
            let name: String = r.try_get(0).map_err(db_err)?;
            let version: i64 = r.try_get(1).map_err(db_err)?;
            match name.as_str() {
                "keys" => v.keys = version,
                "catalog" => v.catalog = version,
                "markups" => v.markups = version,
                _ => {}
            }
        }
        Ok(v)
    }

    async fn adjust_credits(
        &self,
        org_id: &str,
        entry_id: &str,
        amount: UsdMicros,
        note: Option<&str>,
        at: Timestamp,
    ) -> StoreResult<LedgerEntry> {
        let kind = codec::credit_kind(amount)?;
        let mut tx = self.begin_write().await?;
        let entry = append_entry(
            &mut tx,
            &NewLedgerEntry {
                id: entry_id,
                org_id,
                kind,
                amount,
                note,
                purchase_id: None,
                at,
            },
        )
        .await?;
        tx.commit().await.map_err(db_err)?;
        Ok(entry)
    }

    async fn balance(&self, org_id: &str) -> StoreResult<UsdMicros> {
        sqlx::query("SELECT available_micros FROM org_balances WHERE org_id = ?")
            .bind(org_id)
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .map(|r| r.try_get(0).map(UsdMicros).map_err(db_err))
            .transpose()?
            .ok_or_else(|| StoreError::NotFound(format!("organisation {org_id}")))
    }

    async fn ledger_entries(
        &self,
        org_id: &str,
        limit: u32,
        offset: u64,
    ) -> StoreResult<Vec<LedgerEntry>> {
        sqlx::query(
            "SELECT id, org_id, kind, amount_micros, balance_after_micros, note, purchase_id, created_at
             FROM ledger_entries WHERE org_id = ? ORDER BY seq DESC LIMIT ? OFFSET ?",
        )
        .bind(org_id)
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(entry_from_row)
        .collect()
    }

    async fn count_ledger_entries(&self, org_id: &str) -> StoreResult<u64> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM ledger_entries WHERE org_id = ?")
            .bind(org_id)
            .fetch_one(&self.pool)
            .await
            .and_then(|r| r.try_get(0))
            .map_err(db_err)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn upsert_catalog(&self, entries: &[CatalogEntry], at: Timestamp) -> StoreResult<usize> {
        let mut tx = self.begin_write().await?;
        let n = upsert_skus(&mut tx, entries, at).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(n)
    }

    async fn list_catalog(&self) -> StoreResult<Vec<CatalogEntry>> {
        sqlx::query("SELECT doc, created_at, updated_at FROM skus ORDER BY id")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| {
                let doc: String = r.try_get(0).map_err(db_err)?;
                let created: i64 = r.try_get(1).map_err(db_err)?;
                let updated: i64 = r.try_get(2).map_err(db_err)?;
                codec::decode_catalog_entry(&doc, created, updated)
            })
            .collect()
    }

    async fn set_markup(&self, rule: &MarkupRule) -> StoreResult<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO markups (org_id, scope, target, percent, fixed_micros, updated_at) VALUES (?, ?, ?, ?, ?, ?)
             ON CONFLICT (org_id, scope, target) DO UPDATE SET percent = excluded.percent,
                 fixed_micros = excluded.fixed_micros, updated_at = excluded.updated_at",
        )
        .bind(&rule.org_id)
        .bind(&rule.scope)
        .bind(&rule.target)
        .bind(&rule.percent)
        .bind(rule.fixed.0)
        .bind(rule.updated_at.unix_millis())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        bump(&mut tx, "markups").await?;
        tx.commit().await.map_err(db_err)
    }

    async fn list_markups(&self) -> StoreResult<Vec<MarkupRule>> {
        sqlx::query("SELECT org_id, scope, target, percent, fixed_micros, updated_at FROM markups")
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(markup_from_row)
            .collect()
    }

    async fn markup_for(
        &self,
        org_id: &str,
        sku_id: &str,
        category: &str,
    ) -> StoreResult<Option<MarkupRule>> {
        sqlx::query(
            "SELECT org_id, scope, target, percent, fixed_micros, updated_at FROM markups
             WHERE org_id = ? AND ((scope = 'sku' AND target = ?) OR (scope = 'category' AND target = ?))
             ORDER BY CASE scope WHEN 'sku' THEN 0 ELSE 1 END LIMIT 1",
        )
        .bind(org_id)
        .bind(sku_id)
        .bind(category)
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        .map(|r| markup_from_row(&r))
        .transpose()
    }

    async fn create_purchases(&self, batch: &[NewPurchase]) -> StoreResult<Vec<PurchaseResult>> {
        // The usual batch first, written without reading anything (see `try_one_pass`).
        if let Some(org) = batch::single_payer(batch) {
            let mut tx = self.begin_write().await?;
            if let Some(results) = try_one_pass(&mut tx, batch, org).await? {
                tx.commit().await.map_err(db_err)?;
                return Ok(results);
            }
            tx.rollback().await.map_err(db_err)?;
        }
        // BEGIN IMMEDIATE: this is the only writer until commit, so what is read below cannot
        // change before the plan is written.
        let mut tx = self.begin_write().await?;
        let existing = find_by_keys(&mut tx, batch).await?;
        let payers = batch::payers(batch);
        let mut balances = HashMap::with_capacity(payers.len());
        if !payers.is_empty() {
            let rows = sqlx::query(
                "SELECT org_id, available_micros FROM org_balances
                 WHERE org_id IN (SELECT value FROM json_each(?))",
            )
            .bind(json!(payers).to_string())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            for row in &rows {
                balances.insert(
                    row.try_get::<String, _>(0).map_err(db_err)?,
                    row.try_get::<i64, _>(1).map_err(db_err)?,
                );
            }
        }
        let plan = batch::plan(batch, existing, balances);
        let now = batch
            .first()
            .map_or(0, |p| p.record.created_at.unix_millis());
        for (org, balance) in &plan.balances {
            sqlx::query(
                "UPDATE org_balances SET available_micros = ?, updated_at = ? WHERE org_id = ?",
            )
            .bind(balance)
            .bind(now)
            .bind(org)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        if !plan.accepted.is_empty() {
            write_accepted(&mut tx, batch, &plan.accepted).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(plan.results)
    }

    async fn get_purchase(
        &self,
        org_id: &str,
        env: Environment,
        id: &str,
    ) -> StoreResult<Option<PurchaseRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE id = ? AND org_id = ? AND environment = ?"
        ));
        sqlx::query(sql)
            .bind(id)
            .bind(org_id)
            .bind(env.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(purchase_from_row)
            .transpose()
    }

    async fn list_purchases(
        &self,
        org_id: &str,
        env: Environment,
        f: &PurchaseFilter,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<PurchaseRecord>, u64)> {
        let status = f.status.map(|s| s.as_str());
        let from = f.created_from.map(Timestamp::unix_millis);
        let to = f.created_to.map(Timestamp::unix_millis);
        let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM purchases {LIST_WHERE}"
        )))
        .bind(org_id)
        .bind(env.as_str())
        .bind(status)
        .bind(&f.sku_id)
        .bind(&f.sku_reference)
        .bind(from)
        .bind(to)
        .fetch_one(&self.pool)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(db_err)?;
        let sql = format!(
            "SELECT {PURCHASE_COLUMNS} FROM purchases {LIST_WHERE} ORDER BY seq DESC {LIST_PAGE}"
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql))
            .bind(org_id)
            .bind(env.as_str())
            .bind(status)
            .bind(&f.sku_id)
            .bind(&f.sku_reference)
            .bind(from)
            .bind(to)
            .bind(i64::from(limit))
            .bind(i64::try_from(offset).unwrap_or(i64::MAX))
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?;
        let records = rows
            .iter()
            .map(purchase_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        Ok((records, u64::try_from(total).unwrap_or(0)))
    }

    async fn claim_fulfilment_jobs(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
    ) -> StoreResult<Vec<ClaimedJob>> {
        let mut tx = self.begin_write().await?;
        let claimed = sqlx::query(CLAIM_SQL)
            .bind(owner)
            .bind(now.unix_millis().saturating_add(lease_ms))
            .bind(now.unix_millis())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut attempts = Vec::with_capacity(claimed.len());
        for row in &claimed {
            let id: String = row.try_get(0).map_err(db_err)?;
            let attempt: i64 = row.try_get(1).map_err(db_err)?;
            attempts.push((id, attempt));
        }
        if attempts.is_empty() {
            tx.commit().await.map_err(db_err)?;
            return Ok(Vec::new());
        }
        let ids = json!(attempts.iter().map(|(id, _)| id).collect::<Vec<_>>()).to_string();
        sqlx::query(
            "UPDATE purchases SET status = 'PROCESSING', updated_at = ?
             WHERE id IN (SELECT value FROM json_each(?)) AND status = 'PENDING'",
        )
        .bind(now.unix_millis())
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        // The purchases are read after the commit, without holding the write lock: while
        // this worker holds their jobs' leases nothing else changes them.
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE id IN (SELECT value FROM json_each(?))"
        ));
        let mut found = HashMap::with_capacity(attempts.len());
        for row in sqlx::query(sql)
            .bind(&ids)
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
        {
            let p = purchase_from_row(&row)?;
            found.insert(p.id.clone(), p);
        }
        attempts
            .into_iter()
            .map(|(id, attempt)| {
                let purchase = found.remove(&id).ok_or_else(|| {
                    StoreError::Corrupt(format!("fulfilment job {id} has no purchase"))
                })?;
                Ok(ClaimedJob {
                    purchase,
                    attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn finish_purchase(&self, f: &FinishPurchase) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = finish_many(&mut tx, std::slice::from_ref(f)).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.first().copied().unwrap_or(false))
    }

    async fn finish_purchases(&self, batch: &[FinishPurchase]) -> StoreResult<Vec<bool>> {
        let mut tx = self.begin_write().await?;
        let done = finish_many(&mut tx, batch).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(done)
    }

    async fn retry_fulfilment(
        &self,
        purchase_id: &str,
        owner: &str,
        next_attempt_at: Timestamp,
        error: &str,
        flag_at: Option<Timestamp>,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = sqlx::query(
            "UPDATE fulfilment_jobs SET lease_owner = NULL, lease_until = NULL, next_attempt_at = ?, last_error = ?,
                 flagged_at = COALESCE(flagged_at, ?)
             WHERE purchase_id = ? AND lease_owner = ?",
        )
        .bind(next_attempt_at.unix_millis())
        .bind(error)
        .bind(flag_at.map(Timestamp::unix_millis))
        .bind(purchase_id)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(done.rows_affected() == 1)
    }

    async fn fulfilment_backlog(&self) -> StoreResult<FulfilmentBacklog> {
        let row = sqlx::query("SELECT COUNT(*), COUNT(flagged_at) FROM fulfilment_jobs")
            .fetch_one(&self.pool)
            .await
            .map_err(db_err)?;
        let open: i64 = row.try_get(0).map_err(db_err)?;
        let flagged: i64 = row.try_get(1).map_err(db_err)?;
        Ok(FulfilmentBacklog {
            open: u64::try_from(open).unwrap_or(0),
            flagged: u64::try_from(flagged).unwrap_or(0),
        })
    }

    async fn issuer_keys(&self) -> StoreResult<Vec<IssuerKey>> {
        sqlx::query(
            "SELECT kid, alg, private_pkcs8, public_jwk, created_at FROM issuer_keys
             ORDER BY created_at DESC",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(issuer_key_from_row)
        .collect()
    }

    async fn ensure_issuer_key(&self, key: &IssuerKey) -> StoreResult<IssuerKey> {
        let mut tx = self.begin_write().await?;
        sqlx::query(
            "INSERT INTO issuer_keys (kid, slot, alg, private_pkcs8, public_jwk, created_at)
             VALUES (?, 1, ?, ?, ?, ?) ON CONFLICT (slot) DO NOTHING",
        )
        .bind(&key.kid)
        .bind(&key.alg)
        .bind(&key.private_pkcs8)
        .bind(&key.public_jwk)
        .bind(key.created_at.unix_millis())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let row = sqlx::query(
            "SELECT kid, alg, private_pkcs8, public_jwk, created_at FROM issuer_keys WHERE slot = 1",
        )
        .fetch_one(&mut *tx)
        .await
        .map_err(db_err)?;
        let in_force = issuer_key_from_row(&row)?;
        tx.commit().await.map_err(db_err)?;
        Ok(in_force)
    }
}

#[cfg(test)]
mod embedded_migrations {
    #[test]
    fn every_migration_file_is_embedded() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
        cobro_store::conformance::migration_files_are_embedded(&dir, super::MIGRATIONS);
    }
}
