//! `pg_catalog` with the database's own tables in it.
//!
//! `datafusion-pg-catalog` describes tables from their Arrow schemas alone:
//! no type modifiers, defaults, keys or stable OIDs, and `pg_index.indkey`
//! as text, which drivers cannot `unnest`. ebb knows more (storage keeps
//! PostgreSQL's column types, defaults and primary keys), so the crate is
//! shown only the system schemas, and the relation tables of `pg_catalog`
//! are served here as the crate's rows plus rows for the database's tables
//! built from their definitions (see [`user_relations`](super::user_relations)).
//! `pg_settings` lists the session's settings; `pg_indexes` (which the
//! crate lacks) the indexes of the database's tables.

use std::sync::Arc;

use arrow::array::{Array, ArrayRef, AsArray, new_null_array};
use arrow::compute::cast;
use arrow::datatypes::{DataType, Field, Int32Type, Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use async_trait::async_trait;
use datafusion::catalog::{CatalogProviderList, SchemaProvider, Session};
use datafusion::datasource::memory::MemorySourceConfig;
use datafusion::datasource::{TableProvider, TableType};
use datafusion::error::{DataFusionError, Result as DfResult};
use datafusion::logical_expr::Expr;
use datafusion::physical_plan::{ExecutionPlan, collect};
use datafusion_pg_catalog::pg_catalog::catalog_info::CatalogInfo;
use ebb_proto::storage::TableDef;

use super::rows::{self, Row};
use super::user_relations as user;
use crate::catalog::DatabaseCatalog;
use crate::session::settings::Settings;

/// The schemas `datafusion-pg-catalog` describes itself.
const SYSTEM_SCHEMAS: [&str; 2] = ["pg_catalog", "information_schema"];

/// The catalog list as `datafusion-pg-catalog` sees it: system schemas only.
#[derive(Debug, Clone)]
pub struct SystemSchemasOnly(pub Arc<dyn CatalogProviderList>);

impl SystemSchemasOnly {
    fn system(schema: &str) -> bool {
        SYSTEM_SCHEMAS.contains(&schema)
    }
}

#[async_trait]
impl CatalogInfo for SystemSchemasOnly {
    async fn catalog_names(&self) -> DfResult<Vec<String>> {
        CatalogInfo::catalog_names(&self.0).await
    }

    async fn schema_names(&self, catalog: &str) -> DfResult<Option<Vec<String>>> {
        Ok(CatalogInfo::schema_names(&self.0, catalog).await?.map(|names| names.into_iter().filter(|s| Self::system(s)).collect()))
    }

    async fn table_names(&self, catalog: &str, schema: &str) -> DfResult<Option<Vec<String>>> {
        if !Self::system(schema) {
            return Ok(None);
        }
        CatalogInfo::table_names(&self.0, catalog, schema).await
    }

    async fn table_schema(&self, catalog: &str, schema: &str, table: &str) -> DfResult<Option<SchemaRef>> {
        if !Self::system(schema) {
            return Ok(None);
        }
        CatalogInfo::table_schema(&self.0, catalog, schema, table).await
    }

    async fn table_type(&self, catalog: &str, schema: &str, table: &str) -> DfResult<Option<TableType>> {
        if !Self::system(schema) {
            return Ok(None);
        }
        CatalogInfo::table_type(&self.0, catalog, schema, table).await
    }
}

/// A `pg_catalog` table that lists the database's own relations too (or,
/// for `pg_settings`, the session's settings only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Relations {
    Namespace,
    Class,
    Attribute,
    Attrdef,
    Index,
    Constraint,
    Tables,
    Sequence,
    /// `pg_depend`: sequences owned by columns.
    Depend,
    /// `pg_settings`, whose rows are all the session's.
    Settings,
}

impl Relations {
    fn of(table: &str) -> Option<Self> {
        Some(match table {
            "pg_namespace" => Self::Namespace,
            "pg_class" => Self::Class,
            "pg_attribute" => Self::Attribute,
            "pg_attrdef" => Self::Attrdef,
            "pg_index" => Self::Index,
            "pg_constraint" => Self::Constraint,
            "pg_tables" => Self::Tables,
            "pg_sequence" => Self::Sequence,
            "pg_depend" => Self::Depend,
            "pg_settings" => Self::Settings,
            _ => return None,
        })
    }

