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
//! Verification checks the signature against trusted keys, every digest, and
//! that the bundle holds no file the manifest does not list.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

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
}

impl Manifest {
    /// The component's sha256 in hex.
    pub fn component_digest(&self) -> Option<&str> {
        self.files
            .get(COMPONENT)
            .and_then(|d| d.strip_prefix("sha256:"))
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
    #[error("bundle `{name}`: {reason}")]
    Invalid { name: String, reason: String },
    #[error(
        "bundle `{name}` is not signed by a trusted key: {reason} (trust the author's key with `openfactory plugin trust <key.pub>`, or allow unsigned plugins explicitly)"
    )]
    Untrusted { name: String, reason: String },
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
fn list_files(dir: &Path) -> Result<Vec<String>, BundleError> {
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
        openfactory_core::rules::slug(&m.name)
            .map_err(|r| self.invalid(format!("the name {r}")))?;
        if !SUPPORTED_WIT.contains(&m.wit.as_str()) {
            return Err(self.invalid(format!(
                "targets `{}`; this host supports {}",
                m.wit,
                SUPPORTED_WIT.join(", ")
            )));
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

fn signed_message(manifest: &[u8]) -> Vec<u8> {
    [SIGNING_CONTEXT, manifest].concat()
}

/// Assemble a bundle in `out` from a component and an optional assets
/// directory, and sign it when a key is given.
pub fn pack(
    out: &Path,
    name: &str,
    version: &str,
    component: &Path,
    assets: Option<&Path>,
    key: Option<&SecretKey>,
) -> Result<Bundle, BundleError> {
    if out.exists() {
        std::fs::remove_dir_all(out).map_err(io(out))?;
    }
    std::fs::create_dir_all(out).map_err(io(out))?;
    std::fs::copy(component, out.join(COMPONENT)).map_err(io(component))?;
    if let Some(assets) = assets.filter(|a| a.is_dir()) {
        for rel in list_files(assets)? {
            let target = out.join(ASSETS).join(&rel);
            std::fs::create_dir_all(target.parent().expect("has a parent")).map_err(io(&target))?;
            std::fs::copy(assets.join(&rel), &target).map_err(io(&target))?;
        }
    }
    let mut files = BTreeMap::new();
    for rel in list_files(out)? {
        files.insert(
            rel.clone(),
            format!("sha256:{}", sha256_file(&out.join(&rel))?),
        );
    }
    let manifest = Manifest {
        format: 1,
        name: name.into(),
        version: version.into(),
        wit: SUPPORTED_WIT[0].into(),
        files,
    };
    let text = toml::to_string(&manifest)
        .map_err(|e| BundleError::Manifest(out.join(MANIFEST), e.to_string()))?;
    std::fs::write(out.join(MANIFEST), &text).map_err(io(out))?;
    if let Some(key) = key {
        sign(out, key)?;
    }
    Bundle::open(out)
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
    std::fs::write(&path, toml::to_string(&file).expect("serialises")).map_err(io(&path))
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
        let bundle = pack(&out, "demo", "1.0.0", &wasm, Some(&assets), Some(&key)).unwrap();
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
        pack(&out, "demo", "1", &wasm, None, None).unwrap();
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
}
