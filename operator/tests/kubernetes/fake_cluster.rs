//! The rest of a Kubernetes cluster, for the operator's tests: real ebb
//! storage in this process, a kubelet that runs each compute pod as a real
//! in-process compute on a loopback IP of its own and marks it Ready once
//! its control port answers (its readiness probe), a Deployment controller
//! that keeps each Deployment's matching pods at its replica count (as its
//! ReplicaSet would: a claimed pod leaves the selector and is replaced), and
//! a StatefulSet controller that reports its replicas ready.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;

use ebb_compute::server::ComputeConfig;
use ebb_storage::engine::EngineConfig;
use ebb_storage::server::ServerConfig;
use k8s_openapi::api::apps::v1::{Deployment, StatefulSet};
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams, Preconditions};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// A running fake cluster; everything stops when it is dropped.
pub struct FakeCluster {
    /// The storage every compute and the operator use.
    pub storage_url: String,
    stop: watch::Sender<bool>,
    restarts: tokio::sync::mpsc::UnboundedSender<String>,
    _dir: tempfile::TempDir,
}

impl Drop for FakeCluster {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn stopped(rx: &watch::Receiver<bool>) -> impl std::future::Future<Output = ()> + Send + 'static {
    let mut rx = rx.clone();
    async move {
        let _ = rx.wait_for(|s| *s).await;
    }
}

/// A loopback IP no other test process uses: 127.<pid>.<n>.
fn next_ip() -> IpAddr {
    static NEXT: AtomicU8 = AtomicU8::new(2);
    let pid = std::process::id();
    IpAddr::V4(Ipv4Addr::new(127, (pid >> 8) as u8, pid as u8, NEXT.fetch_add(1, Ordering::SeqCst)))
}

