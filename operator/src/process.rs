//! The `process` runtime: computes are child processes of `ebb local`,
//! started as `ebb compute --control-listen …` on loopback ports the kernel
//! picks; each reports its addresses on its first stdout line.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ebb_proto::COMPUTE_READY_LINE_PREFIX;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, Command};

use crate::runtime::{ComputeInstance, Runtime, RuntimeError};

const READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Runs computes as child processes.
pub struct ProcessRuntime {
    program: PathBuf,
    storage_url: String,
    children: Mutex<HashMap<String, Child>>,
    next_id: AtomicU64,
}

impl ProcessRuntime {
    /// Computes run `program compute …` against the storage at `storage_url`.
    pub fn new(program: PathBuf, storage_url: String) -> Self {
        Self { program, storage_url, children: Mutex::new(HashMap::new()), next_id: AtomicU64::new(1) }
    }

    fn children(&self) -> std::sync::MutexGuard<'_, HashMap<String, Child>> {
        self.children.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Process ids of the running children (for tests and `ebb status`).
    pub fn pids(&self) -> HashMap<String, u32> {
        self.children().iter().filter_map(|(id, c)| Some((id.clone(), c.id()?))).collect()
    }
}

/// Parses `EBB_COMPUTE_READY pg=ADDR control=ADDR`.
pub fn parse_ready_line(line: &str) -> Option<(SocketAddr, SocketAddr)> {
    let rest = line.trim().strip_prefix(COMPUTE_READY_LINE_PREFIX)?;
    let mut pg = None;
    let mut control = None;
    for part in rest.split_whitespace() {
        match part.split_once('=') {
            Some(("pg", a)) => pg = a.parse().ok(),
            Some(("control", a)) => control = a.parse().ok(),
            _ => {}
        }
    }
    Some((pg?, control?))
}

#[async_trait::async_trait]
impl Runtime for ProcessRuntime {
    async fn start(&self) -> Result<ComputeInstance, RuntimeError> {
        let id = format!("compute-{}", self.next_id.fetch_add(1, Ordering::Relaxed));
        let mut child = Command::new(&self.program)
            .args(["compute", "--listen", "127.0.0.1:0", "--control-listen", "127.0.0.1:0", "--storage", &self.storage_url])
            .env("EBB_EXIT_WITH_PARENT", "1")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| RuntimeError::Start(format!("{}: {e}", self.program.display())))?;
        let stdout = child.stdout.take().ok_or_else(|| RuntimeError::Start("no stdout pipe".into()))?;
        let mut lines = BufReader::new(stdout).lines();
        let ready = tokio::time::timeout(READY_TIMEOUT, async {
            while let Some(line) = lines.next_line().await? {
                if let Some(addrs) = parse_ready_line(&line) {
                    return Ok(Some(addrs));
                }
            }
            Ok::<_, std::io::Error>(None)
        })
        .await;
        let (pg_addr, control_addr) = match ready {
            Ok(Ok(Some(a))) => a,
            other => {
                let _ = child.kill().await;
                let why = match other {
                    Err(_) => format!("no ready line within {READY_TIMEOUT:?}"),
                    Ok(Err(e)) => e.to_string(),
                    _ => "it exited before it was ready".into(),
                };
                return Err(RuntimeError::Start(format!("{id}: {why}")));
            }
        };
        // Keep reading stdout so the child never blocks on a full pipe.
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        tracing::info!(%id, %pg_addr, pid = ?child.id(), "compute started");
        self.children().insert(id.clone(), child);
        Ok(ComputeInstance { id, pg_addr, control_addr })
    }

    async fn stop(&self, id: &str) {
        let child = self.children().remove(id);
        if let Some(mut child) = child {
            let _ = child.kill().await;
            tracing::info!(%id, "compute stopped");
        }
    }

    fn is_alive(&self, id: &str) -> bool {
        match self.children().get_mut(id) {
            Some(child) => matches!(child.try_wait(), Ok(None)),
            None => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_lines_parse() {
        let (pg, control) = parse_ready_line("EBB_COMPUTE_READY pg=127.0.0.1:5001 control=127.0.0.1:5002").unwrap();
        assert_eq!((pg.port(), control.port()), (5001, 5002));
        assert_eq!(parse_ready_line("EBB_COMPUTE_READY pg=127.0.0.1:5001"), None);
        assert_eq!(parse_ready_line("something else"), None);
    }
}
