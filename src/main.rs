//! The one `ebb` binary: parses the command line and starts a role.

mod client_flags;
mod compute_cmd;
mod crd_cmd;
mod local_cmd;
mod local_metrics;
mod operator_cmd;
mod proxy_cmd;
mod status_cmd;
mod storage_cmd;
mod storage_roles;

use clap::{Parser, Subcommand};

/// jemalloc instead of glibc's malloc, for every role: the compute and
/// storage allocate and free many small buffers per statement (protocol
/// messages, Arrow arrays, HTTP/2 frames), and glibc's consolidation of
/// freed chunks showed up at ~12 % of a compute's CPU under pgbench.
/// Measured (docs/benchmarks.md, session 20): TPC-B +5–7 %, compute CPU
/// per transaction −9 %; an unbound compute's resident memory 47 → 50 MB.
/// (mimalloc, tried in session 19, took it to 72 MB.)
#[global_allocator]
static ALLOC: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// ebb: a serverless, PostgreSQL-compatible SQL database for Kubernetes.
#[derive(Parser)]
#[command(name = "ebb", version, about)]
struct Cli {
    /// Optional TOML settings file (flags and EBB_* variables take precedence).
    #[arg(long, global = true, env = "EBB_CONFIG")]
    config: Option<std::path::PathBuf>,
    #[command(subcommand)]
    role: Role,
}

#[derive(Subcommand)]
enum Role {
    /// Run all of ebb on this machine: storage, proxy, controller, and
    /// computes as child processes that scale with load and to zero.
    Local(local_cmd::LocalArgs),
    /// Show what a running `ebb local` serves.
    Status(status_cmd::StatusArgs),
    /// Run a storage server.
    Storage(storage_cmd::StorageArgs),
    /// Run a compute node (PostgreSQL protocol, SQL over DataFusion).
    Compute(compute_cmd::ComputeArgs),
    /// Run a proxy in front of computes the operator's broker hands out (Kubernetes).
    Proxy(proxy_cmd::ProxyArgs),
    /// Run the Kubernetes operator (EbbCluster and Database resources).
    Operator(operator_cmd::OperatorArgs),
    /// Print the CustomResourceDefinitions.
    Crd,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let config = cli.config.as_deref();
    // `ebb status` only reads a file: no logging set-up, no runtime.
    let serve = match cli.role {
        Role::Status(args) => return status_cmd::run(args),
        Role::Crd => return crd_cmd::run(),
        Role::Local(args) => Box::pin(local_cmd::run(args)) as std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>,
        Role::Storage(args) => Box::pin(storage_cmd::run(args, config)),
        Role::Compute(args) => Box::pin(compute_cmd::run(args, config)),
        Role::Proxy(args) => Box::pin(proxy_cmd::run(args)),
        Role::Operator(args) => Box::pin(operator_cmd::run(args)),
    };
    ebb_common::telemetry::init();
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    runtime.block_on(serve)
}

/// Resolves when SIGTERM or Ctrl-C arrives.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = ctrl_c => {}
                    _ = term.recv() => {}
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot watch SIGTERM; only Ctrl-C stops ebb");
                let _ = ctrl_c.await;
            }
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
    tracing::info!("shutdown requested");
}
