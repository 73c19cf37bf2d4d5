//! The cluster's roles as the proxy reads them: from storage, over gRPC.
//! `ebb local` also creates the first superuser through it.

use std::time::Duration;

use anyhow::{Context, bail};
use ebb_common::scram::Verifier;
use ebb_proto::storage::storage_client::StorageClient;
use ebb_proto::storage::{GetRoleRequest, ListRolesRequest, PutRoleRequest, Role};
use ebb_proxy::auth::{RoleInfo, Roles};
use tonic::transport::Channel;

/// The cluster's roles, read from storage for the proxy.
pub struct StorageRoles(StorageClient<Channel>);

impl StorageRoles {
    /// Connects to storage, waiting up to a minute for it to open.
    pub async fn connect(url: &str) -> anyhow::Result<Self> {
        let deadline = std::time::Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(c) = StorageClient::connect(url.to_string()).await
                && c.clone().list_roles(ListRolesRequest {}).await.is_ok()
            {
                return Ok(Self(c));
            }
            if std::time::Instant::now() >= deadline {
                bail!("storage did not answer at {url}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// First start: creates the `postgres` superuser with `password`, or a
    /// generated one that is printed once.
    pub async fn bootstrap(&self, password: Option<&str>) -> anyhow::Result<()> {
        let mut c = self.0.clone();
        if c.get_role(GetRoleRequest { name: "postgres".into() }).await?.into_inner().role.is_some() {
            return Ok(());
        }
        let generated;
        let password = match password {
            Some(p) => p,
            None => {
                generated = generate_password();
                // Shown only this once: a role whose password nobody saw would lock everyone out.
                use std::io::Write;
                writeln!(
                    std::io::stdout(),
                    "Created role \"postgres\" (superuser) with password: {generated}\n  It is shown only this once; change it with ALTER ROLE postgres PASSWORD '…'."
                )
                .and_then(|()| std::io::stdout().flush())
                .context("cannot show the generated password of role postgres on standard output; give one with --password")?;
                &generated
            }
        };
        let role = Role {
            name: "postgres".into(),
            login: true,
            superuser: true,
            password_verifier: Verifier::new(password).to_text(),
            connect: Vec::new(),
        };
        c.put_role(PutRoleRequest { role: Some(role), create: true }).await.context("creating role postgres")?;
        Ok(())
    }
}

fn generate_password() -> String {
    const ALPHABET: &[u8] = b"abcdefghijkmnpqrstuvwxyzABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    (0..20).map(|_| ALPHABET[rand::random_range(0..ALPHABET.len())] as char).collect()
}

#[async_trait::async_trait]
impl Roles for StorageRoles {
    async fn role(&self, name: &str) -> Result<Option<RoleInfo>, String> {
        let r = self.0.clone().get_role(GetRoleRequest { name: name.into() }).await.map_err(|e| e.message().to_string())?;
        Ok(r.into_inner().role.map(|r| RoleInfo {
            login: r.login,
            superuser: r.superuser,
            verifier: Some(r.password_verifier).filter(|v| !v.is_empty()),
            connect: r.connect,
        }))
    }
}
