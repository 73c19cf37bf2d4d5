//! `pg_catalog` for tools: psql's `\d` family, drivers' reflection and
//! pgbench read it. Most tables and functions come from the
//! `datafusion-pg-catalog` crate; this module installs them on a session,
//! sharing the static tables (a PostgreSQL 15 export, about a megabyte of
//! Arrow data) across sessions so a connection does not pay to decode them.
//! The database's own tables are described by ebb itself ([`overlay`]).

mod deparse;
mod overlay;
mod regclass_text;
mod regproc;
mod rows;
mod sizes;
mod user_relations;

pub use regclass_text::rewrite as regclass_of_text;
pub use regproc::unqualify_proc_names;
pub use sizes::{RelationSizes, SizeCalls, size_calls};
pub use user_relations::{TableOids, default_text, relation_by_name, relation_by_oid};

use std::sync::{Arc, LazyLock};

use datafusion::execution::context::SessionContext;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion_pg_catalog::pg_catalog::context::EmptyContextProvider;
use datafusion_pg_catalog::pg_catalog::{self as pgc, PgCatalogSchemaProvider, PgCatalogStaticTables};

use datafusion::datasource::{MemTable, TableProvider};

use crate::catalog::DatabaseCatalog;
use crate::session::settings::Settings;
use crate::error::{ComputeError, Result};

static STATIC_TABLES: LazyLock<std::result::Result<Arc<PgCatalogStaticTables>, String>> =
    LazyLock::new(|| PgCatalogStaticTables::try_new().map(Arc::new).map_err(|e| e.to_string()));

/// `pg_type` with OIDs in its `regproc` columns, built once.
static TYPES: LazyLock<std::result::Result<Arc<MemTable>, String>> = LazyLock::new(|| {
    let statics = STATIC_TABLES.as_ref().map_err(|e| e.clone())?;
    regproc::types(statics).map(Arc::new).map_err(|e| e.to_string())
});

/// Decodes the static tables now (at start-up) rather than on the first connection.
pub fn preload() -> Result<()> {
    STATIC_TABLES.as_ref().map(|_| ()).map_err(|e| ComputeError::Internal(format!("pg_catalog tables: {e}")))?;
    TYPES.as_ref().map(|_| ()).map_err(|e| ComputeError::Internal(format!("pg_type: {e}")))
}

/// Registers `pg_catalog` in the catalog of `database` (`tables`, and the
/// session's `settings` as `pg_settings`) and the PostgreSQL functions
/// tools call (`format_type`, `pg_get_expr`, `current_schemas`, the size
/// functions over `sizes`, …).
pub fn install(ctx: &SessionContext, database: &str, tables: &Arc<DatabaseCatalog>, settings: &Settings, sizes: &Arc<RelationSizes>) -> Result<()> {
    let statics = STATIC_TABLES.as_ref().map_err(|e| ComputeError::Internal(format!("pg_catalog tables: {e}")))?.clone();
    let system = overlay::SystemSchemasOnly(ctx.state().catalog_list().clone());
    let provider = PgCatalogSchemaProvider::try_new(system, statics, EmptyContextProvider)?;
    let catalog = ctx
        .catalog(database)
        .ok_or_else(|| ComputeError::Internal(format!("catalog of database \"{database}\" is not registered")))?;
    let types = TYPES.as_ref().ok().map(|t| t.clone() as Arc<dyn TableProvider>);
    let overlay = overlay::PgCatalogOverlay::new(Arc::new(provider), tables.clone(), settings.clone(), types);
    catalog.register_schema("pg_catalog", Arc::new(overlay))?;

    use datafusion_pg_catalog::pg_catalog::{
        array_bounds_udf, format_type, has_privilege_udf, quote_ident_udf,
    };
    let udfs = [
        pgc::create_current_database_udf(database),
        pgc::create_current_schema_udf(),
        pgc::create_current_schemas_udf(),
        pgc::create_pg_get_userbyid_udf(),
        has_privilege_udf::create_has_privilege_udf("has_table_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_schema_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_database_privilege"),
        has_privilege_udf::create_has_privilege_udf("has_any_column_privilege"),
        pgc::create_pg_table_is_visible(),
        format_type::create_format_type_udf(),
        pgc::create_session_user_udf(),
        pgc::create_pg_get_partkeydef_udf(),
        pgc::create_pg_relation_is_publishable_udf(),
        pgc::create_pg_get_statisticsobjdef_columns_udf(),
        pgc::create_pg_encoding_to_char_udf(),
        pgc::create_pg_backend_pid_udf(),
        pgc::create_pg_get_partition_ancestors_udf(),
        quote_ident_udf::create_quote_ident_udf(),
        quote_ident_udf::create_parse_ident_udf(),
        array_bounds_udf::create_array_upper_udf(),
        array_bounds_udf::create_array_lower_udf(),
    ];
    for udf in udfs {
        ctx.register_udf(udf);
    }
    for udf in crate::pg_functions::all().into_iter().chain(deparse::functions(tables)).chain(sizes::functions(tables, sizes)).chain([crate::set_returning::expandarray_udf(), crate::pg_sleep::pg_sleep_udf(), regclass_text::function(tables), regclass_text::name_function(tables)]) {
        ctx.register_udf(udf);
    }
    if let Ok(tables) = STATIC_TABLES.as_ref() {
        ctx.register_udtf("pg_get_keywords", tables.pg_get_keywords.clone());
    }
    // `regclass`, `regtype`, … as type names in casts.
    let state = ctx.state_ref();
    let existing = state.read().clone();
    *state.write() = SessionStateBuilder::new_from_existing(existing)
        .with_type_planner(Arc::new(datafusion_pg_catalog::pg_catalog::oid_type_planner::PgOidTypePlanner))
        .build();
    datafusion_pg_catalog::pg_catalog::generate_series_arg_coercion::CoerceIntArgsToBigInt::widen(ctx);
    Ok(())
}
