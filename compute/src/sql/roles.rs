//! Roles through SQL: `CREATE ROLE`, `ALTER ROLE`, `DROP ROLE`, and
//! `GRANT/REVOKE CONNECT ON DATABASE`. Roles live in storage's cluster
//! catalog; passwords are stored only as SCRAM-SHA-256 verifiers, which the
//! proxy checks. Only superusers manage roles (while a cluster has no roles
//! at all, any session may create the first).

use ebb_common::scram::Verifier;
use ebb_proto::storage::Role;
use datafusion::sql::sqlparser::ast::{
    Action, AlterRoleOperation, CreateRole, Expr, GrantObjects, Grantee, GranteeName, ObjectName, Password, Privileges,
    RoleOption, Value,
};

use crate::error::{ComputeError, Result};
use crate::storage_client::StorageClient;

/// Fails unless `user` may manage roles.
pub async fn check_superuser(client: &StorageClient, user: &str) -> Result<()> {
    match client.get_role(user).await? {
        Some(r) if r.superuser => Ok(()),
        Some(_) => Err(ComputeError::invalid("42501", "permission denied: only superusers manage roles and grants")),
        None if client.list_roles().await?.is_empty() => Ok(()),
        None => Err(ComputeError::invalid("42501", format!("permission denied: role \"{user}\" does not exist"))),
    }
}

fn name_of(n: &ObjectName) -> Result<String> {
    match n.0.as_slice() {
        [one] => one.as_ident().map(|i| i.value.clone()).ok_or_else(|| ComputeError::invalid("42601", format!("invalid role name {n}"))),
        _ => Err(ComputeError::invalid("42601", format!("invalid role name {n}"))),
    }
}

/// The verifier for a `PASSWORD` clause: a literal password is hashed; a
/// literal that already is a SCRAM verifier is kept; `NULL` clears it.
fn verifier(p: &Password) -> Result<String> {
    match p {
        Password::NullPassword => Ok(String::new()),
        Password::Password(Expr::Value(v)) => match &v.value {
            Value::SingleQuotedString(s) if s.starts_with("SCRAM-SHA-256$") => {
                Verifier::parse(s).map_err(|e| ComputeError::invalid("22023", e.to_string()))?;
                Ok(s.clone())
            }
            Value::SingleQuotedString(s) if s.is_empty() => Err(ComputeError::invalid("22023", "empty password")),
            Value::SingleQuotedString(s) => Ok(Verifier::new(s).to_text()),
            other => Err(ComputeError::invalid("22023", format!("password must be a string literal, not {other}"))),
        },
        Password::Password(other) => Err(ComputeError::invalid("22023", format!("password must be a string literal, not {other}"))),
    }
}

/// The roles a `CREATE ROLE` defines.
pub fn create_roles(cr: &CreateRole) -> Result<Vec<Role>> {
    let unsupported = cr.connection_limit.is_some() || cr.valid_until.is_some() || !cr.in_role.is_empty() || !cr.role.is_empty() || !cr.user.is_empty() || !cr.admin.is_empty();
    if unsupported {
        return Err(ComputeError::unsupported("CONNECTION LIMIT, VALID UNTIL and role membership in CREATE ROLE"));
    }
    let verifier = cr.password.as_ref().map(verifier).transpose()?.unwrap_or_default();
    cr.names
        .iter()
        .map(|n| {
            Ok(Role {
                name: name_of(n)?,
                login: cr.login.unwrap_or(false),
                superuser: cr.superuser.unwrap_or(false),
                password_verifier: verifier.clone(),
                connect: Vec::new(),
            })
        })
        .collect()
}

/// Applies `ALTER ROLE … WITH options` to `role`.
pub fn alter_role(role: &mut Role, op: &AlterRoleOperation) -> Result<()> {
    let AlterRoleOperation::WithOptions { options } = op else {
        return Err(ComputeError::unsupported("this form of ALTER ROLE (only ALTER ROLE … WITH options)"));
    };
    for o in options {
        match o {
            RoleOption::Login(b) => role.login = *b,
            RoleOption::SuperUser(b) => role.superuser = *b,
            RoleOption::Password(p) => role.password_verifier = verifier(p)?,
            RoleOption::Inherit(_) | RoleOption::CreateDB(_) | RoleOption::CreateRole(_) => {}
            other => return Err(ComputeError::unsupported(format!("the role option {other}"))),
        }
    }
    Ok(())
}

/// The databases and roles of a `GRANT/REVOKE CONNECT ON DATABASE`.
pub fn connect_grant(privileges: &Privileges, objects: Option<&GrantObjects>, grantees: &[Grantee]) -> Result<(Vec<String>, Vec<String>)> {
    let connect_only = match privileges {
        Privileges::Actions(a) => a.iter().all(|a| matches!(a, Action::Connect)),
        Privileges::All { .. } => true,
    };
    let Some(GrantObjects::Databases(dbs)) = objects.filter(|_| connect_only) else {
        return Err(ComputeError::unsupported("GRANT/REVOKE other than CONNECT ON DATABASE"));
    };
    let databases = dbs.iter().map(name_of).collect::<Result<Vec<_>>>()?;
    let roles = grantees
        .iter()
        .map(|g| match &g.name {
            Some(GranteeName::ObjectName(n)) => name_of(n),
            _ => Err(ComputeError::unsupported("grantees other than role names")),
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((databases, roles))
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::sql::sqlparser::ast::Statement;

    fn one(sql: &str) -> Statement {
        crate::session::parse(sql).unwrap().remove(0)
    }

    #[test]
    fn create_role_hashes_the_password() {
        let Statement::CreateRole(cr) = one("CREATE ROLE alice WITH LOGIN PASSWORD 'secret'") else { panic!() };
        let roles = create_roles(&cr).unwrap();
        assert_eq!(roles.len(), 1);
        assert!(roles[0].login && !roles[0].superuser);
        let v = Verifier::parse(&roles[0].password_verifier).unwrap();
        assert_eq!(v, Verifier::with_salt("secret", &v.salt, v.iterations));
        assert!(!roles[0].password_verifier.contains("secret"));
    }

    #[test]
    fn alter_and_grant_forms() {
        let Statement::AlterRole { operation, .. } = one("ALTER ROLE alice WITH NOLOGIN SUPERUSER PASSWORD NULL") else { panic!() };
        let mut r = Role { name: "alice".into(), login: true, password_verifier: "x".into(), ..Default::default() };
        alter_role(&mut r, &operation).unwrap();
        assert!(!r.login && r.superuser && r.password_verifier.is_empty());
        let Statement::Grant(g) = one("GRANT CONNECT ON DATABASE app TO alice, bob") else { panic!() };
        let (dbs, roles) = connect_grant(&g.privileges, g.objects.as_ref(), &g.grantees).unwrap();
        assert_eq!((dbs, roles), (vec!["app".to_string()], vec!["alice".to_string(), "bob".to_string()]));
        let Statement::Grant(g) = one("GRANT SELECT ON t TO alice") else { panic!() };
        assert!(connect_grant(&g.privileges, g.objects.as_ref(), &g.grantees).is_err());
    }
}
