//! Opening the store named by a database URL: the backend is chosen by the URL scheme.

use std::sync::Arc;

use cobro_store::{Store, StoreError};
use cobro_store_postgres::{PgOptions, PgStore};
use cobro_store_sqlite::{SqliteOptions, SqliteStore};

use crate::config::{DatabaseConfig, redact_url};

/// Opens the database and applies pending migrations.
pub async fn open(db: &DatabaseConfig) -> Result<Arc<dyn Store>, StoreError> {
    let url = db.url.as_str();
    if url.starts_with("sqlite:") {
        let store = SqliteStore::connect(
            url,
            &SqliteOptions {
                max_connections: db.max_connections,
                ..Default::default()
            },
        )
        .await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let store = PgStore::connect(
            url,
            &PgOptions {
                max_connections: db.max_connections,
                ..Default::default()
            },
        )
        .await?;
        store.migrate().await?;
        Ok(Arc::new(store))
    } else {
        Err(StoreError::Database(format!(
            "unsupported database URL {:?}: use sqlite://PATH or postgres://…",
            redact_url(url)
        )))
    }
}
