//! The PostgreSQL implementation of the cobro [`Store`]: for production, and for several
//! server processes sharing one database.
//!
//! Transactions run at READ COMMITTED; every balance change is a single
//! `UPDATE … RETURNING` on the organisation's balance row, which takes the row lock, so
//! concurrent debits serialise on that row and the `CHECK (available_micros >= 0)` decides
//! which of them fail. The demo bootstrap takes a table lock so only one process seeds.
#![forbid(unsafe_code)]

use std::{borrow::Cow, str::FromStr, time::Duration};

use async_trait::async_trait;
use cobro_store::{
    ApiKeyRecord, ChangeVersions, DemoBootstrap, IssuerKey, LedgerEntry, NewLedgerEntry, Org,
    Store, StoreError, StoreResult, codec,
};
use cobro_types::{CatalogEntry, Timestamp, UsdMicros};
use sqlx::{
    PgConnection, Row, SqlSafeStr,
    migrate::{Migration, MigrationType, Migrator},
    postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow},
};

/// The migrations, compiled into the binary.
const MIGRATIONS: &[(i64, &str, &str)] = &[(
    1,
    "foundation",
    include_str!("../migrations/0001_foundation.sql"),
)];

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

fn db_err(e: sqlx::Error) -> StoreError {
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
    pool: PgPool,
}

impl PgStore {
    /// Connects to `url` (`postgres://…`). Does not migrate; call [`PgStore::migrate`].
    pub async fn connect(url: &str, opts: &PgOptions) -> StoreResult<PgStore> {
        let connect = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Database(format!("bad PostgreSQL URL: {e}")))?;
        let pool = PgPoolOptions::new()
            .max_connections(opts.max_connections.max(1))
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

    async fn begin_write(&self) -> StoreResult<sqlx::Transaction<'static, sqlx::Postgres>> {
        self.pool.begin().await.map_err(db_err)
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

const KEY_COLUMNS: &str = "public_key, org_id, environment, secret_hash, jwks_url, issuer, audience, created_at, revoked_at";

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
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
