//! The Kubernetes runtime: computes are pods. The warm pool is a Deployment
//! of unbound pods; claiming one patches its labels with a resourceVersion
//! precondition — of two concurrent claimers exactly one wins, the other
//! gets 409 and tries the next pod — which takes it out of the Deployment's
//! selector (its ReplicaSet starts a replacement) and makes the `Database`
//! its owner. Cold starts create a bare pod from the same template.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::{Pod, PodTemplateSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;

use super::resources::{
    CLAIMED, CLUSTER_LABEL, COMPUTE_CONTAINER, DATABASE_ANNOTATION, DATABASE_LABEL, POOL_LABEL, WARM, label_value,
    selector_string,
};
use crate::runtime::{ComputeInstance, Runtime, RuntimeError};

/// How often a cold start looks whether its pod is ready.
const START_POLL: Duration = Duration::from_millis(200);
/// Deadline of one API call: a hung request must not stall the tick.
const API_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs an API call under [`API_TIMEOUT`].
async fn bounded<T>(what: &str, call: impl std::future::Future<Output = Result<T, kube::Error>>) -> Result<T, kube::Error> {
    match tokio::time::timeout(API_TIMEOUT, call).await {
        Ok(r) => r,
        Err(_) => Err(kube::Error::Service(format!("{what} took over {API_TIMEOUT:?}").into())),
    }
}

/// What the runtime last saw of one compute pod.
#[derive(Debug, Clone)]
struct PodView {
    warm: bool,
    ready: bool,
    terminating: bool,
    /// When it was seen: a refresh must not forget a pod claimed or started
    /// while its list call was under way.
    at: Instant,
}

/// Computes as pods of one `EbbCluster`.
pub struct PodRuntime {
    pods: Api<Pod>,
    cluster: String,
    template: Mutex<PodTemplateSpec>,
    start_timeout: Duration,
    seen: Mutex<HashMap<String, PodView>>,
    /// Pods this runtime claimed or created, and when: not orphans while
    /// their attach may still be under way.
    mine: Mutex<HashMap<String, Instant>>,
    /// Owner reference of each database's `Database` resource.
    owners: Mutex<HashMap<String, OwnerReference>>,
}

impl PodRuntime {
    /// Runs computes in `namespace` for `cluster`, from `template` (see
    /// [`compute_pod_template`](super::resources::compute_pod_template)).
    pub fn new(client: kube::Client, namespace: &str, cluster: &str, template: PodTemplateSpec, start_timeout: Duration) -> Self {
        Self {
            pods: Api::namespaced(client, namespace),
            cluster: cluster.to_string(),
            template: Mutex::new(template),
            start_timeout,
            seen: Mutex::new(HashMap::new()),
            mine: Mutex::new(HashMap::new()),
            owners: Mutex::new(HashMap::new()),
        }
    }

    /// Replaces the template of cold starts (the cluster's spec changed).
    pub fn set_template(&self, template: PodTemplateSpec) {
        *lock(&self.template) = template;
    }

    /// Claimed pods of `database` will be owned by `owner`.
    pub fn set_owner(&self, database: &str, owner: OwnerReference) {
        lock(&self.owners).insert(database.to_string(), owner);
    }

    /// Forgets the owner of `database`.
    pub fn remove_owner(&self, database: &str) {
        lock(&self.owners).remove(database);
    }

    fn compute_selector(&self) -> String {
        selector_string(&BTreeMap::from([
            (CLUSTER_LABEL.to_string(), self.cluster.clone()),
            ("app.kubernetes.io/component".to_string(), "compute".to_string()),
        ]))
    }

    /// The labels, annotation and owner that bind a pod to `database`;
    /// `resource_version` makes the patch conditional.
    fn binding_patch(&self, database: &str, resource_version: Option<&str>) -> serde_json::Value {
        let mut metadata = json!({
            "labels": { POOL_LABEL: CLAIMED, DATABASE_LABEL: label_value(database) },
            "annotations": { DATABASE_ANNOTATION: database },
        });
        if let Some(rv) = resource_version {
            metadata["resourceVersion"] = rv.into();
        }
        if let Some(owner) = lock(&self.owners).get(database) {
            // Replaces the ReplicaSet's reference: the pod left its selector.
            metadata["ownerReferences"] = json!([owner]);
        }
        json!({ "metadata": metadata })
    }

