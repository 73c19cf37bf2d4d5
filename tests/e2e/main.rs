//! End-to-end tests: the real `ebb` binary, started as processes.

mod fencing;
mod recovery;
mod role;
mod s3;
mod support;
