//! The workloads an `EbbCluster` becomes, as pure functions of the
//! resource: a storage StatefulSet and its headless Service, a proxy
//! Deployment and Service, and a Deployment of warm, unbound compute pods.
//! The reconciler applies what these return; tests read them directly.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, StatefulSet, StatefulSetSpec};
use k8s_openapi::api::core::v1::{
    Container, ContainerPort, EnvFromSource, EnvVar, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSecurityContext,
    PodSpec, PodTemplateSpec, Probe, SecretEnvSource, SecretVolumeSource, SecurityContext, Service, ServicePort,
    ServiceSpec, TCPSocketAction, Volume, VolumeMount, VolumeResourceRequirements,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};

use super::crd::{Durability, EbbCluster};

/// PostgreSQL port of proxies and computes.
pub const PG_PORT: i32 = 5432;
/// gRPC port of storage.
pub const STORAGE_PORT: i32 = 5433;
/// Control port of computes.
pub const CONTROL_PORT: i32 = 5435;
/// Port of the operator's broker, which proxies ask for computes.
pub const BROKER_PORT: i32 = 5436;
/// Prometheus port of every ebb container.
pub const METRICS_PORT: i32 = 9090;

/// Label naming the cluster a pod belongs to.
pub const CLUSTER_LABEL: &str = "ebb.dev/cluster";
/// Label of compute pods: `warm` while in the pool, `claimed` once bound.
pub const POOL_LABEL: &str = "ebb.dev/pool";
/// Label of a claimed compute pod: the database it serves (label-safe form).
pub const DATABASE_LABEL: &str = "ebb.dev/database";
/// Annotation of a claimed compute pod: the database's exact name.
pub const DATABASE_ANNOTATION: &str = "ebb.dev/database";
/// Value of [`POOL_LABEL`] on a warm pod.
pub const WARM: &str = "warm";
/// Value of [`POOL_LABEL`] on a claimed pod.
pub const CLAIMED: &str = "claimed";
/// Name of the compute container (its ports are looked up by name).
pub const COMPUTE_CONTAINER: &str = "compute";
/// Field manager of every server-side apply the operator makes.
pub const FIELD_MANAGER: &str = "ebb-operator";

const COMPONENT: &str = "app.kubernetes.io/component";
const NON_ROOT: i64 = 65532;

/// Names of a cluster's children.
pub fn storage_name(cluster: &str) -> String {
    format!("{cluster}-storage")
}
/// Name of the proxy Deployment and Service.
pub fn proxy_name(cluster: &str) -> String {
    format!("{cluster}-proxy")
}
/// Name of the warm-pool Deployment.
pub fn pool_name(cluster: &str) -> String {
    format!("{cluster}-pool")
}

/// The storage gRPC URL inside the cluster.
pub fn storage_url(cluster: &EbbCluster) -> String {
    format!("http://{}.{}.svc:{STORAGE_PORT}", storage_name(&cluster.name_any()), cluster.namespace().unwrap_or_default())
}

/// `host:port` clients connect to.
pub fn endpoint(cluster: &EbbCluster) -> String {
    format!("{}.{}.svc:{PG_PORT}", proxy_name(&cluster.name_any()), cluster.namespace().unwrap_or_default())
}

/// Labels every child of `cluster` carries, for `component`.
pub fn labels(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".to_string(), "ebb".to_string()),
        ("app.kubernetes.io/instance".to_string(), cluster.to_string()),
        ("app.kubernetes.io/managed-by".to_string(), FIELD_MANAGER.to_string()),
        (COMPONENT.to_string(), component.to_string()),
        (CLUSTER_LABEL.to_string(), cluster.to_string()),
    ])
}

/// The selector of a component's pods.
fn selector(cluster: &str, component: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CLUSTER_LABEL.to_string(), cluster.to_string()), (COMPONENT.to_string(), component.to_string())])
}

/// The selector of the warm pool: claimed pods leave it.
pub fn warm_selector(cluster: &str) -> BTreeMap<String, String> {
    let mut s = selector(cluster, "compute");
    s.insert(POOL_LABEL.to_string(), WARM.to_string());
    s
}

/// `key=value,…` for a list call.
pub fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>().join(",")
}

