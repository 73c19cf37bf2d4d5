//! ebb compute: the PostgreSQL wire protocol and SQL over DataFusion. A
//! compute node holds no data; everything it knows comes from storage.
//!
//! - [`pg`]: pgwire handlers; [`session`]: statements, transactions, settings;
//!   [`column_names`]: result columns named as PostgreSQL names them;
//! - [`sql`]: DDL and DML translation; [`catalog`], [`table`], [`pushdown`]:
//!   the DataFusion view of storage; [`point_read`]: key lookups that skip
//!   DataFusion, answered from [`row_cache`] while [`row_watch`] keeps it
//!   true; [`storage_client`]: the storage client, over
//!   [`storage_channel`]'s HTTP/2 connection and `storage_lane`'s plain
//!   ones;
//! - [`binding`], [`control`]: which database it serves and the control
//!   service; [`metrics`]: its Prometheus gauges.

pub mod aggregate_pushdown;
pub mod array_literals;
pub mod array_subqueries;
pub mod auto_params;
pub mod binding;
pub mod by_address;
pub mod catalog;
pub mod catalog_sql;
pub mod checked_arithmetic;
pub mod column_names;
pub mod compiled_exprs;
pub mod control;
pub mod correlated_aggregates;
pub mod deferrable;
pub mod duplicate_names;
pub mod error;
pub mod exists_values;
pub mod function_aliases;
pub mod function_call;
pub mod record_fields;
pub mod row_cache;
pub mod row_watch;
pub mod set_returning;
pub mod simple_shapes;
pub mod sequence_functions;
pub mod metrics;
pub mod numeric_constants;
pub mod own_rows;
pub mod pg;
pub mod pg_catalog;
pub mod pg_functions;
pub mod pg_sleep;
pub mod placeholder_types;
pub mod point_read;
pub mod pushdown;
pub mod scalar_subqueries;
pub mod server;
pub mod session;
pub mod sql;
pub mod storage_channel;
pub mod storage_client;
mod storage_lane;
pub mod storage_session;
pub mod table;
pub mod text_casts;
#[cfg(test)]
mod test_support;

pub use error::{ComputeError, Result};
