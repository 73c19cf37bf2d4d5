//! What the reconcilers share: the API client, settings, the event
//! recorder, and one running [`Controller`] per `EbbCluster` (with its pod
//! runtime), which the broker hands to proxies.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::ListParams;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Api, Resource, ResourceExt};

use super::crd::EbbCluster;
use super::pod_runtime::{PodRuntime, instance, is_ready};
use super::resources::{self, CLAIMED, CLUSTER_LABEL, DATABASE_ANNOTATION, POOL_LABEL};
use super::storage_admin::StorageAdmin;
use crate::controller::{Controller, ControllerConfig};

/// A reconciler failure (retried with backoff).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("encoding an object: {0}")]
    Json(#[from] serde_json::Error),
    #[error(transparent)]
    Storage(#[from] super::storage_admin::StorageAdminError),
    #[error("invalid resource: {0}")]
    Invalid(String),
    #[error("{0}")]
    Apply(String),
    #[error("finalizer: {0}")]
    Finalizer(String),
}

/// Settings of the operator.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Image of the workloads of clusters that name none.
    pub image: String,
    /// URL of the broker that proxies ask for computes.
    pub broker_url: String,
    /// How long a cold-started compute pod may take to become ready.
    pub start_timeout: Duration,
    /// The controller tick.
    pub tick: Duration,
    /// Test hook: the storage URL of every cluster (instead of its Service).
    pub storage_url_override: Option<String>,
}

/// A cluster's running controller.
pub struct ClusterHandle {
    /// Pool claims, scaling and idling of the cluster's databases.
    pub controller: Arc<Controller>,
    /// Its compute pods.
    pub runtime: Arc<PodRuntime>,
    /// Its storage, on one channel kept across reconciles.
    pub storage: Arc<StorageAdmin>,
    stop: tokio::sync::watch::Sender<bool>,
}

/// Shared by every reconcile.
pub struct Context {
    /// The Kubernetes API.
    pub client: kube::Client,
    /// The operator's settings.
    pub settings: Settings,
    /// Publishes Kubernetes events.
    pub recorder: Recorder,
    clusters: Mutex<HashMap<String, Arc<ClusterHandle>>>,
    /// Owner-secret resourceVersion last applied per database resource.
    pub applied_owner_secrets: Mutex<HashMap<String, String>>,
}

impl crate::broker::Controllers for Context {
    fn controller(&self, cluster: &str) -> Option<Arc<Controller>> {
        self.cluster(cluster).map(|h| h.controller.clone())
    }
}

/// `namespace/name`.
pub fn key(namespace: &str, name: &str) -> String {
    format!("{namespace}/{name}")
}

impl Context {
    /// A context; events are reported as `ebb-operator` from `instance`.
    pub fn new(client: kube::Client, settings: Settings, instance: Option<String>) -> Arc<Self> {
        let reporter = Reporter { controller: resources::FIELD_MANAGER.into(), instance };
        Arc::new(Self {
            recorder: Recorder::new(client.clone(), reporter),
            client,
            settings,
            clusters: Mutex::new(HashMap::new()),
            applied_owner_secrets: Mutex::new(HashMap::new()),
        })
    }

    fn clusters(&self) -> MutexGuard<'_, HashMap<String, Arc<ClusterHandle>>> {
        self.clusters.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The storage URL of `cluster`.
    pub fn storage_url(&self, cluster: &EbbCluster) -> String {
        self.settings.storage_url_override.clone().unwrap_or_else(|| resources::storage_url(cluster))
    }

    /// Every running cluster controller, by `namespace/name`.
    pub fn cluster_handles(&self) -> Vec<(String, Arc<ClusterHandle>)> {
        self.clusters().iter().map(|(k, h)| (k.clone(), h.clone())).collect()
    }

    /// The running controller of cluster `namespace/name`.
    pub fn cluster(&self, key: &str) -> Option<Arc<ClusterHandle>> {
        self.clusters().get(key).cloned()
    }

