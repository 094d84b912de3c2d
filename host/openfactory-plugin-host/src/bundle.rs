//! Plugin bundles: a directory holding a manifest, the component, optional
//! assets, and a signature.
//!
//! ```text
//! docker/
//!   manifest.toml    name, version, WIT version, sha256 of every file
//!   plugin.wasm      the component
//!   assets/…         read-only files the plugin may read at /assets
//!   signature.toml   ed25519 over the manifest (which covers every digest)
//! ```
//!
//! Verification checks the signature against trusted keys (and, for a key
//! the operator restricted, that it may sign this name), every digest, and
//! that the bundle holds no file the manifest does not list.
//!
//! A plugin's *digest*, what the planner records and a recipe's id covers,
//! is the bundle digest ([`Manifest::bundle_digest`]): it covers the
//! component and every asset, so the same component with other assets is
//! another plugin. The compiled-component cache keys on the component's own
//! sha256 ([`Manifest::component_digest`]).
//!
//! Every file and directory of a packed or installed bundle has one fixed
//! modification and access time ([`FIXED_TIME`]), so its assets tell a plugin
//! nothing about when they were made or installed.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use openfactory_core::capability::Capabilities;

use crate::signing::{KeyError, SecretKey, TrustStore};

pub const MANIFEST: &str = "manifest.toml";
pub const SIGNATURE: &str = "signature.toml";
pub const COMPONENT: &str = "plugin.wasm";
pub const ASSETS: &str = "assets";
/// The WIT package versions this host can load.
pub const SUPPORTED_WIT: &[&str] = &["openfactory:feature@0.1.0"];
const SIGNING_CONTEXT: &[u8] = b"openfactory-bundle-v1\n";
/// Largest component or asset accepted.
const MAX_FILE: u64 = 64 * 1024 * 1024;
/// The modification and access time of every file and directory in a packed
/// or installed bundle, in seconds after the Unix epoch: 1980-01-01T00:00:00Z,
/// the earliest time every archive format can hold.
pub const FIXED_TIME_SECS: u64 = 315_532_800;
/// What [`Manifest::bundle_digest`] hashes first.
const BUNDLE_DIGEST_CONTEXT: &[u8] = b"openfactory-bundle-digest-v1\n";

/// [`FIXED_TIME_SECS`] as a time.
pub fn fixed_time() -> SystemTime {
    SystemTime::UNIX_EPOCH + Duration::from_secs(FIXED_TIME_SECS)
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// Bundle format version.
    pub format: u32,
    /// The feature name the plugin provides.
    pub name: String,
    pub version: String,
    /// The WIT package the component targets.
    pub wit: String,
    /// `sha256:<hex>` of every file, by path relative to the bundle.
    pub files: BTreeMap<String, String>,
    /// What the plugin's steps may touch; signed with the rest. A bundle
    /// without the table declares nothing, and its plugin may emit no step.
    #[serde(default, skip_serializing_if = "is_empty")]
    pub capabilities: Capabilities,
}

fn is_empty(c: &Capabilities) -> bool {
    *c == Capabilities::default()
}

impl Manifest {
    /// The component's sha256 in hex: what the compiled-component cache keys on.
    pub fn component_digest(&self) -> Option<&str> {
        self.files
            .get(COMPONENT)
            .and_then(|d| d.strip_prefix("sha256:"))
    }

