//! Reconciles a `Database`: creates it in its cluster's storage (with its
//! owner role), hands its scaling settings to the cluster's controller, and
//! reports what the controller runs as phase, replicas and conditions. A
//! `Database` at zero has no compute pods at all. Its finalizer stops its
//! computes and, with `deletionPolicy: Delete`, drops the data.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::{Api, Resource, ResourceExt};
use serde_json::json;

use super::conditions::{self, READY, SCALING, SUSPENDED};
use super::context::{Context, Error, key};
use super::crd::{Database, DatabaseStatus, DeletionPolicy, EbbCluster};
use super::resources;
use super::storage_admin::StorageAdmin;
use crate::autoscaler::AutoscalerConfig;
use crate::controller::{DatabaseConfig, DatabaseState, DatabaseStatus as Running};

/// Finalizer of `Database`s.
pub const FINALIZER: &str = "ebb.dev/database";

/// How often a database's status is refreshed from its controller.
const STATUS_REFRESH: Duration = Duration::from_secs(5);

/// Reconciles one `Database`.
pub async fn reconcile(db: Arc<Database>, ctx: Arc<Context>) -> Result<Action, Error> {
    let ns = db.namespace().ok_or_else(|| Error::Invalid("Database without namespace".into()))?;
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), &ns);
    finalizer(&api, FINALIZER, db, |event| async {
        match event {
            Finalizer::Apply(d) => apply(&d, &ctx).await,
            Finalizer::Cleanup(d) => cleanup(&d, &ctx).await,
        }
    })
    .await
    .map_err(|e| Error::Finalizer(e.to_string()))
}

/// The controller settings of `db`, from its spec over the cluster's
/// defaults (pure).
pub fn database_config(db: &Database, cluster: &EbbCluster) -> Result<DatabaseConfig, String> {
    let d = &cluster.spec.database_defaults;
    let min = db.spec.min_replicas.unwrap_or(d.min_replicas);
    let max = db.spec.max_replicas.unwrap_or(d.max_replicas);
    let target = db.spec.target_sessions.unwrap_or(d.target_sessions);
    let idle = db.spec.idle_timeout.as_deref().unwrap_or(&d.idle_timeout);
    let idle_timeout = humantime::parse_duration(idle).map_err(|e| format!("idleTimeout {idle:?}: {e}"))?;
    let (min, max) = (u32::try_from(min).map_err(|_| "minReplicas must be at least 0")?, u32::try_from(max).map_err(|_| "maxReplicas must be positive")?);
    if max == 0 || min > max {
        return Err(format!("minReplicas {min} and maxReplicas {max}: need 0 <= min <= max and max >= 1"));
    }
    if target < 1 {
        return Err("targetSessions must be at least 1".into());
    }
    Ok(DatabaseConfig {
        min_replicas: min,
        idle_timeout,
        autoscaler: AutoscalerConfig { target: target as f64, min_replicas: min.max(1), max_replicas: max, ..AutoscalerConfig::default() },
    })
}

/// Phase and conditions from what the controller runs (pure):
/// (phase, suspended, scaling, reason).
pub fn phase(running: Option<&Running>) -> (&'static str, bool, bool, &'static str) {
    match running.map(|r| r.state) {
        None | Some(DatabaseState::Suspended) => ("Suspended", true, false, "NoComputes"),
        Some(DatabaseState::Resuming) => ("Resuming", false, true, "Resuming"),
        Some(DatabaseState::Draining) => ("Draining", false, true, "Draining"),
        Some(DatabaseState::Running) => ("Running", false, false, "Running"),
    }
}

async fn set_status(db: &Database, ctx: &Context, status: DatabaseStatus) -> Result<(), Error> {
    if db.status.as_ref() == Some(&status) {
        return Ok(());
    }
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), &db.namespace().unwrap_or_default());
    api.patch_status(&db.name_any(), &PatchParams::default(), &Patch::Merge(json!({ "status": status }))).await?;
    Ok(())
}

/// Reports that `db` cannot be served yet (or at all) and why.
async fn not_ready(db: &Database, ctx: &Context, phase: &str, reason: &str, message: String) -> Result<(), Error> {
    let mut status = db.status.clone().unwrap_or_default();
    let changed = conditions::set(&mut status.conditions, READY, false, reason, &message, db.metadata.generation, Timestamp::now());
    status.phase = Some(phase.into());
    status.observed_generation = db.metadata.generation;
    if changed {
        ctx.event(db, phase == "Failed", reason, "Reconcile", message).await;
    }
    set_status(db, ctx, status).await
}

