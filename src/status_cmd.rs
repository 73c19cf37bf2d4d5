//! `ebb status`: what a running `ebb local` serves — each database's state,
//! replicas and connections, and the warm pool — read from the status file
//! `ebb local` rewrites four times a second in its data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use clap::Args;
use ebb_operator::controller::Status;
use serde::{Deserialize, Serialize};

const FILE: &str = "status.json";

/// Flags of `ebb status`.
#[derive(Args, Debug)]
pub struct StatusArgs {
    /// Data directory of the `ebb local` to ask.
    #[arg(long, env = "EBB_DATA_DIR", default_value = "ebb-data")]
    data_dir: PathBuf,
    /// Print JSON: {databases: [{name, state, replicas, connections}], pool: {size, ready}}.
    #[arg(long)]
    json: bool,
}

/// One database in the status file.
#[derive(Serialize, Deserialize, Debug)]
pub struct DatabaseEntry {
    pub name: String,
    pub state: String,
    pub replicas: usize,
    pub connections: u64,
    /// PostgreSQL addresses of its computes (for debugging and benches:
    /// connecting there directly bypasses the proxy).
    #[serde(default)]
    pub computes: Vec<SocketAddr>,
}

/// The warm pool in the status file.
#[derive(Serialize, Deserialize, Debug)]
pub struct PoolEntry {
    pub size: usize,
    pub ready: usize,
}

/// The status file.
#[derive(Serialize, Deserialize, Debug)]
pub struct StatusFile {
    pub pid: u32,
    pub listen: SocketAddr,
    pub databases: Vec<DatabaseEntry>,
    pub pool: PoolEntry,
}

impl StatusFile {
    /// The file's content for a controller status.
    pub fn new(pid: u32, listen: SocketAddr, s: &Status) -> Self {
        Self {
            pid,
            listen,
            databases: s
                .databases
                .iter()
                .map(|d| DatabaseEntry {
                    name: d.name.clone(),
                    state: d.state.as_str().into(),
                    replicas: d.replicas,
                    connections: d.connections,
                    computes: d.computes.clone(),
                })
                .collect(),
            pool: PoolEntry { size: s.pool_size, ready: s.pool_ready },
        }
    }
}

/// Replaces the status file atomically.
pub fn write(data_dir: &Path, file: &StatusFile) -> std::io::Result<()> {
    let tmp = data_dir.join(format!("{FILE}.tmp"));
    std::fs::write(&tmp, serde_json::to_vec_pretty(file)?)?;
    std::fs::rename(tmp, data_dir.join(FILE))
}

/// Removes the status file (on shutdown).
pub fn remove(data_dir: &Path) {
    let _ = std::fs::remove_file(data_dir.join(FILE));
}

/// Runs `ebb status`.
pub fn run(args: StatusArgs) -> anyhow::Result<()> {
    let path = args.data_dir.join(FILE);
    let raw = match std::fs::read(&path) {
        Ok(r) => r,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            bail!("ebb local is not running with data directory {} (no {FILE})", args.data_dir.display())
        }
        Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
    };
    let status: StatusFile = serde_json::from_slice(&raw).with_context(|| format!("parsing {}", path.display()))?;
    if !Path::new(&format!("/proc/{}", status.pid)).exists() {
        bail!("ebb local (pid {}) is no longer running; {} is stale", status.pid, path.display());
    }
    if args.json {
        println!("{}", serde_json::json!({ "databases": status.databases, "pool": status.pool }));
        return Ok(());
    }
    println!("ebb local (pid {}) on {}", status.pid, status.listen);
    println!("pool: {} ready of {}", status.pool.ready, status.pool.size);
    println!("{:<24} {:<10} {:>8} {:>11}", "DATABASE", "STATE", "REPLICAS", "CONNECTIONS");
    for d in &status.databases {
        println!("{:<24} {:<10} {:>8} {:>11}", d.name, d.state, d.replicas, d.connections);
    }
    Ok(())
}
