//! [`WebhookStore`] on SQLite. Writes run under `BEGIN IMMEDIATE` like every other write, so
//! routing and claiming never race each other inside one database file.

use async_trait::async_trait;
use cobro_store::{
    StoreResult, codec,
    webhooks::{
        AttemptRecord, ClaimedDelivery, DeliveryRecord, DeliveryResult, DeliveryStatus,
        DeliveryVerdict, EventFilter, EventRecord, WebhookBacklog, WebhookEndpoint, WebhookStore,
    },
};
use cobro_types::{Environment, Timestamp};
use sqlx::{Row, sqlite::SqliteRow};

use crate::{SqliteStore, db_err};

const ENDPOINT_COLUMNS: &str = "id, org_id, environment, url, description, events, enabled, \
     disabled_reason, secret, previous_secret, previous_secret_until, created_at, updated_at";

const EVENT_COLUMNS: &str =
    "e.id, e.org_id, e.environment, e.type, e.purchase_id, e.payload, e.created_at";

const DELIVERY_COLUMNS: &str = "d.id, e.id AS event_id, d.endpoint_id, d.status, d.attempts, \
     d.next_attempt_at, d.last_status_code, d.last_error, d.created_at, d.finished_at";

/// The filter clause shared by routing and redelivery: the endpoint wants the event.
pub(crate) const WANTS: &str = "(w.events = '*' OR w.events LIKE '%,' || e.type || ',%')";

fn ts(v: i64) -> Timestamp {
    Timestamp::from_unix_millis(v)
}

fn endpoint_from_row(r: &SqliteRow) -> StoreResult<WebhookEndpoint> {
    let enabled: i64 = r.try_get("enabled").map_err(db_err)?;
    let events: String = r.try_get("events").map_err(db_err)?;
    Ok(WebhookEndpoint {
        id: r.try_get("id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        environment: codec::decode_environment(
            &r.try_get::<String, _>("environment").map_err(db_err)?,
        )?,
        url: r.try_get("url").map_err(db_err)?,
        description: r.try_get("description").map_err(db_err)?,
        events: WebhookEndpoint::events_from_column(&events),
        enabled: enabled != 0,
        disabled_reason: r.try_get("disabled_reason").map_err(db_err)?,
        secret: r.try_get("secret").map_err(db_err)?,
        previous_secret: r.try_get("previous_secret").map_err(db_err)?,
        previous_secret_until: r
            .try_get::<Option<i64>, _>("previous_secret_until")
            .map_err(db_err)?
            .map(ts),
        created_at: ts(r.try_get("created_at").map_err(db_err)?),
        updated_at: ts(r.try_get("updated_at").map_err(db_err)?),
    })
}

fn event_from_row(r: &SqliteRow) -> StoreResult<EventRecord> {
    Ok(EventRecord {
        id: r.try_get("id").map_err(db_err)?,
        org_id: r.try_get("org_id").map_err(db_err)?,
        environment: codec::decode_environment(
            &r.try_get::<String, _>("environment").map_err(db_err)?,
        )?,
        kind: r.try_get("type").map_err(db_err)?,
        purchase_id: r.try_get("purchase_id").map_err(db_err)?,
        payload: r.try_get("payload").map_err(db_err)?,
        created_at: ts(r.try_get("created_at").map_err(db_err)?),
    })
}

fn delivery_from_row(r: &SqliteRow) -> StoreResult<DeliveryRecord> {
    let status: String = r.try_get("status").map_err(db_err)?;
    let status = DeliveryStatus::parse(&status)
        .ok_or_else(|| cobro_store::StoreError::Corrupt(format!("delivery status {status:?}")))?;
    Ok(DeliveryRecord {
        id: r.try_get("id").map_err(db_err)?,
        event_id: r.try_get("event_id").map_err(db_err)?,
        endpoint_id: r.try_get("endpoint_id").map_err(db_err)?,
        status,
        attempts: u32::try_from(r.try_get::<i64, _>("attempts").map_err(db_err)?).unwrap_or(0),
        next_attempt_at: (status == DeliveryStatus::Pending)
            .then(|| r.try_get::<i64, _>("next_attempt_at").map(ts))
            .transpose()
            .map_err(db_err)?,
        last_status_code: r
            .try_get::<Option<i64>, _>("last_status_code")
            .map_err(db_err)?
            .and_then(|c| u16::try_from(c).ok()),
        last_error: r.try_get("last_error").map_err(db_err)?,
        created_at: ts(r.try_get("created_at").map_err(db_err)?),
        finished_at: r
            .try_get::<Option<i64>, _>("finished_at")
            .map_err(db_err)?
            .map(ts),
    })
}

