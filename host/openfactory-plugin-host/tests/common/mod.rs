//! Shared set-up: a temporary OpenFactory home with the real, signed plugin
//! bundles built by `cargo xtask plugins`.

#![allow(dead_code)]

use std::path::{Path, PathBuf};

use openfactory_plugin_host::{HostConfig, Limits, PluginHost, PublicKey, TrustStore, registry};

pub fn workspace() -> PathBuf {
    // host/<crate>/ → the workspace root.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .unwrap()
        .to_owned()
}

fn env_path(var: &str, default: &str) -> PathBuf {
    let path = std::env::var_os(var)
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace().join(default));
    assert!(
        path.exists(),
        "{} does not exist: build the plugins first with `cargo xtask plugins` (or run the suite with `cargo xtask test`)",
        path.display()
    );
    path
}

pub fn bundles() -> PathBuf {
    env_path("OPENFACTORY_BUNDLES", "target/bundles")
}

pub fn test_bundles() -> PathBuf {
    env_path("OPENFACTORY_TEST_BUNDLES", "target/test-bundles")
}

pub fn project_key() -> PublicKey {
    PublicKey::read(&env_path(
        "OPENFACTORY_PROJECT_KEY",
        "target/signing/project.pub",
    ))
    .unwrap()
}

pub fn first_party() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = std::fs::read_dir(bundles())
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    dirs.sort();
    dirs
}

/// A temporary home with the project key trusted.
pub struct Home {
    pub dir: tempfile::TempDir,
}

impl Home {
    pub fn new() -> Home {
        let home = Home {
            dir: tempfile::tempdir().unwrap(),
        };
        std::fs::create_dir_all(home.keys()).unwrap();
        let key = project_key();
        std::fs::write(home.keys().join(format!("{}.pub", key.id())), key.to_line()).unwrap();
        home
    }

    /// A home with every first-party bundle installed.
    pub fn with_first_party() -> Home {
        let home = Home::new();
        for bundle in first_party() {
            home.install(&bundle).unwrap();
        }
        home
    }

    pub fn plugins(&self) -> PathBuf {
        self.dir.path().join("plugins")
    }

    pub fn keys(&self) -> PathBuf {
        self.dir.path().join("trusted-keys")
    }

    pub fn trust(&self) -> TrustStore {
        TrustStore::load(&self.keys()).unwrap()
    }

    pub fn install(&self, bundle: &Path) -> Result<(), openfactory_plugin_host::BundleError> {
        registry::install(&self.plugins(), bundle, &self.trust(), false, false).map(|_| ())
    }

    pub fn config(&self) -> HostConfig {
        HostConfig {
            plugins_dir: self.plugins(),
            trusted_keys_dir: self.keys(),
            cache_dir: Some(self.dir.path().join("cache")),
            allow_unsigned: false,
            limits: Limits::default(),
        }
    }

    pub fn load(&self) -> PluginHost {
        PluginHost::load(&self.config()).unwrap()
    }
}
