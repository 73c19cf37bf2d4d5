//! Session settings: what `SET`, `SHOW` and `RESET` read and write, with
//! PostgreSQL's defaults for the ones drivers send or ask about.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use arrow::array::{Array, AsArray, StringArray};
use arrow::compute::cast;
use arrow::datatypes::DataType;
use datafusion::common::Result as DfResult;
use datafusion::logical_expr::{ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility};

use ebb_proto::storage::Isolation;

use crate::by_address::ByAddress;
use crate::error::{ComputeError, Result};

/// The server version clients see (PostgreSQL 15 compatible).
pub const SERVER_VERSION: &str = "15.0 (ebb)";

/// Settings with their defaults.
const DEFAULTS: &[(&str, &str)] = &[
    ("application_name", ""),
    ("client_encoding", "UTF8"),
    ("datestyle", "ISO, MDY"),
    ("default_table_access_method", "heap"),
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
    ("max_index_keys", "32"),
    ("max_function_args", "100"),
    ("block_size", "8192"),
    ("synchronous_commit", "on"),
];

/// Settings that cannot be changed.
const READ_ONLY: &[&str] = &[
    "server_version",
    "server_version_num",
    "server_encoding",
    "integer_datetimes",
    "is_superuser",
    "max_identifier_length",
    "max_index_keys",
    "max_function_args",
    "block_size",
];

type Values = Arc<RwLock<BTreeMap<String, String>>>;

/// The settings of one session. Clones share the values: the session's
/// `current_setting` function and `pg_settings` read them as they are.
#[derive(Debug, Clone)]
pub struct Settings {
    values: Values,
    /// `statement_timeout` in milliseconds, kept parsed: every statement
    /// reads it.
    timeout_ms: u64,
}

fn defaults() -> BTreeMap<String, String> {
    DEFAULTS.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
}

impl Default for Settings {
    fn default() -> Self {
        let mut s = Self { values: Arc::new(RwLock::new(defaults())), timeout_ms: 0 };
        s.parse_timeout();
        s
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
    pub fn get(&self, name: &str) -> Result<String> {
        value_of(&self.values, name).ok_or_else(|| ComputeError::invalid("42704", format!("unrecognized configuration parameter \"{name}\"")))
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
            "extra_float_digits" => match value.trim().parse::<i32>() {
                Ok(n @ -15..=3) => n.to_string(),
                Ok(n) => {
                    return Err(ComputeError::invalid("22023", format!("{n} is outside the valid range for parameter \"extra_float_digits\" (-15 .. 3)")));
                }
                Err(_) => return Err(ComputeError::invalid("22023", format!("invalid value for parameter \"extra_float_digits\": \"{value}\""))),
            },
            _ => value.to_string(),
        };
        self.values.write().unwrap_or_else(|p| p.into_inner()).insert(n, value);
        self.parse_timeout();
        Ok(())
    }

    fn parse_timeout(&mut self) {
        self.timeout_ms = self.get("statement_timeout").ok().and_then(|v| parse_millis(&v).ok()).unwrap_or(0);
    }

    /// Back to the default (`None` = all).
    pub fn reset(&mut self, name: Option<&str>) -> Result<()> {
        match name {
            None => *self.values.write().unwrap_or_else(|p| p.into_inner()) = defaults(),
            Some(name) => {
                let n = canonical(name);
                let default = DEFAULTS
                    .iter()
                    .find(|(k, _)| *k == n)
                    .map(|(_, v)| v.to_string())
                    .unwrap_or_default();
                self.values.write().unwrap_or_else(|p| p.into_inner()).insert(n, default);
            }
        }
        self.parse_timeout();
        Ok(())
    }

    /// Every setting as `pg_settings` lists it: name, value, default, and
    /// whether it is fixed (`internal`) or the session's (`user`).
    pub fn entries(&self) -> Vec<(String, String, String, bool)> {
        let values = self.values.read().unwrap_or_else(|p| p.into_inner());
        values
            .iter()
            .map(|(name, value)| {
                let default = DEFAULTS.iter().find(|(k, _)| k == name).map(|(_, v)| v.to_string()).unwrap_or_default();
                (name.clone(), value.clone(), default, READ_ONLY.contains(&name.as_str()))
            })
            .collect()
    }

    /// `extra_float_digits` (PostgreSQL's default, 1, if unset or not a number).
    pub fn extra_float_digits(&self) -> i32 {
        self.get("extra_float_digits").ok().and_then(|v| v.trim().parse().ok()).unwrap_or(1)
    }

