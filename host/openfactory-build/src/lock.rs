//! Advisory file locks (`flock`) for what builds share: the package cache and
//! each cached base. Released when the guard drops, or when the process dies.

use std::fs::File;
use std::io;
use std::path::Path;

pub struct FileLock {
    _file: File,
}

impl FileLock {
    fn open(path: &Path) -> io::Result<File> {
        File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .read(true)
            .open(path)
    }

    /// Wait for the lock, alone.
    pub fn exclusive(path: &Path) -> io::Result<Self> {
        let file = Self::open(path)?;
        file.lock()?;
        Ok(FileLock { _file: file })
    }

    /// Wait for the lock, shared with other readers.
    pub fn shared(path: &Path) -> io::Result<Self> {
        let file = Self::open(path)?;
        file.lock_shared()?;
        Ok(FileLock { _file: file })
    }

    /// Take the lock alone if nobody holds it; `None` otherwise.
    pub fn try_exclusive(path: &Path) -> io::Result<Option<Self>> {
        let file = Self::open(path)?;
        match file.try_lock() {
            Ok(()) => Ok(Some(FileLock { _file: file })),
            Err(std::fs::TryLockError::WouldBlock) => Ok(None),
            Err(std::fs::TryLockError::Error(e)) => Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shared_locks_exclude_writers_only() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("lock");
        let a = FileLock::shared(&path).unwrap();
        let _b = FileLock::shared(&path).unwrap();
        assert!(FileLock::try_exclusive(&path).unwrap().is_none());
        drop(a);
        drop(_b);
        assert!(FileLock::try_exclusive(&path).unwrap().is_some());
    }
}
