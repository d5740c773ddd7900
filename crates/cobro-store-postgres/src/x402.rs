//! The x402 payment store (`cobro_x402::PaymentStore`) on PostgreSQL.

use async_trait::async_trait;
use cobro_x402::{PaymentRecord, PaymentState, PaymentStore, ReserveOutcome, StoreError};
use sqlx::{Row, postgres::PgRow};

use crate::PgStore;

const COLUMNS: &str =
    "payer, nonce, state, tx_hash, network, asset, pay_to, amount, error, created_at, updated_at";

fn err(e: sqlx::Error) -> StoreError {
    StoreError(e.to_string())
}

fn secs(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn record(r: &PgRow) -> Result<PaymentRecord, StoreError> {
    let state: String = r.try_get("state").map_err(err)?;
    Ok(PaymentRecord {
        payer: r.try_get("payer").map_err(err)?,
        nonce: r.try_get("nonce").map_err(err)?,
        state: PaymentState::parse(&state)
            .ok_or_else(|| StoreError(format!("unknown payment state {state:?}")))?,
        tx_hash: r.try_get("tx_hash").map_err(err)?,
        network: r.try_get("network").map_err(err)?,
        asset: r.try_get("asset").map_err(err)?,
        pay_to: r.try_get("pay_to").map_err(err)?,
        amount: r.try_get("amount").map_err(err)?,
        error: r.try_get("error").map_err(err)?,
        created_at: secs(r.try_get("created_at").map_err(err)?),
        updated_at: secs(r.try_get("updated_at").map_err(err)?),
    })
}

/// x402 payments in the cobro PostgreSQL database.
#[derive(Debug, Clone)]
pub struct PgPayments(pub PgStore);

impl PgPayments {
    /// Moves an unfinished payment to `state`; a payment already finished is left as it is.
    async fn transition(
        &self,
        payer: &str,
        nonce: &str,
        state: PaymentState,
        tx_hash: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), StoreError> {
        let done = sqlx::query(
            "UPDATE x402_payments SET state = $1, tx_hash = COALESCE($2, tx_hash),
                    error = COALESCE($3, error), updated_at = $4
             WHERE payer = $5 AND nonce = $6 AND state IN ('reserved', 'submitted')",
        )
        .bind(state.as_str())
        .bind(tx_hash)
        .bind(error)
        .bind(i64::try_from(cobro_x402::now_unix()).unwrap_or(i64::MAX))
        .bind(payer)
        .bind(nonce)
        .execute(&self.0.pool)
        .await
        .map_err(err)?
        .rows_affected();
        if done == 0 && self.get(payer, nonce).await?.is_none() {
            return Err(StoreError(format!("no payment {payer}/{nonce}")));
        }
        Ok(())
    }
}

#[async_trait]
impl PaymentStore for PgPayments {
    async fn get(&self, payer: &str, nonce: &str) -> Result<Option<PaymentRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM x402_payments WHERE payer = $1 AND nonce = $2"
        )))
        .bind(payer)
        .bind(nonce)
        .fetch_optional(&self.0.pool)
        .await
        .map_err(err)?
        .as_ref()
        .map(record)
        .transpose()
    }

    async fn reserve(&self, r: PaymentRecord) -> Result<ReserveOutcome, StoreError> {
        let inserted = sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO x402_payments ({COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
             ON CONFLICT (payer, nonce) DO NOTHING"
        )))
        .bind(&r.payer)
        .bind(&r.nonce)
        .bind(r.state.as_str())
        .bind(&r.tx_hash)
        .bind(&r.network)
        .bind(&r.asset)
        .bind(&r.pay_to)
        .bind(&r.amount)
        .bind(&r.error)
        .bind(i64::try_from(r.created_at).unwrap_or(i64::MAX))
        .bind(i64::try_from(r.updated_at).unwrap_or(i64::MAX))
        .execute(&self.0.pool)
        .await
        .map_err(err)?
        .rows_affected();
        if inserted == 1 {
            return Ok(ReserveOutcome::Reserved);
        }
        match self.get(&r.payer, &r.nonce).await? {
            Some(existing) => Ok(ReserveOutcome::AlreadyExists(Box::new(existing))),
            None => Err(StoreError(
                "reservation conflicted with a vanished payment".into(),
            )),
        }
    }

    async fn mark_submitted(
        &self,
        payer: &str,
        nonce: &str,
        tx_hash: &str,
    ) -> Result<(), StoreError> {
        self.transition(payer, nonce, PaymentState::Submitted, Some(tx_hash), None)
            .await
    }

    async fn mark_settled(
        &self,
        payer: &str,
        nonce: &str,
        tx_hash: &str,
    ) -> Result<(), StoreError> {
        self.transition(payer, nonce, PaymentState::Settled, Some(tx_hash), None)
            .await
    }

    async fn mark_failed(&self, payer: &str, nonce: &str, reason: &str) -> Result<(), StoreError> {
        self.transition(payer, nonce, PaymentState::Failed, None, Some(reason))
            .await
    }

    async fn list_unfinished(&self) -> Result<Vec<PaymentRecord>, StoreError> {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {COLUMNS} FROM x402_payments WHERE state IN ('reserved', 'submitted')
             ORDER BY created_at"
        )))
        .fetch_all(&self.0.pool)
        .await
        .map_err(err)?
        .iter()
        .map(record)
        .collect()
    }
}
