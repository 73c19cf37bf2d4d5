//! Integration tests of the storage crate (one binary, see DESIGN §8).

mod ddl;
mod durability;
mod faults;
mod grpc;
mod indexes;
mod scan;
mod sequences;
mod support;
mod transactions;
