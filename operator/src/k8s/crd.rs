//! The custom resources platform teams write: `EbbCluster` (one ebb
//! installation: object store, storage, proxies, warm pool) and `Database`
//! (one tenant). The CRD YAML in `deploy/crds/` is generated from these
//! types by `ebb crd`; a test fails when the two drift apart.

use k8s_openapi::api::core::v1::{ResourceRequirements, Toleration};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// API group of every ebb resource.
pub const GROUP: &str = "ebb.dev";
/// API version of every ebb resource.
pub const VERSION: &str = "v1alpha1";

/// One ebb installation: where its data lives and how its storage, proxies
/// and warm pool of computes run.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[kube(
    group = "ebb.dev",
    version = "v1alpha1",
    kind = "EbbCluster",
    plural = "ebbclusters",
    shortname = "ebbc",
    namespaced,
    status = "EbbClusterStatus",
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Warm","type":"integer","jsonPath":".status.warmPods"}"#,
    printcolumn = r#"{"name":"Endpoint","type":"string","jsonPath":".status.endpoint"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
pub struct EbbClusterSpec {
    /// The ebb container image; the operator's own image when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    /// Where the data lives: the source of truth.
    pub object_store: ObjectStoreSpec,
    /// The storage StatefulSet.
    #[serde(default)]
    pub storage: StorageSpec,
    /// The proxies clients connect to.
    #[serde(default)]
    pub proxy: ProxySpec,
    /// Unbound computes kept warm.
    #[serde(default)]
    pub pool: PoolSpec,
    /// Settings a `Database` of this cluster gets unless it says otherwise.
    #[serde(default)]
    pub database_defaults: DatabaseDefaults,
}

impl EbbClusterSpec {
    /// A cluster on `object_store_url` with every other setting defaulted.
    pub fn new(object_store_url: &str) -> Self {
        Self {
            image: None,
            object_store: ObjectStoreSpec { url: object_store_url.into(), credentials_secret: None },
            storage: StorageSpec::default(),
            proxy: ProxySpec::default(),
            pool: PoolSpec::default(),
            database_defaults: DatabaseDefaults::default(),
        }
    }
}

/// The object store.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ObjectStoreSpec {
    /// `s3://bucket/prefix` (any S3-compatible endpoint), or `file:///path`
    /// on the storage volume (for trying ebb out only: not shared).
    #[schemars(regex(pattern = r"^(s3|file|memory)://.+"))]
    pub url: String,
    /// A Secret whose keys become the storage pods' environment, e.g.
    /// `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`,
    /// `AWS_ENDPOINT_URL`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub credentials_secret: Option<String>,
}

/// When a commit is acknowledged.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum Durability {
    /// Once its WAL record is in the object store.
    #[default]
    Remote,
    /// Once it is on the storage volume; shipped to the object store shortly after.
    Local,
}

/// The storage StatefulSet.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct StorageSpec {
    /// Storage pods. One storage node owns every database of a cluster
    /// today, so only 1 is accepted.
    #[serde(default = "one")]
    #[schemars(range(min = 1, max = 1))]
    pub replicas: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Size of the cache volume (a Kubernetes quantity).
    #[serde(default = "default_volume_size")]
    pub volume_size: String,
    /// StorageClass of the cache volume; the cluster default when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub storage_class_name: Option<String>,
    #[serde(default)]
    pub durability: Durability,
}

impl Default for StorageSpec {
    fn default() -> Self {
        Self { replicas: 1, resources: None, volume_size: default_volume_size(), storage_class_name: None, durability: Durability::Remote }
    }
}

/// How the proxy Service is exposed.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum ServiceType {
    #[default]
    ClusterIP,
    NodePort,
    LoadBalancer,
}

impl ServiceType {
    /// The Service's `spec.type`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::ClusterIP => "ClusterIP",
            Self::NodePort => "NodePort",
            Self::LoadBalancer => "LoadBalancer",
        }
    }
}

/// The proxies.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProxySpec {
    #[serde(default = "two")]
    #[schemars(range(min = 1))]
    pub replicas: i32,
    #[serde(default)]
    pub service_type: ServiceType,
    /// A `kubernetes.io/tls` Secret: clients may then use `sslmode=require`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls_secret: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
}

impl Default for ProxySpec {
    fn default() -> Self {
        Self { replicas: 2, service_type: ServiceType::ClusterIP, tls_secret: None, resources: None }
    }
}

/// The warm pool of unbound computes.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PoolSpec {
    /// Unbound compute pods kept ready.
    #[serde(default = "two")]
    #[schemars(range(min = 0))]
    pub size: i32,
    /// Resources of every compute pod.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resources: Option<ResourceRequirements>,
    /// Additions to the compute pod template.
    #[serde(default)]
    pub pod_template: PodTemplateOverrides,
}

impl Default for PoolSpec {
    fn default() -> Self {
        Self { size: 2, resources: None, pod_template: PodTemplateOverrides::default() }
    }
}

/// What a cluster may add to its compute pods.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodTemplateOverrides {
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub annotations: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub node_selector: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tolerations: Vec<Toleration>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority_class_name: Option<String>,
}

/// Database settings a cluster applies unless a `Database` overrides them.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseDefaults {
    #[serde(default)]
    #[schemars(range(min = 0))]
    pub min_replicas: i32,
    #[serde(default = "four")]
    #[schemars(range(min = 1))]
    pub max_replicas: i32,
    /// How long a database without sessions keeps its computes (e.g. `300s`, `5m`).
    #[serde(default = "default_idle_timeout")]
    pub idle_timeout: String,
    /// Concurrent sessions per compute the autoscaler aims for.
    #[serde(default = "eight")]
    #[schemars(range(min = 1))]
    pub target_sessions: i32,
}

