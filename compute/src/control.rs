//! The control service (`proto/control.proto`): a controller binds this
//! compute to a database (`attach`), drains it before scale-in and samples
//! its load (`stats`).

use std::sync::Arc;
use std::time::Instant;

use ebb_proto::control::compute_control_server::ComputeControl;
use ebb_proto::control::{AttachRequest, AttachResponse, ComputeStats, DrainRequest, DrainResponse, StatsRequest};
use tonic::{Request, Response, Status};

use crate::binding::{AttachError, Binding};
use crate::storage_client::StorageClient;

/// Serves the control RPCs of one compute.
pub struct ControlService {
    binding: Arc<Binding>,
    storage: StorageClient,
}

impl ControlService {
    /// A service over the compute's binding and storage client.
    pub fn new(binding: Arc<Binding>, storage: StorageClient) -> Self {
        Self { binding, storage }
    }
}

#[tonic::async_trait]
impl ComputeControl for ControlService {
    async fn attach(&self, request: Request<AttachRequest>) -> Result<Response<AttachResponse>, Status> {
        let started = Instant::now();
        let database = request.into_inner().database;
        if self.binding.database().as_deref() != Some(database.as_str()) {
            let known = self.storage.list_databases().await.map_err(|e| Status::unavailable(e.to_string()))?;
            if !known.iter().any(|d| d.name == database) {
                return Err(Status::not_found(format!("database \"{database}\" does not exist")));
            }
        }
        self.binding.attach(&database).map_err(|e| match e {
            AttachError::AlreadyBound(_) | AttachError::NotBindable | AttachError::Draining => {
                Status::failed_precondition(e.to_string())
            }
        })?;
        let attach_micros = started.elapsed().as_micros() as u64;
        tracing::info!(%database, attach_micros, "attached");
        Ok(Response::new(AttachResponse { database, attach_micros }))
    }

    async fn drain(&self, _request: Request<DrainRequest>) -> Result<Response<DrainResponse>, Status> {
        self.binding.drain();
        tracing::info!(connections = self.binding.connections(), "draining");
        Ok(Response::new(DrainResponse { connections: self.binding.connections() }))
    }

    async fn stats(&self, _request: Request<StatsRequest>) -> Result<Response<ComputeStats>, Status> {
        let (cpu_seconds, memory_bytes) = process_usage();
        Ok(Response::new(ComputeStats {
            database: self.binding.database().unwrap_or_default(),
            draining: self.binding.is_draining(),
            connections: self.binding.connections(),
            in_flight: self.binding.in_flight(),
            cpu_seconds,
            memory_bytes,
        }))
    }
}

/// CPU seconds used and resident bytes of this process, from `/proc` (zero
/// where there is no `/proc`).
pub fn process_usage() -> (f64, u64) {
    let ticks_per_second = 100.0; // USER_HZ on every Linux ebb runs on
    let page_size = 4096;
    let cpu = std::fs::read_to_string("/proc/self/stat")
        .ok()
        .and_then(|s| {
            // Fields after the parenthesised command name; utime and stime are 14 and 15.
            let rest = s.rsplit_once(')')?.1;
            let fields: Vec<&str> = rest.split_whitespace().collect();
            let utime: f64 = fields.get(11)?.parse().ok()?;
            let stime: f64 = fields.get(12)?.parse().ok()?;
            Some((utime + stime) / ticks_per_second)
        })
        .unwrap_or(0.0);
    let rss = std::fs::read_to_string("/proc/self/statm")
        .ok()
        .and_then(|s| s.split_whitespace().nth(1)?.parse::<u64>().ok())
        .map(|pages| pages * page_size)
        .unwrap_or(0);
    (cpu, rss)
}

#[cfg(test)]
mod tests {
    #[test]
    fn process_usage_reads_proc() {
        let (cpu, rss) = super::process_usage();
        assert!(cpu >= 0.0);
        assert!(rss > 1 << 20, "a test process uses more than 1 MiB, got {rss}");
    }
}
