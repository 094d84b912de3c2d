//! Verified local copies of S3 objects: `<cache_dir>/<build_id>/<name>`, each
//! with a record `<cache_dir>/<build_id>/.<name>.sha256` (`<sha256> <size>`)
//! written after the copy is complete, so a copy without its record is never
//! trusted. Names cannot start with `.`, so records and temporary files
//! (`.<name>.part-…`) never collide with an artifact.
//!
//! Recency is the copy's modification time, set on each use; eviction removes
//! the least recently used copies until the cache is under its limit, but
//! never one used in the last [`GRACE`].

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures::StreamExt;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::ByteStream;
use crate::error::{Error, Result};

/// The default bound of the cache: 16 GiB.
pub const DEFAULT_LIMIT: u64 = 16 * 1024 * 1024 * 1024;
/// A copy used this recently is not evicted, even over the limit: its user
/// may not have opened it yet.
pub const GRACE: Duration = Duration::from_secs(10 * 60);

/// The download cache of one store.
#[derive(Debug)]
pub(crate) struct Cache {
    dir: PathBuf,
    pub(crate) limit: u64,
    /// One lock per copy being checked or filled, so concurrent callers
    /// download it once.
    locks: Mutex<HashMap<PathBuf, Arc<tokio::sync::Mutex<()>>>>,
}

/// One artifact's place in the cache.
pub(crate) struct Entry {
    pub(crate) path: PathBuf,
    record: PathBuf,
    dir: PathBuf,
    name: String,
}

/// Holds the lock on one entry; drops its map slot when the last holder goes.
pub(crate) struct Guard<'a> {
    cache: &'a Cache,
    path: PathBuf,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl Drop for Guard<'_> {
    fn drop(&mut self) {
        let mut locks = self.cache.locks.lock().unwrap_or_else(|e| e.into_inner());
        // Ours and the map's: nobody else waits for it.
        if locks
            .get(&self.path)
            .is_some_and(|l| Arc::strong_count(l) <= 2)
        {
            locks.remove(&self.path);
        }
    }
}

impl Cache {
    pub(crate) fn new(dir: PathBuf) -> Cache {
        Cache {
            dir,
            limit: DEFAULT_LIMIT,
            locks: Mutex::new(HashMap::new()),
        }
    }

    /// Where a (checked) build id and name go.
    pub(crate) fn entry(&self, build_id: &str, name: &str) -> Entry {
        let dir = self.dir.join(build_id);
        Entry {
            path: dir.join(name),
            record: dir.join(format!(".{name}.sha256")),
            dir,
            name: name.to_owned(),
        }
    }

    pub(crate) async fn lock(&self, path: &Path) -> Guard<'_> {
        let lock = {
            let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
            locks.entry(path.to_owned()).or_default().clone()
        };
        Guard {
            cache: self,
            path: path.to_owned(),
            _guard: lock.lock_owned().await,
        }
    }

    /// Drop a build's copies.
    pub(crate) async fn remove_build(&self, build_id: &str) -> Result<()> {
        let dir = self.dir.join(build_id);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(dir.display(), e)),
        }
    }

    /// Remove least recently used copies until the cache is under its limit,
    /// sparing `keep` and every copy used within [`GRACE`]. Failures are
    /// logged: the copy asked for is there either way.
    pub(crate) async fn evict(&self, keep: &Path) {
        let (dir, limit, keep) = (self.dir.clone(), self.limit, keep.to_owned());
        let swept = tokio::task::spawn_blocking(move || sweep(&dir, limit, &keep)).await;
        match swept {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::warn!(error = %e, "could not trim the artifact cache"),
            Err(e) => tracing::warn!(error = %e, "the artifact cache sweep failed"),
        }
    }
}

impl Entry {
    /// The copy, when it is complete and its record matches `expected` (any
    /// record when `None`); marks it used.
    pub(crate) async fn reuse(&self, expected: Option<&str>) -> Result<Option<PathBuf>> {
        let Ok(record) = tokio::fs::read_to_string(&self.record).await else {
            return Ok(None);
        };
        let mut words = record.split_whitespace();
        let (Some(sha256), Some(size)) = (words.next(), words.next()) else {
            return Ok(None);
        };
        if expected.is_some_and(|e| e != sha256) {
            return Ok(None);
        }
        let Ok(meta) = tokio::fs::metadata(&self.path).await else {
            return Ok(None);
        };
        if size.parse::<u64>().ok() != Some(meta.len()) {
            return Ok(None);
        }
        touch(&self.path).await;
        Ok(Some(self.path.clone()))
    }