fn attempt_from_row(r: &SqliteRow) -> StoreResult<AttemptRecord> {
    Ok(AttemptRecord {
        delivery_id: r.try_get("delivery_id").map_err(db_err)?,
        event_id: r.try_get("event_id").map_err(db_err)?,
        endpoint_id: r.try_get("endpoint_id").map_err(db_err)?,
        attempt: u32::try_from(r.try_get::<i64, _>("attempt").map_err(db_err)?).unwrap_or(0),
        attempted_at: ts(r.try_get("attempted_at").map_err(db_err)?),
        status_code: r
            .try_get::<Option<i64>, _>("status_code")
            .map_err(db_err)?
            .and_then(|c| u16::try_from(c).ok()),
        latency_ms: u64::try_from(r.try_get::<i64, _>("latency_ms").map_err(db_err)?).unwrap_or(0),
        error: r.try_get("error").map_err(db_err)?,
    })
}

#[async_trait]
impl WebhookStore for SqliteStore {
    async fn create_webhook_endpoint(&self, e: &WebhookEndpoint) -> StoreResult<()> {
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
        ));
        let mut tx = self.begin_write().await?;
        sqlx::query(sql)
            .bind(&e.id)
            .bind(&e.org_id)
            .bind(e.environment.as_str())
            .bind(&e.url)
            .bind(&e.description)
            .bind(e.events_column())
            .bind(i64::from(e.enabled))
            .bind(&e.disabled_reason)
            .bind(&e.secret)
            .bind(&e.previous_secret)
            .bind(e.previous_secret_until.map(Timestamp::unix_millis))
            .bind(e.created_at.unix_millis())
            .bind(e.updated_at.unix_millis())
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        tx.commit().await.map_err(db_err)
    }

    async fn get_webhook_endpoint(
        &self,
        org_id: &str,
        env: Environment,
        id: &str,
    ) -> StoreResult<Option<WebhookEndpoint>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
             WHERE id = ? AND org_id = ? AND environment = ? AND deleted_at IS NULL"
        ));
        sqlx::query(sql)
            .bind(id)
            .bind(org_id)
            .bind(env.as_str())
            .fetch_optional(&self.pool)
            .await
            .map_err(db_err)?
            .as_ref()
            .map(endpoint_from_row)
            .transpose()
    }

    async fn list_webhook_endpoints(
        &self,
        org_id: &str,
        env: Environment,
    ) -> StoreResult<Vec<WebhookEndpoint>> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints
             WHERE org_id = ? AND environment = ? AND deleted_at IS NULL ORDER BY created_at, id"
        ));
        sqlx::query(sql)
            .bind(org_id)
            .bind(env.as_str())
            .fetch_all(&self.pool)
            .await
            .map_err(db_err)?
            .iter()
            .map(endpoint_from_row)
            .collect()
    }

    async fn update_webhook_endpoint(&self, e: &WebhookEndpoint) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE webhook_endpoints SET url = ?, description = ?, events = ?, enabled = ?,
                    disabled_reason = ?, secret = ?, previous_secret = ?, previous_secret_until = ?,
                    updated_at = ?
             WHERE id = ? AND org_id = ? AND environment = ? AND deleted_at IS NULL",
        )
        .bind(&e.url)
        .bind(&e.description)
        .bind(e.events_column())
        .bind(i64::from(e.enabled))
        .bind(&e.disabled_reason)
        .bind(&e.secret)
        .bind(&e.previous_secret)
        .bind(e.previous_secret_until.map(Timestamp::unix_millis))
        .bind(e.updated_at.unix_millis())
        .bind(&e.id)
        .bind(&e.org_id)
        .bind(e.environment.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        tx.commit().await.map_err(db_err)?;
        Ok(n == 1)
    }

    async fn delete_webhook_endpoint(
        &self,
        org_id: &str,
        env: Environment,
        id: &str,
        at: Timestamp,
    ) -> StoreResult<bool> {
        let mut tx = self.begin_write().await?;
        let n = sqlx::query(
            "UPDATE webhook_endpoints SET deleted_at = ?, enabled = 0, updated_at = ?
             WHERE id = ? AND org_id = ? AND environment = ? AND deleted_at IS NULL",
        )
        .bind(at.unix_millis())
        .bind(at.unix_millis())
        .bind(id)
        .bind(org_id)
        .bind(env.as_str())
        .execute(&mut *tx)
        .await
        .map_err(db_err)?
        .rows_affected();
        if n == 1 {
            sqlx::query(
                "UPDATE webhook_deliveries SET status = 'cancelled', lease_owner = NULL, finished_at = ?
                 WHERE endpoint_id = ? AND status = 'pending'",
            )
            .bind(at.unix_millis())
            .bind(id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        }
        tx.commit().await.map_err(db_err)?;
        Ok(n == 1)
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: Timestamp,
        lease_ms: i64,
        limit: u32,
        per_endpoint: u32,
    ) -> StoreResult<Vec<ClaimedDelivery>> {
        let lease_until = now.unix_millis().saturating_add(lease_ms);
        // A look without the write lock first: the dispatcher asks after every commit that
        // may have written events, and most of the time nothing is due. Taking the lock for
        // nothing would queue behind (and delay) purchase commits.
        let due = sqlx::query(
            "SELECT 1 FROM webhook_endpoints w
             WHERE enabled = 1 AND deleted_at IS NULL AND EXISTS (
                 SELECT 1 FROM webhook_deliveries d
                 WHERE d.endpoint_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= ?)
             LIMIT 1",
        )
        .bind(now.unix_millis())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?;
        if due.is_none() {
            return Ok(Vec::new());
        }
        let mut tx = self.begin_write().await?;
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints w
             WHERE enabled = 1 AND deleted_at IS NULL AND EXISTS (
                 SELECT 1 FROM webhook_deliveries d
                 WHERE d.endpoint_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= ?)"
        ));
        let endpoints = sqlx::query(sql)
            .bind(now.unix_millis())
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(endpoint_from_row)
            .collect::<StoreResult<Vec<_>>>()?;
        let mut out = Vec::new();
        let mut left = i64::from(limit);
        for endpoint in endpoints {
            if left <= 0 {
                break;
            }
            let take = left.min(i64::from(per_endpoint));
            let ids: Vec<i64> = sqlx::query(
                "UPDATE webhook_deliveries SET lease_owner = ?, next_attempt_at = ?, attempts = attempts + 1
                 WHERE id IN (SELECT id FROM webhook_deliveries
                              WHERE endpoint_id = ? AND status = 'pending' AND next_attempt_at <= ?
                              ORDER BY next_attempt_at, id LIMIT ?)
                 RETURNING id",
            )
            .bind(owner)
            .bind(lease_until)
            .bind(&endpoint.id)
            .bind(now.unix_millis())
            .bind(take)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| r.try_get::<i64, _>(0))
            .collect::<Result<_, _>>()
            .map_err(db_err)?;
            left -= i64::try_from(ids.len()).unwrap_or(0);
            let ids_json = serde_json::to_string(&ids)
                .map_err(|e| cobro_store::StoreError::Database(e.to_string()))?;
            let sql = sqlx::AssertSqlSafe(format!(
                "SELECT d.id AS delivery_id, d.attempts, {EVENT_COLUMNS}
                 FROM webhook_deliveries d JOIN outbox_events e ON e.seq = d.event_seq
                 WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY d.next_attempt_at, d.id"
            ));
            for row in sqlx::query(sql)
                .bind(ids_json)
                .fetch_all(&mut *tx)
                .await
                .map_err(db_err)?
            {
                out.push(ClaimedDelivery {
                    delivery_id: row.try_get("delivery_id").map_err(db_err)?,
                    attempt: u32::try_from(row.try_get::<i64, _>("attempts").map_err(db_err)?)
                        .unwrap_or(u32::MAX),
                    event: event_from_row(&row)?,
                    endpoint: endpoint.clone(),
                });
            }
        }
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn record_deliveries(&self, results: &[DeliveryResult]) -> StoreResult<Vec<bool>> {
        let mut tx = self.begin_write().await?;
        let mut applied = Vec::with_capacity(results.len());
        for r in results {
            let a = &r.attempt;
            let at = a.attempted_at.unix_millis();
            let code = a.status_code.map(i64::from);
            sqlx::query(
                "INSERT INTO webhook_attempts (delivery_id, event_seq, endpoint_id, attempt, attempted_at,
                                               status_code, latency_ms, error)
                 SELECT id, event_seq, endpoint_id, ?, ?, ?, ?, ? FROM webhook_deliveries WHERE id = ?",
            )
            .bind(i64::from(a.attempt))
            .bind(at)
            .bind(code)
            .bind(i64::try_from(a.latency_ms).unwrap_or(i64::MAX))
            .bind(&a.error)
            .bind(a.delivery_id)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
            let (status, next, finished) = match r.verdict {
                DeliveryVerdict::Delivered => ("delivered", None, Some(at)),
                DeliveryVerdict::Retry { next_attempt_at } => {
                    ("pending", Some(next_attempt_at.unix_millis()), None)
                }
                DeliveryVerdict::Failed | DeliveryVerdict::DisableEndpoint => {
                    ("failed", None, Some(at))
                }
            };
            let n = sqlx::query(
                "UPDATE webhook_deliveries
                 SET status = ?, next_attempt_at = COALESCE(?, next_attempt_at), lease_owner = NULL,
                     last_status_code = ?, last_error = ?, finished_at = ?
                 WHERE id = ? AND lease_owner = ? AND status = 'pending' AND attempts = ?",
            )
            .bind(status)
            .bind(next)
            .bind(code)
            .bind(&a.error)
            .bind(finished)
            .bind(a.delivery_id)
            .bind(&r.owner)
            .bind(i64::from(a.attempt))
            .execute(&mut *tx)
            .await
            .map_err(db_err)?
            .rows_affected();
            if n == 1 && r.verdict == DeliveryVerdict::DisableEndpoint {
                sqlx::query(
                    "UPDATE webhook_endpoints SET enabled = 0, updated_at = ?,
                            disabled_reason = 'the endpoint answered 410 Gone'
                     WHERE id = ? AND enabled = 1",
                )
                .bind(at)
                .bind(&a.endpoint_id)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
            }
            applied.push(n == 1);
        }
        tx.commit().await.map_err(db_err)?;
        Ok(applied)
    }

    async fn list_events(
        &self,
        org_id: &str,
        env: Environment,
        filter: &EventFilter,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<EventRecord>, u64)> {
        let cond = "e.org_id = ? AND e.environment = ? AND (? IS NULL OR e.type = ?)
                    AND (? IS NULL OR e.purchase_id = ?)";
        let total: i64 = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT COUNT(*) FROM outbox_events e WHERE {cond}"
        )))
        .bind(org_id)
        .bind(env.as_str())
        .bind(&filter.kind)
        .bind(&filter.kind)
        .bind(&filter.purchase_id)
        .bind(&filter.purchase_id)
        .fetch_one(&self.pool)
        .await
        .and_then(|r| r.try_get(0))
        .map_err(db_err)?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM outbox_events e WHERE {cond}
             ORDER BY e.seq DESC LIMIT ? OFFSET ?"
        )))
        .bind(org_id)
        .bind(env.as_str())
        .bind(&filter.kind)
        .bind(&filter.kind)
        .bind(&filter.purchase_id)
        .bind(&filter.purchase_id)
        .bind(i64::from(limit))
        .bind(i64::try_from(offset).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?;
        let events = rows
            .iter()
            .map(event_from_row)
            .collect::<StoreResult<_>>()?;
        Ok((events, u64::try_from(total).unwrap_or(0)))
    }

    async fn get_event(
        &self,
        org_id: &str,
        env: Environment,
        id: &str,
    ) -> StoreResult<Option<EventRecord>> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {EVENT_COLUMNS} FROM outbox_events e
             WHERE e.id = ? AND e.org_id = ? AND e.environment = ?"
        )))
        .bind(id)
        .bind(org_id)
        .bind(env.as_str())
        .fetch_optional(&self.pool)
        .await
        .map_err(db_err)?
        .as_ref()
        .map(event_from_row)
        .transpose()
    }

    async fn event_deliveries(
        &self,
        event_id: &str,
    ) -> StoreResult<(Vec<DeliveryRecord>, Vec<AttemptRecord>)> {
        let deliveries = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
             JOIN outbox_events e ON e.seq = d.event_seq WHERE e.id = ? ORDER BY d.id"
        )))
        .bind(event_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(delivery_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        let attempts = sqlx::query(
            "SELECT a.delivery_id, e.id AS event_id, a.endpoint_id, a.attempt, a.attempted_at,
                    a.status_code, a.latency_ms, a.error
             FROM webhook_attempts a JOIN outbox_events e ON e.seq = a.event_seq
             WHERE e.id = ? ORDER BY a.id",
        )
        .bind(event_id)
        .fetch_all(&self.pool)
        .await
        .map_err(db_err)?
        .iter()
        .map(attempt_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        Ok((deliveries, attempts))
    }

    async fn redeliver_event(
        &self,
        event: &EventRecord,
        endpoint_id: Option<&str>,
        now: Timestamp,
    ) -> StoreResult<Vec<DeliveryRecord>> {
        let mut tx = self.begin_write().await?;
        let ids: Vec<i64> = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_deliveries (event_seq, endpoint_id, status, attempts, next_attempt_at, created_at)
             SELECT e.seq, w.id, 'pending', 0, ?, ?
             FROM outbox_events e
             JOIN webhook_endpoints w ON w.org_id = e.org_id AND w.environment = e.environment
             WHERE e.id = ? AND w.enabled = 1 AND w.deleted_at IS NULL
               AND ((? IS NULL AND {WANTS}) OR w.id = ?)
             ORDER BY w.id
             RETURNING id"
        )))
        .bind(now.unix_millis())
        .bind(now.unix_millis())
        .bind(&event.id)
        .bind(endpoint_id)
        .bind(endpoint_id)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()
        .map_err(db_err)?;
        let ids_json = serde_json::to_string(&ids)
            .map_err(|e| cobro_store::StoreError::Database(e.to_string()))?;
        let out = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
             JOIN outbox_events e ON e.seq = d.event_seq
             WHERE d.id IN (SELECT value FROM json_each(?)) ORDER BY d.id"
        )))
        .bind(ids_json)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?
        .iter()
        .map(delivery_from_row)
        .collect::<StoreResult<Vec<_>>>()?;
        tx.commit().await.map_err(db_err)?;
        Ok(out)
    }

    async fn webhook_backlog(&self) -> StoreResult<WebhookBacklog> {
        let row = sqlx::query(
            "SELECT (SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending'),
                    (SELECT MIN(created_at) FROM webhook_deliveries WHERE status = 'pending')",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(db_err)?;
        Ok(WebhookBacklog {
            pending: u64::try_from(row.try_get::<i64, _>(0).map_err(db_err)?).unwrap_or(0),
            oldest_pending: row.try_get::<Option<i64>, _>(1).map_err(db_err)?.map(ts),
        })
    }
}