    /// Starts the controller of `cluster` unless it runs, adopting compute
    /// pods already bound to databases; keeps its template current.
    pub async fn ensure_cluster(&self, cluster: &EbbCluster) -> Result<Arc<ClusterHandle>, Error> {
        let ns = cluster.namespace().ok_or_else(|| Error::Invalid("EbbCluster without namespace".into()))?;
        let name = cluster.name_any();
        let template = resources::compute_pod_template(cluster, &self.settings.image);
        if let Some(h) = self.cluster(&key(&ns, &name)) {
            h.runtime.set_template(template);
            h.controller.set_pool_size(usize::try_from(cluster.spec.pool.size).unwrap_or(0));
            return Ok(h);
        }
        let runtime = Arc::new(PodRuntime::new(self.client.clone(), &ns, &name, template, self.settings.start_timeout));
        let storage = Arc::new(StorageAdmin::new(&self.storage_url(cluster))?);
        let cfg = ControllerConfig {
            pool_size: usize::try_from(cluster.spec.pool.size).unwrap_or(0),
            tick: self.settings.tick,
            configured_only: true,
            ..ControllerConfig::default()
        };
        let controller = Controller::new(runtime.clone(), cfg);
        // See the pods first: adopted computes must look alive to the first tick.
        runtime.observe().await;
        self.adopt_bound_pods(&ns, &name, &controller).await?;
        let (stop, mut stopped) = tokio::sync::watch::channel(false);
        tokio::spawn(controller.clone().run_ticks(async move {
            let _ = stopped.wait_for(|s| *s).await;
        }));
        let handle = Arc::new(ClusterHandle { controller, runtime, storage, stop });
        // Another reconcile may have raced us here: keep the first.
        let mut clusters = self.clusters();
        let entry = clusters.entry(key(&ns, &name)).or_insert_with(|| handle.clone());
        if !Arc::ptr_eq(entry, &handle) {
            let _ = handle.stop.send(true);
        }
        Ok(entry.clone())
    }

    async fn adopt_bound_pods(&self, ns: &str, cluster: &str, controller: &Controller) -> Result<(), Error> {
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let selector = format!("{CLUSTER_LABEL}={cluster},{POOL_LABEL}={CLAIMED}");
        for pod in pods.list(&ListParams::default().labels(&selector)).await?.items {
            let (Some(database), Some(inst)) = (pod.annotations().get(DATABASE_ANNOTATION).cloned(), instance(&pod)) else { continue };
            if !is_ready(&pod) {
                continue;
            }
            if let Err(e) = controller.adopt(&database, inst).await {
                tracing::warn!(pod = %pod.name_any(), error = %e, "could not adopt a claimed compute; it will be deleted");
            }
        }
        Ok(())
    }

    /// Stops every cluster's tick, leaving its computes running (stepping
    /// down: the next leader adopts them). Done first, before anything else
    /// stops, so a former leader makes no more changes.
    pub fn stop_ticks(&self) {
        for h in self.clusters().values() {
            let _ = h.stop.send(true);
        }
    }

    /// Stops the controller of a deleted cluster and deletes its bound computes.
    pub async fn remove_cluster(&self, key: &str) {
        let handle = self.clusters().remove(key);
        if let Some(h) = handle {
            let _ = h.stop.send(true);
            h.controller.stop_all().await;
        }
    }

    /// Publishes an event about `obj`; failures are only logged.
    pub async fn event<K: Resource<DynamicType = ()>>(&self, obj: &K, warning: bool, reason: &str, action: &str, note: String) {
        let ev = Event {
            type_: if warning { EventType::Warning } else { EventType::Normal },
            reason: reason.into(),
            note: Some(note),
            action: action.into(),
            secondary: None,
        };
        if let Err(e) = self.recorder.publish(&ev, &obj.object_ref(&())).await {
            tracing::warn!(reason, error = %e, "publishing an event failed");
        }
    }
}
