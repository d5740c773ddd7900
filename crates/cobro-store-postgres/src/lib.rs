//! The PostgreSQL implementation of the cobro [`Store`]: for production, and for several
//! server processes sharing one database.
//!
//! Transactions run at READ COMMITTED; every balance change is a single
//! `UPDATE … RETURNING` on the organisation's balance row, which takes the row lock, so
//! concurrent debits serialise on that row and the `CHECK (available_micros >= 0)` decides
//! which of them fail. The demo bootstrap takes a table lock so only one process seeds.
#![forbid(unsafe_code)]

mod webhooks;
mod x402;

pub use x402::*;

use std::{borrow::Cow, collections::HashMap, str::FromStr, time::Duration};

use async_trait::async_trait;
use cobro_store::{
    ApiKeyRecord, ChangeVersions, ClaimedJob, DemoBootstrap, FinishPurchase, FulfilmentBacklog,
    IssuerKey, LedgerEntry, MarkupRule, NewEvent, NewLedgerEntry, NewPurchase, Org, PurchaseFilter,
    PurchaseRecord, PurchaseResult, Store, StoreError, StoreResult, batch, codec,
};
use cobro_types::{CatalogEntry, Environment, MinorAmount, PurchaseStatus, Timestamp, UsdMicros};
use sqlx::{
    PgConnection, Row, SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
    postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow},
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
    (
        5,
        "purchase key index",
        include_str!("../migrations/0005_purchase_key_index.sql"),
    ),
    (
        6,
        "route on write",
        include_str!("../migrations/0006_route_on_write.sql"),
    ),
    (
        7,
        "hot path foreign keys",
        include_str!("../migrations/0007_hot_path_foreign_keys.sql"),
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
        // deadlock_detected, serialization_failure: the transaction lost a race and can be
        // run again.
        if matches!(d.code().as_deref(), Some("40P01" | "40001")) {
            return StoreError::Conflict(d.message().to_string());
        }
    }
    StoreError::Database(e.to_string())
}

/// Options for opening a PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    pub max_connections: u32,
    pub acquire_timeout: Duration,
}

impl Default for PgOptions {
    fn default() -> Self {
        PgOptions {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(10),
        }
    }
}

