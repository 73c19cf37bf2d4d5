//! Statements ebb runs itself rather than handing to DataFusion.

pub mod alter_table;
pub mod checks;
pub mod copy;
pub mod create_table_as;
pub mod ddl;
pub mod dml;
pub mod foreign_keys;
pub mod indexes;
pub mod insert_literals;
pub mod returning;
pub mod roles;
pub mod sequences;
pub mod set_list;
pub mod upsert;
