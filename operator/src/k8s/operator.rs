//! `ebb operator`: waits to lead, then runs the `EbbCluster` and `Database`
//! reconcilers and the broker until shutdown or until it loses the lease.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Service;
use kube::Api;
use kube::runtime::controller::{Action, Controller};
use kube::runtime::watcher;

use crate::broker::Broker;
use super::context::{Context, Error, Settings};
use super::crd::{Database, EbbCluster};
use super::leader::Leader;
use super::{cluster_reconciler, database_reconciler};
use crate::metrics::ControllerMetrics;

/// Where the operator runs and what it watches.
#[derive(Debug, Clone)]
pub struct OperatorConfig {
    /// What the reconcilers use.
    pub settings: Settings,
    /// Only this namespace; all when `None`.
    pub watch_namespace: Option<String>,
    /// Where the broker listens.
    pub broker_listen: SocketAddr,
    /// The leader Lease: (namespace, name), and this operator's identity.
    pub lease: (String, String),
    /// This operator's name in the Lease (its pod name).
    pub identity: String,
    /// This operator's own pod (namespace, name), when it runs in one: the
    /// leader labels it so that the broker Service only selects the leader.
    pub pod: Option<(String, String)>,
    /// Where the controller metrics go.
    pub registry: prometheus::Registry,
}

/// Label the leading operator's pod carries (`"true"`); the broker
/// Service selects on it, so proxies only reach the leader.
pub const LEADER_LABEL: &str = "ebb.dev/leader";

/// Sets [`LEADER_LABEL`] on the operator's own pod.
async fn label_leader(client: &kube::Client, pod: &Option<(String, String)>, leading: bool) -> Result<(), String> {
    let Some((ns, name)) = pod else { return Ok(()) };
    let pods: Api<k8s_openapi::api::core::v1::Pod> = Api::namespaced(client.clone(), ns);
    let patch = serde_json::json!({ "metadata": { "labels": { LEADER_LABEL: leading.to_string() } } });
    pods.patch(name, &kube::api::PatchParams::default(), &kube::api::Patch::Merge(patch))
        .await
        .map(|_| ())
        .map_err(|e| format!("labelling pod {ns}/{name}: {e}"))
}

/// Samples every cluster's controller once a second.
async fn sample_metrics(ctx: Arc<Context>, metrics: ControllerMetrics, stop: impl Future<Output = ()>) {
    tokio::pin!(stop);
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = &mut stop => return,
        }
        let handles = ctx.cluster_handles();
        metrics.sample(handles.iter().map(|(k, h)| (k.as_str(), &*h.controller)));
    }
}

fn api<K>(client: &kube::Client, ns: &Option<String>) -> Api<K>
where
    K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope> + Clone + serde::de::DeserializeOwned + std::fmt::Debug,
    K::DynamicType: Default,
{
    match ns {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

fn error_policy<K>(_obj: Arc<K>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(%error, "reconcile failed; retrying");
    Action::requeue(Duration::from_secs(5))
}

/// Runs the reconcilers (no leader election): for tests and for [`run`].
pub async fn run_reconcilers(ctx: Arc<Context>, watch_namespace: Option<String>, shutdown: impl Future<Output = ()> + Send + 'static) {
    let client = ctx.client.clone();
    let (stop, stopped) = ebb_common::shutdown::signal();
    let cfg = watcher::Config::default();
    let clusters = Controller::new(api::<EbbCluster>(&client, &watch_namespace), cfg.clone())
        .owns(api::<StatefulSet>(&client, &watch_namespace), cfg.clone())
        .owns(api::<Deployment>(&client, &watch_namespace), cfg.clone())
        .owns(api::<Service>(&client, &watch_namespace), cfg.clone())
        .graceful_shutdown_on(stopped.wait())
        .run(cluster_reconciler::reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "cluster reconcile");
            }
        });
    let databases = Controller::new(api::<Database>(&client, &watch_namespace), cfg)
        .graceful_shutdown_on(stopped.wait())
        .run(database_reconciler::reconcile, error_policy, ctx.clone())
        .for_each(|r| async move {
            if let Err(e) = r {
                tracing::debug!(error = %e, "database reconcile");
            }
        });
    tokio::spawn(async move {
        shutdown.await;
        stop.stop();
    });
    futures::join!(clusters, databases);
}

/// Runs the operator until `shutdown` (or until it loses the lease, which
/// is an error: the process should exit and come back as a standby).
pub async fn run(client: kube::Client, cfg: OperatorConfig, shutdown: impl Future<Output = ()> + Send + 'static) -> Result<(), String> {
    let leader = Leader::new(client.clone(), &cfg.lease.0, &cfg.lease.1, &cfg.identity);
    // A restarted container keeps its pod's labels: not the leader (yet).
    label_leader(&client, &cfg.pod, false).await?;
    tokio::pin!(shutdown);
    tokio::select! {
        _ = leader.acquire() => {}
        _ = &mut shutdown => return Ok(()),
    }
    let metrics = ControllerMetrics::new(&cfg.registry).map_err(|e| format!("registering metrics: {e}"))?;
    let ctx = Context::new(client.clone(), cfg.settings.clone(), Some(cfg.identity.clone()));
    let listener = tokio::net::TcpListener::bind(cfg.broker_listen).await.map_err(|e| format!("broker listen {}: {e}", cfg.broker_listen))?;
    tracing::info!(addr = %cfg.broker_listen, "broker listening");
    let (stop, stopped) = ebb_common::shutdown::signal();
    let broker = tonic::transport::Server::builder()
        .add_service(Broker::service(ctx.clone()))
        .serve_with_incoming_shutdown(ebb_common::net::nodelay_incoming(listener), stopped.wait());
    let broker = tokio::spawn(broker);
    tokio::spawn(sample_metrics(ctx.clone(), metrics, stopped.wait()));
    let reconcilers = tokio::spawn(run_reconcilers(ctx.clone(), cfg.watch_namespace.clone(), stopped.wait()));
    label_leader(&client, &cfg.pod, true).await?;
    let outcome = tokio::select! {
        _ = &mut shutdown => Ok(()),
        _ = leader.keep() => Err("lost the leader lease".to_string()),
    };
    // No more scaling, claims or deletions from here on.
    ctx.stop_ticks();
    stop.stop();
    let _ = reconcilers.await;
    // A reconcile that was under way may have started a cluster's ticks.
    ctx.stop_ticks();
    match broker.await {
        Ok(Err(e)) => tracing::warn!(error = %e, "broker stopped with an error"),
        Err(e) => tracing::warn!(error = %e, "broker task failed"),
        Ok(Ok(())) => {}
    }
    if outcome.is_ok() {
        if let Err(e) = label_leader(&client, &cfg.pod, false).await {
            tracing::warn!(error = %e, "unlabelling this pod failed");
        }
        if let Err(e) = leader.release().await {
            tracing::warn!(error = %e, "releasing the lease failed; a standby takes over when it expires");
        }
    }
    outcome
}
