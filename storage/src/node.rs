//! A storage node: the databases it owns, the cluster registry, and the
//! object store they all live in.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::path::Path;

use crate::durability::objects::Objects;
use crate::durability::registry::{self, DatabaseEntry};
use crate::engine::{Database, EngineConfig};
use crate::error::{Result, StorageError};
use crate::metrics::StorageMetrics;

/// Name of the database every cluster starts with.
pub const DEFAULT_DATABASE: &str = "postgres";

/// A storage node.
pub struct StorageNode {
    objects: Objects,
    cache_dir: PathBuf,
    cfg: Arc<EngineConfig>,
    metrics: StorageMetrics,
    open: tokio::sync::Mutex<HashMap<String, Arc<Database>>>,
}

impl StorageNode {
    /// Starts a node on `store` (under `prefix`), keeping local copies in
    /// `cache_dir`. Creates `postgres` on a fresh cluster and opens (takes
    /// ownership of) every registered database.
    pub async fn start(
        store: Arc<dyn ObjectStore>,
        prefix: Path,
        cache_dir: PathBuf,
        cfg: EngineConfig,
        metrics: StorageMetrics,
    ) -> Result<Arc<Self>> {
        std::fs::create_dir_all(&cache_dir)?;
        let node = Arc::new(Self {
            objects: Objects::new(store, prefix, metrics.clone()),
            cache_dir,
            cfg: Arc::new(cfg),
            metrics,
            open: tokio::sync::Mutex::new(HashMap::new()),
        });
        let entries = registry::list(&node.objects).await?;
        if entries.is_empty() {
            node.create_database(DEFAULT_DATABASE, true).await?;
        }
        for e in registry::list(&node.objects).await? {
            node.database(&e.name).await?;
        }
        Ok(node)
    }

    /// The engine settings.
    pub fn config(&self) -> &EngineConfig {
        &self.cfg
    }

    /// The metrics this node updates.
    pub fn metrics(&self) -> &StorageMetrics {
        &self.metrics
    }

    /// An open database by name, opening it if it is registered but not open.
    pub async fn database(&self, name: &str) -> Result<Arc<Database>> {
        let mut open = self.open.lock().await;
        if let Some(db) = open.get(name) {
            return Ok(db.clone());
        }
        let entry = registry::lookup(&self.objects, name).await?.ok_or_else(|| StorageError::UnknownDatabase(name.into()))?;
        let db = Database::open(
            &entry.name,
            &entry.id,
            &self.cache_dir,
            self.objects.scoped(&format!("databases/{}", entry.id)),
            self.cfg.clone(),
            self.metrics.clone(),
        )
        .await?;
        open.insert(name.to_string(), db.clone());
        Ok(db)
    }

    /// Creates a database; `Ok((entry, false))` if it existed and `if_not_exists`.
    pub async fn create_database(&self, name: &str, if_not_exists: bool) -> Result<(DatabaseEntry, bool)> {
        crate::catalog::check_identifier("database", name)?;
        let entry = DatabaseEntry {
            name: name.to_string(),
            id: format!("{:016x}{:08x}", crate::durability::checkpoint::now_ms(), rand::random::<u32>()),
        };
        if registry::register(&self.objects, &entry).await? {
            tracing::info!(database = name, id = %entry.id, "created database");
            self.database(name).await?;
            return Ok((entry, true));
        }
        if if_not_exists {
            let existing = registry::lookup(&self.objects, name).await?.ok_or_else(|| StorageError::UnknownDatabase(name.into()))?;
            return Ok((existing, false));
        }
        Err(StorageError::DatabaseExists(name.into()))
    }

    /// Drops a database and deletes its data; `Ok(false)` if absent and `if_exists`.
    pub async fn drop_database(&self, name: &str, if_exists: bool) -> Result<bool> {
        let Some(entry) = registry::lookup(&self.objects, name).await? else {
            return if if_exists { Ok(false) } else { Err(StorageError::UnknownDatabase(name.into())) };
        };
        registry::unregister(&self.objects, name).await?;
        if let Some(db) = self.open.lock().await.remove(name) {
            db.close().await;
        }
        self.objects.delete_all(&format!("databases/{}", entry.id)).await?;
        let dir = crate::engine::database::db_dir(&self.cache_dir, &entry.id);
        if dir.exists() {
            std::fs::remove_dir_all(&dir)?;
        }
        tracing::info!(database = name, "dropped database");
        Ok(true)
    }

    /// Every registered database.
    pub async fn list_databases(&self) -> Result<Vec<DatabaseEntry>> {
        registry::list(&self.objects).await
    }

    /// The cluster's roles (`cluster/roles/` in the object store).
    pub fn roles(&self) -> &Objects {
        &self.objects
    }

    /// Closes every open database (clean shutdown).
    pub async fn shutdown(&self) {
        let dbs: Vec<_> = self.open.lock().await.drain().map(|(_, d)| d).collect();
        for db in dbs {
            db.close().await;
        }
    }
}