impl Default for DatabaseDefaults {
    fn default() -> Self {
        Self { min_replicas: 0, max_replicas: 4, idle_timeout: default_idle_timeout(), target_sessions: 8 }
    }
}

/// Where an `EbbCluster` stands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct EbbClusterStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Ready` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    #[serde(default)]
    pub storage_ready_replicas: i32,
    #[serde(default)]
    pub proxy_ready_replicas: i32,
    /// Unbound compute pods ready to be claimed.
    #[serde(default)]
    pub warm_pods: i32,
    /// `host:port` clients connect to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

/// The CEL transition rule that keeps a `Database`'s cluster and SQL name.
const IMMUTABLE_NAMES: &str = "self.cluster == oldSelf.cluster && has(self.databaseName) == has(oldSelf.databaseName) && (!has(self.databaseName) || self.databaseName == oldSelf.databaseName)";

/// One tenant database of an `EbbCluster`. Its cluster and SQL name cannot
/// change (the API server refuses it): delete and recreate it instead.
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, PartialEq, KubeSchema)]
#[kube(
    group = "ebb.dev",
    version = "v1alpha1",
    kind = "Database",
    plural = "databases",
    shortname = "ebbdb",
    namespaced,
    status = "DatabaseStatus",
    printcolumn = r#"{"name":"Cluster","type":"string","jsonPath":".spec.cluster"}"#,
    printcolumn = r#"{"name":"Phase","type":"string","jsonPath":".status.phase"}"#,
    printcolumn = r#"{"name":"Replicas","type":"integer","jsonPath":".status.replicas"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#
)]
#[serde(rename_all = "camelCase")]
#[x_kube(validation = Rule::new(IMMUTABLE_NAMES).message("spec.cluster and spec.databaseName cannot change: delete and recreate the Database"))]
pub struct DatabaseSpec {
    /// The `EbbCluster` (same namespace) that serves it.
    #[schemars(length(min = 1))]
    pub cluster: String,
    /// The SQL name clients connect to; the resource's name when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 0))]
    pub min_replicas: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub max_replicas: Option<i32>,
    /// e.g. `300s`, `5m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(range(min = 1))]
    pub target_sessions: Option<i32>,
    /// A login role created with the database and allowed to connect to it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<OwnerRole>,
    /// What deleting the resource does to the data.
    #[serde(default)]
    pub deletion_policy: DeletionPolicy,
}

impl DatabaseSpec {
    /// A database of `cluster` with every other setting from the cluster's
    /// defaults, kept when deleted.
    pub fn new(cluster: &str) -> Self {
        Self {
            cluster: cluster.into(),
            database_name: None,
            min_replicas: None,
            max_replicas: None,
            idle_timeout: None,
            target_sessions: None,
            owner: None,
            deletion_policy: DeletionPolicy::Retain,
        }
    }
}

/// The owner role of a database.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct OwnerRole {
    #[schemars(length(min = 1))]
    pub name: String,
    /// The Secret (same namespace) holding its password.
    pub password_secret: SecretKey,
}

/// One key of a Secret.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKey {
    pub name: String,
    #[serde(default = "default_password_key")]
    pub key: String,
}

/// What happens to a database's data when its resource is deleted.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Default, JsonSchema)]
pub enum DeletionPolicy {
    /// The data stays in the object store; a new `Database` of the same name finds it.
    #[default]
    Retain,
    /// The database is dropped.
    Delete,
}

/// Where a `Database` stands.
#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Default, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DatabaseStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Pending`, `Suspended`, `Resuming`, `Running`, `Draining` or `Failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phase: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<Condition>,
    /// Computes serving it (draining ones not counted).
    #[serde(default)]
    pub replicas: i32,
    #[serde(default)]
    pub connections: i64,
    /// `host:port` clients connect to (the cluster's proxy).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
}

impl Database {
    /// The SQL database name.
    pub fn sql_name(&self) -> String {
        self.spec.database_name.clone().unwrap_or_else(|| self.metadata.name.clone().unwrap_or_default())
    }
}

fn one() -> i32 {
    1
}
fn two() -> i32 {
    2
}
fn four() -> i32 {
    4
}
fn eight() -> i32 {
    8
}
fn default_volume_size() -> String {
    "10Gi".into()
}
fn default_idle_timeout() -> String {
    "300s".into()
}
fn default_password_key() -> String {
    "password".into()
}

/// The CRDs as one multi-document YAML (what `ebb crd` prints).
pub fn crds_yaml() -> Result<String, serde_yaml::Error> {
    use kube::CustomResourceExt;
    let mut out = String::new();
    for crd in [EbbCluster::crd(), Database::crd()] {
        out.push_str("---\n");
        out.push_str(&serde_yaml::to_string(&crd)?);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kube::CustomResourceExt;

    #[test]
    fn a_databases_cluster_and_name_are_immutable_by_a_transition_rule() {
        let crd = serde_json::to_value(Database::crd()).unwrap();
        let spec = &crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"];
        let rules = spec["x-kubernetes-validations"].as_array().expect("validations on spec");
        assert!(rules.iter().any(|r| r["rule"] == IMMUTABLE_NAMES), "{rules:?}");
        assert!(IMMUTABLE_NAMES.contains("oldSelf.cluster") && IMMUTABLE_NAMES.contains("oldSelf.databaseName"));
        // The rest of the schema keeps its validation.
        assert_eq!(spec["properties"]["maxReplicas"]["minimum"], 1.0);
    }
}
