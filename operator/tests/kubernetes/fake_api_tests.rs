//! Tests of the fake API server itself, driven through a real `kube::Client`,
//! so that the reconciler tests built on it can trust what it answers.

use std::fmt::Debug;
use std::sync::Arc;
use std::time::Duration;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, ApiResource, DeleteParams, DynamicObject, ListParams, Patch, PatchParams, PostParams};
use kube::api::{WatchEvent, WatchParams};
use kube::core::{GroupVersionKind, Status};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};
use tokio::sync::Barrier;

use crate::fake_api::FakeApi;

/// Builds a typed object from JSON.
fn object<K: DeserializeOwned>(value: Value) -> K {
    serde_json::from_value(value).expect("test object deserializes")
}

fn config_map(name: &str, labels: Value) -> ConfigMap {
    object(json!({ "metadata": { "name": name, "labels": labels }, "data": { "k": name } }))
}

fn pod(name: &str, labels: Value) -> Pod {
    object(json!({
        "metadata": { "name": name, "labels": labels },
        "spec": { "containers": [{ "name": "compute", "image": "ebb:test" }] },
    }))
}

fn deployment(name: &str, replicas: i32) -> Deployment {
    object(json!({
        "metadata": { "name": name },
        "spec": {
            "replicas": replicas,
            "selector": { "matchLabels": { "app": name } },
            "template": {
                "metadata": { "labels": { "app": name } },
                "spec": { "containers": [{ "name": "compute", "image": "ebb:test" }] },
            },
        },
    }))
}

