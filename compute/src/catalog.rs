//! The connected database as a DataFusion catalog: its schemas and tables,
//! loaded from storage when the session opens and reloaded only when it
//! turns out stale. Every scan and write names the table definition it was
//! planned with, and storage refuses one that is no longer current, so a
//! stale catalog costs a reload and a re-run, never a wrong answer.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use async_trait::async_trait;
use datafusion::catalog::{CatalogProvider, SchemaProvider};
use datafusion::datasource::TableProvider;
use datafusion::error::Result as DfResult;
use ebb_proto::storage::TableDef;

use crate::error::Result;
use crate::storage_session::StorageSession;
use crate::table::StorageTable;

/// The schema every database has.
pub const PUBLIC: &str = "public";

type Schemas = BTreeMap<String, BTreeMap<String, Arc<StorageTable>>>;

/// The tables of the connected database, by schema.
pub struct DatabaseCatalog {
    session: Arc<StorageSession>,
    schemas: Arc<RwLock<Schemas>>,
    /// A table whose hidden `_rowid` column is visible (while planning DML).
    rowid_target: Arc<Mutex<Option<(String, String)>>>,
    /// Schemas served by the compute itself (`pg_catalog`).
    system: RwLock<BTreeMap<String, Arc<dyn SchemaProvider>>>,
    /// Bumped by every reload that changed a table (see [`DatabaseCatalog::generation`]).
    generation: AtomicU64,
    /// Ids of the tables a FOREIGN KEY references.
    referenced: RwLock<std::collections::HashSet<u32>>,
}

/// Hides the `_rowid` column again when dropped.
pub struct RowidExposure {
    target: Arc<Mutex<Option<(String, String)>>>,
}

impl Drop for RowidExposure {
    fn drop(&mut self) {
        *self.target.lock().unwrap_or_else(|p| p.into_inner()) = None;
    }
}

impl fmt::Debug for DatabaseCatalog {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseCatalog({})", self.session.database)
    }
}

impl DatabaseCatalog {
    /// An empty catalog; call [`refresh`](Self::refresh) before use.
    pub fn new(session: Arc<StorageSession>) -> Self {
        Self {
            session,
            schemas: Arc::default(),
            rowid_target: Arc::default(),
            system: RwLock::default(),
            generation: AtomicU64::new(0),
            referenced: RwLock::default(),
        }
    }

    /// Reloads the table list from storage; true if any table was created,
    /// dropped or altered since the last load.
    pub async fn refresh(&self) -> Result<bool> {
        let defs = self.session.client.list_tables(&self.session.database).await?;
        let mut current = self.schemas.write().unwrap_or_else(|p| p.into_inner());
        let unchanged = defs.len() == current.values().map(BTreeMap::len).sum::<usize>()
            && defs.iter().all(|d| {
                current
                    .get(&d.schema)
                    .and_then(|t| t.get(&d.name))
                    .is_some_and(|t| t.def().id == d.id && t.def().version == d.version)
            });
        if unchanged && current.contains_key(PUBLIC) {
            return Ok(false);
        }
        let mut schemas: Schemas = BTreeMap::new();
        schemas.entry(PUBLIC.to_string()).or_default();
        *self.referenced.write().unwrap_or_else(|p| p.into_inner()) = defs.iter().flat_map(|d| d.foreign_keys.iter().map(|f| f.ref_table)).collect();
        for def in defs {
            let t = Arc::new(StorageTable::new(def, self.session.clone(), false));
            schemas.entry(t.def().schema.clone()).or_default().insert(t.def().name.clone(), t);
        }
        *current = schemas;
        self.generation.fetch_add(1, Ordering::SeqCst);
        Ok(true)
    }

    /// How many reloads changed the catalog; a plan made at one generation
    /// is current as long as the generation is unchanged.
    pub fn generation(&self) -> u64 {
        self.generation.load(Ordering::SeqCst)
    }

