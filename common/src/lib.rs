//! Code several ebb roles share: logging setup, the `/metrics` endpoint,
//! settings-file loading, gRPC accept with TCP_NODELAY, a shutdown signal
//! and SCRAM-SHA-256 (compute writes verifiers, the proxy checks them).
//! Nothing else belongs here.

pub mod metrics;
pub mod net;
pub mod scram;
pub mod settings;
pub mod shutdown;
pub mod telemetry;