    /// The rows of the database's tables; `pg_class_oid`: the OID
    /// `'pg_catalog.pg_class'::regclass` names (see `pg_class_oid`).
    fn rows(self, defs: &[TableDef], settings: &Settings, pg_class_oid: i32) -> Vec<Row> {
        match self {
            Self::Depend => user::dependencies(defs, pg_class_oid),
            Self::Settings => user::settings(settings),
            Self::Namespace => user::namespaces(defs),
            Self::Class => user::classes(defs),
            Self::Attribute => user::attributes(defs),
            Self::Attrdef => user::defaults(defs),
            Self::Index => user::indexes(defs),
            Self::Constraint => user::constraints(defs),
            Self::Tables => user::tables(defs),
            Self::Sequence => user::sequences(defs),
        }
    }

    /// The crate's schema with PostgreSQL's types where tools rely on them
    /// (vectors as lists) and the columns it lacks.
    fn schema(self, crate_schema: &Schema) -> SchemaRef {
        let list = |item: DataType| DataType::new_list(item, true);
        let retyped: &[(&str, DataType)] = &[
            ("indkey", list(DataType::Int16)),
            ("indoption", list(DataType::Int16)),
            ("indcollation", list(DataType::Int32)),
            ("indclass", list(DataType::Int32)),
            ("conkey", list(DataType::Int16)),
            ("confkey", list(DataType::Int16)),
            ("nspacl", list(DataType::Utf8)),
        ];
        let mut fields: Vec<Field> = crate_schema
            .fields()
            .iter()
            .map(|f| match retyped.iter().find(|(n, _)| n == f.name()) {
                Some((_, t)) => Field::new(f.name(), t.clone(), true),
                None => f.as_ref().clone(),
            })
            .collect();
        let added: Vec<Field> = match self {
            Self::Class => vec![Field::new("relacl", list(DataType::Utf8), true), Field::new("reloptions", list(DataType::Utf8), true)],
            Self::Tables => vec![Field::new("hasindexes", DataType::Boolean, true)],
            Self::Settings => vec![Field::new("boot_val", DataType::Utf8, true)],
            _ => vec![],
        };
        for f in added {
            if crate_schema.field_with_name(f.name()).is_err() {
                fields.push(f);
            }
        }
        Arc::new(Schema::new(fields))
    }
}

/// `pg_catalog` as `datafusion-pg-catalog` serves it, with the relation
/// tables replaced by [`WithUserRelations`] and `pg_type` by one whose
/// `regproc` columns are OIDs (see [`regproc`](super::regproc)).
#[derive(Debug)]
pub struct PgCatalogOverlay {
    inner: Arc<dyn SchemaProvider>,
    catalog: Arc<DatabaseCatalog>,
    settings: Settings,
    types: Option<Arc<dyn TableProvider>>,
}

impl PgCatalogOverlay {
    /// `inner` (the crate's provider over [`SystemSchemasOnly`]) with
    /// `catalog`'s tables and the session's `settings` added, and `types`
    /// as `pg_type` (the crate's when `None`).
    pub fn new(inner: Arc<dyn SchemaProvider>, catalog: Arc<DatabaseCatalog>, settings: Settings, types: Option<Arc<dyn TableProvider>>) -> Self {
        Self { inner, catalog, settings, types }
    }
}

/// `pg_indexes`, which the crate lacks: one row per index of the
/// database's tables (primary keys included), with its definition.
const PG_INDEXES: &str = "pg_indexes";

#[async_trait]
impl SchemaProvider for PgCatalogOverlay {
    fn table_names(&self) -> Vec<String> {
        let mut names = self.inner.table_names();
        names.push(PG_INDEXES.to_string());
        names
    }

    async fn table(&self, name: &str) -> DfResult<Option<Arc<dyn TableProvider>>> {
        let name = name.to_ascii_lowercase();
        if name == "pg_type"
            && let Some(types) = &self.types
        {
            return Ok(Some(types.clone()));
        }
        if name == PG_INDEXES {
            return Ok(Some(Arc::new(IndexList { catalog: self.catalog.clone() })));
        }
        let Some(inner) = self.inner.table(&name).await? else { return Ok(None) };
        Ok(Some(match Relations::of(&name) {
            Some(relations) => {
                let schema = relations.schema(&inner.schema());
                let classes = if relations == Relations::Depend { self.inner.table("pg_class").await? } else { None };
                Arc::new(WithUserRelations { relations, inner, schema, catalog: self.catalog.clone(), settings: self.settings.clone(), classes })
            }
            None => inner,
        }))
    }

    fn table_exist(&self, name: &str) -> bool {
        name.eq_ignore_ascii_case(PG_INDEXES) || self.inner.table_exist(name)
    }
}

/// `pg_indexes` over the session's catalog.
#[derive(Debug)]
struct IndexList {
    catalog: Arc<DatabaseCatalog>,
}

