//! The cluster's roles: `cluster/roles/<hex name>` objects holding a role's
//! attributes, SCRAM verifier and CONNECT grants. Small and rarely written,
//! so each role is one object, written straight to the object store.

use bytes::Bytes;
use ebb_proto::storage::Role;
use serde::{Deserialize, Serialize};

use super::objects::{CreateOutcome, Objects};
use crate::error::{Result, StorageError};

/// A role as stored.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq, Default)]
struct RoleEntry {
    name: String,
    login: bool,
    superuser: bool,
    #[serde(default)]
    password_verifier: String,
    #[serde(default)]
    connect: Vec<String>,
}

impl From<&Role> for RoleEntry {
    fn from(r: &Role) -> Self {
        Self {
            name: r.name.clone(),
            login: r.login,
            superuser: r.superuser,
            password_verifier: r.password_verifier.clone(),
            connect: r.connect.clone(),
        }
    }
}

impl From<RoleEntry> for Role {
    fn from(e: RoleEntry) -> Self {
        Self { name: e.name, login: e.login, superuser: e.superuser, password_verifier: e.password_verifier, connect: e.connect }
    }
}

fn key(name: &str) -> String {
    format!("cluster/roles/{}", super::registry::hex(name.as_bytes()))
}

fn encode(role: &Role) -> Result<Bytes> {
    Ok(Bytes::from(serde_json::to_vec(&RoleEntry::from(role)).map_err(|e| StorageError::Corrupt(e.to_string()))?))
}

fn parse(b: &[u8]) -> Result<Role> {
    serde_json::from_slice::<RoleEntry>(b).map(Role::from).map_err(|e| StorageError::Corrupt(format!("role entry: {e}")))
}

/// Creates a role (`create`) or replaces an existing one.
pub async fn put(objects: &Objects, role: &Role, create: bool) -> Result<()> {
    crate::catalog::check_identifier("role", &role.name)?;
    if create {
        return match objects.put_if_absent(&key(&role.name), encode(role)?).await? {
            CreateOutcome::Created => Ok(()),
            CreateOutcome::AlreadyExists => Err(StorageError::RoleExists(role.name.clone())),
        };
    }
    if get(objects, &role.name).await?.is_none() {
        return Err(StorageError::UnknownRole(role.name.clone()));
    }
    objects.put(&key(&role.name), encode(role)?).await
}

/// A role by name.
pub async fn get(objects: &Objects, name: &str) -> Result<Option<Role>> {
    objects.get(&key(name)).await?.map(|b| parse(&b)).transpose()
}

/// Every role, by name.
pub async fn list(objects: &Objects) -> Result<Vec<Role>> {
    let mut out = objects.get_all("cluster/roles").await?.iter().map(|b| parse(b)).collect::<Result<Vec<_>>>()?;
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

/// Drops a role; `Ok(false)` if it did not exist and `if_exists`.
pub async fn drop(objects: &Objects, name: &str, if_exists: bool) -> Result<bool> {
    if get(objects, name).await?.is_none() {
        return if if_exists { Ok(false) } else { Err(StorageError::UnknownRole(name.into())) };
    }
    objects.delete(&key(name)).await?;
    Ok(true)
}
