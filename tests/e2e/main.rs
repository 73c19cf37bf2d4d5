//! End-to-end tests: the real `ebb` binary, started as processes.

mod compute;
mod fencing;
mod local;
mod recovery;
mod role;
mod s3;
mod slt;
mod tools;
mod support;
