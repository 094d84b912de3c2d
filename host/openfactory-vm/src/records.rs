//! The host's own notes about each VM, one directory per id under the VMs
//! root: `vm.json` (the spec and what the backend chose), plus whatever
//! files the backend keeps there. They are how a restarted host finds its
//! VMs again, whichever backend runs them.

use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::accel::Accel;
use crate::error::VmError;
use crate::spec::{VmPaths, VmSpec};

/// What the host knows of a VM, whichever backend runs it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct VmRecord {
    pub spec: VmSpec,
    pub accel: Accel,
    /// When (unix seconds) the host found the VM dead without having been
    /// asked to stop it; cleared when it starts again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unexpected_stop: Option<u64>,
}

pub struct Records {
    root: PathBuf,
}

/// VM ids are lowercase hex (with `-`): they name directories, processes and domains.
pub fn check_id(id: &str) -> Result<(), VmError> {
    if id.is_empty()
        || id.len() > 64
        || !id
            .chars()
            .all(|c| c.is_ascii_digit() || ('a'..='f').contains(&c) || c == '-')
    {
        return Err(VmError::Invalid(format!(
            "`{}` is not a VM id",
            id.escape_debug()
        )));
    }
    Ok(())
}

impl Records {
    pub fn new(root: &Path) -> Self {
        Records {
            root: root.to_owned(),
        }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn paths(&self, id: &str) -> VmPaths {
        VmPaths::new(&self.root.join(id))
    }

    /// A record of the backend's own shape (which includes a [`VmRecord`]).
    pub fn read<T: DeserializeOwned>(&self, id: &str) -> Result<T, VmError> {
        check_id(id)?;
        let text = std::fs::read_to_string(self.paths(id).spec())
            .map_err(|_| VmError::NotFound(id.to_owned()))?;
        serde_json::from_str(&text).map_err(|e| VmError::Invalid(format!("vm.json of {id}: {e}")))
    }

    /// Write atomically: a crash never leaves half a record.
    pub fn write<T: Serialize>(&self, id: &str, record: &T) -> Result<(), VmError> {
        check_id(id)?;
        let paths = self.paths(id);
        std::fs::create_dir_all(&paths.dir)?;
        let staged = paths.dir.join(".vm.json.new");
        std::fs::write(
            &staged,
            serde_json::to_vec_pretty(record).expect("records serialise"),
        )?;
        std::fs::rename(staged, paths.spec())?;
        Ok(())
    }

    /// Change a record in place.
    pub fn update<T: Serialize + DeserializeOwned>(
        &self,
        id: &str,
        change: impl FnOnce(&mut T),
    ) -> Result<T, VmError> {
        let mut record: T = self.read(id)?;
        change(&mut record);
        self.write(id, &record)?;
        Ok(record)
    }

    pub fn remove(&self, id: &str) -> Result<(), VmError> {
        check_id(id)?;
        match std::fs::remove_dir_all(self.paths(id).dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    /// Every VM with a record (running or not), sorted.
    pub fn list(&self) -> Vec<String> {
        let mut ids: Vec<String> = std::fs::read_dir(&self.root)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|e| e.path().join("vm.json").is_file())
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .filter(|id| check_id(id).is_ok())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    }
}

/// Seconds since the epoch, for [`VmRecord::unexpected_stop`].
pub fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_hex_only() {
        assert!(check_id("0a1b-2c").is_ok());
        for bad in ["", "../etc", "AB", "a/b", "x", &"a".repeat(65)] {
            assert!(check_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn records_round_trip_and_list() {
        let dir = tempfile::tempdir().unwrap();
        let records = Records::new(dir.path());
        let record = VmRecord {
            spec: VmSpec {
                id: "ab".into(),
                iso: "/x.iso".into(),
                memory_mb: 512,
                vcpus: 1,
                disk_gb: None,
                forwards: vec![],
            },
            accel: Accel::Tcg,
            unexpected_stop: None,
        };
        records.write("ab", &record).unwrap();
        std::fs::create_dir_all(dir.path().join("not-a-vm")).unwrap();
        assert_eq!(records.list(), ["ab"]);
        let back: VmRecord = records
            .update("ab", |r: &mut VmRecord| r.unexpected_stop = Some(7))
            .unwrap();
        assert_eq!(back.unexpected_stop, Some(7));
        assert!(matches!(
            records.read::<VmRecord>("cd"),
            Err(VmError::NotFound(_))
        ));
        records.remove("ab").unwrap();
        records.remove("ab").unwrap();
        assert!(records.list().is_empty());
    }
}