/// A label value standing for `name`: itself when it is a valid label
/// value, else a readable prefix and a hash.
pub fn label_value(name: &str) -> String {
    let valid = name.len() <= 63
        && name.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'))
        && name.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && name.chars().last().is_some_and(|c| c.is_ascii_alphanumeric());
    if valid {
        return name.to_string();
    }
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in name.bytes() {
        hash = (hash ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    let prefix: String = name.chars().filter(|c| c.is_ascii_alphanumeric()).take(40).collect();
    format!("{}h{hash:016x}", if prefix.is_empty() { String::new() } else { format!("{prefix}-") })
}

fn meta(cluster: &EbbCluster, name: String, component: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name),
        namespace: cluster.namespace(),
        labels: Some(labels(&cluster.name_any(), component)),
        owner_references: cluster.controller_owner_ref(&()).map(|o: OwnerReference| vec![o]),
        ..ObjectMeta::default()
    }
}

fn image(cluster: &EbbCluster, default_image: &str) -> String {
    cluster.spec.image.clone().unwrap_or_else(|| default_image.to_string())
}

fn port(name: &str, port: i32) -> ContainerPort {
    ContainerPort { name: Some(name.into()), container_port: port, protocol: Some("TCP".into()), ..ContainerPort::default() }
}

fn tcp_probe(port: i32, period: i32) -> Probe {
    Probe {
        tcp_socket: Some(TCPSocketAction { port: IntOrString::Int(port), host: None }),
        period_seconds: Some(period),
        ..Probe::default()
    }
}

fn restricted() -> SecurityContext {
    SecurityContext {
        run_as_non_root: Some(true),
        allow_privilege_escalation: Some(false),
        read_only_root_filesystem: Some(true),
        capabilities: Some(k8s_openapi::api::core::v1::Capabilities { drop: Some(vec!["ALL".into()]), add: None }),
        ..SecurityContext::default()
    }
}

fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_user: Some(NON_ROOT),
        run_as_group: Some(NON_ROOT),
        fs_group: Some(NON_ROOT),
        run_as_non_root: Some(true),
        seccomp_profile: Some(k8s_openapi::api::core::v1::SeccompProfile { type_: "RuntimeDefault".into(), localhost_profile: None }),
        ..PodSecurityContext::default()
    }
}

/// The headless Service of the storage StatefulSet.
pub fn storage_service(cluster: &EbbCluster) -> Service {
    let name = cluster.name_any();
    Service {
        metadata: meta(cluster, storage_name(&name), "storage"),
        spec: Some(ServiceSpec {
            cluster_ip: Some("None".into()),
            selector: Some(selector(&name, "storage")),
            ports: Some(vec![service_port("grpc", STORAGE_PORT), service_port("metrics", METRICS_PORT)]),
            publish_not_ready_addresses: Some(true),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

fn service_port(name: &str, port: i32) -> ServicePort {
    ServicePort {
        name: Some(name.into()),
        port,
        target_port: Some(IntOrString::String(name.into())),
        protocol: Some("TCP".into()),
        ..ServicePort::default()
    }
}

/// The storage StatefulSet: `ebb storage` with its cache on a volume.
pub fn storage_statefulset(cluster: &EbbCluster, default_image: &str) -> StatefulSet {
    let name = cluster.name_any();
    let spec = &cluster.spec.storage;
    let durability = match spec.durability {
        Durability::Remote => "remote",
        Durability::Local => "local",
    };
    let container = Container {
        name: "storage".into(),
        image: Some(image(cluster, default_image)),
        args: Some(vec![
            "storage".into(),
            format!("--listen=0.0.0.0:{STORAGE_PORT}"),
            format!("--object-store={}", cluster.spec.object_store.url),
            "--cache-dir=/var/lib/ebb/cache".into(),
            format!("--durability={durability}"),
            format!("--metrics-listen=0.0.0.0:{METRICS_PORT}"),
        ]),
        env_from: cluster.spec.object_store.credentials_secret.as_ref().map(|s| {
            vec![EnvFromSource {
                secret_ref: Some(SecretEnvSource { name: s.clone(), optional: Some(false) }),
                ..EnvFromSource::default()
            }]
        }),
        ports: Some(vec![port("grpc", STORAGE_PORT), port("metrics", METRICS_PORT)]),
        readiness_probe: Some(tcp_probe(STORAGE_PORT, 5)),
        resources: spec.resources.clone(),
        security_context: Some(restricted()),
        volume_mounts: Some(vec![VolumeMount { name: "cache".into(), mount_path: "/var/lib/ebb".into(), ..VolumeMount::default() }]),
        ..Container::default()
    };
    let claim = PersistentVolumeClaim {
        metadata: ObjectMeta { name: Some("cache".into()), ..ObjectMeta::default() },
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            storage_class_name: spec.storage_class_name.clone(),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([("storage".to_string(), Quantity(spec.volume_size.clone()))])),
                limits: None,
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        status: None,
    };
    StatefulSet {
        metadata: meta(cluster, storage_name(&name), "storage"),
        spec: Some(StatefulSetSpec {
            replicas: Some(spec.replicas),
            service_name: Some(storage_name(&name)),
            selector: LabelSelector { match_labels: Some(selector(&name, "storage")), match_expressions: None },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(&name, "storage")), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    security_context: Some(pod_security()),
                    // A clean stop uploads nothing new but lets RocksDB close.
                    termination_grace_period_seconds: Some(60),
                    ..PodSpec::default()
                }),
            },
            volume_claim_templates: Some(vec![claim]),
            ..StatefulSetSpec::default()
        }),
        status: None,
    }
}