    /// Makes the hidden `_rowid` column of `def` visible until the returned
    /// guard is dropped, so DML can address rows of tables without a key.
    pub fn expose_rowid(&self, def: &TableDef) -> RowidExposure {
        *self.rowid_target.lock().unwrap_or_else(|p| p.into_inner()) = Some((def.schema.clone(), def.name.clone()));
        RowidExposure { target: self.rowid_target.clone() }
    }

    /// Every table definition, by schema and name.
    pub fn table_defs(&self) -> Vec<TableDef> {
        let schemas = self.schemas.read().unwrap_or_else(|p| p.into_inner());
        schemas.values().flat_map(|t| t.values().map(|t| t.def().clone())).collect()
    }

    /// Whether a FOREIGN KEY of some table references table `id`.
    pub fn is_referenced(&self, id: u32) -> bool {
        self.referenced.read().unwrap_or_else(|p| p.into_inner()).contains(&id)
    }

    /// A table by schema (default `public`) and name.
    pub fn table(&self, schema: Option<&str>, name: &str) -> Option<Arc<StorageTable>> {
        let schemas = self.schemas.read().unwrap_or_else(|p| p.into_inner());
        schemas.get(schema.unwrap_or(PUBLIC))?.get(name).cloned()
    }
}

impl CatalogProvider for DatabaseCatalog {
    fn schema_names(&self) -> Vec<String> {
        let mut names: Vec<String> = self.schemas.read().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        names.extend(self.system.read().unwrap_or_else(|p| p.into_inner()).keys().cloned());
        names
    }

    /// Only system schemas (`pg_catalog`) are registered this way; user
    /// schemas come from storage.
    fn register_schema(&self, name: &str, schema: Arc<dyn SchemaProvider>) -> DfResult<Option<Arc<dyn SchemaProvider>>> {
        Ok(self.system.write().unwrap_or_else(|p| p.into_inner()).insert(name.to_string(), schema))
    }

    fn schema(&self, name: &str) -> Option<Arc<dyn SchemaProvider>> {
        if let Some(s) = self.system.read().unwrap_or_else(|p| p.into_inner()).get(name) {
            return Some(s.clone());
        }
        let exists = self.schemas.read().unwrap_or_else(|p| p.into_inner()).contains_key(name);
        exists.then(|| {
            Arc::new(DatabaseSchema {
                name: name.to_string(),
                schemas: self.schemas.clone(),
                rowid_target: self.rowid_target.clone(),
                session: self.session.clone(),
            }) as _
        })
    }
}

/// One schema of the database.
struct DatabaseSchema {
    name: String,
    schemas: Arc<RwLock<Schemas>>,
    rowid_target: Arc<Mutex<Option<(String, String)>>>,
    session: Arc<StorageSession>,
}

impl fmt::Debug for DatabaseSchema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "DatabaseSchema({})", self.name)
    }
}

impl DatabaseSchema {
    fn with<T>(&self, f: impl FnOnce(&BTreeMap<String, Arc<StorageTable>>) -> T) -> Option<T> {
        let schemas = self.schemas.read().unwrap_or_else(|p| p.into_inner());
        schemas.get(&self.name).map(f)
    }
}

#[async_trait]
impl SchemaProvider for DatabaseSchema {
    fn table_names(&self) -> Vec<String> {
        self.with(|t| t.keys().cloned().collect()).unwrap_or_default()
    }

    /// The table; the DML target of [`DatabaseCatalog::expose_rowid`] with
    /// its `_rowid` column visible.
    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let Some(t) = self.with(|t| t.get(name).cloned()).flatten() else { return Ok(None) };
        let exposed = self.rowid_target.lock().unwrap_or_else(|p| p.into_inner()).as_ref()
            == Some(&(self.name.clone(), name.to_string()));
        if exposed && t.def().primary_key.is_empty() {
            return Ok(Some(Arc::new(StorageTable::new(t.def().clone(), self.session.clone(), true))));
        }
        Ok(Some(t as Arc<dyn TableProvider>))
    }

    fn table_exist(&self, name: &str) -> bool {
        self.with(|t| t.contains_key(name)).unwrap_or(false)
    }
}