    /// The bundle digest, in hex: the plugin's digest as the planner records
    /// it (`Feature::digest`, `PlannedFeature::digest`) and a recipe's id
    /// covers. It is the sha256 of `openfactory-bundle-digest-v1\n` followed,
    /// for every entry of `files` in path order, by the path, a NUL byte, the
    /// entry's `sha256:<hex>` digest and a newline: it covers the component
    /// and every asset, and nothing else (not the version, not the
    /// signature). Meaningful once the bundle is verified, which checks every
    /// file against `files`.
    pub fn bundle_digest(&self) -> String {
        let mut hasher = Sha256::new();
        hasher.update(BUNDLE_DIGEST_CONTEXT);
        for (path, digest) in &self.files {
            hasher.update(path.as_bytes());
            hasher.update(b"\0");
            hasher.update(digest.as_bytes());
            hasher.update(b"\n");
        }
        hex::encode(hasher.finalize())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct SignatureFile {
    algorithm: String,
    key_id: String,
    signature: String,
}

/// Who signed a bundle, when it was verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Signer {
    Trusted {
        key_id: String,
        comment: String,
    },
    /// Accepted only because the operator allows unsigned bundles.
    Unverified {
        reason: String,
    },
}

#[derive(Debug, thiserror::Error)]
pub enum BundleError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{0}: invalid manifest: {1}")]
    Manifest(PathBuf, String),
    /// What was given as a bundle is none.
    #[error(
        "{}: {reason}; a bundle is a `.ofbundle` file, a directory holding manifest.toml, or oci://REGISTRY/REPO:TAG",
        path.display()
    )]
    NotABundle { path: PathBuf, reason: &'static str },
    #[error("bundle `{name}`: {reason}")]
    Invalid { name: String, reason: String },
    #[error(
        "bundle `{name}` is not signed by a trusted key: {reason} (trust the author's key with `openfactory plugin trust <key.pub> [--names NAME,…]`, or allow unsigned plugins explicitly)"
    )]
    Untrusted { name: String, reason: String },
    /// `--out` names something that is neither empty nor a bundle.
    #[error(
        "{}: {reason}; refusing to replace it (choose another --out, empty it, or pass --force to replace it and everything in it)",
        path.display()
    )]
    OutExists { path: PathBuf, reason: String },
    /// `--replace` with a bundle from another signer than the installed one.
    #[error(
        "plugin `{name}`: the installed version {installed_version} is {installed}; this bundle (version {version}) is {new}. Replacing a plugin with another signer's bundle hands that signer the name `{name}` and what was granted to it: pass --new-signer with --replace if you mean it"
    )]
    SignerChanged {
        name: String,
        installed_version: String,
        installed: String,
        version: String,
        new: String,
    },
    #[error(transparent)]
    Key(#[from] KeyError),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_owned(),
        source,
    }
}

pub fn sha256_file(path: &Path) -> Result<String, BundleError> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    if !meta.is_file() {
        return Err(BundleError::Invalid {
            name: path.display().to_string(),
            reason: "is not a regular file (links are refused)".into(),
        });
    }
    if meta.len() > MAX_FILE {
        return Err(BundleError::Invalid {
            name: path.display().to_string(),
            reason: format!("is larger than {MAX_FILE} bytes"),
        });
    }
    let bytes = std::fs::read(path).map_err(io(path))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Every regular file below `dir`, as sorted relative paths. Links are refused.
pub(crate) fn list_files(dir: &Path) -> Result<Vec<String>, BundleError> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) -> Result<(), BundleError> {
        for entry in std::fs::read_dir(dir).map_err(io(dir))? {
            let entry = entry.map_err(io(dir))?;
            let path = entry.path();
            let kind = entry.file_type().map_err(io(&path))?;
            let rel = path
                .strip_prefix(root)
                .expect("below root")
                .to_string_lossy()
                .into_owned();
            if kind.is_symlink() {
                return Err(BundleError::Invalid {
                    name: root.display().to_string(),
                    reason: format!("`{rel}` is a symbolic link; bundles hold regular files only"),
                });
            } else if kind.is_dir() {
                walk(root, &path, out)?;
            } else {
                out.push(rel);
            }
        }
        Ok(())
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out)?;
    out.sort();
    Ok(out)
}

/// A bundle on disk.
#[derive(Debug, Clone)]
pub struct Bundle {
    pub dir: PathBuf,
    pub manifest: Manifest,
    manifest_bytes: Vec<u8>,
}

