//! What the operator asks of a cluster's storage: create and drop a
//! database, and keep a database's owner role (SCRAM verifier, CONNECT).

use std::time::Duration;

use ebb_common::scram::Verifier;
use ebb_proto::storage::storage_client::StorageClient;
use ebb_proto::storage::{CreateDatabaseRequest, DropDatabaseRequest, DropRoleRequest, GetRoleRequest, PutRoleRequest, Role};
use tonic::transport::{Channel, Endpoint};

/// A storage call that failed.
#[derive(Debug, thiserror::Error)]
#[error("storage at {url}: {message}")]
pub struct StorageAdminError {
    pub url: String,
    pub message: String,
}

/// A client of one cluster's storage service.
pub struct StorageAdmin {
    url: String,
    client: StorageClient<Channel>,
}

impl StorageAdmin {
    /// A client of the storage at `url` (connects lazily, so an unready
    /// storage fails the call, not the construction).
    pub fn new(url: &str) -> Result<Self, StorageAdminError> {
        let endpoint = Endpoint::from_shared(url.to_string())
            .map_err(|e| StorageAdminError { url: url.into(), message: e.to_string() })?
            .connect_timeout(Duration::from_secs(3))
            .timeout(Duration::from_secs(15))
            .tcp_nodelay(true);
        Ok(Self { url: url.into(), client: StorageClient::new(endpoint.connect_lazy()) })
    }

    fn err(&self, s: tonic::Status) -> StorageAdminError {
        StorageAdminError { url: self.url.clone(), message: format!("{}: {}", s.code(), s.message()) }
    }

    /// Creates `name` unless it exists; returns whether it was created.
    pub async fn ensure_database(&self, name: &str) -> Result<bool, StorageAdminError> {
        let r = self.client.clone().create_database(CreateDatabaseRequest { name: name.into(), if_not_exists: true }).await;
        Ok(r.map_err(|s| self.err(s))?.into_inner().created)
    }

    /// Drops `name` if it exists; returns whether it was dropped.
    pub async fn drop_database(&self, name: &str) -> Result<bool, StorageAdminError> {
        let r = self.client.clone().drop_database(DropDatabaseRequest { name: name.into(), if_exists: true }).await;
        Ok(r.map_err(|s| self.err(s))?.into_inner().dropped)
    }

    /// Makes `role` a login role with `password` that may connect to
    /// `database`, keeping its other grants. A superuser is refused: a
    /// `Database` must not be able to take one over.
    pub async fn put_owner(&self, role: &str, password: &str, database: &str) -> Result<(), StorageAdminError> {
        let mut c = self.client.clone();
        let existing = c.get_role(GetRoleRequest { name: role.into() }).await.map_err(|s| self.err(s))?.into_inner().role;
        if existing.as_ref().is_some_and(|r| r.superuser) {
            return Err(StorageAdminError { url: self.url.clone(), message: format!("role {role:?} is a superuser; a Database owner must be an ordinary role") });
        }
        let create = existing.is_none();
        let mut r = existing.unwrap_or(Role { name: role.into(), ..Role::default() });
        r.login = true;
        r.password_verifier = Verifier::new(password).to_text();
        if !r.connect.iter().any(|d| d == database) {
            r.connect.push(database.into());
        }
        c.put_role(PutRoleRequest { role: Some(r), create }).await.map_err(|s| self.err(s))?;
        Ok(())
    }

    /// Drops the owner `role` of `database` when it is only that: an
    /// ordinary role allowed to connect to nothing else. Otherwise only its
    /// grant on `database` goes.
    pub async fn drop_owner(&self, role: &str, database: &str) -> Result<(), StorageAdminError> {
        let mut c = self.client.clone();
        let Some(mut r) = c.get_role(GetRoleRequest { name: role.into() }).await.map_err(|s| self.err(s))?.into_inner().role else {
            return Ok(());
        };
        if !r.superuser && r.connect.iter().all(|d| d == database) {
            c.drop_role(DropRoleRequest { name: role.into(), if_exists: true }).await.map_err(|s| self.err(s))?;
        } else {
            r.connect.retain(|d| d != database);
            c.put_role(PutRoleRequest { role: Some(r), create: false }).await.map_err(|s| self.err(s))?;
        }
        Ok(())
    }
}
