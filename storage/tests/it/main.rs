//! Integration tests of the storage crate (one binary, see DESIGN §8).

mod ddl;
mod durability;
mod faults;
mod foreign_keys;
mod grpc;
mod indexes;
mod lane;
mod row_watch;
mod scan;
mod sequences;
mod support;
mod transactions;