/// The proxy Deployment: `ebb proxy`, asking the operator's broker for computes.
pub fn proxy_deployment(cluster: &EbbCluster, default_image: &str, broker_url: &str) -> Deployment {
    let name = cluster.name_any();
    let spec = &cluster.spec.proxy;
    let mut args = vec![
        "proxy".to_string(),
        format!("--listen=0.0.0.0:{PG_PORT}"),
        format!("--storage={}", storage_url(cluster)),
        format!("--broker={broker_url}"),
        format!("--cluster={}/{name}", cluster.namespace().unwrap_or_default()),
        format!("--metrics-listen=0.0.0.0:{METRICS_PORT}"),
    ];
    let mut volumes = Vec::new();
    let mut mounts = Vec::new();
    if let Some(secret) = &spec.tls_secret {
        args.push("--tls-cert=/etc/ebb/tls/tls.crt".into());
        args.push("--tls-key=/etc/ebb/tls/tls.key".into());
        volumes.push(Volume {
            name: "tls".into(),
            secret: Some(SecretVolumeSource { secret_name: Some(secret.clone()), ..SecretVolumeSource::default() }),
            ..Volume::default()
        });
        mounts.push(VolumeMount { name: "tls".into(), mount_path: "/etc/ebb/tls".into(), read_only: Some(true), ..VolumeMount::default() });
    }
    let container = Container {
        name: "proxy".into(),
        image: Some(image(cluster, default_image)),
        args: Some(args),
        ports: Some(vec![port("postgres", PG_PORT), port("metrics", METRICS_PORT)]),
        readiness_probe: Some(tcp_probe(PG_PORT, 5)),
        resources: spec.resources.clone(),
        security_context: Some(restricted()),
        volume_mounts: Some(mounts).filter(|m| !m.is_empty()),
        ..Container::default()
    };
    Deployment {
        metadata: meta(cluster, proxy_name(&name), "proxy"),
        spec: Some(DeploymentSpec {
            replicas: Some(spec.replicas),
            selector: LabelSelector { match_labels: Some(selector(&name, "proxy")), match_expressions: None },
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta { labels: Some(labels(&name, "proxy")), ..ObjectMeta::default() }),
                spec: Some(PodSpec {
                    containers: vec![container],
                    volumes: Some(volumes).filter(|v| !v.is_empty()),
                    security_context: Some(pod_security()),
                    ..PodSpec::default()
                }),
            },
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// The Service clients connect to.
pub fn proxy_service(cluster: &EbbCluster) -> Service {
    let name = cluster.name_any();
    Service {
        metadata: meta(cluster, proxy_name(&name), "proxy"),
        spec: Some(ServiceSpec {
            type_: Some(cluster.spec.proxy.service_type.as_str().into()),
            selector: Some(selector(&name, "proxy")),
            ports: Some(vec![service_port("postgres", PG_PORT)]),
            ..ServiceSpec::default()
        }),
        status: None,
    }
}

/// The pod template of every compute: the warm pool's, and of computes
/// started cold when the pool is empty.
pub fn compute_pod_template(cluster: &EbbCluster, default_image: &str) -> PodTemplateSpec {
    let name = cluster.name_any();
    let overrides = &cluster.spec.pool.pod_template;
    let mut pod_labels = overrides.labels.clone();
    pod_labels.extend(labels(&name, "compute"));
    pod_labels.insert(POOL_LABEL.into(), WARM.into());
    let container = Container {
        name: COMPUTE_CONTAINER.into(),
        image: Some(image(cluster, default_image)),
        args: Some(vec![
            "compute".into(),
            format!("--listen=0.0.0.0:{PG_PORT}"),
            format!("--control-listen=0.0.0.0:{CONTROL_PORT}"),
            format!("--storage={}", storage_url(cluster)),
            format!("--metrics-listen=0.0.0.0:{METRICS_PORT}"),
        ]),
        env: Some(vec![EnvVar { name: "RUST_LOG".into(), value: Some("info".into()), value_from: None }]),
        ports: Some(vec![port("postgres", PG_PORT), port("control", CONTROL_PORT), port("metrics", METRICS_PORT)]),
        // Ready once the control service answers: then it can be attached.
        readiness_probe: Some(Probe { period_seconds: Some(1), ..tcp_probe(CONTROL_PORT, 1) }),
        resources: cluster.spec.pool.resources.clone(),
        security_context: Some(restricted()),
        ..Container::default()
    };
    PodTemplateSpec {
        metadata: Some(ObjectMeta {
            labels: Some(pod_labels),
            annotations: Some(overrides.annotations.clone()).filter(|a| !a.is_empty()),
            ..ObjectMeta::default()
        }),
        spec: Some(PodSpec {
            containers: vec![container],
            node_selector: Some(overrides.node_selector.clone()).filter(|n| !n.is_empty()),
            tolerations: Some(overrides.tolerations.clone()).filter(|t| !t.is_empty()),
            priority_class_name: overrides.priority_class_name.clone(),
            security_context: Some(pod_security()),
            // Sessions end when a drained compute stops; give them time.
            termination_grace_period_seconds: Some(30),
            automount_service_account_token: Some(false),
            ..PodSpec::default()
        }),
    }
}

/// The warm pool: a Deployment whose selector only matches unclaimed pods,
/// so a claimed pod leaves it and its ReplicaSet starts a replacement.
pub fn pool_deployment(cluster: &EbbCluster, default_image: &str) -> Deployment {
    let name = cluster.name_any();
    Deployment {
        metadata: meta(cluster, pool_name(&name), "compute"),
        spec: Some(DeploymentSpec {
            replicas: Some(cluster.spec.pool.size),
            selector: LabelSelector { match_labels: Some(warm_selector(&name)), match_expressions: None },
            template: compute_pod_template(cluster, default_image),
            ..DeploymentSpec::default()
        }),
        status: None,
    }
}

/// Every child of `cluster`, as JSON for server-side apply:
/// (api version, plural, name, object).
pub fn children(cluster: &EbbCluster, default_image: &str, broker_url: &str) -> Result<Vec<Child>, serde_json::Error> {
    let name = cluster.name_any();
    Ok(vec![
        Child::new("v1", "Service", storage_name(&name), &storage_service(cluster))?,
        Child::new("apps/v1", "StatefulSet", storage_name(&name), &storage_statefulset(cluster, default_image))?,
        Child::new("apps/v1", "Deployment", proxy_name(&name), &proxy_deployment(cluster, default_image, broker_url))?,
        Child::new("v1", "Service", proxy_name(&name), &proxy_service(cluster))?,
        Child::new("apps/v1", "Deployment", pool_name(&name), &pool_deployment(cluster, default_image))?,
    ])
}

/// One child object ready to apply.
#[derive(Debug, Clone)]
pub struct Child {
    /// `Service`, `StatefulSet` or `Deployment`.
    pub kind: &'static str,
    /// Its name in the cluster's namespace.
    pub name: String,
    /// The object to apply, with `apiVersion` and `kind`.
    pub object: serde_json::Value,
}

impl Child {
    fn new<T: serde::Serialize>(api_version: &str, kind: &'static str, name: String, object: &T) -> Result<Self, serde_json::Error> {
        let mut object = serde_json::to_value(object)?;
        object["apiVersion"] = api_version.into();
        object["kind"] = kind.into();
        Ok(Self { kind, name, object })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::crd::{EbbClusterSpec, ObjectStoreSpec};

    fn cluster() -> EbbCluster {
        let mut c = EbbCluster::new(
            "main",
            EbbClusterSpec {
                object_store: ObjectStoreSpec { url: "s3://bucket/ebb".into(), credentials_secret: Some("s3".into()) },
                ..EbbClusterSpec::new("s3://bucket/ebb")
            },
        );
        c.metadata.namespace = Some("tenants".into());
        c.metadata.uid = Some("uid-1".into());
        c
    }

    #[test]
    fn the_pool_selector_matches_warm_pods_only() {
        let c = cluster();
        let d = pool_deployment(&c, "ebb:test");
        let spec = d.spec.unwrap();
        let sel = spec.selector.match_labels.unwrap();
        let pod_labels = spec.template.metadata.unwrap().labels.unwrap();
        assert!(sel.iter().all(|(k, v)| pod_labels.get(k) == Some(v)), "template must match its selector");
        assert_eq!(sel.get(POOL_LABEL).map(String::as_str), Some(WARM));
        let mut claimed = pod_labels.clone();
        claimed.insert(POOL_LABEL.into(), CLAIMED.into());
        assert!(!sel.iter().all(|(k, v)| claimed.get(k) == Some(v)), "a claimed pod must leave the selector");
        assert_eq!(spec.replicas, Some(2));
    }

    #[test]
    fn children_are_owned_by_the_cluster_and_point_at_its_storage() {
        let c = cluster();
        let kids = children(&c, "ebb:test", "http://ebb-operator.ebb-system.svc:5436").unwrap();
        assert_eq!(kids.len(), 5);
        for k in &kids {
            let owners = &k.object["metadata"]["ownerReferences"];
            assert_eq!(owners[0]["uid"], "uid-1", "{} {}", k.kind, k.name);
            assert_eq!(owners[0]["controller"], true);
            assert_eq!(k.object["metadata"]["namespace"], "tenants");
        }
        let sts = storage_statefulset(&c, "ebb:test");
        let container = &sts.spec.as_ref().unwrap().template.spec.as_ref().unwrap().containers[0];
        let args = container.args.clone().unwrap();
        assert!(args.contains(&"--object-store=s3://bucket/ebb".to_string()));
        assert_eq!(container.env_from.as_ref().unwrap()[0].secret_ref.as_ref().unwrap().name, "s3");
        let compute = compute_pod_template(&c, "ebb:test");
        let cargs = compute.spec.unwrap().containers[0].args.clone().unwrap();
        assert!(cargs.contains(&"--storage=http://main-storage.tenants.svc:5433".to_string()), "{cargs:?}");
    }

    #[test]
    fn tls_secret_is_mounted_and_passed_to_the_proxy() {
        let mut c = cluster();
        c.spec.proxy.tls_secret = Some("ebb-tls".into());
        let d = proxy_deployment(&c, "ebb:test", "http://broker:5436");
        let pod = d.spec.unwrap().template.spec.unwrap();
        assert_eq!(pod.volumes.unwrap()[0].secret.as_ref().unwrap().secret_name.as_deref(), Some("ebb-tls"));
        let args = pod.containers[0].args.clone().unwrap();
        assert!(args.iter().any(|a| a == "--tls-cert=/etc/ebb/tls/tls.crt"));
        assert!(args.iter().any(|a| a == "--broker=http://broker:5436"));
    }

    #[test]
    fn label_values_are_valid_for_any_database_name() {
        assert_eq!(label_value("shop"), "shop");
        for name in ["Shop Data", "ünïcode", "-x", &"a".repeat(80), ""] {
            let v = label_value(name);
            assert!(v.len() <= 63 && v.chars().all(|c| c.is_ascii_alphanumeric() || c == '-'), "{name:?} -> {v}");
            assert_ne!(label_value(name), label_value(&format!("{name}2")));
        }
    }
}
