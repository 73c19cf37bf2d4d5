//! Helpers for unit tests of planning code: a stored definition and a
//! DataFusion context that knows it, without a storage server (nothing
//! here is executed), and SQL through a statement rewrite.

use std::sync::Arc;

use datafusion::execution::context::SessionContext;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion::sql::sqlparser::dialect::PostgreSqlDialect;
use datafusion::sql::sqlparser::parser::Parser;
use ebb_proto::storage::{ColumnDef, ColumnType, TableDef, TypeKind};

use crate::storage_client::StorageClient;
use crate::storage_session::StorageSession;
use crate::table::StorageTable;

/// Table `name` with `columns` (name, type), keyed by `key`.
pub fn table_def(name: &str, columns: &[(&str, TypeKind)], key: &[&str]) -> TableDef {
    let column = |(name, kind): &(&str, TypeKind)| ColumnDef {
        name: name.to_string(),
        r#type: Some(ColumnType { kind: *kind as i32, ..Default::default() }),
        ..Default::default()
    };
    TableDef {
        id: 1,
        name: name.into(),
        columns: columns.iter().map(column).collect(),
        primary_key: key.iter().map(|k| k.to_string()).collect(),
        ..Default::default()
    }
}

/// A context where `def` is registered under its name, as a storage table
/// of a session whose storage address leads nowhere.
pub fn context_with(def: TableDef) -> SessionContext {
    let client = StorageClient::connect_lazy("http://127.0.0.1:1").expect("a lazy client");
    let session = Arc::new(StorageSession::new(client, "postgres".into()));
    let ctx = SessionContext::new();
    let name = def.name.clone();
    ctx.register_table(name.as_str(), Arc::new(StorageTable::new(def, session, false))).expect("register");
    ctx
}

/// The first statement of `sql` (PostgreSQL dialect) after `rewrite`, printed.
pub fn rewritten(sql: &str, rewrite: fn(&mut [Statement])) -> String {
    let mut stmts = Parser::parse_sql(&PostgreSqlDialect {}, sql).expect("parse");
    rewrite(&mut stmts);
    stmts[0].to_string()
}
