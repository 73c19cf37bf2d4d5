//! The broker: the gRPC service a proxy in another process calls to get a
//! compute for a database (`ebb proxy` in Kubernetes, or next to `ebb
//! local`). It answers from the controller of the named cluster — the same
//! `acquire` that `ebb local`'s own proxy calls in process.

use std::sync::Arc;

use ebb_proto::broker::compute_broker_server::{ComputeBroker, ComputeBrokerServer};
use ebb_proto::broker::{AcquireRequest, AcquireResponse};
use tonic::{Request, Response, Status};

use crate::Controller;
use crate::controller::AcquireError;

/// Finds the running controller of a cluster by name.
pub trait Controllers: Send + Sync + 'static {
    /// The controller of `cluster`, if it runs here.
    fn controller(&self, cluster: &str) -> Option<Arc<Controller>>;
}

/// One controller under one cluster name (`ebb local`: `local`).
pub struct Single {
    /// The cluster name proxies ask for.
    pub name: String,
    /// Its controller.
    pub controller: Arc<Controller>,
}

impl Controllers for Single {
    fn controller(&self, cluster: &str) -> Option<Arc<Controller>> {
        (cluster == self.name).then(|| self.controller.clone())
    }
}

/// The broker service.
pub struct Broker {
    controllers: Arc<dyn Controllers>,
}

impl Broker {
    /// A tonic service answering from `controllers`.
    pub fn service(controllers: Arc<dyn Controllers>) -> ComputeBrokerServer<Self> {
        ComputeBrokerServer::new(Self { controllers })
    }
}

#[tonic::async_trait]
impl ComputeBroker for Broker {
    async fn acquire(&self, request: Request<AcquireRequest>) -> Result<Response<AcquireResponse>, Status> {
        let AcquireRequest { cluster, database } = request.into_inner();
        let Some(controller) = self.controllers.controller(&cluster) else {
            // Not (yet) running here: the operator may be starting or
            // failing over, so the proxy should retry, not report 3D000.
            return Err(Status::unavailable(format!("cluster {cluster:?} is not running here (yet)")));
        };
        match controller.acquire(&database).await {
            Ok(i) => Ok(Response::new(AcquireResponse { compute_id: i.id, address: i.pg_addr.to_string() })),
            Err(AcquireError::UnknownDatabase(d)) => Err(Status::not_found(format!("database \"{d}\" does not exist"))),
            Err(AcquireError::Unavailable(m)) => Err(Status::unavailable(m)),
        }
    }
}