/// A cobro store on one PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgStore {
    pub(crate) pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`). Does not migrate; call [`PgStore::migrate`].
    pub async fn connect(url: &str, opts: &PgOptions) -> StoreResult<PgStore> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
            // No ping before each use: it is a round trip, and on this machine under load a
            // round trip cost about as much as a batch's statements (see
            // docs/BENCHMARKS.md). A connection that died is found by the statement that
            // uses it, which fails (a purchase batch's clients get an error and retry with
            // their idempotency keys).
            .test_before_acquire(false)
            .acquire_timeout(opts.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(db_err)?;
        Ok(PgStore { pool })
    }

    /// Applies pending migrations (under sqlx's advisory lock, so concurrent starts are safe).
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

    pub(crate) async fn begin_write(
        &self,
    ) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await.map_err(db_err)
    }

    /// A transaction opened by `begin`, a `BEGIN` followed by `SET LOCAL`s.
    async fn begin_with(
        &self,
        begin: &'static str,
    ) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin_with(begin).await.map_err(db_err)
    }

    /// Returns once every transaction this process has committed so far is durable.
    ///
    /// `txid_current()` gives this one-statement transaction a transaction id, so its commit
    /// writes a commit record and (with the default `synchronous_commit = on`) waits for the
    /// WAL to be flushed up to it, which includes every earlier commit record. Concurrent
    /// barriers share PostgreSQL's group flush.
    async fn durability_barrier(&self) -> StoreResult<()> {
        sqlx::query("SELECT txid_current()")
            .execute(&self.pool)
            .await
            .map_err(db_err)?;
        Ok(())
    }
}

async fn bump(conn: &mut PgConnection, name: &'static str) -> StoreResult<()> {
    sqlx::query("UPDATE change_versions SET version = version + 1 WHERE name = $1")
        .bind(name)
        .execute(conn)
        .await
        .map_err(db_err)?;
    Ok(())
}

async fn insert_org(conn: &mut PgConnection, org: &Org) -> StoreResult<()> {
    sqlx::query("INSERT INTO orgs (id, name, created_at) VALUES ($1, $2, $3)")
        .bind(&org.id)
        .bind(&org.name)
        .bind(org.created_at.unix_millis())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    sqlx::query(
        "INSERT INTO org_balances (org_id, available_micros, updated_at) VALUES ($1, 0, $2)",
    )
    .bind(&org.id)
    .bind(org.created_at.unix_millis())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

async fn insert_key(conn: &mut PgConnection, k: &ApiKeyRecord) -> StoreResult<()> {
    sqlx::query(
        "INSERT INTO api_keys (public_key, org_id, environment, secret_hash, jwks_url, issuer,
                               audience, created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
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
async fn append_entry(conn: &mut PgConnection, e: &NewLedgerEntry<'_>) -> StoreResult<LedgerEntry> {
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
        "UPDATE org_balances SET available_micros = available_micros + $1, updated_at = $2
         WHERE org_id = $3 RETURNING available_micros",
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
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
    conn: &mut PgConnection,
    entries: &[CatalogEntry],
    at: Timestamp,
) -> StoreResult<usize> {
    for e in entries {
        let doc = codec::encode_catalog_entry(e)?;
        sqlx::query(
            "INSERT INTO skus (id, doc, active, created_at, updated_at) VALUES ($1, $2, $3, $4, $5)
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

fn key_from_row(row: &PgRow) -> StoreResult<ApiKeyRecord> {
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

fn entry_from_row(row: &PgRow) -> StoreResult<LedgerEntry> {
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

fn issuer_key_from_row(row: &PgRow) -> StoreResult<IssuerKey> {
    Ok(IssuerKey {
        kid: row.try_get("kid").map_err(db_err)?,
        alg: row.try_get("alg").map_err(db_err)?,
        private_pkcs8: row.try_get("private_pkcs8").map_err(db_err)?,
        public_jwk: row.try_get("public_jwk").map_err(db_err)?,
        created_at: Timestamp::from_unix_millis(row.try_get("created_at").map_err(db_err)?),
    })
}

/// The purchase list's filter (unset filters are NULL).
const LIST_WHERE: &str = "WHERE org_id = $1 AND environment = $2 AND ($3::text IS NULL OR status = $3) \
    AND ($4::text IS NULL OR sku_id = $4) AND ($5::text IS NULL OR sku_reference = $5) \
    AND ($6::bigint IS NULL OR created_at >= $6) AND ($7::bigint IS NULL OR created_at <= $7)";
const LIST_PAGE: &str = "LIMIT $8 OFFSET $9";

const PURCHASE_COLUMNS: &str = "id, org_id, environment, idempotency_key, request_hash, status, api_public_key, \
    customer_id, sku_id, sku_name, carrier_name, sku_reference, amount_minor, currency, chain, token, wallet_address, \
    fx_rate, base_micros, markup_micros, total_micros, org_markup, ledger_entry_id, sandbox, file_number, error_message, \
    created_at, updated_at, confirmed_at";

fn purchase_from_row(row: &PgRow) -> StoreResult<PurchaseRecord> {
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

/// Turns sequential scans off for the rest of the transaction.
///
/// The purchase and fulfilment transactions look up many rows of growing tables by an array
/// (`= ANY($1)`, joins on `UNNEST` or on a CTE), with prepared statements. A prepared
/// statement gets a generic plan after five executions, and one first planned while the table
/// was small (a fresh database, before autovacuum's first ANALYZE) chose a sequential scan
/// and kept it: measured at 17.7 million rows read for 15,000 purchases. These statements
/// were then planned at every execution instead, which cost about 2 ms of PostgreSQL's CPU
/// per claim and a few hundred microseconds per batch. With sequential scans off, the
/// generic plan is the index plan whatever the statistics say, and it is planned once per
/// connection. (The setting is per transaction, `SET LOCAL`; other queries are planned as
/// usual.) Sent with BEGIN in one round trip (`begin_with` uses the simple query protocol).
const BEGIN_INDEX_LOOKUPS: &str = "BEGIN; SET LOCAL enable_seqscan = off";

/// [`BEGIN_INDEX_LOOKUPS`] for a purchase batch, which also commits without waiting for its
/// WAL flush (see `create_purchases_unsynced`).
const BEGIN_PURCHASE_BATCH: &str =
    "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL synchronous_commit = off";

/// The existing purchases under a batch's keys, in one query.
///
/// Runs in a transaction opened with [`BEGIN_PURCHASE_BATCH`].
async fn find_by_keys(
    conn: &mut PgConnection,
    batch: &[NewPurchase],
) -> StoreResult<HashMap<batch::PurchaseKey, PurchaseRecord>> {
    let scopes: Vec<String> = batch
        .iter()
        .map(|p| {
            let r = &p.record;
            format!(
                "{}/{}/{}",
                r.org_id,
                r.environment.as_str(),
                r.idempotency_key
            )
        })
        .collect();
    let sql = sqlx::AssertSqlSafe(format!(
        "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE key_scope = ANY($1::text[])"
    ));
    let rows = sqlx::query(sql)
        .bind(&scopes)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
    let mut found = HashMap::new();
    for row in &rows {
        let r = purchase_from_row(row)?;
        found.insert(batch::key_of(&r), r);
    }
    Ok(found)
}

/// Reads the balances of `orgs`, locking their rows (in org order, so concurrent batches
/// cannot deadlock) when `lock` is set.
async fn read_balances(
    conn: &mut PgConnection,
    orgs: &[&str],
    lock: bool,
) -> StoreResult<HashMap<String, i64>> {
    let mut balances = HashMap::new();
    if orgs.is_empty() {
        return Ok(balances);
    }
    let sql = if lock {
        "SELECT org_id, available_micros FROM org_balances WHERE org_id = ANY($1) ORDER BY org_id FOR UPDATE"
    } else {
        "SELECT org_id, available_micros FROM org_balances WHERE org_id = ANY($1)"
    };
    for row in sqlx::query(sql)
        .bind(orgs)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?
    {
        balances.insert(
            row.try_get::<String, _>(0).map_err(db_err)?,
            row.try_get::<i64, _>(1).map_err(db_err)?,
        );
    }
    Ok(balances)
}

/// Data-modifying CTEs: `p` inserting the purchase rows bound by [`bind_purchase_rows`] ($1
/// to $29), and `j` inserting the jobs of those the carrier must fulfil. With `skip_stored`, a
/// stored key is skipped (so a short `p` means a lost race); without, it fails the statement.
fn insert_purchases_cte(skip_stored: bool) -> String {
    let on_conflict = if skip_stored {
        "ON CONFLICT (key_scope) DO NOTHING"
    } else {
        ""
    };
    format!(
        "p AS (INSERT INTO purchases ({PURCHASE_COLUMNS}) SELECT * FROM UNNEST(\
    $1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[], \
    $10::text[], $11::text[], $12::text[], $13::bigint[], $14::text[], $15::text[], $16::text[], $17::text[], \
    $18::text[], $19::bigint[], $20::bigint[], $21::bigint[], $22::text[], $23::text[], $24::boolean[], \
    $25::text[], $26::text[], $27::bigint[], $28::bigint[], $29::bigint[]) \
    {on_conflict} RETURNING id, created_at, sandbox, status), \
    j AS (INSERT INTO fulfilment_jobs (purchase_id, next_attempt_at) \
    SELECT id, created_at FROM p WHERE NOT sandbox AND status IN ('PENDING', 'PROCESSING'))"
    )
}

/// CTEs `bal`, debiting organisation $30 by $31 at $32, and `l`, its ledger entries (ids $33,
/// amounts $34, cumulative spend $35, purchases $36, times $37), each entry's balance computed
/// from the balance the debit found. Without a balance row the entries' balances are NULL,
/// which fails the statement (NOT NULL); a balance that does not cover the debit fails its
/// CHECK.
const DEBIT_CTES: &str = "bal AS (
        UPDATE org_balances SET available_micros = available_micros - $31, updated_at = $32
        WHERE org_id = $30 RETURNING available_micros + $31 AS before),
    l AS (
        INSERT INTO ledger_entries (id, org_id, kind, amount_micros, balance_after_micros, purchase_id, created_at)
        SELECT e.id, $30, 'purchase', e.amount, bal.before - e.spent, e.purchase_id, e.created_at
        FROM UNNEST($33::text[], $34::bigint[], $35::bigint[], $36::text[], $37::bigint[])
             WITH ORDINALITY AS e(id, amount, spent, purchase_id, created_at, n)
        LEFT JOIN bal ON true
        ORDER BY e.n
        RETURNING 1)";

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds $1 to $29 of [`insert_purchases_cte`]: one array per column, the rows in key order,
/// so that two batches sharing keys meet them in the same order (the later one waits for the
/// earlier instead of deadlocking with it).
fn bind_purchase_rows<'q>(q: PgQuery<'q>, rs: &[&PurchaseRecord]) -> PgQuery<'q> {
    let mut rs = rs.to_vec();
    rs.sort_unstable_by_key(|r| {
        (
            r.org_id.as_str(),
            r.environment.as_str(),
            r.idempotency_key.as_str(),
        )
    });
    let col = |f: fn(&PurchaseRecord) -> String| rs.iter().map(|r| f(r)).collect::<Vec<String>>();
    let int = |f: fn(&PurchaseRecord) -> i64| rs.iter().map(|r| f(r)).collect::<Vec<i64>>();
    let opt = |f: fn(&PurchaseRecord) -> Option<String>| {
        rs.iter().map(|r| f(r)).collect::<Vec<Option<String>>>()
    };
    q.bind(col(|r| r.id.clone()))
        .bind(col(|r| r.org_id.clone()))
        .bind(col(|r| r.environment.as_str().to_string()))
        .bind(col(|r| r.idempotency_key.clone()))
        .bind(col(|r| r.request_hash.clone()))
        .bind(col(|r| r.status.as_str().to_string()))
        .bind(col(|r| r.api_public_key.clone()))
        .bind(col(|r| r.customer_id.clone()))
        .bind(col(|r| r.sku_id.clone()))
        .bind(col(|r| r.sku_name.clone()))
        .bind(col(|r| r.carrier_name.clone()))
        .bind(col(|r| r.sku_reference.clone()))
        .bind(int(|r| r.amount.0))
        .bind(col(|r| r.currency.as_str().to_string()))
        .bind(col(|r| r.chain.clone()))
        .bind(col(|r| r.token.clone()))
        .bind(col(|r| r.wallet_address.clone()))
        .bind(col(|r| r.fx_rate.clone()))
        .bind(int(|r| r.base.0))
        .bind(int(|r| r.markup.0))
        .bind(int(|r| r.total.0))
        .bind(opt(|r| r.org_markup.clone()))
        .bind(col(|r| r.ledger_entry_id.clone()))
        .bind(rs.iter().map(|r| r.sandbox).collect::<Vec<bool>>())
        .bind(opt(|r| r.file_number.clone()))
        .bind(opt(|r| r.error_message.clone()))
        .bind(int(|r| r.created_at.unix_millis()))
        .bind(int(|r| r.updated_at.unix_millis()))
        .bind(
            rs.iter()
                .map(|r| r.confirmed_at.map(Timestamp::unix_millis))
                .collect::<Vec<Option<i64>>>(),
        )
}

/// The usual batch in one statement and one round trip: production purchases of one
/// organisation, under keys that are new and distinct, that the balance covers. No
/// transaction block (the statement is its own transaction, committed without waiting for
/// its WAL flush), no reads, no plan: the purchase rows, their jobs, the debit and the ledger
/// entries, each entry's balance computed from the balance the debit found.
///
/// `Ok(None)`: the batch is not of that kind, or the statement failed as a whole because it
/// was not (a key already stored: unique violation; the balance too low: CHECK violation;
/// no balance row: NOT NULL violation on the entries' balances; or it lost a deadlock).
/// Nothing was written then, and the caller decides the batch purchase by purchase
/// (`try_batch`).
async fn try_one_statement(
    pool: &PgPool,
    batch: &[NewPurchase],
) -> StoreResult<Option<Vec<PurchaseResult>>> {
    let (Some(org), Some(first)) = (batch::single_payer(batch), batch.first()) else {
        return Ok(None);
    };
    let rs: Vec<&PurchaseRecord> = batch.iter().map(|p| &p.record).collect();
    let mut spent = 0i64;
    let spent_after: Vec<i64> = rs
        .iter()
        .map(|r| {
            spent = spent.saturating_add(r.total.0);
            spent
        })
        .collect();
    // A stored key must fail the statement here.
    static ONE_STATEMENT: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        let insert = insert_purchases_cte(false);
        format!(
            "WITH async AS (SELECT set_config('synchronous_commit', 'off', true) AS v),
             {insert},
             {DEBIT_CTES}
             SELECT (SELECT v FROM async), (SELECT COUNT(*) FROM p), (SELECT COUNT(*) FROM l)"
        )
    });
    let written = bind_purchase_rows(
        sqlx::query(sqlx::AssertSqlSafe(ONE_STATEMENT.as_str())),
        &rs,
    )
    .bind(org)
    .bind(spent)
    .bind(first.record.created_at.unix_millis())
    .bind(
        rs.iter()
            .map(|r| r.ledger_entry_id.as_str())
            .collect::<Vec<_>>(),
    )
    .bind(rs.iter().map(|r| -r.total.0).collect::<Vec<_>>())
    .bind(spent_after)
    .bind(rs.iter().map(|r| r.id.as_str()).collect::<Vec<_>>())
    .bind(
        rs.iter()
            .map(|r| r.created_at.unix_millis())
            .collect::<Vec<_>>(),
    )
    .fetch_one(pool)
    .await;
    let row = match written {
        Ok(row) => row,
        // Also a deadlock or serialization failure (two processes' batches inserting shared
        // keys in opposite orders): the planned path retries and then sees replays.
        Err(sqlx::Error::Database(d))
            if matches!(
                d.code().as_deref(),
                Some("23505" | "23514" | "23502" | "40P01" | "40001")
            ) =>
        {
            return Ok(None);
        }
        Err(e) => return Err(db_err(e)),
    };
    let purchases: i64 = row.try_get(1).map_err(db_err)?;
    let entries: i64 = row.try_get(2).map_err(db_err)?;
    if purchases != rs.len() as i64 || entries != rs.len() as i64 {
        // Cannot happen (a skipped key or a missing balance fails the statement); were it to,
        // what was written would be inconsistent, so say so rather than answer.
        return Err(StoreError::Corrupt(format!(
            "one-statement batch wrote {purchases} purchases and {entries} entries for {}",
            rs.len()
        )));
    }
    Ok(Some(
        batch
            .iter()
            .map(|p| PurchaseResult::Created(p.record.clone()))
            .collect(),
    ))
}

/// One attempt at a batch. `Ok(None)`: a concurrent transaction got in the way (it stored
/// one of the batch's keys first, or spent the balance the plan counted on); the caller rolls
/// back and tries again, with `lock_first`, and then sees a replay or the new balance.
///
/// The organisation's balance row is the one row every purchase of an organisation writes,
/// so its lock is taken as late as possible: the plan is made from an unlocked read, the
/// purchase rows, jobs and events are written, and only then is the balance locked, checked
/// and moved, with the ledger entries, right before COMMIT. The plan stays valid if the locked
/// balance still covers the batch's debits: a purchase the plan refused would be refused on
/// the locked balance too when that is lower, and when it is higher (a top-up landed in
/// between) the refusal is what a purchase ordered before the top-up would get. Only the
/// balances after each entry move, by the same difference.
async fn try_batch(
    conn: &mut PgConnection,
    batch: &[NewPurchase],
    lock_first: bool,
) -> StoreResult<Option<Vec<PurchaseResult>>> {
    let existing = find_by_keys(conn, batch).await?;
    let payers = batch::payers(batch);
    let planned_from = read_balances(conn, &payers, lock_first).await?;
    let plan = batch::plan(batch, existing, planned_from.clone());
    if plan.accepted.is_empty() {
        return Ok(Some(plan.results));
    }
    let now = batch
        .first()
        .map_or(0, |p| p.record.created_at.unix_millis());
    let mut accepted: Vec<(&PurchaseRecord, Option<i64>)> = plan
        .accepted
        .iter()
        .map(|a| (&batch[a.index].record, a.balance_after))
        .collect();
    let rs: Vec<&PurchaseRecord> = accepted.iter().map(|(r, _)| *r).collect();

    // Events first (only sandbox purchases have them at creation), so that the balance row
    // is still the last thing locked.
    let events: Vec<EventRow> = plan
        .accepted
        .iter()
        .flat_map(|a| {
            let r = &batch[a.index].record;
            batch[a.index].events.iter().map(move |event| EventRow {
                event,
                org_id: &r.org_id,
                env: r.environment.as_str(),
                purchase_id: &r.id,
                at: r.updated_at,
            })
        })
        .collect();
    insert_events(conn, &events).await?;

    // One organisation (the usual batch) and not locked yet: the purchase rows, their jobs,
    // the balance's lock and debit and the ledger entries in one statement, so the row is
    // held for that statement's end plus COMMIT. The entries' balances are computed from the
    // balance the UPDATE found; if it no longer covers the batch, the balance CHECK fails,
    // the caller rolls back and runs the batch again, locking first.
    if !lock_first
        && plan.balances.len() == 1
        && let Some((org, &after)) = plan.balances.iter().next()
        && let Some(&before) = planned_from.get(org)
    {
        let debits: Vec<&(&PurchaseRecord, Option<i64>)> =
            accepted.iter().filter(|(_, b)| b.is_some()).collect();
        static ONE_ORG: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
            format!(
                "WITH {},
                 {DEBIT_CTES}
                 SELECT (SELECT COUNT(*) FROM p), (SELECT COUNT(*) FROM l)",
                insert_purchases_cte(true)
            )
        });
        let row = bind_purchase_rows(sqlx::query(sqlx::AssertSqlSafe(ONE_ORG.as_str())), &rs)
            .bind(org)
            .bind(before - after)
            .bind(now)
            .bind(
                debits
                    .iter()
                    .map(|(r, _)| r.ledger_entry_id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(debits.iter().map(|(r, _)| -r.total.0).collect::<Vec<_>>())
            .bind(
                debits
                    .iter()
                    .map(|(_, b)| before - b.unwrap_or_default())
                    .collect::<Vec<_>>(),
            )
            .bind(
                debits
                    .iter()
                    .map(|(r, _)| r.id.as_str())
                    .collect::<Vec<_>>(),
            )
            .bind(
                debits
                    .iter()
                    .map(|(r, _)| r.created_at.unix_millis())
                    .collect::<Vec<_>>(),
            )
            .fetch_one(&mut *conn)
            .await
            .map_err(db_err)?;
        let purchases: i64 = row.try_get(0).map_err(db_err)?;
        let entries: i64 = row.try_get(1).map_err(db_err)?;
        if purchases != rs.len() as i64 || entries != debits.len() as i64 {
            // A key stored first by a concurrent batch, or the balance row is gone.
            return Ok(None);
        }
        return Ok(Some(plan.results));
    }

    // Otherwise: the purchase rows and jobs, then the balances, locked in org order.
    static PURCHASES_ONLY: std::sync::LazyLock<String> = std::sync::LazyLock::new(|| {
        format!("WITH {} SELECT COUNT(*) FROM p", insert_purchases_cte(true))
    });
    let inserted: i64 = bind_purchase_rows(
        sqlx::query(sqlx::AssertSqlSafe(PURCHASES_ONLY.as_str())),
        &rs,
    )
    .fetch_one(&mut *conn)
    .await
    .and_then(|r| r.try_get(0))
    .map_err(db_err)?;
    if inserted != rs.len() as i64 {
        return Ok(None);
    }
    if plan.balances.is_empty() {
        return Ok(Some(plan.results));
    }
    // The balances, locked now (again, if they were locked first: a no-op then).
    let debited: Vec<&str> = {
        let mut orgs: Vec<&str> = plan.balances.keys().map(String::as_str).collect();
        orgs.sort_unstable();
        orgs
    };
    let locked = read_balances(conn, &debited, true).await?;
    let mut shift: HashMap<&str, i64> = HashMap::new();
    for org in &debited {
        let (Some(&before), Some(&now_locked), Some(&after)) = (
            planned_from.get(*org),
            locked.get(*org),
            plan.balances.get(*org),
        ) else {
            return Ok(None);
        };
        if now_locked < before - after {
            return Ok(None); // spent meanwhile: the plan no longer fits
        }
        shift.insert(org, now_locked - before);
    }
    for (r, after) in &mut accepted {
        if let (Some(a), Some(d)) = (after.as_mut(), shift.get(r.org_id.as_str())) {
            *a += d;
        }
    }
    let (orgs, amounts): (Vec<&str>, Vec<i64>) = debited
        .iter()
        .map(|o| (*o, plan.balances[*o] + shift[o]))
        .unzip();
    sqlx::query(
        "UPDATE org_balances SET available_micros = v.balance, updated_at = $3
         FROM UNNEST($1::text[], $2::bigint[]) AS v(org_id, balance) WHERE org_balances.org_id = v.org_id",
    )
    .bind(&orgs)
    .bind(&amounts)
    .bind(now)
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    let debits: Vec<&(&PurchaseRecord, Option<i64>)> =
        accepted.iter().filter(|(_, b)| b.is_some()).collect();
    if !debits.is_empty() {
        sqlx::query(
            "INSERT INTO ledger_entries (id, org_id, kind, amount_micros, balance_after_micros, purchase_id, created_at)
             SELECT id, org_id, 'purchase', amount, balance_after, purchase_id, created_at
             FROM UNNEST($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::text[], $6::bigint[])
                  AS t(id, org_id, amount, balance_after, purchase_id, created_at)",
        )
        .bind(debits.iter().map(|(r, _)| r.ledger_entry_id.as_str()).collect::<Vec<_>>())
        .bind(debits.iter().map(|(r, _)| r.org_id.as_str()).collect::<Vec<_>>())
        .bind(debits.iter().map(|(r, _)| -r.total.0).collect::<Vec<_>>())
        .bind(debits.iter().map(|(_, b)| b.unwrap_or_default()).collect::<Vec<_>>())
        .bind(debits.iter().map(|(r, _)| r.id.as_str()).collect::<Vec<_>>())
        .bind(debits.iter().map(|(r, _)| r.created_at.unix_millis()).collect::<Vec<_>>())
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
    }

    Ok(Some(plan.results))
}

/// Claims due jobs; `SKIP LOCKED` lets concurrent workers take disjoint jobs without waiting.
/// The worker's claim, one statement: lease up to `$4` due jobs to `$1` until `$2` (an
/// attempt counted on each), move their purchases from `PENDING` to `PROCESSING` at `$3`, and
/// return the purchases with the attempt number. A purchase already `PROCESSING` (a retry)
/// keeps its state and time.
fn claim_sql() -> String {
    let p_columns = PURCHASE_COLUMNS
        .split(", ")
        .map(|c| format!("p.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    format!(
        "WITH due AS (SELECT purchase_id FROM fulfilment_jobs \
            WHERE next_attempt_at <= $3 AND (lease_until IS NULL OR lease_until < $3) \
            ORDER BY next_attempt_at LIMIT $4 FOR UPDATE SKIP LOCKED), \
         j AS (UPDATE fulfilment_jobs j SET lease_owner = $1, lease_until = $2, attempts = j.attempts + 1 \
            FROM due WHERE j.purchase_id = due.purchase_id RETURNING j.purchase_id, j.attempts), \
         p AS (UPDATE purchases p \
            SET status = CASE WHEN p.status = 'PENDING' THEN 'PROCESSING' ELSE p.status END, \
                updated_at = CASE WHEN p.status = 'PENDING' THEN $3 ELSE p.updated_at END \
            FROM j WHERE p.id = j.purchase_id RETURNING {p_columns}) \
         SELECT {p_columns}, j.attempts AS claim_attempt FROM p JOIN j ON j.purchase_id = p.id"
    )
}

/// Ends one purchase inside the caller's transaction (see `FinishPurchase`); `false` when
/// the caller no longer holds the job (nothing is written then).
async fn finish_one(conn: &mut PgConnection, f: &FinishPurchase) -> StoreResult<bool> {
    let held = sqlx::query("DELETE FROM fulfilment_jobs WHERE purchase_id = $1 AND lease_owner = $2 RETURNING purchase_id")
        .bind(&f.purchase_id)
        .bind(&f.owner)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
    if held.is_none() {
        return Ok(false); // the lease moved to another worker, or the job is done
    }
    let row = sqlx::query(
        "UPDATE purchases SET status = $1, file_number = $2, error_message = $3, updated_at = $4, confirmed_at = $5
         WHERE id = $6 AND status IN ('PENDING', 'PROCESSING') RETURNING org_id, total_micros",
    )
    .bind(f.status.as_str())
    .bind(&f.file_number)
    .bind(&f.error_message)
    .bind(f.at.unix_millis())
    .bind((f.status == PurchaseStatus::Success).then(|| f.at.unix_millis()))
    .bind(&f.purchase_id)
    .fetch_optional(&mut *conn)
    .await
    .map_err(db_err)?;
    let Some(row) = row else {
        return Err(StoreError::Corrupt(format!(
            "purchase {} had a job but is already final",
            f.purchase_id
        )));
    };
    let org_id: String = row.try_get(0).map_err(db_err)?;
    let total: i64 = row.try_get(1).map_err(db_err)?;
    if let Some(refund_id) = &f.refund_entry_id
        && total > 0
    {
        append_entry(
            conn,
            &NewLedgerEntry {
                id: refund_id,
                org_id: &org_id,
                kind: "refund",
                amount: UsdMicros(total),
                note: f.error_message.as_deref(),
                purchase_id: Some(&f.purchase_id),
                at: f.at,
            },
        )
        .await?;
    }
    let env: String = sqlx::query("SELECT environment FROM purchases WHERE id = $1")
        .bind(&f.purchase_id)
        .fetch_one(&mut *conn)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(db_err)?;
    let events: Vec<EventRow> = f
        .events
        .iter()
        .map(|event| EventRow {
            event,
            org_id: &org_id,
            env: &env,
            purchase_id: &f.purchase_id,
            at: f.at,
        })
        .collect();
    insert_events(conn, &events).await?;
    Ok(true)
}

fn markup_from_row(r: &PgRow) -> StoreResult<MarkupRule> {
    Ok(MarkupRule {
        org_id: r.try_get("org_id").map_err(db_err)?,
        scope: r.try_get("scope").map_err(db_err)?,
        target: r.try_get("target").map_err(db_err)?,
        percent: r.try_get("percent").map_err(db_err)?,
        fixed: UsdMicros(r.try_get("fixed_micros").map_err(db_err)?),
        updated_at: Timestamp::from_unix_millis(r.try_get("updated_at").map_err(db_err)?),
    })
}

/// One outbox event row.
struct EventRow<'a> {
    event: &'a NewEvent,
    org_id: &'a str,
    env: &'a str,
    purchase_id: &'a str,
    at: Timestamp,
}

/// Writes events to the outbox (inside the caller's transaction) and routes them at once, in
/// one statement: one pending delivery per matching endpoint (see `cobro_store::webhooks`),
/// due at the event's time, and the event marked routed.
async fn insert_events(conn: &mut PgConnection, rows: &[EventRow<'_>]) -> StoreResult<()> {
    if rows.is_empty() {
        return Ok(());
    }
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "WITH e AS (
             INSERT INTO outbox_events (id, org_id, environment, type, purchase_id, payload, created_at, routed_at)
             SELECT i, o, v, t, p, b, a, a
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::bigint[])
                  AS r(i, o, v, t, p, b, a)
             RETURNING seq, org_id, environment, type, created_at)
         INSERT INTO webhook_deliveries (event_seq, endpoint_id, status, attempts, next_attempt_at, created_at)
         SELECT e.seq, w.id, 'pending', 0, e.created_at, e.created_at
         FROM e JOIN webhook_endpoints w ON w.org_id = e.org_id AND w.environment = e.environment
         WHERE w.enabled AND w.deleted_at IS NULL AND w.created_at <= e.created_at AND {}
         ORDER BY e.seq, w.id",
        webhooks::WANTS
    )))
    .bind(rows.iter().map(|r| r.event.id.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.org_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.env).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.event.kind.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.purchase_id).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.event.payload.as_str()).collect::<Vec<_>>())
    .bind(rows.iter().map(|r| r.at.unix_millis()).collect::<Vec<_>>())
    .execute(&mut *conn)
    .await
    .map_err(db_err)?;
    Ok(())
}

const KEY_COLUMNS: &str = "public_key, org_id, environment, secret_hash, jwks_url, issuer, audience, created_at, revoked_at";

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn payments(&self) -> std::sync::Arc<dyn cobro_x402::PaymentStore> {
        std::sync::Arc::new(PgPayments(self.clone()))
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
        let row = sqlx::query("SELECT id, name, created_at FROM orgs WHERE id = $1")
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
        // The table lock makes concurrent bootstraps wait for each other; the loser then sees
        // the winner's organisation and does nothing.
        let mut tx = self.begin_write().await?;
        sqlx::query("LOCK TABLE orgs IN EXCLUSIVE MODE")
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
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
        let found = sqlx::query("SELECT revoked_at FROM api_keys WHERE public_key = $1")
            .bind(public_key)
            .fetch_optional(&mut *tx)
            .await
            .map_err(db_err)?;
        let Some(row) = found else { return Ok(false) };
        let revoked: Option<i64> = row.try_get(0).map_err(db_err)?;
        if revoked.is_none() {
            sqlx::query("UPDATE api_keys SET revoked_at = $1 WHERE public_key = $2")
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
            "SELECT {KEY_COLUMNS} FROM api_keys WHERE public_key = $1"
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
        sqlx::query("SELECT available_micros FROM org_balances WHERE org_id = $1")
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
             FROM ledger_entries WHERE org_id = $1 ORDER BY seq DESC LIMIT $2 OFFSET $3",
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
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM ledger_entries WHERE org_id = $1")
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
            "INSERT INTO markups (org_id, scope, target, percent, fixed_micros, updated_at) VALUES ($1, $2, $3, $4, $5, $6)
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
             WHERE org_id = $1 AND ((scope = 'sku' AND target = $2) OR (scope = 'category' AND target = $3))
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
        let results = self.create_purchases_unsynced(batch).await?;
        self.durability_barrier().await?;
        Ok(results)
    }

    async fn sync(&self) -> StoreResult<()> {
        self.durability_barrier().await
    }

    async fn create_purchases_unsynced(
        &self,
        batch: &[NewPurchase],
    ) -> StoreResult<Vec<PurchaseResult>> {
        if let Some(results) = try_one_statement(&self.pool, batch).await? {
            return Ok(results);
        }
        // A concurrent transaction can store one of our keys between our read and our insert;
        // then the whole batch is rolled back and planned again (it then sees a replay).
        //
        // The batch commits with `synchronous_commit = off`: COMMIT returns (and releases the
        // organisation's balance row) without waiting for the WAL flush, so the next batch can
        // start while this one's flush is under way. Nobody hears about the batch until it is
        // durable: before answering, `sync` (`durability_barrier`) commits a transaction of its own
        // synchronously, and since the WAL is flushed in order, that flush covers this batch's
        // commit record too. Whatever acts on a purchase (the fulfilment worker's claim, the
        // webhook dispatcher's claim) commits synchronously before it acts, which flushes it
        // the same way.
        for attempt in 0..8 {
            let mut tx = self.begin_with(BEGIN_PURCHASE_BATCH).await?;
            match try_batch(&mut tx, batch, attempt > 0).await {
                Ok(Some(results)) => {
                    tx.commit().await.map_err(db_err)?;
                    return Ok(results);
                }
                // A lost race (a key stored first, the balance spent, a deadlock between a
                // locking retry and a batch sharing a key): run the batch again.
                Ok(None) | Err(StoreError::Conflict(_)) => {}
                // The balance CHECK refused the optimistic first attempt's debit.
                Err(StoreError::Rejected(_)) if attempt == 0 => {}
                Err(e) => return Err(e),
            }
            tx.rollback().await.map_err(db_err)?;
        }
        Err(StoreError::Conflict(
            "a purchase batch kept conflicting with concurrent batches".into(),
        ))
    }

    async fn get_purchase(
        &self,
        org_id: &str,
        env: Environment,
        id: &str,
    ) -> StoreResult<Option<PurchaseRecord>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {PURCHASE_COLUMNS} FROM purchases WHERE id = $1 AND org_id = $2 AND environment = $3"
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
        static CLAIM: std::sync::LazyLock<String> = std::sync::LazyLock::new(claim_sql);
        let mut tx = self.begin_with(BEGIN_INDEX_LOOKUPS).await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(CLAIM.as_str()))
            .bind(owner)
            .bind(now.unix_millis().saturating_add(lease_ms))
            .bind(now.unix_millis())
            .bind(i64::from(limit))
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        rows.iter()
            .map(|row| {
                let attempt: i64 = row.try_get("claim_attempt").map_err(db_err)?;
                Ok(ClaimedJob {
                    purchase: purchase_from_row(row)?,
                    attempt: u32::try_from(attempt).unwrap_or(u32::MAX),
                })
            })
            .collect()
    }

    async fn finish_purchase(&self, f: &FinishPurchase) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let done = finish_one(&mut tx, f).await?;
        tx.commit().await.map_err(db_err)?;
        Ok(done)
    }

    async fn finish_purchases(&self, batch: &[FinishPurchase]) -> StoreResult<Vec<bool>> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_with(BEGIN_INDEX_LOOKUPS).await?;
        // 1. Release the jobs this worker still holds; the others changed hands.
        let ids: Vec<&str> = batch.iter().map(|f| f.purchase_id.as_str()).collect();
        let owners: Vec<&str> = batch.iter().map(|f| f.owner.as_str()).collect();
        let held: std::collections::HashSet<String> = sqlx::query(
            "DELETE FROM fulfilment_jobs j USING UNNEST($1::text[], $2::text[]) AS f(purchase_id, owner)
             WHERE j.purchase_id = f.purchase_id AND j.lease_owner = f.owner RETURNING j.purchase_id",
        )
        .bind(&ids)
        .bind(&owners)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.try_get::<String, _>(0))
        .collect::<Result<_, _>>()
        .map_err(db_err)?;
        let mine: Vec<&FinishPurchase> = batch
            .iter()
            .filter(|f| held.contains(&f.purchase_id))
            .collect();
        if !mine.is_empty() {
            // 2. Final states, in one statement.
            let rows = sqlx::query(
                "UPDATE purchases p SET status = f.status, file_number = f.file_number, error_message = f.error_message,
                     updated_at = f.at, confirmed_at = f.confirmed_at
                 FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::bigint[], $6::bigint[])
                      AS f(id, status, file_number, error_message, at, confirmed_at)
                 WHERE p.id = f.id AND p.status IN ('PENDING', 'PROCESSING')
                 RETURNING p.id, p.org_id, p.environment, p.total_micros",
            )
            .bind(mine.iter().map(|f| f.purchase_id.as_str()).collect::<Vec<_>>())
            .bind(mine.iter().map(|f| f.status.as_str()).collect::<Vec<_>>())
            .bind(mine.iter().map(|f| f.file_number.clone()).collect::<Vec<Option<String>>>())
            .bind(mine.iter().map(|f| f.error_message.clone()).collect::<Vec<Option<String>>>())
            .bind(mine.iter().map(|f| f.at.unix_millis()).collect::<Vec<_>>())
            .bind(
                mine.iter()
                    .map(|f| (f.status == PurchaseStatus::Success).then(|| f.at.unix_millis()))
                    .collect::<Vec<Option<i64>>>(),
            )
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
            if rows.len() != mine.len() {
                return Err(StoreError::Corrupt(
                    "a purchase had a job but was already final".into(),
                ));
            }
            let mut owners_of: HashMap<String, (String, String, i64)> =
                HashMap::with_capacity(rows.len());
            for r in &rows {
                owners_of.insert(
                    r.try_get(0).map_err(db_err)?,
                    (
                        r.try_get(1).map_err(db_err)?,
                        r.try_get(2).map_err(db_err)?,
                        r.try_get(3).map_err(db_err)?,
                    ),
                );
            }
            // 3. Refunds (rare): each a reversing entry that moves the balance.
            for f in &mine {
                if let Some((org_id, _, total)) = owners_of.get(&f.purchase_id)
                    && let Some(refund) = f.refund(org_id, *total)
                {
                    append_entry(&mut tx, &refund).await?;
                }
            }
            // 4. Events, in one statement.
            let events: Vec<EventRow> = mine
                .iter()
                .filter_map(|f| owners_of.get(&f.purchase_id).map(|o| (*f, o)))
                .flat_map(|(f, o)| {
                    f.events.iter().map(move |event| EventRow {
                        event,
                        org_id: &o.0,
                        env: &o.1,
                        purchase_id: &f.purchase_id,
                        at: f.at,
                    })
                })
                .collect();
            insert_events(&mut tx, &events).await?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(batch
            .iter()
            .map(|f| held.contains(&f.purchase_id))
            .collect())
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
            "UPDATE fulfilment_jobs SET lease_owner = NULL, lease_until = NULL, next_attempt_at = $1, last_error = $2,
                 flagged_at = COALESCE(flagged_at, $3)
             WHERE purchase_id = $4 AND lease_owner = $5",
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
             VALUES ($1, 1, $2, $3, $4, $5) ON CONFLICT (slot) DO NOTHING",
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

pub mod test_db {
    //! Throw-away databases for tests: each test creates its own uniquely named database on
    //! the server named by `COBRO_TEST_DATABASE_URL` and drops it afterwards.

    use std::str::FromStr;

    use sqlx::{ConnectOptions, Connection, postgres::PgConnectOptions};

    /// The environment variable naming the PostgreSQL server tests may use.
    pub const ENV: &str = "COBRO_TEST_DATABASE_URL";

    /// A database created for one test.
    #[derive(Debug)]
    pub struct TestDatabase {
        admin: PgConnectOptions,
        pub name: String,
        /// URL of the new database.
        pub url: String,
    }

    impl TestDatabase {
        /// Creates a fresh database, or returns `None` when `COBRO_TEST_DATABASE_URL` is unset.
        pub async fn create() -> Option<TestDatabase> {
            let admin_url = std::env::var(ENV).ok().filter(|s| !s.is_empty())?;
            let admin = PgConnectOptions::from_str(&admin_url)
                .expect("COBRO_TEST_DATABASE_URL is not a PostgreSQL URL");
            let name = format!("cobro_test_{}", uuid_like());
            let mut conn = admin
                .connect()
                .await
                .expect("connect to COBRO_TEST_DATABASE_URL");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
                .execute(&mut conn)
                .await
                .expect("create test database");
            conn.close().await.ok();
            let url = replace_database(&admin_url, &name);
            Some(TestDatabase { admin, name, url })
        }

        /// Drops the database, disconnecting anyone still using it.
        pub async fn drop_database(self) {
            match self.admin.connect().await {
                Ok(mut conn) => {
                    let sql = format!("DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)", self.name);
                    if let Err(e) = sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut conn)
                        .await
                    {
                        eprintln!("could not drop test database {}: {e}", self.name);
                    }
                    conn.close().await.ok();
                }
                Err(e) => eprintln!("could not drop test database {}: {e}", self.name),
            }
        }
    }

    /// A unique suffix: time, process id and a counter (no extra dependency needed).
    fn uuid_like() -> String {
        use std::sync::atomic::{AtomicU64, Ordering};
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!(
            "{:x}_{}_{}",
            nanos,
            std::process::id(),
            COUNTER.fetch_add(1, Ordering::Relaxed)
        )
    }

    /// `postgres://u@h:5432/test?x=y` with the database replaced by `name`.
    fn replace_database(url: &str, name: &str) -> String {
        let (base, query) = match url.split_once('?') {
            Some((b, q)) => (b, Some(q)),
            None => (url, None),
        };
        let scheme_end = base.find("://").map_or(0, |i| i + 3);
        let path_start = base[scheme_end..].find('/').map(|i| i + scheme_end);
        let host = path_start.map_or(base, |i| &base[..i]);
        match query {
            Some(q) => format!("{host}/{name}?{q}"),
            None => format!("{host}/{name}"),
        }
    }

    #[cfg(test)]
    mod tests {
        #[test]
        fn database_names_are_replaced_in_urls() {
            assert_eq!(
                super::replace_database("postgres://u@h:5432/test", "x"),
                "postgres://u@h:5432/x"
            );
            assert_eq!(
                super::replace_database("postgres://u@h", "x"),
                "postgres://u@h/x"
            );
            assert_eq!(
                super::replace_database("postgres://h/db?sslmode=disable", "x"),
                "postgres://h/x?sslmode=disable"
            );
        }
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