impl Bundle {
    pub fn open(dir: &Path) -> Result<Bundle, BundleError> {
        let not_a_bundle = |reason| BundleError::NotABundle {
            path: dir.to_owned(),
            reason,
        };
        match std::fs::metadata(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(not_a_bundle("no such file or directory"));
            }
            Ok(m) if m.is_dir() && !dir.join(MANIFEST).exists() => {
                return Err(not_a_bundle("this directory holds no manifest.toml"));
            }
            _ => {}
        }
        let path = dir.join(MANIFEST);
        let manifest_bytes = std::fs::read(&path).map_err(io(&path))?;
        let text = std::str::from_utf8(&manifest_bytes)
            .map_err(|_| BundleError::Manifest(path.clone(), "not UTF-8".into()))?;
        let manifest: Manifest = toml::from_str(text)
            .map_err(|e| BundleError::Manifest(path.clone(), e.message().to_owned()))?;
        let bundle = Bundle {
            dir: dir.to_owned(),
            manifest,
            manifest_bytes,
        };
        bundle.check_shape()?;
        Ok(bundle)
    }

    pub fn name(&self) -> &str {
        &self.manifest.name
    }

    pub fn component_path(&self) -> PathBuf {
        self.dir.join(COMPONENT)
    }

    pub fn assets_dir(&self) -> Option<PathBuf> {
        let dir = self.dir.join(ASSETS);
        dir.is_dir().then_some(dir)
    }

    fn invalid(&self, reason: impl Into<String>) -> BundleError {
        BundleError::Invalid {
            name: self.manifest.name.clone(),
            reason: reason.into(),
        }
    }

    fn check_shape(&self) -> Result<(), BundleError> {
        let m = &self.manifest;
        if m.format != 1 {
            return Err(self.invalid(format!(
                "bundle format {} is not supported (this host reads format 1)",
                m.format
            )));
        }
        check_name(&m.name).map_err(|r| self.invalid(r))?;
        if !SUPPORTED_WIT.contains(&m.wit.as_str()) {
            return Err(self.invalid(wit_refusal(&m.wit)));
        }
        if let Some((field, reason)) = m.capabilities.check().into_iter().next() {
            return Err(self.invalid(format!("its manifest's `capabilities.{field}` {reason}")));
        }
        if m.component_digest().is_none() {
            return Err(self.invalid(format!("the manifest lists no `{COMPONENT}` digest")));
        }
        for (file, digest) in &m.files {
            let ok_path = file == COMPONENT
                || (file.starts_with("assets/")
                    && !file
                        .split('/')
                        .any(|c| c.is_empty() || c == "." || c == ".."));
            if !ok_path {
                return Err(self.invalid(format!(
                    "lists `{file}`; bundles hold plugin.wasm and files under assets/ only"
                )));
            }
            if !digest
                .strip_prefix("sha256:")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
            {
                return Err(self.invalid(format!(
                    "the digest of `{file}` is not `sha256:<64 hex digits>`"
                )));
            }
        }
        Ok(())
    }

    /// Check digests and completeness, then the signature. With
    /// `allow_unsigned`, a missing or untrusted signature is accepted and
    /// reported as [`Signer::Unverified`]; a wrong digest never is.
    pub fn verify(&self, trust: &TrustStore, allow_unsigned: bool) -> Result<Signer, BundleError> {
        let present = list_files(&self.dir)?;
        for file in &present {
            if file != MANIFEST && file != SIGNATURE && !self.manifest.files.contains_key(file) {
                return Err(
                    self.invalid(format!("holds `{file}`, which the manifest does not list"))
                );
            }
        }
        for (file, digest) in &self.manifest.files {
            let path = self.dir.join(file);
            if !path.exists() {
                return Err(self.invalid(format!("`{file}` is listed in the manifest but missing")));
            }
            let actual = sha256_file(&path)?;
            if digest.strip_prefix("sha256:") != Some(actual.as_str()) {
                return Err(self.invalid(format!("`{file}` does not match its digest: the bundle was modified after it was signed")));
            }
        }
        match self.check_signature(trust) {
            Ok(signer) => Ok(signer),
            Err(reason) if allow_unsigned => Ok(Signer::Unverified { reason }),
            Err(reason) => Err(BundleError::Untrusted {
                name: self.manifest.name.clone(),
                reason,
            }),
        }
    }

    /// The key id `signature.toml` names, without checking the signature;
    /// `None` for a bundle without a readable one.
    pub fn signature_key_id(&self) -> Option<String> {
        let text = std::fs::read_to_string(self.dir.join(SIGNATURE)).ok()?;
        let sig: SignatureFile = toml::from_str(&text).ok()?;
        Some(sig.key_id)
    }

    fn check_signature(&self, trust: &TrustStore) -> Result<Signer, String> {
        let path = self.dir.join(SIGNATURE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(_) => return Err("it has no signature.toml".into()),
        };
        let sig: SignatureFile = toml::from_str(&text)
            .map_err(|e| format!("signature.toml is invalid: {}", e.message()))?;
        if sig.algorithm != "ed25519" {
            return Err(format!(
                "unsupported signature algorithm `{}`",
                sig.algorithm
            ));
        }
        let key = trust
            .find(&sig.key_id)
            .ok_or_else(|| format!("it is signed by key {}, which is not trusted", sig.key_id))?;
        let bytes = B64
            .decode(&sig.signature)
            .map_err(|_| "the signature is not base64".to_owned())?;
        if key.verify(&signed_message(&self.manifest_bytes), &bytes) {
            if let Some(names) = trust.names(&key.id())
                && !names.contains(&self.manifest.name)
            {
                let names: Vec<&str> = names.iter().map(String::as_str).collect();
                return Err(format!(
                    "it is signed by key {} ({}), which is trusted to sign only bundles named {}, not `{}`",
                    key.id(),
                    key.comment,
                    names.join(", "),
                    self.manifest.name
                ));
            }
            Ok(Signer::Trusted {
                key_id: key.id(),
                comment: key.comment.clone(),
            })
        } else {
            Err(format!(
                "the signature does not match the manifest for key {}",
                key.id()
            ))
        }
    }
}