    /// `statement_timeout` in milliseconds (0 = none).
    pub fn statement_timeout_ms(&self) -> u64 {
        self.timeout_ms
    }

    /// `current_setting(name [, missing_ok])` over these settings, as
    /// drivers call it (SQLAlchemy asks for `default_table_access_method`).
    pub fn current_setting_udf(&self) -> ScalarUDF {
        ScalarUDF::new_from_impl(CurrentSetting { values: ByAddress(self.values.clone()), signature: Signature::variadic_any(Volatility::Stable) })
    }
}

impl Settings {
    /// `set_config(name, value, is_local)` over these settings, as `SET`
    /// (pg_dump's scripts begin with `set_config('search_path', '', false)`);
    /// returns the value set. Transaction-local settings (`is_local` true)
    /// are refused.
    pub fn set_config_udf(&self) -> ScalarUDF {
        ScalarUDF::new_from_impl(SetConfig { settings: ByAddress(Arc::new(self.clone())), signature: Signature::variadic_any(Volatility::Volatile) })
    }
}

/// The `set_config` function of one session.
#[derive(Debug, PartialEq, Eq, Hash)]
struct SetConfig {
    settings: ByAddress<Settings>,
    signature: Signature,
}

impl ScalarUDFImpl for SetConfig {
    fn name(&self) -> &str {
        "set_config"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        crate::error::check_arguments("set_config", 3..=3, args.args.len())?;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let (names, values, local) = (cast(&arrays[0], &DataType::Utf8)?, cast(&arrays[1], &DataType::Utf8)?, cast(&arrays[2], &DataType::Boolean)?);
        let (names, values, local) = (names.as_string::<i32>(), values.as_string::<i32>(), local.as_boolean());
        let mut settings = self.settings.0.as_ref().clone();
        let mut out = Vec::with_capacity(names.len());
        for i in 0..names.len() {
            if names.is_null(i) {
                return Err(ComputeError::invalid("22004", "SET requires parameter name").into_datafusion());
            }
            if local.is_valid(i) && local.value(i) {
                return Err(ComputeError::unsupported("set_config(…, true) (a setting local to the transaction)").into_datafusion());
            }
            let value = if values.is_null(i) { "" } else { values.value(i) };
            settings.set(names.value(i), value).map_err(ComputeError::into_datafusion)?;
            out.push(Some(value.to_string()));
        }
        Ok(ColumnarValue::Array(Arc::new(StringArray::from(out))))
    }
}

fn value_of(values: &Values, name: &str) -> Option<String> {
    values.read().unwrap_or_else(|p| p.into_inner()).get(&canonical(name)).cloned()
}

/// The `current_setting` function of one session.
#[derive(Debug, PartialEq, Eq, Hash)]
struct CurrentSetting {
    values: ByAddress<RwLock<BTreeMap<String, String>>>,
    signature: Signature,
}

impl ScalarUDFImpl for CurrentSetting {
    fn name(&self) -> &str {
        "current_setting"
    }

    fn signature(&self) -> &Signature {
        &self.signature
    }

    fn return_type(&self, _args: &[DataType]) -> DfResult<DataType> {
        Ok(DataType::Utf8)
    }

    /// The value; NULL for an unknown name with `missing_ok`, else 42704.
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> DfResult<ColumnarValue> {
        crate::error::check_arguments("current_setting", 1..=2, args.args.len())?;
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let names = cast(&arrays[0], &DataType::Utf8)?;
        let missing_ok = match arrays.get(1) {
            Some(a) => Some(cast(a, &DataType::Boolean)?),
            None => None,
        };
        let out = names
            .as_string::<i32>()
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let Some(name) = name else { return Ok(None) };
                match value_of(&self.values.0, name) {
                    Some(v) => Ok(Some(v)),
                    None if missing_ok.as_ref().is_some_and(|m| m.as_boolean().value(i)) => Ok(None),
                    None => Err(ComputeError::invalid("42704", format!("unrecognized configuration parameter \"{name}\"")).into_datafusion()),
                }
            })
            .collect::<DfResult<StringArray>>()?;
        Ok(ColumnarValue::Array(Arc::new(out)))
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
        assert_eq!(isolation_level(&s.get("default_transaction_isolation").unwrap()).unwrap(), Isolation::ReadCommitted);
        s.set("default_transaction_isolation", "REPEATABLE READ").unwrap();
        assert_eq!(isolation_level(&s.get("default_transaction_isolation").unwrap()).unwrap(), Isolation::Snapshot);
        s.reset(None).unwrap();
        assert_eq!(s.statement_timeout_ms(), 0);
    }
}
