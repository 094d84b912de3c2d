//! Single-file bundles: a bundle directory as one `NAME-VERSION.ofbundle`
//! file, a plain POSIX tar that people can ship, mirror and push to an OCI
//! registry.
//!
//! ```text
//! docker-0.1.0.ofbundle     (ustar, uncompressed: the component is already dense)
//!   manifest.toml
//!   signature.toml          (when signed)
//!   plugin.wasm
//!   assets/…                (directories, then files, sorted)
//! ```
//!
//! The file is deterministic: entries in one order, every one owned by 0:0,
//! with mode 0644 (directories 0755) and the bundle's fixed time
//! ([`crate::bundle::FIXED_TIME_SECS`]), so the same bundle always packs to
//! the same bytes and the same OCI digest.
//!
//! Reading is as strict as a directory's verification, and first: only
//! regular files and directories, at relative paths without `.`, `..` or
//! empty components, none twice, within bounds on entries and bytes. What
//! was read is then a bundle directory, verified like any other (signature,
//! every digest, no unlisted file).

use std::collections::BTreeSet;
use std::io::Read;
use std::path::{Component, Path, PathBuf};

use crate::Bundle;
use crate::bundle::{BundleError, COMPONENT, FIXED_TIME_SECS, MANIFEST, SIGNATURE, list_files};

/// The file extension of a single-file bundle.
pub const EXTENSION: &str = "ofbundle";
/// Most entries one bundle file may hold.
pub const MAX_ENTRIES: usize = 4096;
/// Most bytes one bundle file may unpack to (a component and its assets
/// are each at most 64 MiB; see `bundle::MAX_FILE`).
pub const MAX_UNPACKED_BYTES: u64 = 256 << 20;

/// `NAME-VERSION.ofbundle`, the file name a bundle packs to.
pub fn file_name(bundle: &Bundle) -> String {
    format!(
        "{}-{}.{EXTENSION}",
        bundle.manifest.name, bundle.manifest.version
    )
}

/// Whether `path` names a bundle file rather than a bundle directory.
pub fn is_bundle_file(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file())
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> BundleError + '_ {
    move |source| BundleError::Io {
        path: path.to_owned(),
        source,
    }
}

fn invalid(file: &Path, reason: impl Into<String>) -> BundleError {
    BundleError::Invalid {
        name: file.display().to_string(),
        reason: reason.into(),
    }
}

/// The bundle in `dir` as tar bytes. The directory must hold a bundle that
/// opens (its manifest readable, its shape right) and only the files a
/// bundle holds.
pub fn to_bytes(dir: &Path) -> Result<Vec<u8>, BundleError> {
    Bundle::open(dir)?;
    let files = list_files(dir)?;
    let (assets, top): (Vec<&str>, Vec<&str>) = files
        .iter()
        .map(String::as_str)
        .partition(|f| f.starts_with("assets/"));
    if let Some(stray) = top
        .iter()
        .find(|f| ![MANIFEST, SIGNATURE, COMPONENT].contains(f))
    {
        return Err(invalid(
            dir,
            format!("holds `{stray}`, which no bundle holds"),
        ));
    }
    // Every directory above an asset, `assets` first, each before what it holds.
    let mut dirs: BTreeSet<String> = BTreeSet::new();
    for asset in &assets {
        let mut at = asset.rsplit_once('/').map(|(d, _)| d);
        while let Some(d) = at {
            dirs.insert(d.to_owned());
            at = d.rsplit_once('/').map(|(p, _)| p);
        }
    }
    let header = |kind: tar::EntryType, size: u64, mode: u32| {
        let mut h = tar::Header::new_ustar();
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(mode);
        h.set_uid(0);
        h.set_gid(0);
        h.set_mtime(FIXED_TIME_SECS);
        h
    };
    let tar_error = |e: std::io::Error| invalid(dir, format!("cannot be written as a tar: {e}"));
    let mut builder = tar::Builder::new(Vec::new());
    let add_file = |builder: &mut tar::Builder<Vec<u8>>, file: &str| {
        let path = dir.join(file);
        let bytes = std::fs::read(&path).map_err(io(&path))?;
        let mut h = header(tar::EntryType::Regular, bytes.len() as u64, 0o644);
        builder
            .append_data(&mut h, file, bytes.as_slice())
            .map_err(tar_error)
    };
    for file in [MANIFEST, SIGNATURE, COMPONENT] {
        if top.contains(&file) {
            add_file(&mut builder, file)?;
        }
    }
    for d in &dirs {
        let mut h = header(tar::EntryType::Directory, 0, 0o755);
        builder
            .append_data(&mut h, format!("{d}/"), std::io::empty())
            .map_err(tar_error)?;
    }
    for asset in assets {
        add_file(&mut builder, asset)?;
    }
    builder.into_inner().map_err(tar_error)
}

