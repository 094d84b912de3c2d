//! The plugins directory: install, list, remove.
//!
//! Each installed bundle is a subdirectory named after its feature (the
//! loader refuses one whose directory is not its name). Installs verify
//! first, ask the component to describe itself, and land atomically (copy
//! to a temporary directory, then rename), so a half-copied bundle is never
//! loaded. Replacing a bundle with one from another signer needs consent.

use std::path::{Path, PathBuf};

use crate::bundle::{Bundle, BundleError, Signer};
use crate::cache::CompiledCache;
use crate::runtime::{self, Limits, Runtime};
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

/// How [`install_with`] installs.
#[derive(Debug, Clone)]
pub struct InstallOptions<'a> {
    pub trust: &'a TrustStore,
    /// Accept a bundle whose signature is missing or untrusted.
    pub allow_unsigned: bool,
    /// Replace an installed bundle of the same name.
    pub replace: bool,
    /// With `replace`: accept a bundle from another signer than the
    /// installed one's (`--new-signer`). Without it that is refused with
    /// [`BundleError::SignerChanged`]. The privileges granted to the
    /// replaced bundle are revoked: a grant trusts one signer's code.
    pub new_signer: bool,
    /// The compiled-component cache the install-time check fills, so that
    /// the next start is warm; `None` compiles without caching.
    pub cache_dir: Option<PathBuf>,
    /// The sandbox the install-time `describe` runs in.
    pub limits: Limits,
}

impl<'a> InstallOptions<'a> {
    /// Nothing unsigned, no replacing, no cache, the default sandbox.
    pub fn new(trust: &'a TrustStore) -> InstallOptions<'a> {
        InstallOptions {
            trust,
            allow_unsigned: false,
            replace: false,
            new_signer: false,
            cache_dir: None,
            limits: Limits::default(),
        }
    }
}

/// What [`install_with`] did.
#[derive(Debug, Clone)]
pub struct Installed {
    pub bundle: Bundle,
    pub signer: Signer,
    /// The bundle it replaced, if it replaced one.
    pub replaced: Option<Replaced>,
}

/// The installed bundle an install replaced.
#[derive(Debug, Clone)]
pub struct Replaced {
    pub version: String,
    /// Who signed it, in words: `signed by Jane (0123…)`, `unsigned`.
    pub signer: String,
    /// Whether the new bundle's signer is another (a key, or none).
    pub signer_changed: bool,
}

/// Verify `source` and install it into `plugins_dir`. Refuses to replace an
/// installed bundle of the same name unless `replace` is set, and a bundle
/// from another signer always (see [`install_with`]).
pub fn install(
    plugins_dir: &Path,
    source: &Path,
    trust: &TrustStore,
    allow_unsigned: bool,
    replace: bool,
) -> Result<(Bundle, Signer), BundleError> {
    let options = InstallOptions {
        allow_unsigned,
        replace,
        ..InstallOptions::new(trust)
    };
    install_with(plugins_dir, source, &options).map(|i| (i.bundle, i.signer))
}

/// Verify `source` (a bundle directory or a single-file bundle) and install
/// it into `plugins_dir`, as `options` say.
///
/// Before anything lands: the bundle's name is checked (a feature name, not
/// reserved), its digests and signature verified (the copy too), and its
/// component is loaded in the sandbox and asked to describe itself, which
/// must give the manifest's name and version. With `replace`, a bundle
/// signed by another key than the installed one (or signed over unsigned,
/// or unsigned over signed) needs `new_signer`. The bundle lands by rename,
/// every file and directory with the fixed time
/// ([`crate::bundle::FIXED_TIME_SECS`]).
pub fn install_with(
    plugins_dir: &Path,
    source: &Path,
    options: &InstallOptions<'_>,
) -> Result<Installed, BundleError> {
    let trust = options.trust;
    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BundleError::Io { path, source }
    };
    std::fs::create_dir_all(plugins_dir).map_err(io(plugins_dir))?;
    // A bundle file is unpacked (strictly) beside the installed bundles, and
    // is from then on a directory like any other.
    let opened = crate::archive::Source::open(source, plugins_dir)?;
    let (bundle, source) = (&opened.bundle, opened.dir());
    let signer = bundle.verify(trust, options.allow_unsigned)?;
    let name = bundle.name().to_owned();
    let target = plugins_dir.join(&name);
    let installed = std::fs::symlink_metadata(&target).is_ok();
    let mut replaced = None;
    if installed {
        let old = Bundle::open(&target);
        let old_version = old
            .as_ref()
            .map(|b| b.manifest.version.clone())
            .unwrap_or_else(|_| "unknown".into());
        if !options.replace {
            return Err(BundleError::Invalid {
                name,
                reason: format!(
                    "version {old_version} is already installed; pass --replace to install version {} over it",
                    bundle.manifest.version
                ),
            });
        }
        // The installed bundle's signer is the key its signature names (it
        // was verified when it was installed); one that cannot be read at
        // all is nobody's, and so any signer is a change.
        let old_key = old.as_ref().ok().and_then(Bundle::signature_key_id);
        let new_key = match &signer {
            Signer::Trusted { key_id, .. } => Some(key_id.clone()),
            Signer::Unverified { .. } => None,
        };
        let signer_changed = old.is_err() || old_key != new_key;
        let old_signer = match &old {
            Ok(_) => key_words(old_key.as_deref(), trust),
            Err(_) => "unreadable".to_owned(),
        };
        if signer_changed && !options.new_signer {
            return Err(BundleError::SignerChanged {
                name,
                installed_version: old_version,
                installed: old_signer,
                version: bundle.manifest.version.clone(),
                new: signer_words(&signer, bundle, trust),
            });
        }
        replaced = Some(Replaced {
            version: old_version,
            signer: old_signer,
            signer_changed,
        });
    }
    let staging = plugins_dir.join(format!(".installing-{name}-{}", std::process::id()));
    if staging.exists() {
        std::fs::remove_dir_all(&staging).map_err(io(&staging))?;
    }
    copy_dir(source, &staging).map_err(io(&staging))?;
    // Verify the copy, not just the source, before it becomes visible, and
    // ask its component who it is.
    let staged = Bundle::open(&staging)
        .and_then(|b| b.verify(trust, options.allow_unsigned).map(|_| b))
        .and_then(|b| {
            check_describe(&b, options).map_err(|reason| BundleError::Invalid {
                name: name.clone(),
                reason,
            })
        })
        .and_then(|()| crate::bundle::fix_times(&staging));
    if let Err(e) = staged {
        let _ = std::fs::remove_dir_all(&staging);
        return Err(e);
    }
    if installed {
        let old = plugins_dir.join(format!(".removing-{name}-{}", std::process::id()));
        std::fs::rename(&target, &old).map_err(io(&target))?;
        std::fs::rename(&staging, &target).map_err(io(&target))?;
        let _ = std::fs::remove_dir_all(&old);
    } else {
        std::fs::rename(&staging, &target).map_err(io(&target))?;
    }
    crate::bundle::fix_times(&target)?;
    if replaced.as_ref().is_some_and(|r| r.signer_changed) {
        // A grant was given to one signer's code; another's starts with none.
        crate::grants::save(plugins_dir, &name, &Default::default())?;
    }
    Ok(Installed {
        bundle: Bundle::open(&target)?,
        signer,
        replaced,
    })
}

