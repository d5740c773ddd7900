//! The store conformance suite on PostgreSQL. Runs when `COBRO_TEST_DATABASE_URL` names a
//! server; each test creates its own database and drops it.

use std::sync::Arc;

use cobro_store::{Store, conformance_suite};
use cobro_store_postgres::{PgOptions, PgStore, test_db::TestDatabase};

async fn setup() -> Option<(Arc<dyn Store>, impl Future<Output = ()> + Send)> {
    let db = TestDatabase::create().await?;
    let store = PgStore::connect(&db.url, &PgOptions::default())
        .await
        .expect("connect");
    store.migrate().await.expect("migrate");
    let closer = store.clone();
    let teardown = async move {
        closer.close().await;
        db.drop_database().await;
    };
    Some((Arc::new(store) as Arc<dyn Store>, teardown))
}

conformance_suite!(setup);
