//! The operator against the fake API and the fake cluster: what an
//! `EbbCluster` and a `Database` become, how warm pods are claimed, scaled
//! in and deleted, and what status, conditions and events say.

use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use ebb_operator::control_client::ControlClient;
use ebb_operator::k8s::context::{Context, Settings};
use ebb_operator::k8s::crd::{Database, DatabaseSpec, DatabaseStatus, DeletionPolicy, EbbCluster, EbbClusterSpec, OwnerRole, SecretKey};
use ebb_operator::k8s::operator::run_reconcilers;
use ebb_operator::k8s::pod_runtime::{PodRuntime, instance};
use ebb_operator::k8s::resources::{self, CLAIMED, POOL_LABEL, WARM};
use ebb_operator::runtime::Runtime;
use ebb_proto::storage::storage_client::StorageClient;
use ebb_proto::storage::{GetRoleRequest, ListDatabasesRequest};
use k8s_openapi::api::core::v1::{Pod, Secret};
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::{Api, ResourceExt};
use serde_json::json;
use tokio::sync::watch;

use crate::fake_api::FakeApi;
use crate::fake_cluster::FakeCluster;

/// Polls `check` until it returns `Some`, failing after `secs` with `what`.
async fn eventually<T, F, Fut>(what: &str, secs: u64, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = check().await {
            return v;
        }
        assert!(Instant::now() < deadline, "timed out after {secs}s waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

struct Harness {
    api: FakeApi,
    cluster: FakeCluster,
    ctx: Arc<Context>,
    stop: watch::Sender<bool>,
}

impl Drop for Harness {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

impl Harness {
    /// The fake API and cluster, with the reconcilers running.
    async fn start() -> Harness {
        // Logs show with --nocapture (RUST_LOG=debug for more).
        let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).with_test_writer().try_init();
        let api = FakeApi::start().await;
        let cluster = FakeCluster::start(api.client()).await;
        let settings = Settings {
            image: "ebb:test".into(),
            broker_url: "http://ebb-operator.ebb-system.svc:5436".into(),
            start_timeout: Duration::from_secs(20),
            tick: Duration::from_millis(200),
            storage_url_override: Some(cluster.storage_url.clone()),
        };
        let ctx = Context::new(api.client(), settings, Some("test-operator".into()));
        let (stop, rx) = watch::channel(false);
        let mut rx2 = rx.clone();
        tokio::spawn(run_reconcilers(ctx.clone(), None, async move {
            let _ = rx2.wait_for(|s| *s).await;
        }));
        Harness { api, cluster, ctx, stop }
    }

    fn client(&self) -> kube::Client {
        self.api.client()
    }

    async fn create_cluster(&self, pool: i32) -> EbbCluster {
        let mut spec = EbbClusterSpec::new("s3://bucket/ebb");
        spec.object_store.credentials_secret = Some("s3-credentials".into());
        spec.pool.size = pool;
        let api: Api<EbbCluster> = Api::namespaced(self.client(), "default");
        api.create(&PostParams::default(), &EbbCluster::new("main", spec)).await.expect("create EbbCluster")
    }

    async fn create_database(&self, name: &str, edit: impl FnOnce(&mut DatabaseSpec)) -> Database {
        let mut spec = DatabaseSpec::new("main");
        edit(&mut spec);
        let api: Api<Database> = Api::namespaced(self.client(), "default");
        api.create(&PostParams::default(), &Database::new(name, spec)).await.expect("create Database")
    }

    async fn database(&self, name: &str) -> Option<Database> {
        Api::<Database>::namespaced(self.client(), "default").get_opt(name).await.expect("get Database")
    }

    /// The status of `Database` `name` once its phase is `phase`.
    async fn database_in_phase(&self, name: &str, phase: &str) -> DatabaseStatus {
        eventually(&format!("{name} {phase}"), 20, || async { self.database(name).await?.status.filter(|s| s.phase.as_deref() == Some(phase)) }).await
    }

    async fn pods(&self, selector: &str) -> Vec<Pod> {
        let api: Api<Pod> = Api::namespaced(self.client(), "default");
        api.list(&ListParams::default().labels(selector)).await.expect("list pods").items.into_iter().filter(|p| p.metadata.deletion_timestamp.is_none()).collect()
    }

    async fn storage_databases(&self) -> Vec<String> {
        let mut c = StorageClient::connect(self.cluster.storage_url.clone()).await.expect("storage");
        c.list_databases(ListDatabasesRequest {}).await.expect("list").into_inner().databases.into_iter().map(|d| d.name).collect()
    }

    /// Waits for the cluster's controller and a full warm pool.
    async fn ready_cluster(&self, pool: usize) {
        eventually("the cluster to be Ready", 30, || async {
            let c = Api::<EbbCluster>::namespaced(self.client(), "default").get("main").await.ok()?;
            let s = c.status?;
            (s.phase.as_deref() == Some("Ready") && s.warm_pods as usize >= pool).then_some(())
        })
        .await;
    }

    fn events(&self, reason: &str) -> Vec<serde_json::Value> {
        self.api.objects("events.k8s.io/v1", "events").into_iter().filter(|e| e["reason"] == reason).collect()
    }
}

fn condition(conds: &[k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition], type_: &str) -> Option<String> {
    conds.iter().find(|c| c.type_ == type_).map(|c| c.status.clone())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn an_ebbcluster_creates_its_children_by_server_side_apply() {
    let h = Harness::start().await;
    let cluster = h.create_cluster(2).await;
    let uid = cluster.uid().unwrap();
    h.ready_cluster(2).await;

    for (api_version, plural, name) in [
        ("apps/v1", "statefulsets", "main-storage"),
        ("v1", "services", "main-storage"),
        ("apps/v1", "deployments", "main-proxy"),
        ("v1", "services", "main-proxy"),
        ("apps/v1", "deployments", "main-pool"),
    ] {
        let obj = h.api.object(api_version, plural, "default", name).unwrap_or_else(|| panic!("{plural}/{name} missing"));
        assert_eq!(obj["metadata"]["ownerReferences"][0]["uid"], uid.as_str(), "{plural}/{name} owned by the cluster");
        assert_eq!(obj["metadata"]["labels"]["ebb.dev/cluster"], "main");
    }
    let applies = h.api.requests().into_iter().filter(|(m, p, ct)| m == "PATCH" && p.contains("fieldManager=ebb-operator") && ct.as_deref() == Some("application/apply-patch+yaml")).count();
    assert!(applies >= 5, "children are applied server-side ({applies} apply requests)");
    let storage = h.api.object("apps/v1", "statefulsets", "default", "main-storage").unwrap();
    let container = &storage["spec"]["template"]["spec"]["containers"][0];
    assert!(container["args"].as_array().unwrap().iter().any(|a| a == "--object-store=s3://bucket/ebb"));
    assert_eq!(container["envFrom"][0]["secretRef"]["name"], "s3-credentials");

    let c = Api::<EbbCluster>::namespaced(h.client(), "default").get("main").await.unwrap();
    assert!(c.finalizers().iter().any(|f| f == "ebb.dev/cluster"), "finalizer set");
    let status = c.status.unwrap();
    assert_eq!(condition(&status.conditions, "Ready").as_deref(), Some("True"));
    assert_eq!(status.observed_generation, c.metadata.generation);
    assert_eq!(status.endpoint.as_deref(), Some("main-proxy.default.svc:5432"));
    assert!(!h.events("Applied").is_empty(), "an Applied event was published");
    assert_eq!(h.pods(&format!("{POOL_LABEL}={WARM}")).await.len(), 2, "the pool Deployment made two warm pods");

    // A bigger pool: the Deployment follows and so does the controller.
    let clusters: Api<EbbCluster> = Api::namespaced(h.client(), "default");
    clusters.patch("main", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "pool": { "size": 3 } } }))).await.unwrap();
    eventually("three warm pods", 20, || async {
        let handle = h.ctx.cluster("default/main")?;
        let warm = h.pods(&format!("{POOL_LABEL}={WARM}")).await.len();
        (warm == 3 && handle.controller.status().pool_size == 3).then_some(())
    })
    .await;

    // Deleting the cluster runs its finalizer and the owned children follow.
    Api::<EbbCluster>::namespaced(h.client(), "default").delete("main", &DeleteParams::default()).await.unwrap();
    eventually("the cluster and its children to be gone", 20, || async {
        let gone = h.api.object("ebb.dev/v1alpha1", "ebbclusters", "default", "main").is_none()
            && h.api.object("apps/v1", "deployments", "default", "main-pool").is_none()
            && h.api.object("apps/v1", "statefulsets", "default", "main-storage").is_none();
        gone.then_some(())
    })
    .await;
    assert!(!h.events("Deleting").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_at_zero_has_no_compute_and_resumes_from_the_pool() {
    let h = Harness::start().await;
    h.create_cluster(2).await;
    h.ready_cluster(2).await;
    let db = h.create_database("shop", |s| s.idle_timeout = Some("2s".into())).await;

    let status = eventually("the database to be Suspended and Ready", 20, || async {
        let s = h.database("shop").await?.status?;
        (s.phase.as_deref() == Some("Suspended") && condition(&s.conditions, "Ready").as_deref() == Some("True")).then_some(s)
    })
    .await;
    assert_eq!(condition(&status.conditions, "Suspended").as_deref(), Some("True"));
    assert_eq!(status.replicas, 0);
    assert!(h.storage_databases().await.contains(&"shop".to_string()), "created in storage");
    assert!(!h.events("Created").is_empty());
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(h.pods(&format!("{POOL_LABEL}={CLAIMED}")).await.is_empty(), "a database at zero has no compute pods");

    // A client arrives: the broker's acquire claims a warm pod.
    let handle = h.ctx.cluster("default/main").expect("cluster controller");
    let compute = handle.controller.acquire("shop").await.expect("acquire");
    let claimed = h.pods(&format!("{POOL_LABEL}={CLAIMED}")).await;
    assert_eq!(claimed.len(), 1);
    let pod = &claimed[0];
    assert_eq!(pod.name_any(), compute.id);
    assert_eq!(pod.labels().get("ebb.dev/database").map(String::as_str), Some("shop"));
    let owner = &pod.metadata.owner_references.as_ref().expect("owner")[0];
    assert_eq!((owner.kind.as_str(), owner.uid.as_str()), ("Database", db.uid().unwrap().as_str()));
    let (client, conn) = tokio_postgres::connect(&format!("host={} port={} user=postgres dbname=shop", compute.pg_addr.ip(), compute.pg_addr.port()), tokio_postgres::NoTls)
        .await
        .expect("connect to the claimed compute");
    tokio::spawn(conn);
    client.batch_execute("CREATE TABLE t (id int primary key); INSERT INTO t VALUES (1)").await.expect("write");
    eventually("the pool to be refilled", 20, || async { (h.pods(&format!("{POOL_LABEL}={WARM}")).await.len() == 2).then_some(()) }).await;
    eventually("the database to report Running with its session", 20, || async {
        let s = h.database("shop").await?.status?;
        (s.phase.as_deref() == Some("Running") && s.replicas == 1 && s.connections == 1).then_some(())
    })
    .await;
    client.simple_query("SELECT 1").await.expect("the session lived through the status checks");
    drop(client);

    // Idle past its timeout: back to zero, the claimed pod deleted.
    eventually("scale to zero", 30, || async {
        let s = h.database("shop").await?.status?;
        let none = h.pods(&format!("{POOL_LABEL}={CLAIMED}")).await.is_empty();
        (none && s.phase.as_deref() == Some("Suspended")).then_some(())
    })
    .await;
    assert!(h.api.object("v1", "pods", "default", &compute.id).is_none(), "the compute pod was deleted");
    // The next client resumes it and sees its data.
    let compute = handle.controller.acquire("shop").await.expect("resume");
    let (client, conn) = tokio_postgres::connect(&format!("host={} port={} user=postgres dbname=shop", compute.pg_addr.ip(), compute.pg_addr.port()), tokio_postgres::NoTls)
        .await
        .expect("connect after resume");
    tokio::spawn(conn);
    let n: i64 = client.query_one("SELECT count(*) FROM t", &[]).await.expect("read").get(0);
    assert_eq!(n, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_win_each_warm_pod_exactly_once() {
    let api = FakeApi::start().await;
    let _cluster = FakeCluster::start(api.client()).await;
    let cluster = EbbCluster::new("main", EbbClusterSpec::new("s3://b"));
    let mut cluster = cluster;
    cluster.metadata.namespace = Some("default".into());
    let template = resources::compute_pod_template(&cluster, "ebb:test");
    // Three warm pods, as the pool's ReplicaSet would make them (no
    // Deployment here, so nothing refills: the count stays exact).
    let pods: Api<Pod> = Api::namespaced(api.client(), "default");
    for i in 0..3 {
        let meta = template.metadata.clone().unwrap();
        let pod = Pod {
            metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { name: Some(format!("main-pool-{i}")), labels: meta.labels, ..Default::default() },
            spec: template.spec.clone(),
            status: None,
        };
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    eventually("three ready warm pods", 20, || async {
        let ready = pods.list(&ListParams::default()).await.ok()?.items.iter().filter(|p| instance(p).is_some()).count();
        (ready == 3).then_some(())
    })
    .await;

    // Two operators' runtimes, six concurrent claims.
    let a = Arc::new(PodRuntime::new(api.client(), "default", "main", template.clone(), Duration::from_secs(5)));
    let b = Arc::new(PodRuntime::new(api.client(), "default", "main", template, Duration::from_secs(5)));
    let claims = (0..6).map(|i| {
        let rt = if i % 2 == 0 { a.clone() } else { b.clone() };
        tokio::spawn(async move { rt.claim(&format!("db{i}")).await })
    });
    let mut won = Vec::new();
    for c in futures::future::join_all(claims).await {
        if let Some(i) = c.unwrap().expect("claim call") {
            won.push(i.id);
        }
    }
    won.sort();
    let mut unique = won.clone();
    unique.dedup();
    assert_eq!(won.len(), 3, "three pods, three winners: {won:?}");
    assert_eq!(unique, won, "no pod claimed twice");
    for p in pods.list(&ListParams::default()).await.unwrap().items {
        assert_eq!(p.labels().get(POOL_LABEL).map(String::as_str), Some(CLAIMED), "{} claimed", p.name_any());
        let db = p.annotations().get("ebb.dev/database").expect("database annotation");
        assert_eq!(p.labels().get("ebb.dev/database"), Some(db));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn scale_in_drains_and_deletes_only_when_sessions_ended() {
    let h = Harness::start().await;
    h.create_cluster(2).await;
    h.ready_cluster(2).await;
    h.create_database("shop", |s| {
        s.min_replicas = Some(2);
        s.max_replicas = Some(2);
    })
    .await;
    // minReplicas 2: two computes without any client.
    let bound = eventually("two computes attached to shop", 30, || async {
        let p = h.pods(&format!("{POOL_LABEL}={CLAIMED}")).await;
        if p.len() != 2 {
            return None;
        }
        for pod in &p {
            let stats = ControlClient::connect(instance(pod)?.control_addr).await.ok()?.stats().await.ok()?;
            if stats.database != "shop" {
                return None;
            }
        }
        Some(p)
    })
    .await;
    // A session on each.
    let mut sessions = Vec::new();
    for p in &bound {
        let i = instance(p).unwrap();
        let (client, conn) = tokio_postgres::connect(&format!("host={} port={} user=postgres dbname=shop", i.pg_addr.ip(), i.pg_addr.port()), tokio_postgres::NoTls)
            .await
            .expect("connect");
        tokio::spawn(conn);
        client.simple_query("SELECT 1").await.unwrap();
        sessions.push((p.name_any(), i, client));
    }
    // Down to one: one compute is drained but keeps running while its session lives.
    let api: Api<Database> = Api::namespaced(h.client(), "default");
    api.patch("shop", &PatchParams::default(), &Patch::Merge(json!({ "spec": { "minReplicas": 1, "maxReplicas": 1 } }))).await.unwrap();
    let mut draining = None;
    let deadline = Instant::now() + Duration::from_secs(30);
    while draining.is_none() {
        assert!(Instant::now() < deadline, "no compute was drained");
        for (name, i, _) in &sessions {
            let stats = ControlClient::connect(i.control_addr).await.unwrap().stats().await.unwrap();
            if stats.draining {
                draining = Some(name.clone());
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let draining = draining.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(h.api.object("v1", "pods", "default", &draining).is_some(), "a drained compute with a session is not deleted");
    // Its session ends: now it goes; the other stays.
    sessions.retain(|(name, _, _)| name != &draining);
    eventually("the drained pod to be deleted", 20, || async { h.api.object("v1", "pods", "default", &draining).is_none().then_some(()) }).await;
    assert!(h.api.object("v1", "pods", "default", &sessions[0].0).is_some(), "the serving compute stays");
    sessions[0].2.simple_query("SELECT 1").await.expect("the remaining session still works");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn deleting_a_database_follows_its_deletion_policy() {
    let h = Harness::start().await;
    h.create_cluster(1).await;
    h.ready_cluster(1).await;
    let secrets: Api<Secret> = Api::namespaced(h.client(), "default");
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "shop-owner" },
        "data": { "password": "czNjcjN0" }
    }))
    .unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    h.create_database("kept", |_| {}).await;
    h.create_database("shop", |s| {
        s.deletion_policy = DeletionPolicy::Delete;
        s.owner = Some(OwnerRole { name: "shop_owner".into(), password_secret: SecretKey { name: "shop-owner".into(), key: "password".into() } });
    })
    .await;
    eventually("both databases in storage", 20, || async {
        let dbs = h.storage_databases().await;
        (dbs.contains(&"kept".to_string()) && dbs.contains(&"shop".to_string())).then_some(())
    })
    .await;
    let mut storage = StorageClient::connect(h.cluster.storage_url.clone()).await.unwrap();
    let role = eventually("the owner role", 20, || {
        let mut s = storage.clone();
        async move { s.get_role(GetRoleRequest { name: "shop_owner".into() }).await.ok()?.into_inner().role }
    })
    .await;
    assert!(role.login && role.connect.contains(&"shop".to_string()) && role.password_verifier.starts_with("SCRAM-SHA-256$"));
    for name in ["kept", "shop"] {
        let d = h.database(name).await.unwrap();
        assert!(d.finalizers().iter().any(|f| f == "ebb.dev/database"), "{name} has the finalizer");
    }

    let api: Api<Database> = Api::namespaced(h.client(), "default");
    api.delete("shop", &DeleteParams::default()).await.unwrap();
    api.delete("kept", &DeleteParams::default()).await.unwrap();
    eventually("both resources gone", 20, || async { (h.database("shop").await.is_none() && h.database("kept").await.is_none()).then_some(()) }).await;
    let dbs = h.storage_databases().await;
    assert!(!dbs.contains(&"shop".to_string()), "deletionPolicy Delete dropped it");
    assert!(dbs.contains(&"kept".to_string()), "deletionPolicy Retain kept it");
    assert!(storage.get_role(GetRoleRequest { name: "shop_owner".into() }).await.unwrap().into_inner().role.is_none(), "owner role dropped");
    assert!(!h.events("Dropped").is_empty() && !h.events("Retained").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_of_a_missing_cluster_waits_with_a_reason() {
    let h = Harness::start().await;
    h.create_database("orphan", |s| s.cluster = "nowhere".into()).await;
    let s = h.database_in_phase("orphan", "Pending").await;
    let ready = s.conditions.iter().find(|c| c.type_ == "Ready").expect("Ready condition");
    assert_eq!((ready.status.as_str(), ready.reason.as_str()), ("False", "ClusterNotFound"));
    assert!(!h.events("ClusterNotFound").is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn the_broker_hands_proxies_a_compute_of_the_named_cluster() {
    use ebb_proto::broker::AcquireRequest;
    use ebb_proto::broker::compute_broker_client::ComputeBrokerClient;
    let h = Harness::start().await;
    h.create_cluster(1).await;
    h.ready_cluster(1).await;
    h.create_database("shop", |_| {}).await;
    // Served once reconciled (created in storage, settings handed over).
    h.database_in_phase("shop", "Suspended").await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let service = ebb_operator::broker::Broker::service(h.ctx.clone());
    tokio::spawn(tonic::transport::Server::builder().add_service(service).serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)));
    let mut broker = ComputeBrokerClient::connect(format!("http://{addr}")).await.unwrap();
    let got = broker.acquire(AcquireRequest { cluster: "default/main".into(), database: "shop".into() }).await.expect("acquire").into_inner();
    let pod = h.api.object("v1", "pods", "default", &got.compute_id).expect("the compute is a pod");
    assert_eq!(pod["metadata"]["labels"]["ebb.dev/pool"], "claimed");
    assert_eq!(got.address, format!("{}:5432", pod["status"]["podIP"].as_str().unwrap()));
    let again = broker.acquire(AcquireRequest { cluster: "default/main".into(), database: "shop".into() }).await.unwrap().into_inner();
    assert_eq!(again.compute_id, got.compute_id, "a running database is served by the compute it has");
    let e = broker.acquire(AcquireRequest { cluster: "default/other".into(), database: "shop".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::Unavailable, "an unknown cluster may be starting: retry");
    let e = broker.acquire(AcquireRequest { cluster: "default/main".into(), database: "nope".into() }).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound, "{e:?}");
    assert_eq!(h.pods(&format!("{POOL_LABEL}={CLAIMED}")).await.len(), 1, "a database without a Database resource claims nothing");
}

/// Two `ebb operator`s (the same `run` the binary calls): one leads and
/// labels its pod for the broker Service, the other stands by; when the
/// leader shuts down it releases the Lease, the standby takes over, adopts
/// the compute already bound to a database and serves it without a new claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_standby_operator_takes_over_and_adopts_bound_computes() {
    use ebb_operator::k8s::operator::{LEADER_LABEL, OperatorConfig, run};
    use ebb_proto::broker::AcquireRequest;
    use ebb_proto::broker::compute_broker_client::ComputeBrokerClient;
    let _ = tracing_subscriber::fmt().with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into())).with_test_writer().try_init();
    let api = FakeApi::start().await;
    let cluster = FakeCluster::start(api.client()).await;
    let pods: Api<Pod> = Api::namespaced(api.client(), "ebb-system");
    for name in ["op-a", "op-b"] {
        let pod: Pod = serde_json::from_value(json!({ "metadata": { "name": name }, "spec": { "containers": [{ "name": "operator", "image": "ebb:test" }] } })).unwrap();
        pods.create(&PostParams::default(), &pod).await.unwrap();
    }
    let start = |name: &'static str| {
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let cfg = OperatorConfig {
            settings: Settings {
                image: "ebb:test".into(),
                broker_url: "http://ebb-operator.ebb-system.svc:5436".into(),
                start_timeout: Duration::from_secs(20),
                tick: Duration::from_millis(200),
                storage_url_override: Some(cluster.storage_url.clone()),
            },
            watch_namespace: None,
            broker_listen: format!("127.0.0.1:{port}").parse().unwrap(),
            lease: ("ebb-system".into(), "ebb-operator".into()),
            identity: name.into(),
            pod: Some(("ebb-system".into(), name.into())),
            registry: prometheus::Registry::new(),
        };
        let registry = cfg.registry.clone();
        let (stop, rx) = watch::channel(false);
        let client = api.client();
        let task = tokio::spawn(async move {
            let mut rx = rx;
            run(client, cfg, async move {
                let _ = rx.wait_for(|s| *s).await;
            })
            .await
        });
        (port, stop, task, registry)
    };
    let leader_label = |name: &'static str| {
        let pods = pods.clone();
        async move { pods.get(name).await.ok()?.labels().get(LEADER_LABEL).cloned() }
    };
    let (port_a, stop_a, task_a, registry_a) = start("op-a");
    eventually("op-a to lead", 10, || async { (leader_label("op-a").await.as_deref() == Some("true")).then_some(()) }).await;
    let (port_b, stop_b, task_b, _) = start("op-b");
    eventually("op-b to stand by", 10, || async { (leader_label("op-b").await.as_deref() == Some("false")).then_some(()) }).await;

    let clusters: Api<EbbCluster> = Api::namespaced(api.client(), "default");
    let spec = EbbClusterSpec::new("s3://b");
    clusters.create(&PostParams::default(), &EbbCluster::new("main", spec)).await.unwrap();
    let dbs: Api<Database> = Api::namespaced(api.client(), "default");
    let db = DatabaseSpec::new("main");
    dbs.create(&PostParams::default(), &Database::new("shop", db)).await.unwrap();
    eventually("shop Suspended", 30, || async { dbs.get("shop").await.ok()?.status?.phase.filter(|p| p == "Suspended") }).await;
    eventually("a warm pod", 30, || async {
        let warm = pods_in(&api, "default", &format!("{POOL_LABEL}={WARM}")).await;
        warm.iter().any(|p| instance(p).is_some()).then_some(())
    })
    .await;

    let acquire = |port: u16| async move {
        let mut broker = ComputeBrokerClient::connect(format!("http://127.0.0.1:{port}")).await.ok()?;
        broker.acquire(AcquireRequest { cluster: "default/main".into(), database: "shop".into() }).await.ok().map(|r| r.into_inner())
    };
    let first = acquire(port_a).await.expect("the leader's broker answers");
    assert!(acquire(port_b).await.is_none(), "a standby serves no broker");
    eventually("the leader's metrics", 5, || async {
        let m = prometheus::TextEncoder::new().encode_to_string(&registry_a.gather()).unwrap();
        m.contains("ebb_database_replicas{cluster=\"default/main\",database=\"shop\"} 1").then_some(())
    })
    .await;

    // The leader shuts down cleanly: the standby leads within seconds.
    let _ = stop_a.send(true);
    task_a.await.unwrap().expect("op-a stopped cleanly");
    assert_eq!(leader_label("op-a").await.as_deref(), Some("false"));
    // A released lease is taken at the standby's next look (every 2 s), not after it expired (15 s).
    eventually("op-b to lead within a few seconds", 6, || async { (leader_label("op-b").await.as_deref() == Some("true")).then_some(()) }).await;
    let second = eventually("op-b's broker", 15, || acquire(port_b)).await;
    assert_eq!(second.compute_id, first.compute_id, "the bound compute was adopted, not replaced");
    assert_eq!(pods_in(&api, "default", &format!("{POOL_LABEL}={CLAIMED}")).await.len(), 1, "no second claim");
    let _ = stop_b.send(true);
    task_b.await.unwrap().expect("op-b stopped cleanly");
}

async fn pods_in(api: &FakeApi, ns: &str, selector: &str) -> Vec<Pod> {
    let pods: Api<Pod> = Api::namespaced(api.client(), ns);
    pods.list(&ListParams::default().labels(selector)).await.map(|l| l.items).unwrap_or_default()
}

/// A compute pod whose container restarted comes back unbound: the
/// operator notices (its stats name no database) and replaces it instead of
/// routing sessions to it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_compute_whose_container_restarted_is_replaced() {
    let h = Harness::start().await;
    h.create_cluster(2).await;
    h.ready_cluster(2).await;
    h.create_database("shop", |s| s.min_replicas = Some(1)).await;
    // Claimed (labelled) comes a moment before attached: wait for both.
    let first = eventually("a compute attached to shop", 30, || async {
        let pod = h.pods(&format!("{POOL_LABEL}={CLAIMED}")).await.into_iter().find(|p| instance(p).is_some())?;
        let stats = ControlClient::connect(instance(&pod)?.control_addr).await.ok()?.stats().await.ok()?;
        (stats.database == "shop").then_some(pod)
    })
    .await;
    let first_name = first.name_any();
    h.cluster.restart_container(&first_name);
    // The restarted one is deleted and another serves shop.
    eventually("the restarted compute to be replaced", 30, || async {
        let gone = h.api.object("v1", "pods", "default", &first_name).is_none();
        let claimed = h.pods(&format!("{POOL_LABEL}={CLAIMED}")).await;
        let replaced = claimed.iter().any(|p| p.name_any() != first_name && instance(p).is_some());
        (gone && replaced).then_some(())
    })
    .await;
    let compute = h.ctx.cluster("default/main").unwrap().controller.acquire("shop").await.expect("acquire");
    assert_ne!(compute.id, first_name);
    let (client, conn) = tokio_postgres::connect(&format!("host={} port={} user=postgres dbname=shop", compute.pg_addr.ip(), compute.pg_addr.port()), tokio_postgres::NoTls)
        .await
        .expect("connect to the replacement");
    tokio::spawn(conn);
    client.simple_query("SELECT 1").await.expect("the replacement serves shop");
}

/// Two `Database`s for one SQL name: the newer is refused (NameInUse), and
/// deleting it — even with `deletionPolicy: Delete` — leaves the older
/// one's data and computes alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_refused_for_its_name_deletes_nothing_of_the_owner() {
    let h = Harness::start().await;
    h.create_cluster(1).await;
    h.ready_cluster(1).await;
    h.create_database("shop", |_| {}).await;
    h.database_in_phase("shop", "Suspended").await;
    h.create_database("shop-copy", |s| {
        s.database_name = Some("shop".into());
        s.deletion_policy = DeletionPolicy::Delete;
    })
    .await;
    let s = h.database_in_phase("shop-copy", "Failed").await;
    assert_eq!(s.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.reason.as_str()), Some("NameInUse"));
    Api::<Database>::namespaced(h.client(), "default").delete("shop-copy", &DeleteParams::default()).await.unwrap();
    eventually("shop-copy gone", 20, || async { h.database("shop-copy").await.is_none().then_some(()) }).await;
    assert!(h.storage_databases().await.contains(&"shop".to_string()), "the owner's database was not dropped");
    assert!(!h.events("Released").is_empty());
    assert_eq!(h.database("shop").await.unwrap().status.unwrap().phase.as_deref(), Some("Suspended"));
}

