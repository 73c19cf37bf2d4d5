//! Code several ebb roles share: logging setup, the `/metrics` endpoint,
//! settings-file loading and SCRAM-SHA-256 (compute writes verifiers, the
//! proxy checks them). Nothing else belongs here.

pub mod metrics;
pub mod scram;
pub mod settings;
pub mod telemetry;