/// Load the staged bundle's component in the sandbox and check that it
/// describes itself as the manifest says.
fn check_describe(bundle: &Bundle, options: &InstallOptions<'_>) -> Result<(), String> {
    let runtime = Runtime::new(options.limits)
        .map_err(|e| format!("the WebAssembly engine could not start: {e}"))?;
    let cache = CompiledCache::new(options.cache_dir.clone());
    let digest = bundle
        .manifest
        .component_digest()
        .expect("an opened bundle has a component digest");
    let (prepared, _) = runtime::load(
        &runtime,
        &cache,
        bundle.name(),
        digest,
        &bundle.component_path(),
        bundle.assets_dir(),
    )
    .map_err(|e| e.to_string())?;
    let info = prepared
        .describe()
        .map_err(|e| format!("describe failed: {e}"))?;
    crate::check_description(&bundle.manifest, &info)?;
    // What every start checks, checked before the bundle is in place: its
    // description's text and its options schema's bounds.
    openfactory_core::plan::Feature::new(info, bundle.manifest.bundle_digest())
        .map(|_| ())
        .map_err(|e| e.to_string())
}

/// A signer in words, for messages: whom the key belongs to when trusted.
fn key_words(key_id: Option<&str>, trust: &TrustStore) -> String {
    match key_id {
        None => "unsigned".into(),
        Some(id) => match trust.find(id) {
            Some(key) => format!("signed by {} ({id})", key.comment),
            None => format!("signed by key {id}, which is not trusted"),
        },
    }
}

fn signer_words(signer: &Signer, bundle: &Bundle, trust: &TrustStore) -> String {
    match signer {
        Signer::Trusted { key_id, comment } => format!("signed by {comment} ({key_id})"),
        Signer::Unverified { .. } => match bundle.signature_key_id() {
            Some(id) if trust.find(&id).is_none() => {
                format!("signed by key {id}, which is not trusted")
            }
            Some(id) => format!("signed by key {id}, but the signature does not verify"),
            None => "unsigned".into(),
        },
    }
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

/// Copy a bundle directory: regular files and directories only (links are
/// skipped; verification then reports the missing file).
pub fn copy_dir(from: &Path, to: &Path) -> std::io::Result<()> {
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
    }
    Ok(())
}
