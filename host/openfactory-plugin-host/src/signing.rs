//! ed25519 keys and signatures for plugin bundles.
//!
//! Formats are one-line text files, easy to inspect and to paste:
//! - public key: `openfactory-ed25519 <base64 key> <comment>`
//! - secret key: `openfactory-ed25519-secret <base64 seed>` (mode 0600)
//!
//! A key's id is the first 16 hex digits of the SHA-256 of the public key.
//!
//! A trusted key (`<id>.pub` in the trusted-keys directory) may carry a
//! second line, `names ssh,docker`: the bundle names that key may sign. A key
//! without it signs any name. The line is the operator's, written by
//! `openfactory plugin trust KEY --names …`; an author's key file is one line.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

const PUBLIC_TAG: &str = "openfactory-ed25519";
const SECRET_TAG: &str = "openfactory-ed25519-secret";
const NAMES_TAG: &str = "names";

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    /// The I/O error is part of the message, not a separate cause, so that
    /// printing the error's chain says it once.
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}: not an OpenFactory key file ({1})")]
    Format(PathBuf, &'static str),
    #[error("{0}: {1}")]
    Names(PathBuf, String),
    #[error("could not get randomness from the operating system: {0}")]
    Random(String),
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> KeyError + '_ {
    move |error| KeyError::Io {
        path: path.to_owned(),
        error,
    }
}

/// A public key that may be trusted to sign bundles.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PublicKey {
    key: VerifyingKey,
    pub comment: String,
}

impl PublicKey {
    pub fn id(&self) -> String {
        hex::encode(&Sha256::digest(self.key.as_bytes())[..8])
    }

    pub fn to_line(&self) -> String {
        format!(
            "{PUBLIC_TAG} {} {}\n",
            B64.encode(self.key.as_bytes()),
            self.comment
        )
    }

    /// Parse a public key file: one line, `openfactory-ed25519 <key> <comment>`.
    pub fn parse(text: &str, origin: &Path) -> Result<PublicKey, KeyError> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        let key = PublicKey::parse_line(lines.next().unwrap_or(""), origin)?;
        if lines.next().is_some() {
            return Err(KeyError::Format(
                origin.to_owned(),
                "a public key file is one line, `openfactory-ed25519 <key> <comment>`",
            ));
        }
        Ok(key)
    }

    fn parse_line(line: &str, origin: &Path) -> Result<PublicKey, KeyError> {
        let mut parts = line.splitn(3, ' ');
        if parts.next() != Some(PUBLIC_TAG) {
            return Err(KeyError::Format(
                origin.to_owned(),
                "expected `openfactory-ed25519 <key> <comment>`",
            ));
        }
        let bytes = parts
            .next()
            .and_then(|b| B64.decode(b).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                KeyError::Format(origin.to_owned(), "the key is not 32 bytes of base64")
            })?;
        let key = VerifyingKey::from_bytes(&bytes)
            .map_err(|_| KeyError::Format(origin.to_owned(), "not an ed25519 point"))?;
        Ok(PublicKey {
            key,
            comment: parts.next().unwrap_or("").trim().to_owned(),
        })
    }

    pub fn read(path: &Path) -> Result<PublicKey, KeyError> {
        PublicKey::parse(&std::fs::read_to_string(path).map_err(io(path))?, path)
    }

    /// Strict verification (rejects malleable and small-order signatures).
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        let Ok(bytes) = <[u8; 64]>::try_from(signature) else {
            return false;
        };
        self.key
            .verify_strict(message, &Signature::from_bytes(&bytes))
            .is_ok()
    }
}

/// A key that signs bundles. Keep it out of repositories.
pub struct SecretKey {
    key: SigningKey,
}

impl SecretKey {
    pub fn generate() -> Result<SecretKey, KeyError> {
        let mut seed = [0u8; 32];
        getrandom::fill(&mut seed).map_err(|e| KeyError::Random(e.to_string()))?;
        Ok(SecretKey {
            key: SigningKey::from_bytes(&seed),
        })
    }

    pub fn public(&self, comment: &str) -> PublicKey {
        PublicKey {
            key: self.key.verifying_key(),
            comment: comment.to_owned(),
        }
    }

    pub fn sign(&self, message: &[u8]) -> Vec<u8> {
        self.key.sign(message).to_bytes().to_vec()
    }