impl IndexList {
    fn columns() -> SchemaRef {
        let text = |name: &str| Field::new(name, DataType::Utf8, true);
        Arc::new(Schema::new(vec![text("schemaname"), text("tablename"), text("indexname"), text("tablespace"), text("indexdef")]))
    }
}

#[async_trait]
impl TableProvider for IndexList {
    fn schema(&self) -> SchemaRef {
        Self::columns()
    }

    fn table_type(&self) -> TableType {
        TableType::View
    }

    async fn scan(&self, _state: &dyn Session, projection: Option<&Vec<usize>>, _filters: &[Expr], _limit: Option<usize>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let schema = Self::columns();
        let batch = rows::batch(&schema, &user::index_rows(&self.catalog.table_defs()))?;
        Ok(MemorySourceConfig::try_new_exec(&[vec![batch]], schema, projection.cloned())?)
    }
}

/// A relation table: the crate's rows (system relations), then the rows of
/// the database's tables as the catalog has them when the query runs.
#[derive(Debug)]
struct WithUserRelations {
    relations: Relations,
    inner: Arc<dyn TableProvider>,
    schema: SchemaRef,
    catalog: Arc<DatabaseCatalog>,
    settings: Settings,
    /// The crate's `pg_class` (for `pg_depend`, see `pg_class_oid`).
    classes: Option<Arc<dyn TableProvider>>,
}

impl WithUserRelations {
    /// The OID of `pg_class` itself as the crate's `pg_class` lists it:
    /// `'pg_catalog.pg_class'::regclass` resolves to it (the crate numbers
    /// system relations as it goes, not with PostgreSQL's 1259), and
    /// psql compares `pg_depend.classid` with that.
    async fn pg_class_oid(&self, state: &dyn Session) -> DfResult<i32> {
        let Some(classes) = &self.classes else { return Ok(user::PG_CLASS) };
        for batch in collect(classes.scan(state, None, &[], None).await?, state.task_ctx()).await? {
            let (Some(oids), Some(names)) = (batch.column_by_name("oid"), batch.column_by_name("relname")) else { continue };
            let (oids, names) = (cast(oids, &DataType::Int32)?, cast(names, &DataType::Utf8)?);
            let (oids, names) = (oids.as_primitive::<Int32Type>(), names.as_string::<i32>());
            if let Some(i) = (0..names.len()).find(|&i| names.is_valid(i) && names.value(i) == "pg_class") {
                return Ok(oids.value(i));
            }
        }
        Ok(user::PG_CLASS)
    }
    /// A batch of the crate's table in this table's schema.
    fn adapt(&self, batch: &RecordBatch) -> DfResult<RecordBatch> {
        let columns = self
            .schema
            .fields()
            .iter()
            .map(|f| match batch.column_by_name(f.name()) {
                None => Ok(new_null_array(f.data_type(), batch.num_rows())),
                Some(c) if c.data_type() == f.data_type() => Ok(c.clone()),
                Some(c) => match f.data_type() {
                    DataType::List(item) if matches!(c.data_type(), DataType::Utf8 | DataType::Utf8View | DataType::LargeUtf8) => {
                        rows::text_to_list(c, item.data_type())
                    }
                    t => Ok(cast(c, t)?),
                },
            })
            .collect::<DfResult<Vec<ArrayRef>>>()?;
        Ok(RecordBatch::try_new(self.schema.clone(), columns)?)
    }
}

#[async_trait]
impl TableProvider for WithUserRelations {
    fn schema(&self) -> SchemaRef {
        self.schema.clone()
    }

    fn table_type(&self) -> TableType {
        self.inner.table_type()
    }

    async fn scan(&self, state: &dyn Session, projection: Option<&Vec<usize>>, _filters: &[Expr], _limit: Option<usize>) -> DfResult<Arc<dyn ExecutionPlan>> {
        let mut batches = if self.relations == Relations::Settings {
            Vec::new()
        } else {
            let system = collect(self.inner.scan(state, None, &[], None).await?, state.task_ctx()).await?;
            system.iter().map(|b| self.adapt(b)).collect::<DfResult<Vec<_>>>()?
        };
        let pg_class_oid = if self.relations == Relations::Depend { self.pg_class_oid(state).await? } else { user::PG_CLASS };
        let own = rows::batch(&self.schema, &self.relations.rows(&self.catalog.table_defs(), &self.settings, pg_class_oid))
            .map_err(|e| DataFusionError::Internal(format!("{:?} rows of the database's tables: {e}", self.relations)))?;
        batches.push(own);
        Ok(MemorySourceConfig::try_new_exec(&[batches], self.schema.clone(), projection.cloned())?)
    }
}