/// Why a bundle built against `wit` is not loaded, and what to do about it.
fn wit_refusal(wit: &str) -> String {
    let shown = openfactory_core::rules::printable(wit, 100);
    let supported = SUPPORTED_WIT.join(", ");
    let version = |text: &str| -> Option<(u64, u64, u64)> {
        let mut parts = text.split('.').map(|p| p.parse::<u64>().ok());
        let v = (parts.next()??, parts.next()??, parts.next()??);
        parts.next().is_none().then_some(v)
    };
    let Some(asked) = wit.strip_prefix("openfactory:feature@") else {
        return format!(
            "targets `{shown}`, which is not the OpenFactory feature contract (this host supports {supported})"
        );
    };
    if asked.contains('-') {
        return format!(
            "targets the pre-release contract `{shown}`, which a release host never loads; rebuild the plugin against {supported}"
        );
    }
    let newest = SUPPORTED_WIT
        .iter()
        .filter_map(|w| w.strip_prefix("openfactory:feature@").and_then(version))
        .max();
    match (version(asked), newest) {
        (Some(asked), Some(newest)) if asked > newest => format!(
            "was built against `{shown}`, a newer contract than this host supports ({supported}): upgrade OpenFactory to a release that supports it, or install a build of the plugin against {supported}"
        ),
        (Some(_), _) => format!(
            "was built against `{shown}`, a contract this host no longer supports: rebuild the plugin against {supported} (see the versioning rules in wit/feature.wit)"
        ),
        (None, _) => {
            format!("targets `{shown}`, which is not a version (this host supports {supported})")
        }
    }
}

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, manifest].concat()
}

/// Assemble a bundle in `out` from a component and an optional assets
/// directory, and sign it when a key is given.
///
/// `out` may be missing, an empty directory, or a previous bundle (which is
/// replaced); anything else is refused with [`BundleError::OutExists`] (see
/// [`pack_with`] with `force`). The bundle is built in a staging directory beside `out`
/// and renamed into place only once it is complete, so a failed pack leaves
/// `out` as it was.
pub fn pack(
    out: &Path,
    name: &str,
    version: &str,
    component: &Path,
    assets: Option<&Path>,
    capabilities: &Capabilities,
    key: Option<&SecretKey>,
) -> Result<Bundle, BundleError> {
    pack_with(
        out,
        false,
        name,
        version,
        component,
        assets,
        capabilities,
        key,
    )
}

/// A plugin's name must be a feature name, and none the planner keeps for
/// its own steps ([`openfactory_core::plan::RESERVED_NAMES`]).
pub fn check_name(name: &str) -> Result<(), String> {
    openfactory_core::rules::slug(name).map_err(|r| format!("the name {r}"))?;
    if openfactory_core::plan::is_reserved(name) {
        return Err(format!(
            "the name `{name}` is reserved for the planner's own steps and checks (reserved: {}); give the plugin another name (its `info()` name)",
            openfactory_core::plan::RESERVED_NAMES.join(", ")
        ));
    }
    Ok(())
}

/// Why `out` may not be replaced by a new bundle, if it may not.
fn out_refusal(out: &Path) -> Result<Option<String>, BundleError> {
    let meta = match std::fs::symlink_metadata(out) {
        Ok(meta) => meta,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(BundleError::Io {
                path: out.to_owned(),
                source,
            });
        }
    };
    if !meta.is_dir() {
        return Ok(Some("exists and is not a directory".into()));
    }
    if std::fs::read_dir(out).map_err(io(out))?.next().is_none() {
        return Ok(None);
    }
    let previous = Bundle::open(out).ok().filter(|b| {
        list_files(out).is_ok_and(|files| {
            files.iter().all(|f| {
                f == MANIFEST || f == SIGNATURE || b.manifest.files.contains_key(f.as_str())
            })
        })
    });
    Ok(match previous {
        Some(_) => None,
        None => Some(
            "is a directory that is neither empty nor a bundle (a bundle holds manifest.toml, signature.toml and the files its manifest lists)"
                .into(),
        ),
    })
}