    /// Write `stream` to a temporary file, hashing it; check it against
    /// `expected`; move it into place and write its record.
    pub(crate) async fn fill(
        &self,
        mut stream: ByteStream,
        expected: Option<&str>,
    ) -> Result<PathBuf> {
        static SEQ: AtomicU64 = AtomicU64::new(0);
        tokio::fs::create_dir_all(&self.dir)
            .await
            .map_err(|e| Error::io(self.dir.display(), e))?;
        // A stale record must not vouch for the new copy while it is written.
        let _ = tokio::fs::remove_file(&self.record).await;
        let temp = self.dir.join(format!(
            ".{}.part-{}-{}",
            self.name,
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let written = async {
            let mut file = tokio::fs::File::create(&temp)
                .await
                .map_err(|e| Error::io(temp.display(), e))?;
            let mut hasher = Sha256::new();
            let mut size = 0u64;
            while let Some(chunk) = stream.next().await {
                let chunk = chunk?;
                hasher.update(&chunk);
                size += chunk.len() as u64;
                file.write_all(&chunk)
                    .await
                    .map_err(|e| Error::io(temp.display(), e))?;
            }
            file.sync_data()
                .await
                .map_err(|e| Error::io(temp.display(), e))?;
            Ok::<_, Error>((hex::encode(hasher.finalize()), size))
        }
        .await;
        let (sha256, size) = match written {
            Ok(done) => done,
            Err(e) => {
                let _ = tokio::fs::remove_file(&temp).await;
                return Err(e);
            }
        };
        if let Some(expected) = expected
            && expected != sha256
        {
            let _ = tokio::fs::remove_file(&temp).await;
            return Err(Error::Checksum {
                expected: expected.to_owned(),
                actual: sha256,
            });
        }
        tokio::fs::rename(&temp, &self.path)
            .await
            .map_err(|e| Error::io(self.path.display(), e))?;
        let mut record_temp = temp.clone().into_os_string();
        record_temp.push(".record");
        let record_temp = PathBuf::from(record_temp);
        tokio::fs::write(&record_temp, format!("{sha256} {size}\n"))
            .await
            .map_err(|e| Error::io(record_temp.display(), e))?;
        tokio::fs::rename(&record_temp, &self.record)
            .await
            .map_err(|e| Error::io(self.record.display(), e))?;
        Ok(self.path.clone())
    }
}

/// Mark a copy used now (its modification time).
async fn touch(path: &Path) {
    let path = path.to_owned();
    let _ = tokio::task::spawn_blocking(move || {
        std::fs::File::open(&path).and_then(|f| f.set_modified(SystemTime::now()))
    })
    .await;
}

/// The cache's copies (not records or temporary files) with size and last use.
fn copies(dir: &Path) -> std::io::Result<Vec<(PathBuf, u64, SystemTime)>> {
    let mut out = Vec::new();
    let builds = match std::fs::read_dir(dir) {
        Ok(d) => d,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(e),
    };
    for build in builds {
        let build = build?;
        if !build.file_type()?.is_dir() {
            continue;
        }
        for file in std::fs::read_dir(build.path())? {
            let file = file?;
            if file.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            let meta = file.metadata()?;
            if meta.is_file() {
                out.push((file.path(), meta.len(), meta.modified()?));
            }
        }
    }
    Ok(out)
}

fn sweep(dir: &Path, limit: u64, keep: &Path) -> std::io::Result<()> {
    let mut copies = copies(dir)?;
    let mut total: u64 = copies.iter().map(|(_, size, _)| size).sum();
    if total <= limit {
        return Ok(());
    }
    copies.sort_by_key(|(_, _, used)| *used);
    let now = SystemTime::now();
    for (path, size, used) in copies {
        if total <= limit {
            break;
        }
        let recent = now.duration_since(used).is_ok_and(|age| age < GRACE) || used > now;
        if path == keep || recent {
            continue;
        }
        // The record first: a copy without one is never reused.
        if let (Some(parent), Some(name)) = (path.parent(), path.file_name()) {
            let record = parent.join(format!(".{}.sha256", name.to_string_lossy()));
            let _ = std::fs::remove_file(record);
        }
        std::fs::remove_file(&path)?;
        tracing::debug!(path = %path.display(), size, "evicted from the artifact cache");
        total -= size;
        if let Some(parent) = path.parent() {
            // Gone only when empty.
            let _ = std::fs::remove_dir(parent);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(dir: &Path, build: &str, name: &str, size: usize, age: Duration) -> PathBuf {
        let d = dir.join(build);
        std::fs::create_dir_all(&d).unwrap();
        let p = d.join(name);
        std::fs::write(&p, vec![0u8; size]).unwrap();
        std::fs::write(d.join(format!(".{name}.sha256")), format!("x {size}\n")).unwrap();
        let f = std::fs::File::open(&p).unwrap();
        f.set_modified(SystemTime::now() - age).unwrap();
        p
    }

    #[test]
    fn evicts_least_recently_used_but_not_recent_ones() {
        let tmp = tempfile::tempdir().unwrap();
        let hour = Duration::from_secs(3600);
        let oldest = put(tmp.path(), "b1", "a.iso", 100, 3 * hour);
        let older = put(tmp.path(), "b2", "a.iso", 100, 2 * hour);
        let recent = put(tmp.path(), "b3", "a.iso", 100, Duration::from_secs(5));
        let keep = put(tmp.path(), "b4", "a.iso", 100, 4 * hour);
        sweep(tmp.path(), 250, &keep).unwrap();
        assert!(!oldest.exists(), "the least recently used goes first");
        assert!(
            !tmp.path().join("b1/.a.iso.sha256").exists(),
            "with its record"
        );
        assert!(!tmp.path().join("b1").exists(), "and its empty directory");
        assert!(!older.exists(), "then the next, until under the limit");
        assert!(recent.exists(), "a copy used within the grace period stays");
        assert!(keep.exists(), "the copy just fetched stays");
        sweep(tmp.path(), 1000, &keep).unwrap();
        assert!(recent.exists() && keep.exists());
    }
}
