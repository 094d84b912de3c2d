//! Helpers shared by the store's integration tests.
#![allow(dead_code)]

use std::path::Path;

use futures::stream::{self, Stream};
use openfactory_artifacts::{ArtifactStore, Bytes, Location, S3Location};
use sha2::{Digest, Sha256};

/// `n` bytes that differ with `seed` (xorshift), so corruption shows.
pub fn data(n: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = Vec::with_capacity(n + 8);
    while out.len() < n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        out.extend_from_slice(&x.to_le_bytes());
    }
    out.truncate(n);
    out
}

pub fn sha256(bytes: &[u8]) -> String {
    hex::encode(Sha256::digest(bytes))
}

/// `bytes` as a stream of `chunk`-sized pieces, as an HTTP body arrives.
pub fn chunks(
    bytes: &[u8],
    chunk: usize,
) -> impl Stream<Item = Result<Bytes, std::io::Error>> + Send + 'static {
    let pieces: Vec<_> = bytes
        .chunks(chunk)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    stream::iter(pieces)
}

/// A whole download's bytes.
pub async fn read_all(store: &ArtifactStore, id: &str, name: &str) -> Vec<u8> {
    use futures::TryStreamExt;
    let d = store.get(id, name, None).await.unwrap();
    let parts: Vec<Bytes> = d.stream.try_collect().await.unwrap();
    parts.concat()
}

pub async fn read_range(
    store: &ArtifactStore,
    id: &str,
    name: &str,
    range: std::ops::Range<u64>,
) -> (u64, std::ops::Range<u64>, Vec<u8>) {
    use futures::TryStreamExt;
    let d = store.get(id, name, Some(range)).await.unwrap();
    let parts: Vec<Bytes> = d.stream.try_collect().await.unwrap();
    (d.size_bytes, d.range, parts.concat())
}

/// A name no other test (or run) uses.
pub fn unique(tag: &str) -> String {
    use std::sync::atomic::{AtomicU32, Ordering};
    static N: AtomicU32 = AtomicU32::new(0);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos();
    format!(
        "{tag}-{}-{nanos:x}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// The test Garage (or other S3) from `OPENFACTORY_TEST_S3_*`, as set by the
/// xtask's `ensure_garage`.
pub struct S3Env {
    pub endpoint: String,
    pub bucket: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub region: String,
}

/// The S3 environment, or `None` (skip) when it is not set; with
/// `OPENFACTORY_REQUIRE_S3=1` a missing one fails the test instead.
pub fn s3_env() -> Option<S3Env> {
    let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let Some(endpoint) = var("OPENFACTORY_TEST_S3_ENDPOINT") else {
        if var("OPENFACTORY_REQUIRE_S3").as_deref() == Some("1") {
            panic!(
                "OPENFACTORY_REQUIRE_S3=1 but OPENFACTORY_TEST_S3_ENDPOINT is not set: start \
                 Garage with the xtask (garage::ensure_garage) and export its variables"
            );
        }
        eprintln!("skipped: OPENFACTORY_TEST_S3_ENDPOINT is not set");
        return None;
    };
    let need = |name: &str| var(name).unwrap_or_else(|| panic!("{name} is not set"));
    Some(S3Env {
        endpoint,
        bucket: need("OPENFACTORY_TEST_S3_BUCKET"),
        access_key_id: need("OPENFACTORY_TEST_S3_ACCESS_KEY_ID"),
        secret_access_key: need("OPENFACTORY_TEST_S3_SECRET_ACCESS_KEY"),
        region: var("OPENFACTORY_TEST_S3_REGION").unwrap_or_else(|| "garage".into()),
    })
}

impl S3Env {
    /// A location under a prefix of its own, with every setting explicit.
    pub fn location(&self, prefix: &str) -> Location {
        Location::S3(S3Location {
            bucket: self.bucket.clone(),
            prefix: prefix.to_owned(),
            endpoint: Some(self.endpoint.clone()),
            region: Some(self.region.clone()),
            access_key_id: Some(self.access_key_id.clone()),
            secret_access_key: Some(self.secret_access_key.clone()),
        })
    }

    pub fn open(&self, prefix: &str, cache: &Path) -> ArtifactStore {
        ArtifactStore::open(&self.location(prefix), cache).unwrap()
    }
}