    fn remember(&self, pod: &Pod) {
        lock(&self.seen).insert(pod.name_any(), view(pod));
    }
}

impl PodRuntime {
    /// Lists the cluster's compute pods and updates what
    /// [`is_alive`](Runtime::is_alive) answers from; `None` when the list failed.
    pub async fn observe(&self) -> Option<Vec<Pod>> {
        let began = Instant::now();
        match bounded("listing compute pods", self.pods.list(&ListParams::default().labels(&self.compute_selector()))).await {
            Ok(list) => {
                let mut seen: HashMap<String, PodView> = list.items.iter().map(|p| (p.name_any(), view(p))).collect();
                let mut current = lock(&self.seen);
                // What a claim or start saw after this list began is newer.
                for (name, v) in current.drain() {
                    if v.at > began {
                        seen.insert(name, v);
                    }
                }
                *current = seen;
                Some(list.items)
            }
            Err(e) => {
                tracing::warn!(cluster = %self.cluster, error = %e, "listing compute pods failed; keeping what was seen");
                None
            }
        }
    }

    /// Deletes claimed pods nobody serves with: left by a crash between a
    /// claim or cold start and its attach, by a lost response, or by a
    /// delete that failed. Pods claimed or started here recently are
    /// spared: their attach may still be under way.
    async fn sweep_orphans(&self, pods: &[Pod], tracked: &std::collections::HashSet<String>) {
        let grace = self.start_timeout * 2;
        let orphans: Vec<String> = {
            let mut mine = lock(&self.mine);
            mine.retain(|_, at| at.elapsed() < grace);
            pods.iter()
                .filter(|p| p.labels().get(POOL_LABEL).map(String::as_str) == Some(CLAIMED))
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .map(|p| p.name_any())
                .filter(|name| !tracked.contains(name) && !mine.contains_key(name))
                .collect()
        };
        for name in orphans {
            tracing::warn!(pod = %name, cluster = %self.cluster, "deleting a claimed compute pod no database is served by");
            self.stop(&name).await;
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

fn view(pod: &Pod) -> PodView {
    let phase = pod.status.as_ref().and_then(|s| s.phase.as_deref());
    PodView {
        warm: pod.labels().get(POOL_LABEL).map(String::as_str) == Some(WARM),
        ready: is_ready(pod),
        terminating: pod.metadata.deletion_timestamp.is_some() || matches!(phase, Some("Failed" | "Succeeded")),
        at: Instant::now(),
    }
}

/// Whether the pod's Ready condition is true and it has an IP.
pub fn is_ready(pod: &Pod) -> bool {
    let Some(status) = &pod.status else { return false };
    status.pod_ip.is_some()
        && pod.metadata.deletion_timestamp.is_none()
        && status.conditions.as_ref().is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// The compute's addresses: the pod IP and its container's named ports.
pub fn instance(pod: &Pod) -> Option<ComputeInstance> {
    let ip: IpAddr = pod.status.as_ref()?.pod_ip.as_ref()?.parse().ok()?;
    let container = pod.spec.as_ref()?.containers.iter().find(|c| c.name == COMPUTE_CONTAINER)?;
    let port = |name: &str| {
        container.ports.as_ref()?.iter().find(|p| p.name.as_deref() == Some(name)).and_then(|p| u16::try_from(p.container_port).ok())
    };
    Some(ComputeInstance {
        id: pod.name_any(),
        pg_addr: SocketAddr::new(ip, port("postgres")?),
        control_addr: SocketAddr::new(ip, port("control")?),
    })
}

fn is_conflict(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 409)
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

#[async_trait::async_trait]
impl Runtime for PodRuntime {
    async fn start(&self) -> Result<ComputeInstance, RuntimeError> {
        let template = lock(&self.template).clone();
        let mut meta = template.metadata.unwrap_or_default();
        let mut labels = meta.labels.take().unwrap_or_default();
        // Not warm: the pool Deployment must not adopt it.
        labels.insert(POOL_LABEL.into(), CLAIMED.into());
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-compute-", self.cluster)),
                labels: Some(labels),
                annotations: meta.annotations,
                ..ObjectMeta::default()
            },
            spec: template.spec,
            status: None,
        };
        let created = bounded("creating a pod", self.pods.create(&PostParams::default(), &pod)).await.map_err(|e| RuntimeError::Start(e.to_string()))?;
        let name = created.name_any();
        lock(&self.mine).insert(name.clone(), Instant::now());
        tracing::info!(pod = %name, "cold-starting a compute pod");
        let deadline = Instant::now() + self.start_timeout;
        loop {
            match bounded("reading a pod", self.pods.get_opt(&name)).await {
                Ok(Some(p)) if is_ready(&p) => {
                    self.remember(&p);
                    return instance(&p).ok_or_else(|| RuntimeError::Start(format!("pod {name} has no compute ports")));
                }
                Ok(Some(_)) => {}
                Ok(None) => return Err(RuntimeError::Start(format!("pod {name} disappeared while starting"))),
                Err(e) => tracing::debug!(pod = %name, error = %e, "reading a starting pod failed"),
            }
            if Instant::now() >= deadline {
                self.stop(&name).await;
                return Err(RuntimeError::Start(format!("pod {name} was not ready within {:?}", self.start_timeout)));
            }
            tokio::time::sleep(START_POLL).await;
        }
    }

    async fn stop(&self, id: &str) {
        match bounded("deleting a pod", self.pods.delete(id, &DeleteParams::default())).await {
            Ok(_) => tracing::info!(pod = %id, "compute pod deleted"),
            Err(e) if is_not_found(&e) => {}
            Err(e) => tracing::warn!(pod = %id, error = %e, "deleting a compute pod failed"),
        }
        lock(&self.seen).remove(id);
    }

    fn is_alive(&self, id: &str) -> bool {
        lock(&self.seen).get(id).is_some_and(|v| !v.terminating)
    }

    fn keeps_pool(&self) -> bool {
        true
    }

    async fn claim(&self, database: &str) -> Result<Option<ComputeInstance>, RuntimeError> {
        let selector = format!("{},{POOL_LABEL}={WARM}", self.compute_selector());
        let list = bounded("listing warm pods", self.pods.list(&ListParams::default().labels(&selector)))
            .await
            .map_err(|e| RuntimeError::Start(e.to_string()))?;
        let mut candidates: Vec<Pod> = list.items.into_iter().filter(is_ready).collect();
        // Oldest first: the longest-warm pod has its caches filled.
        candidates.sort_by(|a, b| a.metadata.creation_timestamp.cmp(&b.metadata.creation_timestamp));
        for pod in candidates {
            let name = pod.name_any();
            let Some(instance) = instance(&pod) else { continue };
            let patch = self.binding_patch(database, pod.resource_version().as_deref());
            match bounded("claiming a pod", self.pods.patch(&name, &PatchParams::default(), &Patch::Merge(&patch))).await {
                Ok(claimed) => {
                    lock(&self.mine).insert(name.clone(), Instant::now());
                    tracing::info!(pod = %name, %database, "claimed a warm compute pod");
                    self.remember(&claimed);
                    return Ok(Some(instance));
                }
                // Another claimer won it (or it changed): try the next.
                Err(e) if is_conflict(&e) || is_not_found(&e) => continue,
                Err(e) => return Err(RuntimeError::Start(format!("claiming pod {name}: {e}"))),
            }
        }
        Ok(None)
    }

    fn warm_ready(&self) -> usize {
        lock(&self.seen).values().filter(|v| v.warm && v.ready && !v.terminating).count()
    }

    async fn bound(&self, id: &str, database: &str) {
        let patch = self.binding_patch(database, None);
        if let Err(e) = bounded("labelling a pod", self.pods.patch(id, &PatchParams::default(), &Patch::Merge(&patch))).await {
            tracing::warn!(pod = %id, %database, error = %e, "labelling a cold-started compute failed");
        }
    }

    async fn refresh(&self, tracked: &std::collections::HashSet<String>) {
        if let Some(pods) = self.observe().await {
            self.sweep_orphans(&pods, tracked).await;
        }
    }

}
