//! The plugins directory: install, list, remove.
//!
//! Each installed bundle is a subdirectory named after its feature. Installs
//! verify first and land atomically (copy to a temporary directory, then
//! rename), so a half-copied bundle is never loaded.

use std::path::{Path, PathBuf};

use crate::bundle::{Bundle, BundleError, Signer};
use crate::signing::TrustStore;

/// Installed bundle directories, sorted. A missing plugins directory is empty.
pub fn bundle_dirs(plugins_dir: &Path) -> Result<Vec<PathBuf>, BundleError> {
    let entries = match std::fs::read_dir(plugins_dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(BundleError::Io {
                path: plugins_dir.to_owned(),
                source,
            });
        }
    };
    let mut dirs: Vec<PathBuf> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && !p
                    .file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with('.'))
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// Verify `source` and install it into `plugins_dir`. Refuses to replace an
/// installed bundle of the same name unless `replace` is set.
pub fn install(
    plugins_dir: &Path,
    source: &Path,
    trust: &TrustStore,
    allow_unsigned: bool,
    replace: bool,
) -> Result<(Bundle, Signer), BundleError> {
    let bundle = Bundle::open(source)?;
    let signer = bundle.verify(trust, allow_unsigned)?;
    let name = bundle.name().to_owned();
    let target = plugins_dir.join(&name);
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError::Io { path, source }
    };
    if target.exists() && !replace {
        let installed = Bundle::open(&target)
            .map(|b| b.manifest.version)
            .unwrap_or_else(|_| "unknown".into());
        return Err(BundleError::Invalid {
            name,
            reason: format!(
                "version {installed} is already installed; pass --replace to install version {} over it",
                bundle.manifest.version
            ),
        });
    }
    std::fs::create_dir_all(plugins_dir).map_err(io(plugins_dir))?;
    let staging = plugins_dir.join(format!(".installing-{name}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    copy_dir(source, &staging).map_err(io(&staging))?;
    // Verify the copy, not just the source, before it becomes visible.
    let staged = Bundle::open(&staging).and_then(|b| b.verify(trust, allow_unsigned).map(|_| b));
    if let Err(e) = staged {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if target.exists() {
        let old = plugins_dir.join(format!(".removing-{name}-{}", std::process::id()));
        std::fs::rename(&target, &old).map_err(io(&target))?;
        std::fs::rename(&staging, &target).map_err(io(&target))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&staging, &target).map_err(io(&target))?;
    }
    Ok((Bundle::open(&target)?, signer))
}

/// Remove an installed bundle by feature name.
pub fn remove(plugins_dir: &Path, name: &str) -> Result<(), BundleError> {
    openfactory_core::rules::slug(name).map_err(|r| BundleError::Invalid {
        name: name.into(),
        reason: format!("the name {r}"),
    })?;
    let target = plugins_dir.join(name);
    if !target.is_dir() {
        return Err(BundleError::Invalid {
            name: name.into(),
            reason: "is not installed".into(),
        });
    }
    std::fs::remove_dir_all(&target).map_err(|source| BundleError::Io {
        path: target,
        source,
    })
}

fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(from)? {
        let entry = entry?;
        let kind = entry.file_type()?;
        let target = to.join(entry.file_name());
        if kind.is_dir() {
            copy_dir(&entry.path(), &target)?;
        } else if kind.is_file() {
            std::fs::copy(entry.path(), &target)?;
        }
        // Links are skipped; verification then reports the missing file.
    }
    Ok(())
}
