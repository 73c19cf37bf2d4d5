//! The leader lease against the fake API, and the manifests in `deploy/`:
//! the CRD YAML must equal what `ebb crd` prints, and everything rendered
//! must validate against the Kubernetes schemas.

use std::path::PathBuf;

use ebb_operator::k8s::leader::Leader;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;

use crate::fake_api::FakeApi;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test]
async fn one_operator_leads_at_a_time() {
    let api = FakeApi::start().await;
    let a = Leader::new(api.client(), "ebb-system", "ebb-operator", "operator-a");
    let b = Leader::new(api.client(), "ebb-system", "ebb-operator", "operator-b");
    assert!(a.try_hold().await.unwrap(), "the first takes the free lease");
    assert!(!b.try_hold().await.unwrap(), "a valid lease is respected");
    assert!(a.try_hold().await.unwrap(), "the holder renews");
    // a stops renewing: its lease expires.
    let leases: Api<Lease> = Api::namespaced(api.client(), "ebb-system");
    let stale = json!({ "spec": { "renewTime": "2020-01-01T00:00:00.000000Z", "acquireTime": "2020-01-01T00:00:00.000000Z" } });
    leases.patch("ebb-operator", &PatchParams::default(), &Patch::Merge(stale)).await.unwrap();
    assert!(b.try_hold().await.unwrap(), "an expired lease is taken over");
    assert!(!a.try_hold().await.unwrap(), "the old holder lost it");
    let lease = leases.get("ebb-operator").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("operator-b"));
    assert_eq!(lease.lease_transitions, Some(1));
}

#[test]
fn the_crd_yaml_in_deploy_is_what_ebb_crd_prints() {
    let printed = ebb_operator::k8s::crd::crds_yaml().unwrap();
    for copy in ["deploy/crds/ebb.dev.yaml", "deploy/helm/ebb/crds/ebb.dev.yaml", "deploy/kustomize/base/crds/ebb.dev.yaml"] {
        let on_disk = std::fs::read_to_string(repo().join(copy)).unwrap_or_else(|e| panic!("{copy}: {e}"));
        assert!(on_disk == printed, "{copy} drifted from `ebb crd`; regenerate it with `ebb crd > {copy}`");
    }
}

#[test]
fn deploy_manifests_validate_against_the_kubernetes_schemas() {
    let out = std::process::Command::new("bash").arg(repo().join("deploy/validate.sh")).current_dir(repo()).output().expect("run deploy/validate.sh");
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "deploy/validate.sh failed:\n{text}");
    println!("{text}");
}