    pub fn read(path: &Path) -> Result<SecretKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(io(path))?;
        let mut parts = text.split_whitespace();
        if parts.next() != Some(SECRET_TAG) {
            return Err(KeyError::Format(
                path.to_owned(),
                "expected `openfactory-ed25519-secret <seed>`",
            ));
        }
        let seed = parts
            .next()
            .and_then(|b| B64.decode(b).ok())
            .and_then(|b| <[u8; 32]>::try_from(b).ok())
            .ok_or_else(|| {
                KeyError::Format(path.to_owned(), "the seed is not 32 bytes of base64")
            })?;
        Ok(SecretKey {
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// Write the secret key (mode 0600) and its public half next to it (`.pub`).
    pub fn write(&self, path: &Path, comment: &str) -> Result<PathBuf, KeyError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(io(parent))?;
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(io(path))?;
        writeln!(file, "{SECRET_TAG} {}", B64.encode(self.key.to_bytes())).map_err(io(path))?;
        let public = path.with_extension("pub");
        std::fs::write(&public, self.public(comment).to_line()).map_err(io(&public))?;
        Ok(public)
    }
}

/// Parse an operator's list of bundle names a key may sign (`ssh,docker`):
/// each a feature name, none of them reserved.
pub fn parse_names(list: &str) -> Result<BTreeSet<String>, String> {
    let mut names = BTreeSet::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        openfactory_core::rules::slug(name).map_err(|r| format!("`{name}`: the name {r}"))?;
        if openfactory_core::plan::is_reserved(name) {
            return Err(format!(
                "`{name}` is reserved for the planner's own steps; no plugin may be called that"
            ));
        }
        names.insert(name.to_owned());
    }
    if names.is_empty() {
        return Err("give at least one bundle name, separated by commas (`ssh,docker`)".into());
    }
    Ok(names)
}

/// Write `key` into the trusted-keys directory `dir` (as `<id>.pub`),
/// restricted to `names` when given; trusting a key again replaces its
/// restriction. Returns the file written.
pub fn trust(
    dir: &Path,
    key: &PublicKey,
    names: Option<&BTreeSet<String>>,
) -> Result<PathBuf, KeyError> {
    std::fs::create_dir_all(dir).map_err(io(dir))?;
    let mut text = key.to_line();
    if let Some(names) = names {
        let list: Vec<&str> = names.iter().map(String::as_str).collect();
        text.push_str(&format!("{NAMES_TAG} {}\n", list.join(",")));
    }
    let target = dir.join(format!("{}.pub", key.id()));
    let staging = dir.join(format!(".{}.pub.new", key.id()));
    std::fs::write(&staging, text).map_err(io(&staging))?;
    std::fs::rename(&staging, &target).map_err(io(&target))?;
    Ok(target)
}

/// The keys an operator trusts: every `*.pub` file in a directory, each
/// optionally restricted to the bundle names it may sign.
#[derive(Debug, Clone, Default)]
pub struct TrustStore {
    keys: Vec<PublicKey>,
    /// By key id: the only bundle names that key may sign.
    names: BTreeMap<String, BTreeSet<String>>,
}

impl TrustStore {
    pub fn load(dir: &Path) -> Result<TrustStore, KeyError> {
        let mut keys = Vec::new();
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(TrustStore::default()),
            Err(e) => {
                return Err(KeyError::Io {
                    path: dir.to_owned(),
                    error: e,
                });
            }
        };
        let mut paths: Vec<PathBuf> = entries
            .flatten()
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|e| e == "pub"))
            .collect();
        paths.sort();
        let mut names = BTreeMap::new();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(io(&path))?;
            let (key, restricted) = parse_trusted(&text, &path)?;
            if let Some(restricted) = restricted {
                names.insert(key.id(), restricted);
            }
            keys.push(key);
        }
        Ok(TrustStore { keys, names })
    }

    /// Keys trusted for any bundle name.
    pub fn with_keys(keys: Vec<PublicKey>) -> TrustStore {
        TrustStore {
            keys,
            names: BTreeMap::new(),
        }
    }

    /// Trust key `id` only for bundles named in `names`.
    pub fn restrict(mut self, id: &str, names: BTreeSet<String>) -> TrustStore {
        self.names.insert(id.to_owned(), names);
        self
    }

    /// The bundle names key `id` may sign, when the operator restricted it;
    /// `None` when it may sign any.
    pub fn names(&self, id: &str) -> Option<&BTreeSet<String>> {
        self.names.get(id)
    }

    pub fn find(&self, id: &str) -> Option<&PublicKey> {
        self.keys.iter().find(|k| k.id() == id)
    }

    pub fn keys(&self) -> &[PublicKey] {
        &self.keys
    }
}

