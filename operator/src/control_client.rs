//! Client of a compute's control service (`proto/control.proto`).

use std::net::SocketAddr;
use std::time::Duration;

use ebb_proto::control::compute_control_client::ComputeControlClient;
use ebb_proto::control::{AttachRequest, ComputeStats, DrainRequest, StatsRequest};
use tonic::transport::{Channel, Endpoint};

/// What an attach call found.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The database does not exist.
    #[error("database does not exist: {0}")]
    UnknownDatabase(String),
    /// The compute cannot be attached (bound elsewhere, draining).
    #[error("compute refused: {0}")]
    Refused(String),
    /// The compute could not be reached or failed.
    #[error("compute unreachable: {0}")]
    Unreachable(String),
}

impl From<tonic::Status> for ControlError {
    fn from(s: tonic::Status) -> Self {
        match s.code() {
            tonic::Code::NotFound => Self::UnknownDatabase(s.message().to_string()),
            tonic::Code::FailedPrecondition => Self::Refused(s.message().to_string()),
            _ => Self::Unreachable(s.message().to_string()),
        }
    }
}

/// A connected control client.
#[derive(Clone)]
pub struct ControlClient {
    inner: ComputeControlClient<Channel>,
}

impl ControlClient {
    /// Connects to the control service at `addr`.
    pub async fn connect(addr: SocketAddr) -> Result<Self, ControlError> {
        let endpoint = Endpoint::from_shared(format!("http://{addr}"))
            .map_err(|e| ControlError::Unreachable(e.to_string()))?
            .connect_timeout(Duration::from_secs(2))
            .timeout(Duration::from_secs(10))
            .tcp_nodelay(true);
        let channel = endpoint.connect().await.map_err(|e| ControlError::Unreachable(e.to_string()))?;
        Ok(Self { inner: ComputeControlClient::new(channel) })
    }

    /// Binds the compute to `database`.
    pub async fn attach(&self, database: &str) -> Result<(), ControlError> {
        self.inner.clone().attach(AttachRequest { database: database.into() }).await?;
        Ok(())
    }

    /// Stops the compute taking new sessions; returns its open sessions.
    pub async fn drain(&self) -> Result<u64, ControlError> {
        Ok(self.inner.clone().drain(DrainRequest {}).await?.into_inner().connections)
    }

    /// Current load and resource use.
    pub async fn stats(&self) -> Result<ComputeStats, ControlError> {
        Ok(self.inner.clone().stats(StatsRequest {}).await?.into_inner())
    }
}
