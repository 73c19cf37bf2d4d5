//! `ebb storage`: command-line flags and settings of the storage role.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ebb_storage::engine::{BlockCache, Durability, EngineConfig};
use ebb_storage::server::{self, ServerConfig};
use serde::Deserialize;

/// Flags of `ebb storage`; each also reads an `EBB_*` variable.
#[derive(Args, Debug)]
pub struct StorageArgs {
    /// gRPC listen address.
    #[arg(long, env = "EBB_STORAGE_LISTEN")]
    listen: Option<SocketAddr>,
    /// Object store URL: file:///path, memory://, s3://bucket/prefix.
    #[arg(long, env = "EBB_OBJECT_STORE")]
    object_store: Option<String>,
    /// Directory for the local RocksDB copies (a cache: the object store is the truth).
    #[arg(long, env = "EBB_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// remote: acknowledge once durable in the object store; local: once fsynced locally.
    #[arg(long, env = "EBB_DURABILITY")]
    durability: Option<Durability>,
    /// Prometheus /metrics listen address.
    #[arg(long, env = "EBB_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
    /// Local durability: how often commits are shipped to the object store (e.g. 1s, 500ms).
    #[arg(long, env = "EBB_SHIP_INTERVAL", value_parser = humantime::parse_duration)]
    ship_interval: Option<Duration>,
    /// How often a checkpoint is uploaded when there were commits.
    #[arg(long, env = "EBB_CHECKPOINT_INTERVAL", value_parser = humantime::parse_duration)]
    checkpoint_interval: Option<Duration>,
    /// Transactions idle longer than this are aborted.
    #[arg(long, env = "EBB_TXN_IDLE_TIMEOUT", value_parser = humantime::parse_duration)]
    txn_idle_timeout: Option<Duration>,
    /// A commit not confirmed durable within this reports an unknown outcome.
    #[arg(long, env = "EBB_COMMIT_TIMEOUT", value_parser = humantime::parse_duration)]
    commit_timeout: Option<Duration>,
    /// MiB of uncompressed table blocks cached in memory, shared by all databases (default 512).
    #[arg(long, env = "EBB_BLOCK_CACHE_MB")]
    block_cache_mb: Option<usize>,
}

/// The `[storage]` section of the settings file.
#[derive(Deserialize, Default, Debug)]
#[serde(deny_unknown_fields)]
struct StorageFile {
    listen: Option<SocketAddr>,
    object_store: Option<String>,
    cache_dir: Option<PathBuf>,
    durability: Option<String>,
    metrics_listen: Option<SocketAddr>,
    #[serde(default, with = "humantime_serde")]
    ship_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    checkpoint_interval: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    txn_idle_timeout: Option<Duration>,
    #[serde(default, with = "humantime_serde")]
    commit_timeout: Option<Duration>,
    block_cache_mb: Option<usize>,
}

/// Resolves flags, environment, file and defaults into the role's settings.
fn resolve(args: StorageArgs, file: StorageFile) -> anyhow::Result<ServerConfig> {
    let defaults = EngineConfig::default();
    let durability = match (args.durability, file.durability) {
        (Some(d), _) => d,
        (None, Some(s)) => s.parse().map_err(anyhow::Error::msg)?,
        (None, None) => defaults.durability,
    };
    let data = PathBuf::from("ebb-data");
    let cache_dir = args.cache_dir.or(file.cache_dir).unwrap_or_else(|| data.join("cache"));
    let object_store = match args.object_store.or(file.object_store) {
        Some(u) => u,
        None => {
            let dir = std::env::current_dir()?.join(&data).join("objects");
            format!("file://{}", dir.display())
        }
    };
    Ok(ServerConfig {
        listen: args.listen.or(file.listen).unwrap_or_else(|| SocketAddr::from(([127, 0, 0, 1], 5433))),
        object_store,
        cache_dir,
        metrics_listen: args.metrics_listen.or(file.metrics_listen),
        registry: None,
        engine: EngineConfig {
            durability,
            ship_interval: args.ship_interval.or(file.ship_interval).unwrap_or(defaults.ship_interval),
            checkpoint_interval: args.checkpoint_interval.or(file.checkpoint_interval).unwrap_or(defaults.checkpoint_interval),
            txn_idle_timeout: args.txn_idle_timeout.or(file.txn_idle_timeout).unwrap_or(defaults.txn_idle_timeout),
            commit_timeout: args.commit_timeout.or(file.commit_timeout).unwrap_or(defaults.commit_timeout),
            block_cache: match args.block_cache_mb.or(file.block_cache_mb) {
                Some(mb) => BlockCache::new(mb << 20),
                None => defaults.block_cache.clone(),
            },
            ..defaults
        },
    })
}

/// Runs `ebb storage`.
pub async fn run(args: StorageArgs, config_file: Option<&Path>) -> anyhow::Result<()> {
    let file: StorageFile = ebb_common::settings::load(config_file, "storage")?;
    let cfg = resolve(args, file)?;
    server::run(cfg, crate::shutdown_signal()).await.context("storage server failed")
}