/// A trusted key file: the key line, then optionally `names a,b`.
fn parse_trusted(
    text: &str,
    origin: &Path,
) -> Result<(PublicKey, Option<BTreeSet<String>>), KeyError> {
    let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
    let key = PublicKey::parse_line(lines.next().unwrap_or(""), origin)?;
    let mut names = None;
    for line in lines {
        let list = line
            .strip_prefix(NAMES_TAG)
            .filter(|rest| rest.starts_with(' '))
            .ok_or_else(|| {
                KeyError::Names(
                    origin.to_owned(),
                    format!("unexpected line `{line}`: a trusted key has its key line and at most `{NAMES_TAG} <name>,<name>`"),
                )
            })?;
        if names.is_some() {
            return Err(KeyError::Names(
                origin.to_owned(),
                format!("more than one `{NAMES_TAG}` line"),
            ));
        }
        names = Some(parse_names(list).map_err(|e| {
            KeyError::Names(origin.to_owned(), format!("the `{NAMES_TAG}` line: {e}"))
        })?);
    }
    Ok((key, names))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sign_verify_and_reject_tampering() {
        let secret = SecretKey::generate().unwrap();
        let public = secret.public("test");
        let sig = secret.sign(b"manifest");
        assert!(public.verify(b"manifest", &sig));
        assert!(!public.verify(b"manifest!", &sig));
        let mut bad = sig.clone();
        bad[5] ^= 1;
        assert!(!public.verify(b"manifest", &bad));
        assert!(!public.verify(b"manifest", &sig[..10]));
    }

    #[test]
    fn key_files_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let secret = SecretKey::generate().unwrap();
        let pub_path = secret
            .write(&dir.path().join("k.key"), "OpenFactory test")
            .unwrap();
        let again = SecretKey::read(&dir.path().join("k.key")).unwrap();
        let public = PublicKey::read(&pub_path).unwrap();
        assert_eq!(public, again.public("OpenFactory test"));
        assert_eq!(public.comment, "OpenFactory test");
        assert_eq!(public.id().len(), 16);
        let trust = TrustStore::load(dir.path()).unwrap();
        assert!(trust.find(&public.id()).is_some());
        assert!(PublicKey::parse("ssh-ed25519 AAAA", Path::new("x")).is_err());
        // A secret key is never written over.
        assert!(secret.write(&dir.path().join("k.key"), "x").is_err());
    }

    #[test]
    fn a_trusted_key_may_be_restricted_to_names() {
        let dir = tempfile::tempdir().unwrap();
        let keys = dir.path().join("trusted");
        let open = SecretKey::generate().unwrap().public("anyone");
        let narrow = SecretKey::generate().unwrap().public("Jane Author");
        trust(&keys, &open, None).unwrap();
        let names = parse_names("ssh, docker").unwrap();
        let file = trust(&keys, &narrow, Some(&names)).unwrap();
        assert!(
            std::fs::read_to_string(&file)
                .unwrap()
                .ends_with("Jane Author\nnames docker,ssh\n")
        );
        let store = TrustStore::load(&keys).unwrap();
        assert_eq!(store.keys().len(), 2);
        assert_eq!(store.names(&open.id()), None);
        assert_eq!(store.names(&narrow.id()), Some(&names));
        // The comment stays the comment; the names line is not part of it.
        assert_eq!(store.find(&narrow.id()).unwrap().comment, "Jane Author");
        // Trusting again without names lifts the restriction.
        trust(&keys, &narrow, None).unwrap();
        assert_eq!(TrustStore::load(&keys).unwrap().names(&narrow.id()), None);

        // Bad lists say what is wrong.
        assert!(parse_names("").unwrap_err().contains("at least one"));
        assert!(parse_names("recipe").unwrap_err().contains("reserved"));
        assert!(parse_names("../x").unwrap_err().contains("`../x`"));
        // A trusted file with anything else on its second line refuses to load.
        std::fs::write(
            keys.join("x.pub"),
            format!("{}everything\n", open.to_line()),
        )
        .unwrap();
        let err = TrustStore::load(&keys).unwrap_err().to_string();
        assert!(err.contains("unexpected line `everything`"), "{err}");
        // An author's key file is one line.
        let two = format!("{}names ssh\n", open.to_line());
        assert!(PublicKey::parse(&two, Path::new("k.pub")).is_err());
    }
}
