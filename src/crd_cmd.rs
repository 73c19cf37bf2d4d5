//! `ebb crd`: prints the CustomResourceDefinitions of `EbbCluster` and
//! `Database` (what `deploy/crds/ebb.dev.yaml` holds).

/// Prints the CRDs as multi-document YAML.
pub fn run() -> anyhow::Result<()> {
    print!("{}", ebb_operator::k8s::crd::crds_yaml()?);
    Ok(())
}
