//! `ebb proxy`: the proxy as a role of its own (Kubernetes). Clients
//! authenticate against the roles in storage; computes come from the
//! operator's broker (or from an `ebb local` started with `--broker-listen`,
//! as cluster `local`).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ebb_proto::broker::AcquireRequest;
use ebb_proto::broker::compute_broker_client::ComputeBrokerClient;
use ebb_proxy::metrics::ProxyMetrics;
use ebb_proxy::server::Auth as ProxyAuth;
use ebb_proxy::{Proxy, ProxyConfig, Route, RouteError, Router};
use tokio::net::TcpListener;
use tonic::transport::{Channel, Endpoint};

use crate::client_flags::{Auth, TlsArgs};
use crate::storage_roles::StorageRoles;

/// Flags of `ebb proxy`; each also reads an `EBB_*` variable.
#[derive(Args, Debug)]
pub struct ProxyArgs {
    /// Where clients connect.
    #[arg(long, env = "EBB_LISTEN", default_value = "0.0.0.0:5432")]
    listen: SocketAddr,
    /// The storage service (roles are read from it; needed with --auth scram).
    #[arg(long, env = "EBB_STORAGE")]
    storage: Option<String>,
    /// The operator's broker, asked for computes.
    #[arg(long, env = "EBB_BROKER")]
    broker: String,
    /// The EbbCluster served, as `namespace/name`.
    #[arg(long, env = "EBB_CLUSTER")]
    cluster: String,
    /// Client authentication (trust only on a loopback --listen).
    #[arg(long, env = "EBB_AUTH", value_enum, default_value_t = Auth::Scram)]
    auth: Auth,
    /// How long a client is held while its database wakes.
    #[arg(long, env = "EBB_WAKE_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    wake_timeout: Duration,
    #[command(flatten)]
    tls: TlsArgs,
    /// Prometheus /metrics and /healthz listen address.
    #[arg(long, env = "EBB_METRICS_LISTEN")]
    metrics_listen: Option<SocketAddr>,
}

/// Routes through the operator's broker.
struct BrokerRouter {
    client: ComputeBrokerClient<Channel>,
    cluster: String,
}

#[async_trait::async_trait]
impl Router for BrokerRouter {
    async fn acquire(&self, database: &str) -> Result<Route, RouteError> {
        let request = AcquireRequest { cluster: self.cluster.clone(), database: database.into() };
        match self.client.clone().acquire(request).await {
            Ok(r) => {
                let r = r.into_inner();
                let addr = r.address.parse().map_err(|e| RouteError::Unavailable(format!("broker gave a bad address {:?}: {e}", r.address)))?;
                Ok(Route { compute_id: r.compute_id, addr })
            }
            Err(s) if s.code() == tonic::Code::NotFound => Err(RouteError::UnknownDatabase(database.into())),
            Err(s) => Err(RouteError::Unavailable(format!("the operator could not provide a compute: {}", s.message()))),
        }
    }
}

/// Runs the proxy until SIGTERM or Ctrl-C.
pub async fn run(args: ProxyArgs) -> anyhow::Result<()> {
    args.auth.check(args.listen)?;
    let tls = args.tls.acceptor()?;
    let broker = Endpoint::from_shared(args.broker.clone())
        .with_context(|| format!("bad --broker {}", args.broker))?
        .connect_timeout(Duration::from_secs(3))
        .tcp_nodelay(true)
        .connect_lazy();
    let router = BrokerRouter { client: ComputeBrokerClient::new(broker), cluster: args.cluster.clone() };
    let auth = match args.auth {
        Auth::Trust => ProxyAuth::Trust,
        Auth::Scram => {
            let Some(storage) = &args.storage else { anyhow::bail!("--auth scram reads roles from storage: give --storage") };
            ProxyAuth::Scram(Arc::new(StorageRoles::connect(storage).await?))
        }
    };
    let proxy = Proxy::new(Arc::new(router), ProxyConfig { wake_timeout: args.wake_timeout, tls, auth });
    let (stop, stopped) = ebb_common::shutdown::signal();
    if let Some(addr) = args.metrics_listen {
        let l = TcpListener::bind(addr).await.with_context(|| format!("cannot listen on {addr}"))?;
        let registry = prometheus::Registry::new();
        let metrics = ProxyMetrics::new(&registry)?;
        tokio::spawn(ebb_common::metrics::serve(l, registry, stopped.wait()));
        let (proxy, stop) = (proxy.clone(), stopped.wait());
        tokio::spawn(async move {
            tokio::pin!(stop);
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tokio::select! {
                    _ = tick.tick() => metrics.sample(&proxy),
                    _ = &mut stop => return,
                }
            }
        });
    }
    let listener = TcpListener::bind(args.listen).await.with_context(|| format!("cannot listen on {}", args.listen))?;
    tracing::info!(addr = %listener.local_addr()?, cluster = %args.cluster, "proxy listening");
    let task = tokio::spawn(proxy.clone().serve(listener, stopped.wait()));
    crate::shutdown_signal().await;
    stop.stop();
    let _ = task.await;
    Ok(())
}
