//! Where OpenFactory keeps things, from flags, environment and defaults.
//!
//! Everything lives under one home directory (`OPENFACTORY_HOME`, default
//! `$XDG_DATA_HOME/openfactory` or `~/.local/share/openfactory`):
//!
//! ```text
//! plugins/        installed bundles
//! trusted-keys/   *.pub keys whose signatures are accepted
//! cache/compiled/ compiled plugin components
//! builds/<id>/    a build's ISO, log, package manifest and SBOM
//! work/           scratch space of running builds (swept at start-up)
//! ```
//!
//! The build cache (bootstrapped bases, .deb files) is large and shared, so it
//! lives in the user's cache directory instead (`OPENFACTORY_CACHE`, default
//! `$XDG_CACHE_HOME/openfactory` or `~/.cache/openfactory`).

use std::path::PathBuf;

use openfactory_build::{Builder, Mirrors};
use openfactory_plugin_host::{HostConfig, Limits};

#[derive(Debug, Clone)]
pub struct Config {
    pub home: PathBuf,
    pub recipes_dir: PathBuf,
    pub allow_unsigned: bool,
    pub build_cache: PathBuf,
    pub cache_max_bytes: u64,
    pub mirrors: Mirrors,
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

    pub fn default_build_cache() -> PathBuf {
        if let Some(cache) = std::env::var_os("XDG_CACHE_HOME").filter(|v| !v.is_empty()) {
            return PathBuf::from(cache).join("openfactory");
        }
        match std::env::var_os("HOME") {
            Some(home) => PathBuf::from(home).join(".cache/openfactory"),
            None => PathBuf::from(".openfactory-cache"),
        }
    }

    pub fn builds_dir(&self) -> PathBuf {
        self.home.join("builds")
    }

    pub fn work_dir(&self) -> PathBuf {
        self.home.join("work")
    }

    pub fn builder(&self) -> Builder {
        let mut builder = Builder::new(
            self.work_dir(),
            self.build_cache.clone(),
            self.mirrors.clone(),
        );
        builder.cache.max_bytes = self.cache_max_bytes;
        builder
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