async fn apply(db: &Database, ctx: &Context) -> Result<Action, Error> {
    let ns = db.namespace().unwrap_or_default();
    let sql = db.sql_name();
    let clusters: Api<EbbCluster> = Api::namespaced(ctx.client.clone(), &ns);
    let Some(cluster) = clusters.get_opt(&db.spec.cluster).await? else {
        not_ready(db, ctx, "Pending", "ClusterNotFound", format!("EbbCluster {:?} does not exist in {ns}", db.spec.cluster)).await?;
        return Ok(Action::requeue(Duration::from_secs(10)));
    };
    let cfg = match database_config(db, &cluster) {
        Ok(c) => c,
        Err(e) => {
            not_ready(db, ctx, "Failed", "InvalidSpec", e).await?;
            return Ok(Action::await_change());
        }
    };
    if let Some(other) = name_taken_by(db, ctx).await? {
        not_ready(db, ctx, "Failed", "NameInUse", format!("Database {other} already serves {sql:?} on cluster {}", db.spec.cluster)).await?;
        return Ok(Action::requeue(Duration::from_secs(30)));
    }
    let Some(handle) = ctx.cluster(&key(&ns, &db.spec.cluster)) else {
        not_ready(db, ctx, "Pending", "ClusterNotReconciled", format!("EbbCluster {:?} is not running yet", db.spec.cluster)).await?;
        return Ok(Action::requeue(Duration::from_secs(2)));
    };
    let storage = handle.storage.clone();
    let created = match storage.ensure_database(&sql).await {
        Ok(c) => c,
        Err(e) => {
            not_ready(db, ctx, "Pending", "StorageUnavailable", e.to_string()).await?;
            return Ok(Action::requeue(Duration::from_secs(5)));
        }
    };
    if created {
        ctx.event(db, false, "Created", "Create", format!("created database {sql:?} in storage")).await;
    }
    if let Some(owner) = &db.spec.owner {
        apply_owner(db, ctx, &storage, owner, &sql).await?;
    }
    if let Some(owner_ref) = db.controller_owner_ref(&()) {
        handle.runtime.set_owner(&sql, owner_ref);
    }
    handle.controller.configure_database(&sql, cfg);

    let running = handle.controller.status().databases.into_iter().find(|d| d.name == sql);
    let (phase, suspended, scaling, reason) = phase(running.as_ref());
    let generation = db.metadata.generation;
    let now = Timestamp::now();
    let mut status = db.status.clone().unwrap_or_default();
    conditions::set(&mut status.conditions, READY, true, "Serving", "connections resume it on demand", generation, now);
    conditions::set(&mut status.conditions, SUSPENDED, suspended, reason, if suspended { "no computes run" } else { "computes run" }, generation, now);
    conditions::set(&mut status.conditions, SCALING, scaling, reason, if scaling { "computes are being added or drained" } else { "steady" }, generation, now);
    let new = DatabaseStatus {
        observed_generation: generation,
        phase: Some(phase.into()),
        conditions: status.conditions,
        replicas: running.as_ref().map_or(0, |r| r.replicas as i32),
        connections: running.as_ref().map_or(0, |r| r.connections as i64),
        endpoint: Some(resources::endpoint(&cluster)),
    };
    set_status(db, ctx, new).await?;
    Ok(Action::requeue(STATUS_REFRESH))
}

/// Another `Database` of the same cluster already serving the same SQL name
/// (the older one keeps it).
async fn name_taken_by(db: &Database, ctx: &Context) -> Result<Option<String>, Error> {
    let api: Api<Database> = Api::namespaced(ctx.client.clone(), &db.namespace().unwrap_or_default());
    let sql = db.sql_name();
    let mine = (db.metadata.creation_timestamp.clone(), db.name_any());
    Ok(api
        .list(&Default::default())
        .await?
        .items
        .into_iter()
        .filter(|o| o.name_any() != db.name_any() && o.spec.cluster == db.spec.cluster && o.sql_name() == sql && o.metadata.deletion_timestamp.is_none())
        .find(|o| (o.metadata.creation_timestamp.clone(), o.name_any()) < mine)
        .map(|o| o.name_any()))
}

async fn apply_owner(db: &Database, ctx: &Context, storage: &StorageAdmin, owner: &super::crd::OwnerRole, sql: &str) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &db.namespace().unwrap_or_default());
    let secret_name = &owner.password_secret.name;
    let Some(secret) = secrets.get_opt(secret_name).await? else {
        not_ready(db, ctx, "Pending", "OwnerSecretMissing", format!("Secret {secret_name:?} for the owner's password does not exist")).await?;
        return Err(Error::Invalid(format!("Secret {secret_name} missing")));
    };
    let version = format!("{}:{}", secret.resource_version().unwrap_or_default(), owner.name);
    let db_key = key(&db.namespace().unwrap_or_default(), &db.name_any());
    if ctx.applied_owner_secrets.lock().unwrap_or_else(|p| p.into_inner()).get(&db_key) == Some(&version) {
        return Ok(());
    }
    let key_name = &owner.password_secret.key;
    let password = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key_name))
        .map(|b| String::from_utf8_lossy(&b.0).into_owned())
        .or_else(|| secret.string_data.as_ref().and_then(|d| d.get(key_name)).cloned())
        .filter(|p| !p.is_empty());
    let Some(password) = password else {
        not_ready(db, ctx, "Pending", "OwnerSecretMissing", format!("Secret {secret_name:?} has no non-empty key {key_name:?}")).await?;
        return Err(Error::Invalid(format!("Secret {secret_name} lacks {key_name}")));
    };
    if let Err(e) = storage.put_owner(&owner.name, &password, sql).await {
        not_ready(db, ctx, "Failed", "OwnerRoleRefused", e.message.clone()).await?;
        return Err(e.into());
    }
    ctx.applied_owner_secrets.lock().unwrap_or_else(|p| p.into_inner()).insert(db_key, version);
    ctx.event(db, false, "OwnerRoleApplied", "Apply", format!("role {:?} may log in and connect to {sql:?}", owner.name)).await;
    Ok(())
}

