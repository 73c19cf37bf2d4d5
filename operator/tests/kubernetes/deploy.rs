//! The leader lease against the fake API, and the manifests in `deploy/`:
//! the CRD YAML must equal what `ebb crd` prints, and everything rendered
//! must validate against the Kubernetes schemas.

use std::path::PathBuf;
use std::time::Duration;

use ebb_operator::k8s::leader::Leader;
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

use crate::fake_api::FakeApi;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..")
}

#[tokio::test]
async fn one_operator_leads_at_a_time() {
    let api = FakeApi::start().await;
    let a = Leader::new(api.client(), "ebb-system", "ebb-operator", "operator-a").with_lease_seconds(1);
    let b = Leader::new(api.client(), "ebb-system", "ebb-operator", "operator-b").with_lease_seconds(1);
    assert!(a.try_hold().await.unwrap(), "the first takes the free lease");
    assert!(!b.try_hold().await.unwrap(), "a valid lease is respected");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(a.try_hold().await.unwrap(), "the holder renews");
    assert!(!b.try_hold().await.unwrap(), "a renewed lease is respected");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(!b.try_hold().await.unwrap(), "renewed 0.6 s ago: still valid");
    // a stops renewing: after a lease duration seen unchanged, b takes it.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert!(b.try_hold().await.unwrap(), "an expired lease is taken over");
    assert!(!a.try_hold().await.unwrap(), "the old holder lost it");
    let leases: Api<Lease> = Api::namespaced(api.client(), "ebb-system");
    let lease = leases.get("ebb-operator").await.unwrap().spec.unwrap();
    assert_eq!(lease.holder_identity.as_deref(), Some("operator-b"));
    assert_eq!(lease.lease_transitions, Some(1));
    // A clean release hands it over at the next look.
    b.release().await.unwrap();
    assert!(a.try_hold().await.unwrap(), "a released lease is free");
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