/// [`pack`]; with `force`, whatever `out` is gets replaced (`plugin pack --force`),
/// still only once the new bundle is complete.
#[allow(clippy::too_many_arguments)]
pub fn pack_with(
    out: &Path,
    force: bool,
    name: &str,
    version: &str,
    component: &Path,
    assets: Option<&Path>,
    capabilities: &Capabilities,
    key: Option<&SecretKey>,
) -> Result<Bundle, BundleError> {
    check_name(name).map_err(|reason| BundleError::Invalid {
        name: name.into(),
        reason,
    })?;
    if !force && let Some(reason) = out_refusal(out)? {
        return Err(BundleError::OutExists {
            path: out.to_owned(),
            reason,
        });
    }
    let file_name = out
        .file_name()
        .ok_or_else(|| BundleError::OutExists {
            path: out.to_owned(),
            reason: "names no directory of its own".into(),
        })?
        .to_string_lossy()
        .into_owned();
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent).map_err(io(parent))?;
    let pid = std::process::id();
    let staging = parent.join(format!(".{file_name}.packing-{pid}"));
    remove_any(&staging)?;
    let built = build(
        &staging,
        name,
        version,
        component,
        assets,
        capabilities,
        key,
    );
    if let Err(e) = built {
        let _ = remove_any(&staging);
        return Err(e);
    }
    let old = parent.join(format!(".{file_name}.replaced-{pid}"));
    let had_old = std::fs::symlink_metadata(out).is_ok();
    if had_old {
        remove_any(&old)?;
        if let Err(source) = std::fs::rename(out, &old) {
            let _ = remove_any(&staging);
            return Err(BundleError::Io {
                path: out.to_owned(),
                source,
            });
        }
    }
    if let Err(source) = std::fs::rename(&staging, out) {
        if had_old {
            let _ = std::fs::rename(&old, out);
        }
        let _ = remove_any(&staging);
        return Err(BundleError::Io {
            path: out.to_owned(),
            source,
        });
    }
    if had_old {
        remove_any(&old)?;
    }
    set_fixed_time(out)?;
    Bundle::open(out)
}

/// Write a complete bundle into the new directory `dir`.
fn build(
    dir: &Path,
    name: &str,
    version: &str,
    component: &Path,
    assets: Option<&Path>,
    capabilities: &Capabilities,
    key: Option<&SecretKey>,
) -> Result<(), BundleError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    sha256_file(component)?;
    std::fs::copy(component, dir.join(COMPONENT)).map_err(io(component))?;
    if let Some(assets) = assets.filter(|a| a.is_dir()) {
        for rel in list_files(assets)? {
            let target = dir.join(ASSETS).join(&rel);
            std::fs::create_dir_all(target.parent().expect("has a parent")).map_err(io(&target))?;
            std::fs::copy(assets.join(&rel), &target).map_err(io(&target))?;
        }
    }
    let mut files = BTreeMap::new();
    for rel in list_files(dir)? {
        files.insert(
            rel.clone(),
            format!("sha256:{}", sha256_file(&dir.join(&rel))?),
        );
    }
    let manifest = Manifest {
        format: 1,
        name: name.into(),
        version: version.into(),
        wit: SUPPORTED_WIT[0].into(),
        files,
        capabilities: capabilities.clone(),
    };
    let text = toml::to_string(&manifest)
        .map_err(|e| BundleError::Manifest(dir.join(MANIFEST), e.to_string()))?;
    std::fs::write(dir.join(MANIFEST), &text).map_err(io(dir))?;
    if let Some(key) = key {
        sign(dir, key)?;
    }
    Bundle::open(dir)?;
    fix_times(dir)
}

/// Remove a file, link or directory tree; nothing there is fine.
fn remove_any(path: &Path) -> Result<(), BundleError> {
    let result = match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => Err(e),
        Ok(meta) if meta.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
    };
    result.map_err(io(path))
}

/// Give `path` (a file or a directory, never followed if a link) the fixed
/// access and modification time.
fn set_fixed_time(path: &Path) -> Result<(), BundleError> {
    let meta = std::fs::symlink_metadata(path).map_err(io(path))?;
    if meta.is_symlink() {
        return Ok(());
    }
    let file = std::fs::File::open(path).map_err(io(path))?;
    let time = fixed_time();
    file.set_times(
        std::fs::FileTimes::new()
            .set_accessed(time)
            .set_modified(time),
    )
    .map_err(io(path))
}

/// Give every file and directory below `dir`, and `dir` itself, the fixed
/// time ([`FIXED_TIME_SECS`]): a bundle's times say nothing about when it was
/// packed or installed. Links are not followed (bundles refuse them anyway).
pub fn fix_times(dir: &Path) -> Result<(), BundleError> {
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let entry = entry.map_err(io(dir))?;
        let path = entry.path();
        let kind = entry.file_type().map_err(io(&path))?;
        if kind.is_dir() {
            fix_times(&path)?;
        } else if kind.is_file() {
            set_fixed_time(&path)?;
        }
    }
    // Last: writing the entries above changed the directory's own time.
    set_fixed_time(dir)
}

