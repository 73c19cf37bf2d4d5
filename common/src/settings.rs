//! The optional TOML settings file. Precedence is flags, then `EBB_*`
//! environment variables (both handled by clap), then this file, then defaults.

use std::path::Path;

/// A settings-file error.
#[derive(Debug, thiserror::Error)]
pub enum SettingsError {
    #[error("cannot read settings file {path}: {source}")]
    Read { path: String, source: std::io::Error },
    #[error("settings file {path} is not valid TOML for this role: {source}")]
    Parse { path: String, source: toml::de::Error },
}

/// Reads section `section` of the TOML file at `path` (missing section = defaults).
pub fn load<T: serde::de::DeserializeOwned + Default>(path: Option<&Path>, section: &str) -> Result<T, SettingsError> {
    let Some(path) = path else { return Ok(T::default()) };
    let p = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| SettingsError::Read { path: p.clone(), source })?;
    let mut table: toml::Table = toml::from_str(&text).map_err(|source| SettingsError::Parse { path: p.clone(), source })?;
    match table.remove(section) {
        Some(v) => v.try_into().map_err(|source| SettingsError::Parse { path: p, source }),
        None => Ok(T::default()),
    }
}
