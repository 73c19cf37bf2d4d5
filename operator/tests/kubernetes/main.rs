//! Kubernetes-facing tests of the operator, run against an in-process fake of
//! the API server (`fake_api`) since no real one can be installed here.

mod fake_api;
mod fake_api_tests;
mod fake_cluster;
mod reconcile;
mod deploy;