/// (Re)sign a bundle's manifest.
pub fn sign(dir: &Path, key: &SecretKey) -> Result<(), BundleError> {
    let bundle = Bundle::open(dir)?;
    let signature = key.sign(&signed_message(&bundle.manifest_bytes));
    let file = SignatureFile {
        algorithm: "ed25519".into(),
        key_id: key.public("").id(),
        signature: B64.encode(signature),
    };
    let path = dir.join(SIGNATURE);
    std::fs::write(&path, toml::to_string(&file).expect("serialises")).map_err(io(&path))?;
    set_fixed_time(&path)?;
    set_fixed_time(dir)
}

#[cfg(test)]
mod wit_tests {
    use super::wit_refusal;

    #[test]
    fn a_contract_this_host_cannot_load_is_refused_with_what_to_do() {
        for (wit, says) in [
            (
                "openfactory:feature@0.1.1",
                "newer contract than this host supports",
            ),
            ("openfactory:feature@0.2.0", "upgrade OpenFactory"),
            (
                "openfactory:feature@1.0.0",
                "or install a build of the plugin against openfactory:feature@0.1.0",
            ),
            (
                "openfactory:feature@0.0.9",
                "no longer supports: rebuild the plugin",
            ),
            ("openfactory:feature@0.1.1-rc.1", "pre-release"),
            ("openfactory:feature@latest", "not a version"),
            ("wasi:cli@0.2.0", "not the OpenFactory feature contract"),
        ] {
            let why = wit_refusal(wit);
            assert!(why.contains(says), "{wit}: {why}");
            assert!(why.contains("openfactory:feature@0.1.0"), "{wit}: {why}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture(dir: &Path) -> (PathBuf, PathBuf) {
        let wasm = dir.join("x.wasm");
        std::fs::write(&wasm, b"\0asm-not-really").unwrap();
        let assets = dir.join("assets-src");
        std::fs::create_dir_all(assets.join("sub")).unwrap();
        std::fs::write(assets.join("sub/banner.txt"), "hello").unwrap();
        (wasm, assets)
    }

    #[test]
    fn signed_bundle_verifies_and_tampering_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (wasm, assets) = fixture(dir.path());
        let key = SecretKey::generate().unwrap();
        let trust = TrustStore::with_keys(vec![key.public("test")]);
        let out = dir.path().join("bundle");
        let bundle = pack(
            &out,
            "demo",
            "1.0.0",
            &wasm,
            Some(&assets),
            &Capabilities::default(),
            Some(&key),
        )
        .unwrap();
        assert!(matches!(
            bundle.verify(&trust, false).unwrap(),
            Signer::Trusted { .. }
        ));

        // An untrusted key is refused unless unsigned bundles are allowed.
        assert!(matches!(
            bundle.verify(&TrustStore::default(), false),
            Err(BundleError::Untrusted { .. })
        ));
        assert!(matches!(
            bundle.verify(&TrustStore::default(), true).unwrap(),
            Signer::Unverified { .. }
        ));

        // A modified asset is refused even when unsigned bundles are allowed.
        std::fs::write(out.join("assets/sub/banner.txt"), "HELLO").unwrap();
        let err = bundle.verify(&trust, true).unwrap_err().to_string();
        assert!(err.contains("does not match its digest"), "{err}");
        std::fs::write(out.join("assets/sub/banner.txt"), "hello").unwrap();

        // An extra file is refused.
        std::fs::write(out.join("assets/extra"), "x").unwrap();
        assert!(
            bundle
                .verify(&trust, true)
                .unwrap_err()
                .to_string()
                .contains("does not list")
        );
        std::fs::remove_file(out.join("assets/extra")).unwrap();

        // A manifest edited after signing is refused.
        let text = std::fs::read_to_string(out.join(MANIFEST))
            .unwrap()
            .replace("1.0.0", "9.9.9");
        std::fs::write(out.join(MANIFEST), text).unwrap();
        let reopened = Bundle::open(&out).unwrap();
        let err = reopened.verify(&trust, false).unwrap_err().to_string();
        assert!(err.contains("signature does not match"), "{err}");
    }

    #[test]
    fn hostile_manifests_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (wasm, _) = fixture(dir.path());
        let out = dir.path().join("b");
        pack(
            &out,
            "demo",
            "1",
            &wasm,
            None,
            &Capabilities::default(),
            None,
        )
        .unwrap();
        let text = std::fs::read_to_string(out.join(MANIFEST)).unwrap();
        let evil = text.replace("[files]", "[files]\n\"../../etc/passwd\" = \"sha256:0000000000000000000000000000000000000000000000000000000000000000\"");
        std::fs::write(out.join(MANIFEST), evil).unwrap();
        assert!(
            Bundle::open(&out)
                .unwrap_err()
                .to_string()
                .contains("assets/ only")
        );
        let evil = text.replace("name = \"demo\"", "name = \"../demo\"");
        std::fs::write(out.join(MANIFEST), evil).unwrap();
        assert!(Bundle::open(&out).is_err());
    }

