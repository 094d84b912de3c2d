//! The privileges an operator granted each plugin.
//!
//! A bundle declares what it needs ([`openfactory_core::capability`]); the
//! privileges among those are effective only once an operator grants them.
//! Grants live beside the installed bundles, one file per plugin name
//! (`.grants/NAME.toml`), outside any bundle: replacing a bundle by the same
//! signer keeps them (a newer version that asks for more gets only what was
//! granted before); a bundle from another signer starts with none.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use openfactory_core::capability::Privilege;
use serde::{Deserialize, Serialize};

use crate::bundle::BundleError;

const DIR: &str = ".grants";

#[derive(Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GrantFile {
    privileges: BTreeSet<Privilege>,
}

fn path(plugins_dir: &Path, name: &str) -> PathBuf {
    plugins_dir.join(DIR).join(format!("{name}.toml"))
}

/// What was granted to `name`; nothing when no grant was ever made. An
/// unreadable grant file grants nothing (and says so in the log).
pub fn load(plugins_dir: &Path, name: &str) -> BTreeSet<Privilege> {
    let file = path(plugins_dir, name);
    match std::fs::read_to_string(&file) {
        Ok(text) => match toml::from_str::<GrantFile>(&text) {
            Ok(g) => g.privileges,
            Err(e) => {
                tracing::error!(plugin = %name, file = %file.display(), error = %e.message(), "ignoring an unreadable grant file: nothing is granted");
                BTreeSet::new()
            }
        },
        Err(_) => BTreeSet::new(),
    }
}

/// Record that `name` is granted exactly `privileges`.
pub fn save(
    plugins_dir: &Path,
    name: &str,
    privileges: &BTreeSet<Privilege>,
) -> Result<(), BundleError> {
    openfactory_core::rules::slug(name).map_err(|r| BundleError::Invalid {
        name: name.into(),
        reason: format!("the name {r}"),
    })?;
    let file = path(plugins_dir, name);
    let io = |source| BundleError::Io {
        path: file.clone(),
        source,
    };
    std::fs::create_dir_all(file.parent().expect("has a parent")).map_err(io)?;
    let text = toml::to_string(&GrantFile {
        privileges: privileges.clone(),
    })
    .expect("grants serialise");
    let staging = file.with_extension("toml.new");
    std::fs::write(&staging, text).map_err(io)?;
    std::fs::rename(&staging, &file).map_err(io)
}

/// Parse an operator's `--grant` list: privilege names separated by commas,
/// `declared` for every privilege the bundle's capabilities imply (the
/// operator has read them: install prints them), or `none`.
pub fn parse(list: &str, declared: &BTreeSet<Privilege>) -> Result<BTreeSet<Privilege>, String> {
    let mut out = BTreeSet::new();
    if list.trim() == "none" {
        return Ok(out);
    }
    for word in list.split(',').map(str::trim).filter(|w| !w.is_empty()) {
        if word == "declared" {
            out.extend(declared.iter().copied());
        } else {
            out.insert(Privilege::parse(word)?);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grants_round_trip_and_a_broken_file_grants_nothing() {
        let dir = tempfile::tempdir().unwrap();
        assert!(load(dir.path(), "docker").is_empty());
        let set = BTreeSet::from([Privilege::PrivilegedGroups, Privilege::PackageSources]);
        save(dir.path(), "docker", &set).unwrap();
        assert_eq!(load(dir.path(), "docker"), set);
        std::fs::write(path(dir.path(), "docker"), "privileges = [\"everything\"]").unwrap();
        assert!(load(dir.path(), "docker").is_empty());
        assert!(save(dir.path(), "../x", &set).is_err());
    }

    #[test]
    fn a_grant_list_names_privileges_or_what_was_declared() {
        let declared = BTreeSet::from([Privilege::Pam]);
        assert_eq!(parse("declared", &declared).unwrap(), declared);
        assert!(parse(" none ", &declared).unwrap().is_empty());
        assert_eq!(
            parse("sudoers, pam", &BTreeSet::new()).unwrap(),
            BTreeSet::from([Privilege::Sudoers, Privilege::Pam])
        );
        assert!(
            parse("root", &declared)
                .unwrap_err()
                .contains("not a privilege")
        );
    }
}
