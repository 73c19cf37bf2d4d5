//! The broker: the gRPC service proxies in Kubernetes call to get a compute
//! for a database. It answers from the controller of the named cluster —
//! the same `acquire` that `ebb local`'s proxy calls in process.

use std::sync::Arc;

use ebb_proto::broker::compute_broker_server::{ComputeBroker, ComputeBrokerServer};
use ebb_proto::broker::{AcquireRequest, AcquireResponse};
use tonic::{Request, Response, Status};

use super::context::Context;
use crate::controller::AcquireError;

/// The broker service over the operator's clusters.
pub struct Broker {
    ctx: Arc<Context>,
}

impl Broker {
    /// A tonic service for `ctx`'s clusters.
    pub fn service(ctx: Arc<Context>) -> ComputeBrokerServer<Self> {
        ComputeBrokerServer::new(Self { ctx })
    }
}

#[tonic::async_trait]
impl ComputeBroker for Broker {
    async fn acquire(&self, request: Request<AcquireRequest>) -> Result<Response<AcquireResponse>, Status> {
        let AcquireRequest { cluster, database } = request.into_inner();
        let Some(handle) = self.ctx.cluster(&cluster) else {
            return Err(Status::not_found(format!("no EbbCluster {cluster:?} is running")));
        };
        match handle.controller.acquire(&database).await {
            Ok(i) => Ok(Response::new(AcquireResponse { compute_id: i.id, address: i.pg_addr.to_string() })),
            Err(AcquireError::UnknownDatabase(d)) => Err(Status::not_found(format!("database \"{d}\" does not exist"))),
            Err(AcquireError::Unavailable(m)) => Err(Status::unavailable(m)),
        }
    }
}