    fn caps() -> Capabilities {
        Capabilities::default()
    }

    #[test]
    fn reserved_names_are_refused_at_pack_and_open() {
        let dir = tempfile::tempdir().unwrap();
        let (wasm, _) = fixture(dir.path());
        for name in openfactory_core::plan::RESERVED_NAMES {
            let out = dir.path().join(name);
            let err = pack(&out, name, "1", &wasm, None, &caps(), None)
                .unwrap_err()
                .to_string();
            assert!(err.contains("is reserved"), "{err}");
            assert!(!out.exists(), "nothing is written for a refused name");
        }
        // A manifest edited to a reserved name does not open (install, load).
        let out = dir.path().join("b");
        pack(&out, "demo", "1", &wasm, None, &caps(), None).unwrap();
        let text = std::fs::read_to_string(out.join(MANIFEST))
            .unwrap()
            .replace("name = \"demo\"", "name = \"recipe\"");
        std::fs::write(out.join(MANIFEST), text).unwrap();
        let err = Bundle::open(&out).unwrap_err().to_string();
        assert!(err.contains("`recipe` is reserved"), "{err}");
    }

    #[test]
    fn pack_replaces_only_an_empty_directory_or_a_previous_bundle() {
        let dir = tempfile::tempdir().unwrap();
        let (wasm, assets) = fixture(dir.path());
        let key = SecretKey::generate().unwrap();

        // A directory holding anything else is refused, and left alone.
        let out = dir.path().join("home");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::write(out.join("thesis.tex"), "years of work").unwrap();
        let err = pack(&out, "demo", "1", &wasm, None, &caps(), None).unwrap_err();
        assert!(matches!(err, BundleError::OutExists { .. }), "{err}");
        let err = err.to_string();
        assert!(
            err.contains("neither empty nor a bundle") && err.contains("--force"),
            "{err}"
        );
        assert_eq!(
            std::fs::read_to_string(out.join("thesis.tex")).unwrap(),
            "years of work"
        );
        // So is a file.
        let file = dir.path().join("file");
        std::fs::write(&file, "x").unwrap();
        assert!(matches!(
            pack(&file, "demo", "1", &wasm, None, &caps(), None),
            Err(BundleError::OutExists { .. })
        ));
        // --force replaces it.
        pack_with(&out, true, "demo", "1", &wasm, None, &caps(), None).unwrap();
        assert!(!out.join("thesis.tex").exists());

        // An empty directory and a previous bundle are fine.
        let out = dir.path().join("empty");
        std::fs::create_dir_all(&out).unwrap();
        pack(&out, "demo", "1", &wasm, Some(&assets), &caps(), Some(&key)).unwrap();
        let again = pack(&out, "demo", "2", &wasm, None, &caps(), None).unwrap();
        assert_eq!(again.manifest.version, "2");
        assert!(!out.join(SIGNATURE).exists() && !out.join(ASSETS).exists());

        // A pack that fails leaves the previous bundle as it was.
        pack(&out, "demo", "3", &wasm, Some(&assets), &caps(), Some(&key)).unwrap();
        let before = std::fs::read(out.join(MANIFEST)).unwrap();
        let missing = dir.path().join("missing.wasm");
        assert!(pack(&out, "demo", "4", &missing, Some(&assets), &caps(), None).is_err());
        std::os::unix::fs::symlink("/etc/passwd", assets.join("link")).unwrap();
        let err = pack(&out, "demo", "4", &wasm, Some(&assets), &caps(), None).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert_eq!(std::fs::read(out.join(MANIFEST)).unwrap(), before);
        let trust = TrustStore::with_keys(vec![key.public("k")]);
        Bundle::open(&out).unwrap().verify(&trust, false).unwrap();
        let leftovers: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .flatten()
            .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
            .collect();
        assert!(leftovers.is_empty(), "{leftovers:?}");

        // A component inside --out may be packed over (it is read first).
        let inside = out.join(COMPONENT);
        pack(&out, "demo", "5", &inside, None, &caps(), None).unwrap();
    }

