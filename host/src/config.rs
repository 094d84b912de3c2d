//! Where OpenFactory keeps things, from flags, environment and defaults.
//!
//! Everything lives under one home directory (`OPENFACTORY_HOME`, default
//! `$XDG_DATA_HOME/openfactory` or `~/.local/share/openfactory`):
//!
//! ```text
//! plugins/        installed bundles
//! trusted-keys/   *.pub keys whose signatures are accepted
//! cache/compiled/ compiled plugin components
//! ```

use std::path::PathBuf;

use openfactory_plugin_host::{HostConfig, Limits};

#[derive(Debug, Clone)]
pub struct Config {
    pub home: PathBuf,
    pub recipes_dir: PathBuf,
    pub allow_unsigned: bool,
}

impl Config {
    pub fn default_home() -> PathBuf {
        if let Some(data) = std::env::var_os("XDG_DATA_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(data).join("openfactory");
        }
        match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".local/share/openfactory"),
            None => PathBuf::from(".openfactory"),
        }
    }

    pub fn plugins_dir(&self) -> PathBuf {
        self.home.join("plugins")
    }

    pub fn trusted_keys_dir(&self) -> PathBuf {
        self.home.join("trusted-keys")
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.home.join("cache").join("compiled")
    }

    pub fn host(&self) -> HostConfig {
        HostConfig {
            plugins_dir: self.plugins_dir(),
            trusted_keys_dir: self.trusted_keys_dir(),
            cache_dir: Some(self.cache_dir()),
            allow_unsigned: self.allow_unsigned,
            limits: Limits::default(),
        }
    }
}