/// The `Status` of a failed call.
fn api_error<T: Debug>(result: kube::Result<T>) -> Box<Status> {
    match result {
        Err(kube::Error::Api(status)) => status,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn owner_reference(owner: &Value) -> Value {
    json!({
        "apiVersion": owner["apiVersion"], "kind": owner["kind"],
        "name": owner["metadata"]["name"], "uid": owner["metadata"]["uid"],
    })
}

async fn names(api: &Api<ConfigMap>, labels: &str) -> Vec<String> {
    let list = api.list(&ListParams::default().labels(labels)).await.expect("list configmaps");
    list.items.iter().map(|cm| cm.name_any()).collect()
}

#[tokio::test]
async fn create_get_and_list_with_selectors() {
    let fake = FakeApi::start().await;
    let client = fake.client();
    let default: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let other: Api<ConfigMap> = Api::namespaced(client.clone(), "other");
    let pp = PostParams::default();
    default.create(&pp, &config_map("a", json!({ "app": "db", "tier": "web" }))).await.unwrap();
    default.create(&pp, &config_map("b", json!({ "app": "db", "tier": "api" }))).await.unwrap();
    default.create(&pp, &config_map("c", json!({ "app": "cache" }))).await.unwrap();
    default.create(&pp, &config_map("d", json!({}))).await.unwrap();
    let last = other.create(&pp, &config_map("e", json!({ "app": "db" }))).await.unwrap();

    let a = default.get("a").await.unwrap();
    assert_eq!(a.data.as_ref().and_then(|d| d.get("k")).map(String::as_str), Some("a"));
    assert_eq!(a.metadata.namespace.as_deref(), Some("default"));
    assert_eq!(a.metadata.generation, Some(1));
    assert!(a.metadata.creation_timestamp.is_some());
    assert_ne!(a.uid(), last.uid());
    assert!(a.resource_version().unwrap().parse::<u64>().unwrap() < last.resource_version().unwrap().parse().unwrap());

    assert_eq!(names(&default, "").await, ["a", "b", "c", "d"]);
    assert_eq!(names(&default, "app=db").await, ["a", "b"]);
    assert_eq!(names(&default, "app==db").await, ["a", "b"]);
    assert_eq!(names(&default, "app!=db").await, ["c", "d"]);
    assert_eq!(names(&default, "tier in (web, api)").await, ["a", "b"]);
    assert_eq!(names(&default, "tier notin (web)").await, ["b", "c", "d"]);
    assert_eq!(names(&default, "tier").await, ["a", "b"]);
    assert_eq!(names(&default, "!tier").await, ["c", "d"]);
    assert_eq!(names(&default, "app=db,tier=web").await, ["a"]);
    assert_eq!(names(&default, "app in (db,cache),!tier").await, ["c"]);

    let all: Api<ConfigMap> = Api::all(client);
    let everywhere = all.list(&ListParams::default().labels("app=db")).await.unwrap();
    let found: Vec<_> = everywhere.items.iter().map(|cm| (cm.namespace().unwrap(), cm.name_any())).collect();
    assert_eq!(found, [("default".into(), "a".into()), ("default".into(), "b".into()), ("other".into(), "e".into())]);
    assert_eq!(everywhere.metadata.resource_version, last.metadata.resource_version);
    let by_name = all.list(&ListParams::default().fields("metadata.name=b")).await.unwrap();
    assert_eq!(by_name.items.iter().map(|cm| cm.name_any()).collect::<Vec<_>>(), ["b"]);
    let by_namespace = all.list(&ListParams::default().fields("metadata.namespace=other")).await.unwrap();
    assert_eq!(by_namespace.items.iter().map(|cm| cm.name_any()).collect::<Vec<_>>(), ["e"]);

    let bad = api_error(default.list(&ListParams::default().labels("tier in (web")).await);
    assert_eq!((bad.code, bad.reason.as_str()), (400, "BadRequest"));
    assert_eq!(fake.objects("v1", "configmaps").len(), 5);
    assert_eq!(fake.object("v1", "configmaps", "other", "e").unwrap()["data"]["k"], "e");
}

#[tokio::test]
async fn creating_twice_is_already_exists_and_generate_name_is_unique() {
    let fake = FakeApi::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(fake.client());
    api.create(&PostParams::default(), &config_map("once", json!({}))).await.unwrap();
    let error = api_error(api.create(&PostParams::default(), &config_map("once", json!({}))).await);
    assert_eq!((error.code, error.reason.as_str()), (409, "AlreadyExists"));
    assert_eq!(error.details.as_ref().map(|d| d.name.as_str()), Some("once"));

    let generated: ConfigMap = object(json!({ "metadata": { "generateName": "warm-" } }));
    let first = api.create(&PostParams::default(), &generated).await.unwrap();
    let second = api.create(&PostParams::default(), &generated).await.unwrap();
    assert!(first.name_any().starts_with("warm-") && first.name_any().len() > "warm-".len());
    assert_ne!(first.name_any(), second.name_any());
    assert_eq!(fake.objects("v1", "configmaps").len(), 3);
}

#[tokio::test]
async fn merge_patch_honours_the_resource_version_precondition() {
    let fake = FakeApi::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(fake.client());
    let created = api.create(&PostParams::default(), &config_map("cm", json!({}))).await.unwrap();
    let read_rv = created.resource_version().unwrap();
    let pp = PatchParams::default();

    let fresh = json!({ "metadata": { "resourceVersion": read_rv }, "data": { "k": "first" } });
    let patched = api.patch("cm", &pp, &Patch::Merge(&fresh)).await.unwrap();
    assert_ne!(patched.resource_version().unwrap(), read_rv);

    let stale = json!({ "metadata": { "resourceVersion": read_rv }, "data": { "k": "second" } });
    let error = api_error(api.patch("cm", &pp, &Patch::Merge(&stale)).await);
    assert_eq!((error.code, error.reason.as_str()), (409, "Conflict"));
    assert_eq!(api.get("cm").await.unwrap().data.unwrap()["k"], "first");

    let unconditional = json!({ "data": { "k": null, "other": "x" } });
    let patched = api.patch("cm", &pp, &Patch::Merge(&unconditional)).await.unwrap();
    assert_eq!(patched.data.unwrap().into_iter().collect::<Vec<_>>(), [("other".to_owned(), "x".to_owned())]);
    let strategic = json!({ "metadata": { "labels": { "s": "1" } } });
    let patched = api.patch("cm", &pp, &Patch::Strategic(&strategic)).await.unwrap();
    assert_eq!(patched.labels()["s"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_claims_of_one_pod_have_exactly_one_winner() {
    let fake = FakeApi::start().await;
    for round in 0..5 {
        let name = format!("warm-{round}");
        let api: Api<Pod> = Api::default_namespaced(fake.client());
        api.create(&PostParams::default(), &pod(&name, json!({ "pool": "warm" }))).await.unwrap();

        // Every claimer reads the pod before any of them patches it.
        let all_read = Arc::new(Barrier::new(4));
        let mut claimers = Vec::new();
        for claimer in 0..4 {
            let all_read = all_read.clone();
            // Each claimer has its own client, hence its own connections.
            let api: Api<Pod> = Api::default_namespaced(fake.client());
            let name = name.clone();
            claimers.push(tokio::spawn(async move {
                let read = api.get(&name).await.expect("read the warm pod");
                all_read.wait().await;
                let claim = json!({
                    "metadata": {
                        "resourceVersion": read.resource_version(),
                        "labels": { "pool": null, "ebb.dev/database": format!("db-{claimer}") },
                    },
                });
                let result = api.patch(&name, &PatchParams::default(), &Patch::Merge(&claim)).await;
                (claimer, result)
            }));
        }
        let mut winners = Vec::new();
        for claimer in claimers {
            match claimer.await.unwrap() {
                (claimer, Ok(_)) => winners.push(claimer),
                (_, Err(kube::Error::Api(status))) => {
                    assert_eq!((status.code, status.reason.as_str()), (409, "Conflict"))
                }
                (_, Err(other)) => panic!("unexpected error: {other}"),
            }
        }
        assert_eq!(winners.len(), 1, "round {round}: winners {winners:?}");
        let claimed = api.get(&name).await.unwrap();
        assert_eq!(claimed.labels().get("ebb.dev/database"), Some(&format!("db-{}", winners[0])));
        assert!(!claimed.labels().contains_key("pool"));
    }
}

#[tokio::test]
async fn server_side_apply_creates_updates_and_drops_fields() {
    let fake = FakeApi::start().await;
    let api: Api<Deployment> = Api::default_namespaced(fake.client());
    let operator = PatchParams::apply("ebb-operator").force();
    let apply = |labels: Value, replicas: i32| {
        let mut desired = serde_json::to_value(deployment("pool", replicas)).unwrap();
        desired["apiVersion"] = json!("apps/v1");
        desired["kind"] = json!("Deployment");
        desired["metadata"]["labels"] = labels;
        desired
    };

    let created = api.patch("pool", &operator, &Patch::Apply(apply(json!({ "a": "1", "b": "2" }), 2))).await.unwrap();
    assert_eq!(created.metadata.generation, Some(1));
    assert_eq!(created.spec.as_ref().unwrap().replicas, Some(2));
    let managed = created.metadata.managed_fields.clone().unwrap();
    assert_eq!(managed.len(), 1);
    assert_eq!(managed[0].manager.as_deref(), Some("ebb-operator"));
    assert_eq!(managed[0].operation.as_deref(), Some("Apply"));
    let (method, path, content_type) = fake.requests().last().cloned().unwrap();
    assert_eq!(method, "PATCH");
    assert!(path.starts_with("/apis/apps/v1/namespaces/default/deployments/pool?"), "{path}");
    assert!(path.contains("fieldManager=ebb-operator") && path.contains("force=true"), "{path}");
    assert_eq!(content_type.as_deref(), Some("application/apply-patch+yaml"));

    // Another manager's field survives; the operator's dropped label goes.
    let other = PatchParams::apply("someone-else");
    let theirs = json!({ "apiVersion": "apps/v1", "kind": "Deployment", "metadata": { "labels": { "c": "3" } } });
    api.patch("pool", &other, &Patch::Apply(&theirs)).await.unwrap();
    let updated = api.patch("pool", &operator, &Patch::Apply(apply(json!({ "a": "1" }), 3))).await.unwrap();
    let labels: Vec<_> = updated.labels().iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    assert_eq!(labels, [("a", "1"), ("c", "3")]);
    assert_eq!(updated.spec.as_ref().unwrap().replicas, Some(3));
    assert_eq!(updated.metadata.generation, Some(2));

    // Applying the same configuration again is a no-op.
    let again = api.patch("pool", &operator, &Patch::Apply(apply(json!({ "a": "1" }), 3))).await.unwrap();
    assert_eq!(again.resource_version(), updated.resource_version());

    // Changing a field another manager applied is a conflict unless forced.
    let replicas = json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": { "labels": { "c": "3" } }, "spec": { "replicas": 5 },
    });
    let error = api_error(api.patch("pool", &other, &Patch::Apply(&replicas)).await);
    assert_eq!((error.code, error.reason.as_str()), (409, "Conflict"));
    assert!(error.message.contains("ebb-operator"), "{}", error.message);
    let forced = api.patch("pool", &other.clone().force(), &Patch::Apply(&replicas)).await.unwrap();
    assert_eq!(forced.spec.unwrap().replicas, Some(5));
    let stored = fake.object("apps/v1", "deployments", "default", "pool").unwrap();
    assert_eq!(stored["metadata"]["labels"], json!({ "a": "1", "c": "3" }));
    assert_eq!(stored["metadata"]["managedFields"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn status_subresource_is_written_separately() {
    let fake = FakeApi::start().await;
    let api: Api<Deployment> = Api::default_namespaced(fake.client());
    let mut with_status = serde_json::to_value(deployment("d", 1)).unwrap();
    with_status["status"] = json!({ "replicas": 1 });
    let created = api.create(&PostParams::default(), &object(with_status)).await.unwrap();
    assert_eq!(created.status.as_ref().unwrap().replicas, Some(1), "outside ebb.dev, status is kept on create");

    // A write to the main resource cannot change the status.
    let main = json!({ "spec": { "replicas": 4 }, "status": { "replicas": 9 } });
    let patched = api.patch("d", &PatchParams::default(), &Patch::Merge(&main)).await.unwrap();
    assert_eq!(patched.spec.as_ref().unwrap().replicas, Some(4));
    assert_eq!(patched.status.as_ref().unwrap().replicas, Some(1));
    assert_eq!(patched.metadata.generation, Some(2));
    let mut replaced = patched.clone();
    replaced.status.as_mut().unwrap().replicas = Some(7);
    replaced.metadata.labels = Some([("l".to_owned(), "v".to_owned())].into());
    let replaced = api.replace("d", &PostParams::default(), &replaced).await.unwrap();
    assert_eq!(replaced.status.as_ref().unwrap().replicas, Some(1));
    assert_eq!(replaced.labels()["l"], "v");

    // A write to /status changes only the status.
    let status = json!({ "spec": { "replicas": 8 }, "status": { "readyReplicas": 3 } });
    let patched = api.patch_status("d", &PatchParams::default(), &Patch::Merge(&status)).await.unwrap();
    assert_eq!(patched.spec.as_ref().unwrap().replicas, Some(4));
    assert_eq!(patched.status.as_ref().unwrap().ready_replicas, Some(3));
    assert_eq!(patched.metadata.generation, Some(2));
    let mut whole = patched.clone();
    whole.status.as_mut().unwrap().ready_replicas = Some(4);
    whole.metadata.labels = None;
    let replaced = api.replace_status("d", &PostParams::default(), &whole).await.unwrap();
    assert_eq!(replaced.status.as_ref().unwrap().ready_replicas, Some(4));
    assert_eq!(replaced.labels()["l"], "v");
    let stale = api.replace_status("d", &PostParams::default(), &whole).await;
    assert_eq!(api_error(stale).code, 409);

    // Resources of group ebb.dev have a status subresource: status is dropped on create.
    let gvk = GroupVersionKind::gvk("ebb.dev", "v1alpha1", "Database");
    let resource = ApiResource::from_gvk_with_plural(&gvk, "databases");
    let databases: Api<DynamicObject> = Api::default_namespaced_with(fake.client(), &resource);
    let database: DynamicObject = object(json!({
        "apiVersion": "ebb.dev/v1alpha1", "kind": "Database", "metadata": { "name": "db" },
        "spec": { "minReplicas": 0 }, "status": { "ready": 5 },
    }));
    databases.create(&PostParams::default(), &database).await.unwrap();
    let stored = fake.object("ebb.dev/v1alpha1", "databases", "default", "db").unwrap();
    assert_eq!(stored["spec"], json!({ "minReplicas": 0 }));
    assert!(stored.get("status").is_none(), "{stored}");
    let ssa = json!({ "apiVersion": "ebb.dev/v1alpha1", "kind": "Database", "status": { "ready": 1 } });
    let applied = databases.patch_status("db", &PatchParams::apply("ebb-operator"), &Patch::Apply(&ssa)).await.unwrap();
    assert_eq!(applied.data["status"], json!({ "ready": 1 }));
    assert_eq!(applied.data["spec"], json!({ "minReplicas": 0 }));
}

#[tokio::test]
async fn delete_waits_for_finalizers() {
    let fake = FakeApi::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(fake.client());
    let mut guarded = config_map("guarded", json!({}));
    guarded.metadata.finalizers = Some(vec!["ebb.dev/cleanup".to_owned()]);
    api.create(&PostParams::default(), &guarded).await.unwrap();

    let deleting = api.delete("guarded", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert!(deleting.metadata.deletion_timestamp.is_some());
    let still_there = api.get("guarded").await.unwrap();
    assert!(still_there.metadata.deletion_timestamp.is_some());
    api.delete("guarded", &DeleteParams::default()).await.unwrap();
    assert!(api.get("guarded").await.unwrap().metadata.deletion_timestamp.is_some());

    let release = json!({ "metadata": { "finalizers": null } });
    api.patch("guarded", &PatchParams::default(), &Patch::Merge(&release)).await.unwrap();
    assert_eq!(api_error(api.get("guarded").await).code, 404);
    assert!(fake.objects("v1", "configmaps").is_empty());

    api.create(&PostParams::default(), &config_map("plain", json!({}))).await.unwrap();
    let gone = api.delete("plain", &DeleteParams::default()).await.unwrap().left().unwrap();
    assert_eq!(gone.name_any(), "plain");
    assert!(fake.object("v1", "configmaps", "default", "plain").is_none());
}

#[tokio::test]
async fn deleting_an_owner_garbage_collects_its_dependents() {
    let fake = FakeApi::start().await;
    let client = fake.client();
    let deployments: Api<Deployment> = Api::default_namespaced(client.clone());
    let config_maps: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let pods: Api<Pod> = Api::default_namespaced(client);
    let pp = PostParams::default();
    deployments.create(&pp, &deployment("owner", 1)).await.unwrap();
    let owner = fake.object("apps/v1", "deployments", "default", "owner").unwrap();
    config_maps.create(&pp, &config_map("unrelated", json!({}))).await.unwrap();
    let unrelated = fake.object("v1", "configmaps", "default", "unrelated").unwrap();

    let owned = |value: Value, owners: Vec<Value>| {
        let mut value = value;
        value["metadata"]["ownerReferences"] = Value::Array(owners);
        value
    };
    let child = owned(serde_json::to_value(config_map("child", json!({}))).unwrap(), vec![owner_reference(&owner)]);
    config_maps.create(&pp, &object(child)).await.unwrap();
    let child = fake.object("v1", "configmaps", "default", "child").unwrap();
    let pod_json = |name: &str| serde_json::to_value(pod(name, json!({}))).unwrap();
    pods.create(&pp, &object(owned(pod_json("direct"), vec![owner_reference(&owner)]))).await.unwrap();
    pods.create(&pp, &object(owned(pod_json("grandchild"), vec![owner_reference(&child)]))).await.unwrap();
    let both = vec![owner_reference(&owner), owner_reference(&unrelated)];
    pods.create(&pp, &object(owned(pod_json("co-owned"), both))).await.unwrap();
    let mut finalized = owned(pod_json("finalized"), vec![owner_reference(&owner)]);
    finalized["metadata"]["finalizers"] = json!(["ebb.dev/drain"]);
    pods.create(&pp, &object(finalized)).await.unwrap();

    deployments.delete("owner", &DeleteParams::background()).await.unwrap();
    assert!(fake.object("apps/v1", "deployments", "default", "owner").is_none());
    assert!(fake.object("v1", "configmaps", "default", "child").is_none());
    let remaining: Vec<String> =
        pods.list(&ListParams::default()).await.unwrap().iter().map(|p| p.name_any()).collect();
    assert_eq!(remaining, ["co-owned", "finalized"]);
    assert!(pods.get("finalized").await.unwrap().metadata.deletion_timestamp.is_some());
    assert!(pods.get("co-owned").await.unwrap().metadata.deletion_timestamp.is_none());
    assert!(fake.object("v1", "configmaps", "default", "unrelated").is_some());
}

#[tokio::test]
async fn runtime_watcher_sees_added_modified_and_deleted() {
    let fake = FakeApi::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(fake.client());
    api.create(&PostParams::default(), &config_map("before", json!({}))).await.unwrap();
    let mut events = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut next = async || {
        let event = tokio::time::timeout(Duration::from_secs(10), events.try_next()).await;
        event.expect("a watch event within 10s").expect("no watch error").expect("the stream goes on")
    };
    assert!(matches!(next().await, watcher::Event::Init));
    assert!(matches!(next().await, watcher::Event::InitApply(cm) if cm.name_any() == "before"));
    assert!(matches!(next().await, watcher::Event::InitDone));

    api.create(&PostParams::default(), &config_map("w", json!({}))).await.unwrap();
    let change = json!({ "data": { "k": "changed" } });
    api.patch("w", &PatchParams::default(), &Patch::Merge(&change)).await.unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();
    match next().await {
        watcher::Event::Apply(cm) => assert_eq!((cm.name_any().as_str(), cm.data.unwrap()["k"].as_str()), ("w", "w")),
        other => panic!("expected the creation, got {other:?}"),
    }
    match next().await {
        watcher::Event::Apply(cm) => assert_eq!(cm.data.unwrap()["k"], "changed"),
        other => panic!("expected the modification, got {other:?}"),
    }
    assert!(matches!(next().await, watcher::Event::Delete(cm) if cm.name_any() == "w"));
}

#[tokio::test]
async fn watch_with_a_selector_sees_objects_leave_it() {
    let fake = FakeApi::start().await;
    let api: Api<Pod> = Api::default_namespaced(fake.client());
    let config = watcher::Config::default().labels("pool=warm");
    let mut events = watcher(api.clone(), config).boxed();
    let mut next = async || {
        let event = tokio::time::timeout(Duration::from_secs(10), events.try_next()).await;
        event.expect("a watch event within 10s").expect("no watch error").expect("the stream goes on")
    };
    assert!(matches!(next().await, watcher::Event::Init));
    assert!(matches!(next().await, watcher::Event::InitDone));
    api.create(&PostParams::default(), &pod("cold", json!({ "pool": "cold" }))).await.unwrap();
    api.create(&PostParams::default(), &pod("warm", json!({ "pool": "warm" }))).await.unwrap();
    assert!(matches!(next().await, watcher::Event::Apply(p) if p.name_any() == "warm"));
    let claim = json!({ "metadata": { "labels": { "pool": null } } });
    api.patch("warm", &PatchParams::default(), &Patch::Merge(&claim)).await.unwrap();
    assert!(matches!(next().await, watcher::Event::Delete(p) if p.name_any() == "warm"));
    assert!(api.get("warm").await.is_ok(), "leaving the selector is not a deletion");
}

#[tokio::test]
async fn watch_replays_history_and_answers_gone_after_compaction() {
    let fake = FakeApi::start().await;
    let api: Api<ConfigMap> = Api::default_namespaced(fake.client());
    let first = api.create(&PostParams::default(), &config_map("one", json!({}))).await.unwrap();
    api.create(&PostParams::default(), &config_map("two", json!({}))).await.unwrap();
    api.create(&PostParams::default(), &config_map("three", json!({}))).await.unwrap();
    let from = first.resource_version().unwrap();

    let params = WatchParams::default().timeout(1);
    let replayed: Vec<String> = api
        .watch(&params, &from)
        .await
        .unwrap()
        .try_filter_map(|event| async move {
            Ok(match event {
                WatchEvent::Added(cm) => Some(cm.name_any()),
                _ => None,
            })
        })
        .try_collect()
        .await
        .unwrap();
    assert_eq!(replayed, ["two", "three"]);

    fake.compact();
    let mut stream = api.watch(&params, &from).await.unwrap().boxed();
    match stream.try_next().await.unwrap() {
        Some(WatchEvent::Error(status)) => {
            assert_eq!((status.code, status.reason.as_str()), (410, "Expired"))
        }
        other => panic!("expected 410 Gone, got {other:?}"),
    }
    assert!(stream.try_next().await.unwrap().is_none());
}

#[tokio::test]
async fn errors_are_status_objects() {
    let fake = FakeApi::start().await;
    let client: Client = fake.client();
    let api: Api<ConfigMap> = Api::default_namespaced(client.clone());
    let missing = api_error(api.get("missing").await);
    assert_eq!((missing.code, missing.reason.as_str()), (404, "NotFound"));
    assert_eq!(missing.message, "configmaps \"missing\" not found");
    let details = missing.details.unwrap();
    assert_eq!((details.name.as_str(), details.kind.as_str()), ("missing", "configmaps"));
    assert_eq!(api_error(api.delete("missing", &DeleteParams::default()).await).code, 404);
    let patch = json!({ "data": {} });
    assert_eq!(api_error(api.patch("missing", &PatchParams::default(), &Patch::Merge(&patch)).await).code, 404);
    assert!(api.get_opt("missing").await.unwrap().is_none());

    let raw = |method: &str, uri: &str, content_type: &str, body: &[u8]| {
        let request = axum::http::Request::builder().method(method).uri(uri).header("content-type", content_type);
        request.body(body.to_vec()).unwrap()
    };
    let collection = "/api/v1/namespaces/default/configmaps";
    let unknown = api_error(client.request_text(raw("GET", "/nonsense/path", "application/json", b"")).await);
    assert_eq!((unknown.code, unknown.reason.as_str()), (404, "NotFound"));
    let malformed = api_error(client.request_text(raw("POST", collection, "application/json", b"{not json")).await);
    assert_eq!((malformed.code, malformed.reason.as_str()), (400, "BadRequest"));

    api.create(&PostParams::default(), &config_map("cm", json!({}))).await.unwrap();
    let cm = format!("{collection}/cm");
    let unsupported = api_error(client.request_text(raw("PATCH", &cm, "text/plain", b"{}")).await);
    assert_eq!((unsupported.code, unsupported.reason.as_str()), (415, "UnsupportedMediaType"));

    let pp = PatchParams::default();
    let failing_test: json_patch::Patch = object(json!([
        { "op": "test", "path": "/data/k", "value": "not-cm" },
        { "op": "replace", "path": "/data/k", "value": "x" },
    ]));
    let error = api_error(api.patch("cm", &pp, &Patch::<()>::Json(failing_test)).await);
    assert_eq!((error.code, error.reason.as_str()), (422, "Invalid"));
    let missing_path: json_patch::Patch = object(json!([{ "op": "remove", "path": "/data/absent" }]));
    assert_eq!(api_error(api.patch("cm", &pp, &Patch::<()>::Json(missing_path)).await).code, 422);
    let passing: json_patch::Patch = object(json!([
        { "op": "test", "path": "/data/k", "value": "cm" },
        { "op": "add", "path": "/data/extra", "value": "y" },
    ]));
    let patched = api.patch("cm", &pp, &Patch::<()>::Json(passing)).await.unwrap();
    assert_eq!(patched.data.unwrap()["extra"], "y");
    // kube-runtime's finalizer helper tests a missing field against null.
    let add_finalizer: json_patch::Patch = object(json!([
        { "op": "test", "path": "/metadata/finalizers", "value": null },
        { "op": "add", "path": "/metadata/finalizers", "value": ["ebb.dev/cleanup"] },
    ]));
    let patched = api.patch("cm", &pp, &Patch::<()>::Json(add_finalizer)).await.unwrap();
    assert_eq!(patched.finalizers(), ["ebb.dev/cleanup"]);
}

#[tokio::test]
async fn replace_checks_the_resource_version() {
    let fake = FakeApi::start().await;
    let leases: Api<Lease> = Api::default_namespaced(fake.client());
    let lease: Lease = object(json!({ "metadata": { "name": "leader" }, "spec": { "holderIdentity": "a" } }));
    let mut read = leases.create(&PostParams::default(), &lease).await.unwrap();
    read.spec.as_mut().unwrap().holder_identity = Some("b".to_owned());
    let won = leases.replace("leader", &PostParams::default(), &read).await.unwrap();
    assert_eq!(won.spec.as_ref().unwrap().holder_identity.as_deref(), Some("b"));
    assert_eq!(won.metadata.generation, Some(2));

    read.spec.as_mut().unwrap().holder_identity = Some("c".to_owned());
    let lost = api_error(leases.replace("leader", &PostParams::default(), &read).await);
    assert_eq!((lost.code, lost.reason.as_str()), (409, "Conflict"));
    let stored = fake.object("coordination.k8s.io/v1", "leases", "default", "leader").unwrap();
    assert_eq!(stored["spec"]["holderIdentity"], "b");
    assert_eq!(stored["kind"], "Lease");
}
