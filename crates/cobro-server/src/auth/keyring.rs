//! The in-memory snapshot of API keys.
//!
//! Every request's `x-api-key` is looked up here, not in the database. The snapshot is
//! replaced whole when the store's keys version moves (checked every
//! `auth.refresh_interval_ms`, one second by default), which is how a key revoked by any
//! process stops working everywhere within seconds. A key created a moment ago by another
//! process is not in the snapshot yet: a miss falls through to one indexed database read, and
//! misses for keys that do not exist are remembered for a second so a flood of made-up keys
//! costs one read per key per second, not one per request.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, RwLock},
    time::{Duration, Instant},
};

use cobro_store::{ApiKeyRecord, Store, StoreResult};

/// How long an unknown key is remembered as unknown.
const NEGATIVE_TTL: Duration = Duration::from_secs(1);
/// Bound on remembered unknown keys; the memory is cleared when it is reached.
const NEGATIVE_CAPACITY: usize = 10_000;

#[derive(Debug, Default)]
struct Snapshot {
    by_public: HashMap<String, Arc<ApiKeyRecord>>,
    by_secret_hash: HashMap<String, Arc<ApiKeyRecord>>,
}

impl Snapshot {
    fn insert(&mut self, key: ApiKeyRecord) {
        let key = Arc::new(key);
        self.by_secret_hash
            .insert(key.secret_hash.clone(), key.clone());
        self.by_public.insert(key.public_key.clone(), key);
    }
}

/// API keys by public key and by secret hash.
#[derive(Debug, Default)]
pub struct KeyRing {
    snapshot: RwLock<Arc<Snapshot>>,
    unknown: Mutex<HashMap<String, Instant>>,
}

impl KeyRing {
    /// Replaces the snapshot with `keys`.
    pub fn replace(&self, keys: Vec<ApiKeyRecord>) {
        let mut snap = Snapshot::default();
        for k in keys {
            snap.insert(k);
        }
        if let Ok(mut guard) = self.snapshot.write() {
            *guard = Arc::new(snap);
        }
        if let Ok(mut unknown) = self.unknown.lock() {
            unknown.clear();
        }
    }

    /// Number of keys in the snapshot.
    pub fn len(&self) -> usize {
        self.current().by_public.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn current(&self) -> Arc<Snapshot> {
        self.snapshot.read().map(|g| g.clone()).unwrap_or_default()
    }

    /// The key with this public key, from the snapshot or (on a miss) from the store.
    pub async fn by_public_key(
        &self,
        store: &dyn Store,
        public_key: &str,
    ) -> StoreResult<Option<Arc<ApiKeyRecord>>> {
        if let Some(k) = self.current().by_public.get(public_key) {
            return Ok(Some(k.clone()));
        }
        if let Ok(unknown) = self.unknown.lock()
            && unknown
                .get(public_key)
                .is_some_and(|t| t.elapsed() < NEGATIVE_TTL)
        {
            return Ok(None);
        }
        match store.get_api_key(public_key).await? {
            Some(record) => {
                let record = Arc::new(record);
                if let Ok(mut guard) = self.snapshot.write() {
                    // A refresh may have installed a newer copy (say, revoked) while this read
                    // was in flight: never overwrite an entry the snapshot already has.
                    if !guard.by_public.contains_key(&record.public_key) {
                        let mut snap = Snapshot {
                            by_public: guard.by_public.clone(),
                            by_secret_hash: guard.by_secret_hash.clone(),
                        };
                        snap.by_secret_hash
                            .insert(record.secret_hash.clone(), record.clone());
                        snap.by_public
                            .insert(record.public_key.clone(), record.clone());
                        *guard = Arc::new(snap);
                    }
                }
                Ok(Some(record))
            }
            None => {
                if let Ok(mut unknown) = self.unknown.lock() {
                    if unknown.len() >= NEGATIVE_CAPACITY {
                        unknown.clear();
                    }
                    unknown.insert(public_key.to_string(), Instant::now());
                }
                Ok(None)
            }
        }
    }

    /// The key whose secret hashes to `secret_hash`, from the snapshot only.
    pub fn by_secret_hash(&self, secret_hash: &str) -> Option<Arc<ApiKeyRecord>> {
        self.current().by_secret_hash.get(secret_hash).cloned()
    }
}
