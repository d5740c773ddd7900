//! [`WebhookStore`] on PostgreSQL. Routing and claiming lock rows with `FOR UPDATE SKIP
//! LOCKED`, so several dispatchers in several processes never take the same event or delivery.

use async_trait::async_trait;
use cobro_store::{
    StoreResult, codec,
    webhooks::{
        AttemptRecord, ClaimedDelivery, DeliveryRecord, DeliveryResult, DeliveryStatus,
        DeliveryVerdict, EventFilter, EventRecord, WebhookBacklog, WebhookEndpoint, WebhookStore,
    },
};
use cobro_types::{Environment, Timestamp};
use sqlx::{Row, postgres::PgRow};

use crate::{PgStore, db_err};

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

fn endpoint_from_row(r: &PgRow) -> StoreResult<WebhookEndpoint> {
    let enabled: bool = r.try_get("enabled").map_err(db_err)?;
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
        enabled,
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

fn event_from_row(r: &PgRow) -> StoreResult<EventRecord> {
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

fn delivery_from_row(r: &PgRow) -> StoreResult<DeliveryRecord> {
    let status: String = r.try_get("status").map_err(db_err)?;
    let status = DeliveryStatus::parse(&status)
        .ok_or_else(|| cobro_store::StoreError::Corrupt(format!("delivery status {status:?}")))?;
    Ok(DeliveryRecord {
        id: r.try_get("id").map_err(db_err)?,
        event_id: r.try_get("event_id").map_err(db_err)?,
        endpoint_id: r.try_get("endpoint_id").map_err(db_err)?,
        status,
        attempts: u32::try_from(r.try_get::<i32, _>("attempts").map_err(db_err)?).unwrap_or(0),
        next_attempt_at: (status == DeliveryStatus::Pending)
            .then(|| r.try_get::<i64, _>("next_attempt_at").map(ts))
            .transpose()
            .map_err(db_err)?,
        last_status_code: r
            .try_get::<Option<i32>, _>("last_status_code")
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

fn attempt_from_row(r: &PgRow) -> StoreResult<AttemptRecord> {
    Ok(AttemptRecord {
        delivery_id: r.try_get("delivery_id").map_err(db_err)?,
        event_id: r.try_get("event_id").map_err(db_err)?,
        endpoint_id: r.try_get("endpoint_id").map_err(db_err)?,
        attempt: u32::try_from(r.try_get::<i32, _>("attempt").map_err(db_err)?).unwrap_or(0),
        attempted_at: ts(r.try_get("attempted_at").map_err(db_err)?),
        status_code: r
            .try_get::<Option<i32>, _>("status_code")
            .map_err(db_err)?
            .and_then(|c| u16::try_from(c).ok()),
        latency_ms: u64::try_from(r.try_get::<i64, _>("latency_ms").map_err(db_err)?).unwrap_or(0),
        error: r.try_get("error").map_err(db_err)?,
    })
}

#[async_trait]
impl WebhookStore for PgStore {
    async fn create_webhook_endpoint(&self, e: &WebhookEndpoint) -> StoreResult<()> {
        let sql = sqlx::AssertSqlSafe(format!(
            "INSERT INTO webhook_endpoints ({ENDPOINT_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        ));
        let mut tx = self.begin_write().await?;
        sqlx::query(sql)
            .bind(&e.id)
            .bind(&e.org_id)
            .bind(e.environment.as_str())
            .bind(&e.url)
            .bind(&e.description)
            .bind(e.events_column())
            .bind(e.enabled)
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
             WHERE id = $1 AND org_id = $2 AND environment = $3 AND deleted_at IS NULL"
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
             WHERE org_id = $1 AND environment = $2 AND deleted_at IS NULL ORDER BY created_at, id"
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
            "UPDATE webhook_endpoints SET url = $1, description = $2, events = $3, enabled = $4,
                    disabled_reason = $5, secret = $6, previous_secret = $7, previous_secret_until = $8,
                    updated_at = $9
             WHERE id = $10 AND org_id = $11 AND environment = $12 AND deleted_at IS NULL",
        )
        .bind(&e.url)
        .bind(&e.description)
        .bind(e.events_column())
        .bind(e.enabled)
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
            "UPDATE webhook_endpoints SET deleted_at = $1, enabled = FALSE, updated_at = $2
             WHERE id = $3 AND org_id = $4 AND environment = $5 AND deleted_at IS NULL",
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
                "UPDATE webhook_deliveries SET status = 'cancelled', lease_owner = NULL, finished_at = $1
                 WHERE endpoint_id = $2 AND status = 'pending'",
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
        let sql = sqlx::AssertSqlSafe(format!(
            "WITH picked AS (
                 SELECT d.id FROM webhook_endpoints w
                 CROSS JOIN LATERAL (
                     SELECT id FROM webhook_deliveries d
                     WHERE d.endpoint_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= $1
                     ORDER BY d.next_attempt_at, d.id LIMIT $2
                     FOR UPDATE SKIP LOCKED) d
                 WHERE w.enabled AND w.deleted_at IS NULL
                 LIMIT $3),
             claimed AS (
                 UPDATE webhook_deliveries d
                 SET lease_owner = $4, next_attempt_at = $5, attempts = d.attempts + 1
                 FROM picked WHERE d.id = picked.id
                 RETURNING d.id, d.attempts, d.event_seq, d.endpoint_id)
             SELECT c.id AS delivery_id, c.attempts, c.endpoint_id AS claimed_endpoint, {EVENT_COLUMNS}
             FROM claimed c JOIN outbox_events e ON e.seq = c.event_seq
             ORDER BY c.id"
        ));
        let mut tx = self.begin_write().await?;
        let rows = sqlx::query(sql)
            .bind(now.unix_millis())
            .bind(i64::from(per_endpoint))
            .bind(i64::from(limit))
            .bind(owner)
            .bind(lease_until)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?;
        let mut endpoint_ids: Vec<String> = Vec::new();
        for row in &rows {
            let id: String = row.try_get("claimed_endpoint").map_err(db_err)?;
            if !endpoint_ids.contains(&id) {
                endpoint_ids.push(id);
            }
        }
        let endpoints: std::collections::HashMap<String, WebhookEndpoint> =
            sqlx::query(sqlx::AssertSqlSafe(format!(
                "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = ANY($1)"
            )))
            .bind(&endpoint_ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(db_err)?
            .iter()
            .map(|r| endpoint_from_row(r).map(|e| (e.id.clone(), e)))
            .collect::<StoreResult<_>>()?;
        tx.commit().await.map_err(db_err)?;
        let mut out = Vec::with_capacity(rows.len());
        for row in &rows {
            let endpoint_id: String = row.try_get("claimed_endpoint").map_err(db_err)?;
            let Some(endpoint) = endpoints.get(&endpoint_id) else {
                return Err(cobro_store::StoreError::Corrupt(format!(
                    "delivery of a missing endpoint {endpoint_id}"
                )));
            };
            out.push(ClaimedDelivery {
                delivery_id: row.try_get("delivery_id").map_err(db_err)?,
                attempt: u32::try_from(row.try_get::<i32, _>("attempts").map_err(db_err)?)
                    .unwrap_or(u32::MAX),
                event: event_from_row(row)?,
                endpoint: endpoint.clone(),
            });
        }
        Ok(out)
    }

    async fn record_deliveries(&self, results: &[DeliveryResult]) -> StoreResult<Vec<bool>> {
        if results.is_empty() {
            return Ok(Vec::new());
        }
        // One statement for the whole batch: log every attempt, apply the verdicts whose lease
        // is still held, disable the endpoints that answered 410.
        let n = results.len();
        let (mut ids, mut owners, mut attempts, mut ats) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut codes, mut latencies, mut errors, mut statuses) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        let (mut nexts, mut finisheds, mut disables) = (
            Vec::with_capacity(n),
            Vec::with_capacity(n),
            Vec::with_capacity(n),
        );
        for r in results {
            let a = &r.attempt;
            let at = a.attempted_at.unix_millis();
            let (status, next, finished) = match r.verdict {
                DeliveryVerdict::Delivered => ("delivered", None, Some(at)),
                DeliveryVerdict::Retry { next_attempt_at } => {
                    ("pending", Some(next_attempt_at.unix_millis()), None)
                }
                DeliveryVerdict::Failed | DeliveryVerdict::DisableEndpoint => {
                    ("failed", None, Some(at))
                }
            };
            ids.push(a.delivery_id);
            owners.push(r.owner.clone());
            attempts.push(i32::try_from(a.attempt).unwrap_or(i32::MAX));
            ats.push(at);
            codes.push(a.status_code.map(i32::from));
            latencies.push(i64::try_from(a.latency_ms).unwrap_or(i64::MAX));
            errors.push(a.error.clone());
            statuses.push(status);
            nexts.push(next);
            finisheds.push(finished);
            disables.push(r.verdict == DeliveryVerdict::DisableEndpoint);
        }
        let mut tx = self.begin_write().await?;
        let applied: std::collections::HashSet<i64> = sqlx::query(
            "WITH input AS (
                 SELECT * FROM UNNEST($1::bigint[], $2::text[], $3::int[], $4::bigint[], $5::int[],
                                      $6::bigint[], $7::text[], $8::text[], $9::bigint[],
                                      $10::bigint[], $11::bool[])
                   AS t(delivery_id, owner, attempt, attempted_at, status_code, latency_ms, error,
                        status, next_at, finished_at, disable)),
             logged AS (
                 INSERT INTO webhook_attempts (delivery_id, event_seq, endpoint_id, attempt,
                                               attempted_at, status_code, latency_ms, error)
                 SELECT d.id, d.event_seq, d.endpoint_id, i.attempt, i.attempted_at, i.status_code,
                        i.latency_ms, i.error
                 FROM input i JOIN webhook_deliveries d ON d.id = i.delivery_id),
             moved AS (
                 UPDATE webhook_deliveries d
                 SET status = i.status, next_attempt_at = COALESCE(i.next_at, d.next_attempt_at),
                     lease_owner = NULL, last_status_code = i.status_code, last_error = i.error,
                     finished_at = i.finished_at
                 FROM input i
                 WHERE d.id = i.delivery_id AND d.lease_owner = i.owner AND d.status = 'pending'
                   AND d.attempts = i.attempt
                 RETURNING d.id, d.endpoint_id, i.disable, i.attempted_at),
             gone AS (
                 UPDATE webhook_endpoints w
                 SET enabled = FALSE, updated_at = m.attempted_at,
                     disabled_reason = 'the endpoint answered 410 Gone'
                 FROM moved m WHERE w.id = m.endpoint_id AND m.disable AND w.enabled)
             SELECT id FROM moved",
        )
        .bind(&ids)
        .bind(&owners)
        .bind(&attempts)
        .bind(&ats)
        .bind(&codes)
        .bind(&latencies)
        .bind(&errors)
        .bind(&statuses)
        .bind(&nexts)
        .bind(&finisheds)
        .bind(&disables)
        .fetch_all(&mut *tx)
        .await
        .map_err(db_err)?
        .iter()
        .map(|r| r.try_get::<i64, _>(0))
        .collect::<Result<_, _>>()
        .map_err(db_err)?;
        tx.commit().await.map_err(db_err)?;
        Ok(ids.iter().map(|id| applied.contains(id)).collect())
    }

    async fn list_events(
        &self,
        org_id: &str,
        env: Environment,
        filter: &EventFilter,
        limit: u32,
        offset: u64,
    ) -> StoreResult<(Vec<EventRecord>, u64)> {
        let cond = "e.org_id = $1 AND e.environment = $2 AND ($3 IS NULL OR e.type = $4)
                    AND ($5 IS NULL OR e.purchase_id = $6)";
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
             ORDER BY e.seq DESC LIMIT $7 OFFSET $8"
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
             WHERE e.id = $1 AND e.org_id = $2 AND e.environment = $3"
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
             JOIN outbox_events e ON e.seq = d.event_seq WHERE e.id = $1 ORDER BY d.id"
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
             WHERE e.id = $1 ORDER BY a.id",
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
             SELECT e.seq, w.id, 'pending', 0, $1, $2
             FROM outbox_events e
             JOIN webhook_endpoints w ON w.org_id = e.org_id AND w.environment = e.environment
             WHERE e.id = $3 AND w.enabled AND w.deleted_at IS NULL
               AND (($4 IS NULL AND {WANTS}) OR w.id = $5)
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
        let out = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries d
             JOIN outbox_events e ON e.seq = d.event_seq
             WHERE d.id = ANY($1) ORDER BY d.id"
        )))
        .bind(&ids)
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