/// A `Database` cannot make a superuser its owner (and so reset its password).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_superuser_cannot_be_a_database_owner() {
    use ebb_proto::storage::{PutRoleRequest, Role};
    let h = Harness::start().await;
    h.create_cluster(1).await;
    h.ready_cluster(1).await;
    let mut storage = StorageClient::connect(h.cluster.storage_url.clone()).await.unwrap();
    let admin = Role { name: "admin".into(), login: true, superuser: true, password_verifier: "SCRAM-SHA-256$4096:c2FsdA==$a2V5:a2V5".into(), connect: vec![] };
    storage.put_role(PutRoleRequest { role: Some(admin.clone()), create: true }).await.unwrap();
    let secrets: Api<Secret> = Api::namespaced(h.client(), "default");
    let secret: Secret = serde_json::from_value(json!({ "metadata": { "name": "pw" }, "stringData": { "password": "taken-over" } })).unwrap();
    secrets.create(&PostParams::default(), &secret).await.unwrap();
    h.create_database("shop", |s| {
        s.owner = Some(OwnerRole { name: "admin".into(), password_secret: SecretKey { name: "pw".into(), key: "password".into() } });
    })
    .await;
    let s = h.database_in_phase("shop", "Failed").await;
    assert_eq!(s.conditions.iter().find(|c| c.type_ == "Ready").map(|c| c.reason.as_str()), Some("OwnerRoleRefused"));
    let role = storage.get_role(GetRoleRequest { name: "admin".into() }).await.unwrap().into_inner().role.unwrap();
    assert_eq!(role.password_verifier, admin.password_verifier, "the superuser's password is untouched");
}

/// A claimed compute pod that no database is served by — left by a crash
/// between a claim and its attach, a lost response or a failed delete — is
/// deleted by the cluster's controller; the warm pool is left alone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_claimed_pod_nobody_serves_with_is_deleted() {
    let h = Harness::start().await;
    let cluster = h.create_cluster(1).await;
    h.ready_cluster(1).await;
    let mut c = cluster.clone();
    c.metadata.namespace = Some("default".into());
    let template = resources::compute_pod_template(&c, "ebb:test");
    let mut labels = template.metadata.clone().unwrap().labels.unwrap();
    labels.insert(POOL_LABEL.into(), CLAIMED.into());
    let stray = Pod {
        metadata: k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta { name: Some("main-stray".into()), labels: Some(labels), ..Default::default() },
        spec: template.spec.clone(),
        status: None,
    };
    Api::<Pod>::namespaced(h.client(), "default").create(&PostParams::default(), &stray).await.unwrap();
    eventually("the stray claimed pod to be deleted", 20, || async { h.api.object("v1", "pods", "default", "main-stray").is_none().then_some(()) }).await;
    assert_eq!(h.pods(&format!("{POOL_LABEL}={WARM}")).await.len(), 1, "the warm pool is untouched");
}
