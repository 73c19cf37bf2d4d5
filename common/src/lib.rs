//! Code every ebb role shares: logging setup, the `/metrics` endpoint and
//! settings-file loading. Nothing else belongs here.

pub mod metrics;
pub mod settings;
pub mod telemetry;
