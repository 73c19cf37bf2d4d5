//! Reconciles an `EbbCluster`: applies its storage, proxy and warm-pool
//! workloads with server-side apply (owned by the cluster, so deleting it
//! deletes them), runs its controller, and reports status, conditions and
//! events. Its finalizer stops the controller and the computes it bound.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::{Pod, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::conditions::{self, READY};
use super::context::{Context, Error, key};
use super::crd::{EbbCluster, EbbClusterStatus};
use super::resources::{self, CLUSTER_LABEL, FIELD_MANAGER};

/// Finalizer of `EbbCluster`s.
pub const FINALIZER: &str = "ebb.dev/cluster";

/// Reconciles one `EbbCluster`.
pub async fn reconcile(cluster: Arc<EbbCluster>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = cluster.namespace().ok_or_else(|| Error::Invalid("EbbCluster without namespace".into()))?;
    let api: Api<EbbCluster> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, cluster, |event| async {
        match event {
            Finalizer::Apply(c) => apply(&c, &ctx).await,
            Finalizer::Cleanup(c) => cleanup(&c, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

/// What the cluster's children report.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct ChildrenReady {
    /// Ready storage pods.
    pub storage: i32,
    /// Ready proxy pods.
    pub proxy: i32,
    /// Ready warm compute pods.
    pub warm: i32,
}

/// Phase and Ready condition from what the children report (pure).
pub fn readiness(ready: ChildrenReady) -> (&'static str, bool, &'static str, String) {
    match ready {
        ChildrenReady { storage: 0, .. } => ("Pending", false, "StorageNotReady", "waiting for the storage pod to be ready".into()),
        ChildrenReady { proxy: 0, .. } => ("Pending", false, "ProxyNotReady", "waiting for a proxy pod to be ready".into()),
        r => ("Ready", true, "Ready", format!("storage ready, {} proxies, {} warm computes", r.proxy, r.warm)),
    }
}

/// Applies every child with server-side apply.
async fn apply_children(cluster: &EbbCluster, ctx: &Context) -> Result<(), Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for child in resources::children(cluster, &ctx.settings.image, &ctx.settings.broker_url)? {
        let patch = Patch::Apply(&child.object);
        let applied = match child.kind {
            "Service" => Api::<Service>::namespaced(ctx.client.clone(), &ns).patch(&child.name, &params, &patch).await.map(drop),
            "StatefulSet" => Api::<StatefulSet>::namespaced(ctx.client.clone(), &ns).patch(&child.name, &params, &patch).await.map(drop),
            "Deployment" => Api::<Deployment>::namespaced(ctx.client.clone(), &ns).patch(&child.name, &params, &patch).await.map(drop),
            other => return Err(Error::Invalid(format!("no API for child kind {other}"))),
        };
        applied.map_err(|e| Error::Apply(format!("applying {} {}: {e}", child.kind, child.name)))?;
    }
    Ok(())
}

async fn apply(cluster: &EbbCluster, ctx: &Context) -> Result<Action, Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let name = cluster.name_any();
    if let Err(e) = apply_children(cluster, ctx).await {
        // Visible where people look: the status and an event.
        let mut status = cluster.status.clone().unwrap_or_default();
        if conditions::set(&mut status.conditions, READY, false, "ApplyFailed", &e.to_string(), cluster.metadata.generation, Timestamp::now()) {
            ctx.event(cluster, true, "ApplyFailed", "Apply", e.to_string()).await;
            status.phase = Some("Failed".into());
            let api: Api<EbbCluster> = Api::namespaced(ctx.client.clone(), &ns);
            api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
        }
        return Err(e);
    }
    ctx.ensure_cluster(cluster).await?;

    let sts: Api<StatefulSet> = Api::namespaced(ctx.client.clone(), &ns);
    let deploys: Api<Deployment> = Api::namespaced(ctx.client.clone(), &ns);
    let ready_of = |d: Option<Deployment>| d.and_then(|d| d.status).and_then(|s| s.ready_replicas).unwrap_or(0);
    let ready = ChildrenReady {
        storage: sts.get_opt(&resources::storage_name(&name)).await?.and_then(|s| s.status).and_then(|s| s.ready_replicas).unwrap_or(0),
        proxy: ready_of(deploys.get_opt(&resources::proxy_name(&name)).await?),
        warm: ready_of(deploys.get_opt(&resources::pool_name(&name)).await?),
    };
    let (phase, is_ready, reason, message) = readiness(ready);
    let generation = cluster.metadata.generation;
    let mut status = cluster.status.clone().unwrap_or_default();
    let first_of_generation = status.observed_generation != generation;
    let became_ready = is_ready && !conditions::is_true(&status.conditions, READY);
    conditions::set(&mut status.conditions, READY, is_ready, reason, &message, generation, Timestamp::now());
    let new = EbbClusterStatus {
        observed_generation: generation,
        phase: Some(phase.into()),
        conditions: status.conditions,
        storage_ready_replicas: ready.storage,
        proxy_ready_replicas: ready.proxy,
        warm_pods: ready.warm,
        endpoint: Some(resources::endpoint(cluster)),
    };
    if cluster.status.as_ref() != Some(&new) {
        let api: Api<EbbCluster> = Api::namespaced(ctx.client.clone(), &ns);
        api.patch_status(&name, &PatchParams::default(), &Patch::Merge(json!({ "status": new }))).await?;
    }
    if first_of_generation {
        let note = format!("applied storage, proxy and a warm pool of {} (generation {})", cluster.spec.pool.size, generation.unwrap_or(0));
        ctx.event(cluster, false, "Applied", "Apply", note).await;
    }
    if became_ready {
        ctx.event(cluster, false, "Ready", "Reconcile", format!("clients can connect to {}", resources::endpoint(cluster))).await;
    }
    // Children changes trigger reconciles too; this refreshes the status.
    Ok(Action::requeue(Duration::from_secs(if is_ready { 60 } else { 5 })))
}

async fn cleanup(cluster: &EbbCluster, ctx: &Context) -> Result<Action, Error> {
    let ns = cluster.namespace().unwrap_or_default();
    let k = key(&ns, &cluster.name_any());
    ctx.remove_cluster(&k).await;
    // Claimed computes are owned by their Databases, not the cluster, and
    // this operator may not know them all (it restarted): go by label.
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);
    let selector = format!("{CLUSTER_LABEL}={},app.kubernetes.io/component=compute", cluster.name_any());
    for pod in pods.list(&ListParams::default().labels(&selector)).await?.items {
        if pod.metadata.deletion_timestamp.is_none() {
            pods.delete(&pod.name_any(), &DeleteParams::default()).await?;
        }
    }
    ctx.event(cluster, false, "Deleting", "Delete", "stopped the controller and its computes; workloads follow by owner references".into())
        .await;
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ready_needs_storage_and_a_proxy() {
        assert_eq!(readiness(ChildrenReady { storage: 0, proxy: 2, warm: 2 }).2, "StorageNotReady");
        assert_eq!(readiness(ChildrenReady { storage: 1, proxy: 0, warm: 2 }).2, "ProxyNotReady");
        let (phase, ready, _, _) = readiness(ChildrenReady { storage: 1, proxy: 1, warm: 0 });
        assert_eq!((phase, ready), ("Ready", true));
    }
}