/// Write the bundle in `dir` as one file at `out` (by rename, so a reader
/// never sees half a file).
pub fn write(dir: &Path, out: &Path) -> Result<(), BundleError> {
    let bytes = to_bytes(dir)?;
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let staging = parent.join(format!(
        ".{}.partial-{}",
        out.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    std::fs::write(&staging, &bytes).map_err(io(&staging))?;
    std::fs::rename(&staging, out).map_err(|e| {
        let _ = std::fs::remove_file(&staging);
        io(out)(e)
    })
}

/// A bundle file unpacked into a private directory, removed when dropped.
#[derive(Debug)]
pub struct Unpacked {
    dir: tempfile::TempDir,
}

impl Unpacked {
    /// Where the bundle now is, as a directory.
    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

/// Unpack the bundle file at `file` into a new private directory below
/// `scratch` (which must exist), refusing anything a bundle directory could
/// not hold. The result is a directory still to be opened and verified.
pub fn unpack(file: &Path, scratch: &Path) -> Result<Unpacked, BundleError> {
    let bytes = std::fs::read(file).map_err(io(file))?;
    unpack_bytes(&bytes, file, scratch)
}

/// [`unpack`] for bytes already read (`what` names them in errors).
pub fn unpack_bytes(bytes: &[u8], what: &Path, scratch: &Path) -> Result<Unpacked, BundleError> {
    let dir = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(scratch)
        .map_err(io(scratch))?;
    let mut archive = tar::Archive::new(bytes);
    let mut seen: BTreeSet<PathBuf> = BTreeSet::new();
    let mut total: u64 = 0;
    let entries = archive
        .entries()
        .map_err(|e| invalid(what, format!("is not a bundle file (a tar): {e}")))?;
    for (n, entry) in entries.enumerate() {
        if n >= MAX_ENTRIES {
            return Err(invalid(
                what,
                format!("holds more than {MAX_ENTRIES} entries"),
            ));
        }
        let mut entry = entry.map_err(|e| {
            invalid(
                what,
                format!(
                    "is not a bundle file (a tar), or is damaged at entry {}: {e}",
                    n + 1
                ),
            )
        })?;
        let raw = entry
            .path()
            .map_err(|e| invalid(what, format!("entry {} has an unreadable path: {e}", n + 1)))?
            .into_owned();
        let shown = openfactory_core::rules::printable(&raw.to_string_lossy(), 200);
        let rel = relative(&raw).ok_or_else(|| {
            invalid(
                what,
                format!("holds `{shown}`, a path that is absolute, empty or leaves the bundle"),
            )
        })?;
        if !seen.insert(rel.clone()) {
            return Err(invalid(what, format!("holds `{shown}` twice")));
        }
        let target = dir.path().join(&rel);
        match entry.header().entry_type() {
            tar::EntryType::Directory => {
                std::fs::create_dir_all(&target).map_err(io(&target))?;
            }
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().unwrap_or(u64::MAX);
                total = total.saturating_add(size);
                if total > MAX_UNPACKED_BYTES {
                    return Err(invalid(
                        what,
                        format!("unpacks to more than {} MiB", MAX_UNPACKED_BYTES >> 20),
                    ));
                }
                if let Some(parent) = target.parent() {
                    std::fs::create_dir_all(parent).map_err(io(parent))?;
                }
                let mut content = Vec::with_capacity(size.min(1 << 20) as usize);
                (&mut entry)
                    .take(size)
                    .read_to_end(&mut content)
                    .map_err(|e| invalid(what, format!("`{shown}` is cut short: {e}")))?;
                std::fs::write(&target, &content).map_err(io(&target))?;
            }
            other => {
                return Err(invalid(
                    what,
                    format!(
                        "holds `{shown}`, which is a {}; bundles hold regular files and directories only",
                        kind_name(other)
                    ),
                ));
            }
        }
    }
    if !dir.path().join(MANIFEST).is_file() {
        return Err(invalid(
            what,
            format!("holds no {MANIFEST}: it is not a bundle file"),
        ));
    }
    Ok(Unpacked { dir })
}

/// A path inside the bundle: relative, with only normal components.
fn relative(path: &Path) -> Option<PathBuf> {
    let mut out = PathBuf::new();
    for part in path.components() {
        match part {
            Component::Normal(p) => out.push(p),
            Component::CurDir if out.as_os_str().is_empty() => {}
            _ => return None,
        }
    }
    (!out.as_os_str().is_empty()).then_some(out)
}

fn kind_name(kind: tar::EntryType) -> &'static str {
    match kind {
        tar::EntryType::Symlink => "symbolic link",
        tar::EntryType::Link => "hard link",
        tar::EntryType::Char => "character device",
        tar::EntryType::Block => "block device",
        tar::EntryType::Fifo => "FIFO",
        _ => "special entry",
    }
}

/// A bundle given as a directory or as a file, open: a file is unpacked
/// first (into `scratch`), and stays so while this lives.
#[derive(Debug)]
pub struct Source {
    pub bundle: Bundle,
    _unpacked: Option<Unpacked>,
}

impl Source {
    pub fn open(path: &Path, scratch: &Path) -> Result<Source, BundleError> {
        if is_bundle_file(path) {
            let unpacked = unpack(path, scratch)?;
            Ok(Source {
                bundle: Bundle::open(unpacked.path())?,
                _unpacked: Some(unpacked),
            })
        } else {
            Ok(Source {
                bundle: Bundle::open(path)?,
                _unpacked: None,
            })
        }
    }

    /// A bundle file already unpacked ([`unpack_bytes`]), opened.
    pub fn from_unpacked(unpacked: Unpacked) -> Result<Source, BundleError> {
        Ok(Source {
            bundle: Bundle::open(unpacked.path())?,
            _unpacked: Some(unpacked),
        })
    }

    /// The bundle as a directory.
    pub fn dir(&self) -> &Path {
        &self.bundle.dir
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::signing::{SecretKey, TrustStore};
    use openfactory_core::capability::Capabilities;

    const WASM: &[u8] = b"\0asm\x0d\0\x01\0";

    /// A signed bundle with one asset in a subdirectory, and a trust store
    /// that trusts its key.
    fn bundle(root: &Path) -> (PathBuf, TrustStore) {
        let wasm = root.join("plugin.wasm");
        std::fs::write(&wasm, WASM).unwrap();
        let assets = root.join("assets-src");
        std::fs::create_dir_all(assets.join("sub")).unwrap();
        std::fs::write(assets.join("banner.txt"), "hello").unwrap();
        std::fs::write(assets.join("sub/deep.txt"), "deep").unwrap();
        let key = SecretKey::generate().unwrap();
        let out = root.join("demo");
        crate::bundle::pack(
            &out,
            "demo",
            "1.2.3",
            &wasm,
            Some(&assets),
            &Capabilities::default(),
            Some(&key),
        )
        .unwrap();
        let keys = root.join("keys");
        std::fs::create_dir_all(&keys).unwrap();
        let public = key.public("test");
        std::fs::write(keys.join(format!("{}.pub", public.id())), public.to_line()).unwrap();
        (out, TrustStore::load(&keys).unwrap())
    }

    #[test]
    fn a_bundle_file_round_trips_and_always_packs_to_the_same_bytes() {
        let root = tempfile::tempdir().unwrap();
        let (dir, trust) = bundle(root.path());
        let opened = Bundle::open(&dir).unwrap();
        assert_eq!(file_name(&opened), "demo-1.2.3.ofbundle");
        let file = root.path().join(file_name(&opened));
        write(&dir, &file).unwrap();
        let first = std::fs::read(&file).unwrap();
        // Times on disk do not reach the file.
        std::fs::File::options()
            .append(true)
            .open(dir.join("assets/banner.txt"))
            .unwrap()
            .set_modified(std::time::SystemTime::now())
            .unwrap();
        assert_eq!(to_bytes(&dir).unwrap(), first);
        let source = Source::open(&file, root.path()).unwrap();
        assert!(matches!(
            source.bundle.verify(&trust, false),
            Ok(crate::Signer::Trusted { .. })
        ));
        assert_eq!(
            std::fs::read_to_string(source.dir().join("assets/sub/deep.txt")).unwrap(),
            "deep"
        );
        let unpacked = source.dir().to_owned();
        drop(source);
        assert!(!unpacked.exists(), "the unpacked copy outlived its source");
    }

    /// A tar with one entry of `kind` at `path` (written raw, so that paths
    /// the `tar` crate would refuse to write can be tried).
    fn hostile(entries: &[(&str, tar::EntryType, &[u8])]) -> Vec<u8> {
        let mut out = Vec::new();
        for (path, kind, content) in entries {
            let mut h = tar::Header::new_old();
            h.as_old_mut().name[..path.len()].copy_from_slice(path.as_bytes());
            h.set_entry_type(*kind);
            h.set_size(content.len() as u64);
            h.set_mode(0o644);
            if *kind == tar::EntryType::Symlink || *kind == tar::EntryType::Link {
                h.set_link_name("/etc/passwd").unwrap();
                h.set_size(0);
            }
            h.set_cksum();
            out.extend_from_slice(h.as_bytes());
            if !matches!(kind, tar::EntryType::Symlink | tar::EntryType::Link) {
                out.extend_from_slice(content);
                out.resize(out.len().div_ceil(512) * 512, 0);
            }
        }
        out.resize(out.len() + 1024, 0);
        out
    }

    #[test]
    fn hostile_bundle_files_are_refused_by_what_is_wrong() {
        let root = tempfile::tempdir().unwrap();
        let file = Path::new("evil.ofbundle");
        let manifest: (&str, tar::EntryType, &[u8]) =
            ("manifest.toml", tar::EntryType::Regular, b"format = 1\n");
        let cases: Vec<(Vec<u8>, &str)> = vec![
            (
                hostile(&[manifest, ("../escape", tar::EntryType::Regular, b"x")]),
                "leaves the bundle",
            ),
            (
                hostile(&[manifest, ("/etc/cron.d/x", tar::EntryType::Regular, b"x")]),
                "absolute",
            ),
            (
                hostile(&[manifest, ("assets/../../x", tar::EntryType::Regular, b"x")]),
                "leaves the bundle",
            ),
            (
                hostile(&[manifest, ("assets/link", tar::EntryType::Symlink, b"")]),
                "symbolic link",
            ),
            (
                hostile(&[manifest, ("assets/hard", tar::EntryType::Link, b"")]),
                "hard link",
            ),
            (
                hostile(&[manifest, ("assets/dev", tar::EntryType::Char, b"")]),
                "character device",
            ),
            (
                hostile(&[manifest, ("assets/fifo", tar::EntryType::Fifo, b"")]),
                "FIFO",
            ),
            (hostile(&[manifest, manifest]), "twice"),
            (
                hostile(&[("plugin.wasm", tar::EntryType::Regular, WASM)]),
                "no manifest.toml",
            ),
            (b"not a tar at all, just text".repeat(40), "bundle file"),
        ];
        for (bytes, expected) in cases {
            let error = unpack_bytes(&bytes, file, root.path())
                .unwrap_err()
                .to_string();
            assert!(
                error.contains(expected),
                "expected `{expected}` in: {error}"
            );
            assert!(error.starts_with("bundle `evil.ofbundle`"), "{error}");
        }
        // Nothing was left behind, and nothing was written outside.
        let left: Vec<_> = std::fs::read_dir(root.path()).unwrap().flatten().collect();
        assert!(left.is_empty(), "{left:?}");
        assert!(!root.path().parent().unwrap().join("escape").exists());
    }

    #[test]
    fn a_bundle_file_is_bounded_in_entries() {
        let root = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..=MAX_ENTRIES).map(|i| format!("assets/{i}")).collect();
        let entries: Vec<(&str, tar::EntryType, &[u8])> = names
            .iter()
            .map(|n| (n.as_str(), tar::EntryType::Regular, &b""[..]))
            .collect();
        let error = unpack_bytes(&hostile(&entries), Path::new("many"), root.path())
            .unwrap_err()
            .to_string();
        assert!(error.contains("more than 4096 entries"), "{error}");
    }

    #[test]
    fn a_tampered_bundle_file_unpacks_but_does_not_verify() {
        let root = tempfile::tempdir().unwrap();
        let (dir, trust) = bundle(root.path());
        let mut bytes = to_bytes(&dir).unwrap();
        // Flip one byte of the asset's content ("hello" → "jello").
        let at = bytes.windows(5).position(|w| w == b"hello").unwrap();
        bytes[at] = b'j';
        let unpacked = unpack_bytes(&bytes, Path::new("t"), root.path()).unwrap();
        let error = Bundle::open(unpacked.path())
            .unwrap()
            .verify(&trust, false)
            .unwrap_err()
            .to_string();
        assert!(error.contains("does not match its digest"), "{error}");
    }
}