    /// Every file and directory below `dir`, and `dir` itself.
    fn tree(dir: &Path) -> Vec<PathBuf> {
        let mut out = vec![dir.to_owned()];
        for entry in std::fs::read_dir(dir).unwrap().flatten() {
            if entry.file_type().unwrap().is_dir() {
                out.extend(tree(&entry.path()));
            } else {
                out.push(entry.path());
            }
        }
        out
    }

    /// Modification times only: reading a file may move its access time
    /// (`relatime`), which no file time set here can prevent.
    fn assert_fixed_times(dir: &Path) {
        for path in tree(dir) {
            let meta = std::fs::metadata(&path).unwrap();
            assert_eq!(meta.modified().unwrap(), fixed_time(), "{}", path.display());
        }
    }

    #[test]
    fn packed_files_and_directories_have_one_fixed_time() {
        let dir = tempfile::tempdir().unwrap();
        let (wasm, assets) = fixture(dir.path());
        let key = SecretKey::generate().unwrap();
        let out = dir.path().join("bundle");
        pack(&out, "demo", "1", &wasm, Some(&assets), &caps(), Some(&key)).unwrap();
        assert!(tree(&out).len() >= 6, "{:?}", tree(&out));
        assert_fixed_times(&out);
        // Re-signing keeps it so.
        sign(&out, &key).unwrap();
        assert_fixed_times(&out);
        assert_eq!(
            fixed_time(),
            SystemTime::UNIX_EPOCH + Duration::from_secs(315_532_800)
        );
    }

    #[test]
    fn the_bundle_digest_covers_every_asset_and_the_component() {
        let dir = tempfile::tempdir().unwrap();
        let (wasm, assets) = fixture(dir.path());
        let a = pack(
            &dir.path().join("a"),
            "demo",
            "1",
            &wasm,
            Some(&assets),
            &caps(),
            None,
        )
        .unwrap();
        std::fs::write(assets.join("sub/banner.txt"), "HELLO").unwrap();
        let b = pack(
            &dir.path().join("b"),
            "demo",
            "1",
            &wasm,
            Some(&assets),
            &caps(),
            None,
        )
        .unwrap();
        let c = pack(
            &dir.path().join("c"),
            "demo",
            "2",
            &wasm,
            None,
            &caps(),
            None,
        )
        .unwrap();
        assert_eq!(a.manifest.component_digest(), b.manifest.component_digest());
        let digests = [&a, &b, &c].map(|x| x.manifest.bundle_digest());
        assert_ne!(digests[0], digests[1], "another asset, another plugin");
        assert_ne!(digests[0], digests[2], "no assets, another plugin");
        assert_ne!(digests[0], a.manifest.component_digest().unwrap());
        assert_eq!(digests[0].len(), 64);
        // The version and the signature are not part of it.
        let key = SecretKey::generate().unwrap();
        let again = pack(
            &dir.path().join("a"),
            "demo",
            "9",
            &wasm,
            Some(&dir.path().join("none")),
            &caps(),
            Some(&key),
        )
        .unwrap();
        assert_eq!(again.manifest.bundle_digest(), c.manifest.bundle_digest());
    }

    #[test]
    fn a_key_restricted_to_names_signs_only_those() {
        let dir = tempfile::tempdir().unwrap();
        let (wasm, _) = fixture(dir.path());
        let key = SecretKey::generate().unwrap();
        let public = key.public("Jane Author");
        let bundle = pack(
            &dir.path().join("b"),
            "demo",
            "1",
            &wasm,
            None,
            &caps(),
            Some(&key),
        )
        .unwrap();
        let only_docker = TrustStore::with_keys(vec![public.clone()])
            .restrict(&public.id(), ["docker".to_owned()].into());
        let err = bundle.verify(&only_docker, false).unwrap_err();
        assert!(matches!(err, BundleError::Untrusted { .. }));
        let err = err.to_string();
        assert!(
            err.contains("trusted to sign only bundles named docker, not `demo`"),
            "{err}"
        );
        let docker_and_demo = TrustStore::with_keys(vec![public.clone()]).restrict(
            &public.id(),
            ["docker".to_owned(), "demo".to_owned()].into(),
        );
        assert!(matches!(
            bundle.verify(&docker_and_demo, false).unwrap(),
            Signer::Trusted { .. }
        ));
        // Unrestricted keys sign any name, as before.
        assert!(
            bundle
                .verify(&TrustStore::with_keys(vec![public]), false)
                .is_ok()
        );
    }
}
