//! The store conformance suite on SQLite, plus the checks only SQL can make.

use std::sync::Arc;

use cobro_store::{Store, conformance_suite};
use cobro_store_sqlite::{SqliteOptions, SqliteStore};

async fn open() -> (SqliteStore, tempfile::TempDir) {
    let dir = tempfile::tempdir().expect("temp dir");
    let url = format!("sqlite://{}", dir.path().join("cobro.db").display());
    let store = SqliteStore::connect(&url, &SqliteOptions::default())
        .await
        .expect("open");
    store.migrate().await.expect("migrate");
    (store, dir)
}

async fn setup() -> Option<(Arc<dyn Store>, impl Future<Output = ()> + Send)> {
    let (store, dir) = open().await;
    let closer = store.clone();
    let teardown = async move {
        closer.close().await;
        drop(dir);
    };
    Some((Arc::new(store) as Arc<dyn Store>, teardown))
}

conformance_suite!(setup);

#[tokio::test]
async fn migrations_are_idempotent() {
    let (store, _dir) = open().await;
    store.migrate().await.expect("second migrate");
    store.ping().await.expect("ping");
}
