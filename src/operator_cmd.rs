//! `ebb operator`: the Kubernetes operator. Reconciles `EbbCluster`s and
//! `Database`s, claims warm compute pods for databases and serves the
//! broker that proxies ask for computes. One leads at a time (Lease).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use ebb_operator::k8s::context::Settings;
use ebb_operator::k8s::operator::{self, OperatorConfig};

/// Flags of `ebb operator`; each also reads an `EBB_*` variable.
#[derive(Args, Debug)]
pub struct OperatorArgs {
    /// Where the broker (asked by proxies for computes) listens.
    #[arg(long, env = "EBB_BROKER_LISTEN", default_value = "0.0.0.0:5436")]
    broker_listen: SocketAddr,
    /// The broker's URL as proxies reach it (the operator's Service).
    #[arg(long, env = "EBB_BROKER_URL")]
    broker_url: String,
    /// Prometheus /metrics and /healthz listen address.
    #[arg(long, env = "EBB_METRICS_LISTEN", default_value = "0.0.0.0:9090")]
    metrics_listen: SocketAddr,
    /// Image of the workloads of clusters that name none.
    #[arg(long, env = "EBB_IMAGE")]
    image: String,
    /// Only watch this namespace (default: all).
    #[arg(long, env = "EBB_WATCH_NAMESPACE")]
    watch_namespace: Option<String>,
    /// Namespace of the leader Lease (the operator's own).
    #[arg(long, env = "POD_NAMESPACE", default_value = "default")]
    lease_namespace: String,
    /// Name of the leader Lease.
    #[arg(long, env = "EBB_LEASE_NAME", default_value = "ebb-operator")]
    lease_name: String,
    /// This operator's identity in the Lease (the pod name).
    #[arg(long, env = "POD_NAME")]
    identity: Option<String>,
    /// How long a cold-started compute pod may take to become ready.
    #[arg(long, env = "EBB_START_TIMEOUT", default_value = "120s", value_parser = humantime::parse_duration)]
    start_timeout: Duration,
}

/// Runs the operator until SIGTERM or Ctrl-C (or a lost lease: then it
/// exits non-zero and Kubernetes restarts it as a standby).
pub async fn run(args: OperatorArgs) -> anyhow::Result<()> {
    let client = kube::Client::try_default().await.context("connecting to the Kubernetes API")?;
    let registry = prometheus::Registry::new();
    let metrics = tokio::net::TcpListener::bind(args.metrics_listen).await.with_context(|| format!("cannot listen on {}", args.metrics_listen))?;
    let (stop, stopped) = ebb_common::shutdown::signal();
    tokio::spawn(ebb_common::metrics::serve(metrics, registry.clone(), stopped.wait()));
    let pod = args.identity.clone().map(|name| (args.lease_namespace.clone(), name));
    // Without POD_NAME: the host name and a random suffix (every container's pid is 1).
    let identity = args.identity.unwrap_or_else(|| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname").map(|h| h.trim().to_string()).unwrap_or_else(|_| "ebb-operator".into());
        format!("{host}-{:08x}", rand::random::<u32>())
    });
    let cfg = OperatorConfig {
        settings: Settings {
            image: args.image,
            broker_url: args.broker_url,
            start_timeout: args.start_timeout,
            tick: Duration::from_secs(1),
            storage_url_override: None,
        },
        watch_namespace: args.watch_namespace,
        broker_listen: args.broker_listen,
        lease: (args.lease_namespace, args.lease_name),
        identity,
        pod,
        registry,
    };
    let result = operator::run(client, cfg, crate::shutdown_signal()).await;
    stop.stop();
    result.map_err(|e| anyhow::anyhow!(e))
}