async fn cleanup(db: &Database, ctx: &Context) -> Result<Action, Error> {
    let ns = db.namespace().unwrap_or_default();
    let sql = db.sql_name();
    if let Some(other) = name_taken_by(db, ctx).await? {
        // It was refused (NameInUse): the database is the other one's.
        ctx.event(db, false, "Released", "Delete", format!("{sql:?} stays with Database {other}")).await;
        return Ok(Action::await_change());
    }
    if let Some(handle) = ctx.cluster(&key(&ns, &db.spec.cluster)) {
        handle.controller.remove_database(&sql).await;
        handle.runtime.remove_owner(&sql);
    }
    ctx.applied_owner_secrets.lock().unwrap_or_else(|p| p.into_inner()).remove(&key(&ns, &db.name_any()));
    match db.spec.deletion_policy {
        DeletionPolicy::Retain => {
            ctx.event(db, false, "Retained", "Delete", format!("database {sql:?} stays in the object store (deletionPolicy Retain)")).await;
        }
        DeletionPolicy::Delete => {
            let clusters: Api<EbbCluster> = Api::namespaced(ctx.client.clone(), &ns);
            match clusters.get_opt(&db.spec.cluster).await? {
                Some(cluster) => {
                    let storage = StorageAdmin::new(&ctx.storage_url(&cluster))?;
                    storage.drop_database(&sql).await?;
                    if let Some(owner) = &db.spec.owner {
                        storage.drop_owner(&owner.name, &sql).await?;
                    }
                    ctx.event(db, false, "Dropped", "Delete", format!("dropped database {sql:?} (deletionPolicy Delete)")).await;
                }
                None => {
                    ctx.event(db, true, "DropSkipped", "Delete", format!("EbbCluster {:?} is gone; nothing to drop", db.spec.cluster)).await;
                }
            }
        }
    }
    Ok(Action::await_change())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::k8s::crd::{DatabaseSpec, EbbClusterSpec};

    fn cluster() -> EbbCluster {
        EbbCluster::new("main", EbbClusterSpec::new("s3://b"))
    }

    fn db(spec: impl FnOnce(&mut DatabaseSpec)) -> Database {
        let mut s = DatabaseSpec::new("main");
        spec(&mut s);
        Database::new("shop", s)
    }

    #[test]
    fn settings_come_from_the_database_over_the_cluster_defaults() {
        let c = cluster();
        let cfg = database_config(&db(|_| {}), &c).unwrap();
        assert_eq!((cfg.min_replicas, cfg.autoscaler.max_replicas, cfg.idle_timeout), (0, 4, Duration::from_secs(300)));
        assert_eq!(cfg.autoscaler.min_replicas, 1, "the autoscaler never asks for zero");
        let cfg = database_config(&db(|s| {
            s.min_replicas = Some(2);
            s.max_replicas = Some(6);
            s.idle_timeout = Some("90s".into());
            s.target_sessions = Some(3);
        }), &c)
        .unwrap();
        assert_eq!((cfg.min_replicas, cfg.autoscaler.min_replicas, cfg.autoscaler.max_replicas), (2, 2, 6));
        assert_eq!((cfg.idle_timeout, cfg.autoscaler.target), (Duration::from_secs(90), 3.0));
    }

    #[test]
    fn bad_settings_are_refused_with_the_reason() {
        let c = cluster();
        assert!(database_config(&db(|s| s.idle_timeout = Some("soon".into())), &c).unwrap_err().contains("idleTimeout"));
        assert!(database_config(&db(|s| {
            s.min_replicas = Some(5);
            s.max_replicas = Some(2)
        }), &c)
        .is_err());
        assert!(database_config(&db(|s| s.max_replicas = Some(0)), &c).is_err());
    }

    #[test]
    fn a_database_without_computes_is_suspended() {
        assert_eq!(phase(None), ("Suspended", true, false, "NoComputes"));
        let r = Running { name: "shop".into(), state: DatabaseState::Resuming, replicas: 0, connections: 1, computes: vec![] };
        assert_eq!(phase(Some(&r)).0, "Resuming");
        assert!(phase(Some(&r)).2, "resuming counts as scaling");
    }
}