impl FakeCluster {
    /// Starts storage, the kubelet and the workload controllers against `client`.
    pub async fn start(client: kube::Client) -> FakeCluster {
        let dir = tempfile::tempdir().expect("tempdir");
        let (stop, rx) = watch::channel(false);
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind storage");
        let addr = listener.local_addr().expect("storage addr");
        let cfg = ServerConfig {
            listen: addr,
            object_store: format!("file://{}", dir.path().join("objects").display()),
            cache_dir: dir.path().join("cache"),
            metrics_listen: None,
            engine: EngineConfig::default(),
            registry: None,
        };
        tokio::spawn(ebb_storage::server::run_on(listener, cfg, stopped(&rx)));
        let storage_url = format!("http://{addr}");
        let (restarts, restart_rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(kubelet(client.clone(), storage_url.clone(), rx.clone(), restart_rx));
        tokio::spawn(workload_controllers(client, rx));
        FakeCluster { storage_url, stop, restarts, _dir: dir }
    }

    /// Restarts the container of compute pod `name` in place, as after a
    /// crash: same IP and ports, a fresh (unbound) compute.
    pub fn restart_container(&self, name: &str) {
        let _ = self.restarts.send(name.to_string());
    }
}

/// One compute the kubelet runs.
struct Running {
    name: String,
    addr: (IpAddr, u16, u16),
    stop: watch::Sender<bool>,
}

/// Starts an in-process compute on `ip` and waits until its control port
/// answers (the readiness probe); `None` if the ports cannot be had.
async fn run_compute(storage_url: &str, ip: IpAddr, pg: u16, control: u16) -> Option<watch::Sender<bool>> {
    let mut bind_tries = 0;
    let listener = loop {
        match TcpListener::bind(SocketAddr::new(ip, pg)).await {
            Ok(l) => break l,
            Err(_) if bind_tries < 100 => {
                bind_tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(_) => return None,
        }
    };
    let (tx, rx) = watch::channel(false);
    let cfg = ComputeConfig { listen: SocketAddr::new(ip, pg), storage: storage_url.to_string(), database: None, control_listen: Some(SocketAddr::new(ip, control)), metrics_listen: None, row_cache_bytes: 0 };
    tokio::spawn(ebb_compute::server::run_on(listener, cfg, stopped(&rx)));
    let mut probes = 0;
    while tokio::net::TcpStream::connect(SocketAddr::new(ip, control)).await.is_err() && probes < 200 {
        probes += 1;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Some(tx)
}

fn named_port(pod: &Pod, name: &str) -> Option<u16> {
    let c = pod.spec.as_ref()?.containers.first()?;
    c.ports.as_ref()?.iter().find(|p| p.name.as_deref() == Some(name)).map(|p| p.container_port as u16)
}

fn is_compute(pod: &Pod) -> bool {
    pod.labels().get("app.kubernetes.io/component").map(String::as_str) == Some("compute")
}

/// Runs compute pods as in-process computes and reports pods ready.
async fn kubelet(client: kube::Client, storage_url: String, stop: watch::Receiver<bool>, mut restarts: tokio::sync::mpsc::UnboundedReceiver<String>) {
    let pods: Api<Pod> = Api::all(client.clone());
    let mut running: HashMap<String, Running> = HashMap::new();
    while !*stop.borrow() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        while let Ok(name) = restarts.try_recv() {
            if let Some(r) = running.values_mut().find(|r| r.name == name) {
                let _ = r.stop.send(true);
                let (ip, pg, control) = r.addr;
                if let Some(tx) = run_compute(&storage_url, ip, pg, control).await {
                    r.stop = tx;
                }
            }
        }
        let Ok(list) = pods.list(&ListParams::default()).await else { continue };
        let alive: Vec<String> = list.items.iter().filter(|p| p.metadata.deletion_timestamp.is_none()).map(|p| p.uid().unwrap_or_default()).collect();
        running.retain(|uid, r| {
            let keep = alive.contains(uid);
            if !keep {
                let _ = r.stop.send(true);
            }
            keep
        });
        for pod in list.items {
            let uid = pod.uid().unwrap_or_default();
            if pod.metadata.deletion_timestamp.is_some() || pod.status.as_ref().and_then(|s| s.pod_ip.as_ref()).is_some() || running.contains_key(&uid) {
                continue;
            }
            let ns = pod.namespace().unwrap_or_default();
            let ip = if is_compute(&pod) {
                let (Some(pg), Some(control)) = (named_port(&pod, "postgres"), named_port(&pod, "control")) else { continue };
                let ip = next_ip();
                let Some(stop) = run_compute(&storage_url, ip, pg, control).await else { continue };
                running.insert(uid, Running { name: pod.name_any(), addr: (ip, pg, control), stop });
                ip
            } else {
                IpAddr::V4(Ipv4Addr::LOCALHOST)
            };
            let status = json!({ "status": {
                "phase": "Running",
                "podIP": ip.to_string(),
                "conditions": [{ "type": "Ready", "status": "True" }],
            }});
            let api: Api<Pod> = Api::namespaced(client.clone(), &ns);
            let _ = api.patch_status(&pod.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await;
        }
    }
    for (_, r) in running {
        let _ = r.stop.send(true);
    }
}

fn matches(labels: &BTreeMap<String, String>, selector: &BTreeMap<String, String>) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

fn pod_ready(p: &Pod) -> bool {
    p.status.as_ref().and_then(|s| s.conditions.as_ref()).is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

/// Keeps Deployments at their replica count and reports StatefulSets ready.
async fn workload_controllers(client: kube::Client, stop: watch::Receiver<bool>) {
    let deployments: Api<Deployment> = Api::all(client.clone());
    let statefulsets: Api<StatefulSet> = Api::all(client.clone());
    while !*stop.borrow() {
        tokio::time::sleep(Duration::from_millis(50)).await;
        if let Ok(list) = deployments.list(&ListParams::default()).await {
            for d in list.items {
                let _ = reconcile_deployment(&client, &d).await;
            }
        }
        if let Ok(list) = statefulsets.list(&ListParams::default()).await {
            for s in list.items {
                let replicas = s.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1);
                if s.status.as_ref().and_then(|st| st.ready_replicas) != Some(replicas) {
                    let api: Api<StatefulSet> = Api::namespaced(client.clone(), &s.namespace().unwrap_or_default());
                    let status = json!({ "status": { "replicas": replicas, "readyReplicas": replicas } });
                    let _ = api.patch_status(&s.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await;
                }
            }
        }
    }
}

async fn reconcile_deployment(client: &kube::Client, d: &Deployment) -> Result<(), kube::Error> {
    let ns = d.namespace().unwrap_or_default();
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let Some(spec) = &d.spec else { return Ok(()) };
    let selector = spec.selector.match_labels.clone().unwrap_or_default();
    let want = spec.replicas.unwrap_or(1);
    let mine: Vec<Pod> = pods
        .list(&ListParams::default())
        .await?
        .items
        .into_iter()
        .filter(|p| p.metadata.deletion_timestamp.is_none() && matches(p.labels(), &selector))
        .collect();
    let have = mine.len() as i32;
    for _ in have..want {
        let template = spec.template.clone();
        let meta = template.metadata.unwrap_or_default();
        let pod = Pod {
            metadata: ObjectMeta {
                generate_name: Some(format!("{}-", d.name_any())),
                labels: meta.labels,
                annotations: meta.annotations,
                owner_references: d.controller_owner_ref(&()).map(|o| vec![o]),
                ..ObjectMeta::default()
            },
            spec: template.spec,
            status: None,
        };
        pods.create(&PostParams::default(), &pod).await?;
    }
    for extra in mine.iter().skip(want.max(0) as usize) {
        // Only as listed: a pod claimed since (it left the selector) is no
        // longer the Deployment's to delete.
        let unchanged = Preconditions { resource_version: extra.resource_version(), uid: None };
        match pods.delete(&extra.name_any(), &DeleteParams { preconditions: Some(unchanged), ..DeleteParams::default() }).await {
            Ok(_) => {}
            Err(kube::Error::Api(e)) if e.code == 409 || e.code == 404 => {}
            Err(e) => return Err(e),
        }
    }
    let ready = mine.iter().filter(|p| pod_ready(p)).count() as i32;
    if d.status.as_ref().and_then(|s| s.ready_replicas) != Some(ready) || d.status.as_ref().and_then(|s| s.replicas) != Some(have) {
        let api: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let status = json!({ "status": { "replicas": have, "readyReplicas": ready, "availableReplicas": ready } });
        api.patch_status(&d.name_any(), &PatchParams::default(), &Patch::Merge(&status)).await?;
    }
    Ok(())
}
