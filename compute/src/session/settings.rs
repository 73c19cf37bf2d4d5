//! Session settings: what `SET`, `SHOW` and `RESET` read and write, with
//! PostgreSQL's defaults for the ones drivers send or ask about.

use std::collections::BTreeMap;

use ebb_proto::storage::Isolation;

use crate::error::{ComputeError, Result};

/// The server version clients see (PostgreSQL 15 compatible).
pub const SERVER_VERSION: &str = "15.0 (ebb)";

/// Settings with their defaults.
const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("default_transaction_isolation", "read committed"),
    ("extra_float_digits", "1"),
    ("integer_datetimes", "on"),
    ("intervalstyle", "postgres"),
    ("is_superuser", "on"),
    ("lock_timeout", "0"),
    ("search_path", "\"$user\", public"),
    ("server_encoding", "UTF8"),
    ("server_version", SERVER_VERSION),
    ("server_version_num", "150000"),
    ("standard_conforming_strings", "on"),
    ("statement_timeout", "0"),
    ("timezone", "UTC"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "off"),
    ("idle_in_transaction_session_timeout", "0"),
    ("max_identifier_length", "63"),
    ("synchronous_commit", "on"),
];

/// Settings that cannot be changed.
const READ_ONLY: &[&str] = &["server_version", "server_version_num", "server_encoding", "integer_datetimes", "is_superuser", "max_identifier_length"];

/// The settings of one session.
#[derive(Debug, Clone)]
pub struct Settings {
    values: BTreeMap<String, String>,
}

impl Default for Settings {
    fn default() -> Self {
        Self { values: DEFAULTS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect() }
    }
}

/// Canonical name of a setting (`DateStyle` → `datestyle`, aliases resolved).
fn canonical(name: &str) -> String {
    let n = name.to_lowercase();
    match n.as_str() {
        "time zone" | "time_zone" => "timezone".into(),
        "transaction isolation level" => "transaction_isolation".into(),
        _ => n,
    }
}

impl Settings {
    /// The current value.
    pub fn get(&self, name: &str) -> Result<&str> {
        let n = canonical(name);
        self.values
            .get(&n)
            .map(String::as_str)
            .ok_or_else(|| ComputeError::invalid("42704", format!("unrecognized configuration parameter \"{name}\"")))
    }

    /// Sets a value, checking the ones ebb interprets.
    pub fn set(&mut self, name: &str, value: &str) -> Result<()> {
        let n = canonical(name);
        if READ_ONLY.contains(&n.as_str()) {
            return Err(ComputeError::invalid("55P02", format!("parameter \"{n}\" cannot be changed")));
        }
        let value = match n.as_str() {
            "client_encoding" => match value.to_uppercase().replace('-', "").as_str() {
                "UTF8" | "UNICODE" => "UTF8".to_string(),
                other => {
                    return Err(ComputeError::invalid("22023", format!("ebb only supports client_encoding UTF8, not \"{other}\"")));
                }
            },
            "timezone" => match value.to_uppercase().as_str() {
                "UTC" | "GMT" | "ETC/UTC" | "Z" | "+00" | "+00:00" | "0" => "UTC".to_string(),
                _ => {
                    return Err(ComputeError::NotSupported(format!(
                        "time zone \"{value}\" is not supported; ebb sessions run in UTC"
                    )));
                }
            },
            "transaction_isolation" | "default_transaction_isolation" => isolation(value)?,
            "statement_timeout" | "lock_timeout" | "idle_in_transaction_session_timeout" => {
                parse_millis(value)?;
                value.to_string()
            }
            _ => value.to_string(),
        };
        self.values.insert(n, value);
        Ok(())
    }

    /// Back to the default (`None` = all).
    pub fn reset(&mut self, name: Option<&str>) -> Result<()> {
        match name {
            None => *self = Self::default(),
            Some(name) => {
                let n = canonical(name);
                let default = DEFAULTS
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default();
                self.values.insert(n, default);
            }
        }
        Ok(())
    }

    /// `statement_timeout` in milliseconds (0 = none).
    pub fn statement_timeout_ms(&self) -> u64 {
        self.get("statement_timeout").ok().and_then(|v| parse_millis(v).ok()).unwrap_or(0)
    }
}

/// The storage isolation of a level's name. READ UNCOMMITTED runs as READ
/// COMMITTED, as in PostgreSQL.
pub fn isolation_level(value: &str) -> Result<Isolation> {
    match isolation(value)?.as_str() {
        "repeatable read" => Ok(Isolation::Snapshot),
        _ => Ok(Isolation::ReadCommitted),
    }
}

/// Accepts the isolation levels ebb provides, in canonical spelling.
fn isolation(value: &str) -> Result<String> {
    match value.trim().trim_matches('\'').to_lowercase().replace('_', " ").as_str() {
        "read committed" | "read uncommitted" => Ok("read committed".into()),
        "repeatable read" => Ok("repeatable read".into()),
        "serializable" => Err(ComputeError::NotSupported(
            "SERIALIZABLE isolation is not supported; ebb offers READ COMMITTED and REPEATABLE READ (snapshot isolation)".into(),
        )),
        other => Err(ComputeError::invalid("22023", format!("invalid value for transaction_isolation: \"{other}\""))),
    }
}

/// Parses a PostgreSQL duration setting (`5000`, `5s`, `100ms`, `1min`) to milliseconds.
fn parse_millis(v: &str) -> Result<u64> {
    let v = v.trim().trim_matches('\'');
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let (num, unit) = v.split_at(split);
    let n: u64 = num.parse().map_err(|_| ComputeError::invalid("22023", format!("invalid duration \"{v}\"")))?;
    let mult = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1000,
        "min" => 60_000,
        "h" => 3_600_000,
        other => return Err(ComputeError::invalid("22023", format!("invalid duration unit \"{other}\""))),
    };
    Ok(n * mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_show_reset() {
        let mut s = Settings::default();
        assert_eq!(s.get("DateStyle").unwrap(), "ISO, MDY");
        s.set("application_name", "psql").unwrap();
        assert_eq!(s.get("application_name").unwrap(), "psql");
        s.set("statement_timeout", "5s").unwrap();
        assert_eq!(s.statement_timeout_ms(), 5000);
        assert!(s.set("client_encoding", "LATIN1").is_err());
        assert!(s.set("server_version", "1").is_err());
        assert_eq!(s.get("nope").unwrap_err().sqlstate(), "42704");
        s.reset(Some("application_name")).unwrap();
        assert_eq!(s.get("application_name").unwrap(), "");
        assert!(s.set("transaction_isolation", "serializable").is_err());
        assert_eq!(isolation_level(s.get("default_transaction_isolation").unwrap()).unwrap(), Isolation::ReadCommitted);
        s.set("default_transaction_isolation", "REPEATABLE READ").unwrap();
        assert_eq!(isolation_level(s.get("default_transaction_isolation").unwrap()).unwrap(), Isolation::Snapshot);
    }
}
