//! `ebb compute`: command-line flags and settings of the compute role.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;
use clap::Args;
use ebb_compute::server::{self, ComputeConfig};
use serde::Deserialize;

/// Flags of `ebb compute`; each also reads an `EBB_*` variable.
#[derive(Args, Debug)]
pub struct ComputeArgs {
    /// PostgreSQL listen address (bind it to loopback or a private network:
    /// a compute trusts every client, the proxy authenticates).
    #[arg(long, env = "EBB_COMPUTE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Storage service URL.
    #[arg(long, env = "EBB_STORAGE")]
    storage: Option<String>,
    /// Serve only this database.
    #[arg(long, env = "EBB_DATABASE")]
    database: Option<String>,
    /// Control service address (attach / drain / stats). Without
    /// `--database`, the compute then waits unbound until attached.
    #[arg(long, env = "EBB_CONTROL_LISTEN")]
    control_listen: Option<SocketAddr>,
    /// Prometheus /metrics and /healthz listen address.
    #[arg(long, env = "EBB_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// MiB of rows read by key to keep, answering the same reads without a
    /// storage round trip while storage's row-change watch says they are
    /// current (0: keep none) [default: 128].
    #[arg(long, env = "EBB_ROW_CACHE_MB")]
    row_cache_mb: Option<usize>,
}

/// The `[compute]` section of the settings file.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct ComputeFile {
    listen: Option<SocketAddr>,
    storage: Option<String>,
    database: Option<String>,
    control_listen: Option<SocketAddr>,
    metrics_listen: Option<SocketAddr>,
    row_cache_mb: Option<usize>,
}

/// Runs `ebb compute`.
pub async fn run(args: ComputeArgs, config_file: Option<&Path>) -> anyhow::Result<()> {
    let file: ComputeFile = ebb_common::settings::load(config_file, "compute")?;
    let cfg = ComputeConfig {
        listen: args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5434))),
        storage: args.storage.or(file.storage).unwrap_or_else(|| "http://127.0.0.1:5433".into()),
        database: args.database.or(file.database),
        control_listen: args.control_listen.or(file.control_listen),
        metrics_listen: args.metrics_listen.or(file.metrics_listen),
        row_cache_bytes: row_cache_bytes(args.row_cache_mb.or(file.row_cache_mb))?,
    };
    if std::env::var_os(EXIT_WITH_PARENT).is_some() {
        exit_with_parent();
    }
    server::run(cfg, crate::shutdown_signal()).await.context("compute failed")
}

/// Set by the `process` runtime: a compute started by `ebb local` exits when
/// its parent does, even one killed with SIGKILL that could not stop it.
const EXIT_WITH_PARENT: &str = "EBB_EXIT_WITH_PARENT";

fn exit_with_parent() {
    let parent = std::os::unix::process::parent_id();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            if std::os::unix::process::parent_id() != parent {
                tracing::warn!(parent, "the parent process is gone; exiting");
                std::process::exit(1);
            }
        }
    });
}

/// The row cache's budget in bytes from `--row-cache-mb` (default
/// [`server::DEFAULT_ROW_CACHE_MB`]); a size that does not fit is refused.
fn row_cache_bytes(mb: Option<usize>) -> anyhow::Result<usize> {
    let mb = mb.unwrap_or(server::DEFAULT_ROW_CACHE_MB);
    mb.checked_mul(1 << 20).with_context(|| format!("--row-cache-mb {mb} is too large"))
}
