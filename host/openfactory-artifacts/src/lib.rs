//! One store for a build's outputs (ISO, build log, `packages.json`, SBOM), on
//! the local file system or in S3-compatible object storage.
//!
//! [`ArtifactStore::open`] takes a [`Location`]: a local directory, the
//! default, keeps today's layout `<builds_dir>/<build_id>/<name>` exactly (a
//! build on the local store writes its outputs there directly, see
//! [`ArtifactStore::local_dir`]); `s3://bucket/prefix` keeps the same files
//! under the keys `<prefix>/<build_id>/<name>`.
//!
//! Both go through the `object_store` crate (`LocalFileSystem` rooted at the
//! builds directory, `AmazonS3` with path-style requests), so every operation
//! has one code path. Writes are atomic to readers: a local write goes to a
//! staging file and is renamed into place; an S3 upload is one `PUT` or a
//! multipart upload completed only once the whole body is in and its sha256
//! checked. Big files are streamed in 8 MiB parts, never read whole into
//! memory.
//!
//! Build ids and names are checked by every call (lowercase letters, digits,
//! `-` and `.`, starting with a letter or digit, no `..`), so no key or path
//! leaves its build.

#![warn(missing_docs)]

mod cache;
mod error;
mod location;

use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, StreamExt, TryStreamExt};
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::local::LocalFileSystem;
use object_store::path::Path as Key;
use object_store::signer::{Method, Signer};
use object_store::{
    ClientOptions, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload, RetryConfig,
    WriteMultipart,
};
use sha2::{Digest, Sha256};
use tokio::io::AsyncReadExt;

pub use bytes::Bytes;
pub use cache::{DEFAULT_LIMIT as DEFAULT_CACHE_LIMIT, GRACE as CACHE_GRACE};
pub use error::{Error, Result};
pub use location::{Location, S3Location};
pub use url::Url;

/// Size of one multipart part, and the threshold above which an upload is
/// multipart (S3 wants ≥ 5 MiB for every part but the last).
pub const PART_SIZE: usize = 8 * 1024 * 1024;
/// Parts uploaded at once: an upload holds at most about
/// `(PARTS_IN_FLIGHT + 1) × PART_SIZE` in memory.
const PARTS_IN_FLIGHT: usize = 2;
/// Chunks read from a local file by [`ArtifactStore::put_file`].
const READ_CHUNK: usize = 1024 * 1024;
/// The longest a SigV4 presigned URL may be valid.
pub const MAX_PRESIGNED_EXPIRY: Duration = Duration::from_secs(7 * 24 * 3600);
/// The longest a build id or artifact name may be.
pub const MAX_NAME_LEN: usize = 128;

/// A stream of an artifact's bytes, as [`ArtifactStore::get`] returns them.
pub type ByteStream = BoxStream<'static, Result<Bytes>>;

/// What was stored: its size and sha256.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Receipt {
    /// Bytes stored.
    pub size_bytes: u64,
    /// sha256 of the bytes stored, lowercase hex.
    pub sha256: String,
}

/// What [`ArtifactStore::head`] tells of a stored artifact.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Meta {
    /// The whole artifact's size.
    pub size_bytes: u64,
}

/// An artifact being read: what [`ArtifactStore::get`] returns.
pub struct Download {
    /// The whole artifact's size (for `Content-Range: bytes a-b/size`).
    pub size_bytes: u64,
    /// The bytes `stream` yields: the range asked for, its end clamped to the
    /// size; `0..size_bytes` without a range.
    pub range: Range<u64>,
    /// The bytes, in chunks.
    pub stream: ByteStream,
}

impl std::fmt::Debug for Download {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Download")
            .field("size_bytes", &self.size_bytes)
            .field("range", &self.range)
            .finish_non_exhaustive()
    }
}

/// The artifact store: a build's outputs, by build id and file name.
///
/// Cheap to share behind an `Arc`; every method takes `&self`.
#[derive(Debug)]
pub struct ArtifactStore {
    location: Location,
    store: Arc<dyn ObjectStore>,
    backend: Backend,
}

#[derive(Debug)]
enum Backend {
    /// The builds directory as given (not canonicalised: the paths handed out
    /// are the ones the rest of the program uses).
    Local { root: PathBuf },
    S3 {
        s3: Arc<AmazonS3>,
        prefix: String,
        cache: cache::Cache,
    },
}

impl ArtifactStore {
    /// Open the store at `location`. No request is made (see
    /// [`check`](Self::check)); a local directory is created when missing.
    ///
    /// `cache_dir` holds verified local copies of S3 objects
    /// ([`local_copy`](Self::local_copy)); unused by a local store. S3 settings
    /// the location leaves `None` come from the standard `AWS_*` environment
    /// (see [`S3Location`]); requests are path-style (`endpoint/bucket/key`, as
    /// Garage and MinIO want), and an `http://` endpoint is allowed as such.
    ///
    /// Errors: `Config` when the directory cannot be made or credentials are
    /// missing or half given (naming the variables to set).
    pub fn open(location: &Location, cache_dir: &Path) -> Result<ArtifactStore> {
        match location {
            Location::Local(root) => {
                std::fs::create_dir_all(root).map_err(|e| {
                    Error::Config(format!(
                        "the artifact directory {} cannot be created: {e}",
                        root.display()
                    ))
                })?;
                let fs = LocalFileSystem::new_with_prefix(root).map_err(|e| {
                    Error::Config(format!(
                        "the artifact directory {} cannot be used: {e}",
                        root.display()
                    ))
                })?;
                Ok(ArtifactStore {
                    location: location.clone(),
                    store: Arc::new(fs),
                    backend: Backend::Local { root: root.clone() },
                })
            }
            Location::S3(s3) => {
                let built = Arc::new(s3_builder(s3)?.build().map_err(|e| {
                    Error::Config(format!("the S3 location {location} cannot be used: {e}"))
                })?);
                Ok(ArtifactStore {
                    location: location.clone(),
                    store: built.clone(),
                    backend: Backend::S3 {
                        s3: built,
                        prefix: s3.prefix.clone(),
                        cache: cache::Cache::new(cache_dir.to_owned()),
                    },
                })
            }
        }
    }

    /// Bound the S3 download cache of [`local_copy`](Self::local_copy) to
    /// `bytes` (default [`DEFAULT_CACHE_LIMIT`], 16 GiB): least recently used
    /// copies go first; a copy used within [`CACHE_GRACE`] (ten minutes) is kept
    /// even over the limit (a VM may be about to open it). No effect on a local store.
    pub fn with_cache_limit(mut self, bytes: u64) -> ArtifactStore {
        if let Backend::S3 { cache, .. } = &mut self.backend {
            cache.limit = bytes;
        }
        self
    }

    /// Where the store is, as given (its `Display` is `s3://bucket/prefix` or
    /// the directory; no secret is shown).
    pub fn location(&self) -> &Location {
        &self.location
    }

    /// One cheap request to see that the backend answers (the directory
    /// exists; the bucket can be listed with these credentials). For start-up
    /// and health checks.
    pub async fn check(&self) -> Result<()> {
        match &self.backend {
            Backend::Local { root } => tokio::fs::metadata(root)
                .await
                .map(|_| ())
                .map_err(|e| Error::io(format!("the artifact directory {}", root.display()), e)),
            Backend::S3 { prefix, .. } => {
                let prefix = (!prefix.is_empty()).then(|| Key::from(prefix.as_str()));
                self.store
                    .list_with_delimiter(prefix.as_ref())
                    .await
                    .map(|_| ())
                    .map_err(|e| Error::Unavailable(format!("{}: {e}", self.location)))
            }
        }
    }

    /// Remove what uploads left unfinished when their process died (on the
    /// local store, the staging files a multipart write keeps beside its
    /// target, `<name>#<n>`; no artifact name has a `#`), and say which.
    /// Readers never saw them; for a control plane's start, when no upload
    /// of its own runs. On S3 an unfinished multipart upload is never an
    /// object (the bucket's lifecycle rule reclaims its parts).
    pub fn remove_unfinished_uploads(&self) -> Result<Vec<PathBuf>> {
        let Backend::Local { root } = &self.backend else {
            return Ok(Vec::new());
        };
        let mut removed = Vec::new();
        let builds = match std::fs::read_dir(root) {
            Ok(builds) => builds,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(removed),
            Err(e) => {
                return Err(Error::io(
                    format!("the artifact directory {}", root.display()),
                    e,
                ));
            }
        };
        for build in builds
            .flatten()
            .filter(|b| b.file_type().is_ok_and(|t| t.is_dir()))
        {
            for file in std::fs::read_dir(build.path())
                .into_iter()
                .flatten()
                .flatten()
            {
                if file.file_name().to_string_lossy().contains('#')
                    && file.file_type().is_ok_and(|t| t.is_file())
                {
                    let path = file.path();
                    std::fs::remove_file(&path)
                        .map_err(|e| Error::io(format!("{}", path.display()), e))?;
                    removed.push(path);
                }
            }
        }
        Ok(removed)
    }

    /// The directory where a build may write its outputs directly: on the
    /// local store `<builds_dir>/<build_id>` (not created here); `None` on S3,
    /// where a build writes elsewhere and stores with
    /// [`put_file`](Self::put_file).
    pub fn local_dir(&self, build_id: &str) -> Result<Option<PathBuf>> {
        check_name("build id", build_id)?;
        Ok(match &self.backend {
            Backend::Local { root } => Some(root.join(build_id)),
            Backend::S3 { .. } => None,
        })
    }

    /// Store the file at `path` as `name` of the build, streamed in
    /// [`PART_SIZE`] parts and hashed on the way.
    ///
    /// On the local store, a file already at its place (a build wrote it into
    /// [`local_dir`](Self::local_dir)) is only hashed.
    pub async fn put_file(&self, build_id: &str, name: &str, path: &Path) -> Result<Receipt> {
        check_name("build id", build_id)?;
        check_name("artifact name", name)?;
        if let Backend::Local { root } = &self.backend {
            let target = root.join(build_id).join(name);
            if same_file(path, &target).await {
                return hash_file(path.to_owned()).await;
            }
        }
        let mut file = tokio::fs::File::open(path)
            .await
            .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
        let mut upload = Upload::new(self.store.clone(), self.key(build_id, name)?);
        loop {
            let mut buf = bytes::BytesMut::with_capacity(READ_CHUNK);
            while buf.len() < READ_CHUNK {
                let n = file
                    .read_buf(&mut buf)
                    .await
                    .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
                if n == 0 {
                    break;
                }
            }
            if buf.is_empty() {
                break;
            }
            upload.push(buf.freeze()).await?;
        }
        upload.finish(None).await
    }

    /// Store a stream of chunks (an HTTP upload's body) as `name` of the build.
    ///
    /// With `expected_sha256` (64 hex digits), data whose sha256 differs is not
    /// stored at all (`Checksum`, giving both). Readers never see a partial
    /// object: it appears under its key only when complete and checked. An
    /// error of the stream itself is `Source`; dropping the future mid-way
    /// aborts the upload.
    pub async fn put_stream<S, E>(
        &self,
        build_id: &str,
        name: &str,
        stream: S,
        expected_sha256: Option<&str>,
    ) -> Result<Receipt>
    where
        S: futures::Stream<Item = std::result::Result<Bytes, E>> + Send,
        E: Into<Box<dyn std::error::Error + Send + Sync>>,
    {
        check_name("build id", build_id)?;
        check_name("artifact name", name)?;
        let expected = expected_sha256.map(check_sha256).transpose()?;
        let mut upload = Upload::new(self.store.clone(), self.key(build_id, name)?);
        let mut stream = std::pin::pin!(stream);
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| Error::Source(e.into().to_string()))?;
            upload.push(chunk).await?;
        }
        upload.finish(expected).await
    }

    /// The artifact's size, or `None` when there is no such artifact.
    pub async fn head(&self, build_id: &str, name: &str) -> Result<Option<Meta>> {
        check_name("build id", build_id)?;
        check_name("artifact name", name)?;
        match self.store.head(&self.key(build_id, name)?).await {
            Ok(meta) => Ok(Some(Meta {
                size_bytes: meta.size,
            })),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(Error::backend(e, build_id, name)),
        }
    }

    /// Read the artifact, or the bytes `range` of it (for HTTP `Range`): its
    /// end may pass the artifact's end (clamped); an empty range, or one
    /// starting at or past the end, is `Invalid` (HTTP 416). `NotFound` when
    /// there is no such artifact.
    pub async fn get(
        &self,
        build_id: &str,
        name: &str,
        range: Option<Range<u64>>,
    ) -> Result<Download> {
        check_name("build id", build_id)?;
        check_name("artifact name", name)?;
        if let Some(r) = &range
            && r.start >= r.end
        {
            return Err(Error::invalid(format!(
                "range {}..{}: empty",
                r.start, r.end
            )));
        }
        let key = self.key(build_id, name)?;
        let options = GetOptions {
            range: range.clone().map(GetRange::Bounded),
            ..GetOptions::default()
        };
        let result = match self.store.get_opts(&key, options).await {
            Ok(result) => result,
            Err(e) => return Err(self.classify_range_error(e, build_id, name, range).await),
        };
        let (id, nm) = (build_id.to_owned(), name.to_owned());
        Ok(Download {
            size_bytes: result.meta.size,
            range: result.range.clone(),
            stream: result
                .into_stream()
                .map_err(move |e| Error::backend(e, &id, &nm))
                .boxed(),
        })
    }

    /// A failed ranged read: past the end is `Invalid`, the rest as is.
    async fn classify_range_error(
        &self,
        e: object_store::Error,
        build_id: &str,
        name: &str,
        range: Option<Range<u64>>,
    ) -> Error {
        let original = Error::backend(e, build_id, name);
        let (Some(range), false) = (range, matches!(original, Error::NotFound { .. })) else {
            return original;
        };
        match self.head(build_id, name).await {
            Ok(Some(meta)) if range.start >= meta.size_bytes => Error::invalid(format!(
                "range {}..{}: `{name}` of build `{build_id}` has {} bytes",
                range.start, range.end, meta.size_bytes
            )),
            Ok(None) => Error::not_found(build_id, name),
            _ => original,
        }
    }

    /// The whole artifact in memory, for logs and manifests: `None` when there
    /// is no such artifact, `Invalid` when it is larger than `max_bytes`.
    pub async fn read_small(
        &self,
        build_id: &str,
        name: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>> {
        let download = match self.get(build_id, name, None).await {
            Ok(d) => d,
            Err(Error::NotFound { .. }) => return Ok(None),
            Err(e) => return Err(e),
        };
        if download.size_bytes > max_bytes {
            return Err(Error::invalid(format!(
                "size of `{name}` of build `{build_id}`: {} bytes, more than {max_bytes}",
                download.size_bytes
            )));
        }
        collect(download.stream, max_bytes).await.map(Some)
    }

    /// The last `max_bytes` of the artifact (all of it when smaller): for log
    /// tails. `None` when there is no such artifact.
    ///
    /// Two requests (its size, then a bounded range), not one suffix range:
    /// Garage 2.5 answers a suffix range of an empty object with the
    /// `Content-Range` `bytes 0-18446744073709551615/0`, on which
    /// `object_store` 0.14 overflows.
    pub async fn tail(
        &self,
        build_id: &str,
        name: &str,
        max_bytes: u64,
    ) -> Result<Option<Vec<u8>>> {
        let Some(meta) = self.head(build_id, name).await? else {
            return Ok(None);
        };
        let size = meta.size_bytes;
        if size == 0 || max_bytes == 0 {
            return Ok(Some(Vec::new()));
        }
        let range = size.saturating_sub(max_bytes)..size;
        match self.get(build_id, name, Some(range)).await {
            Ok(download) => collect(download.stream, max_bytes).await.map(Some),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// A path on this machine's disk holding the artifact, for tools that need
    /// a file (QEMU booting the ISO).
    ///
    /// On the local store: the file itself (not re-hashed). On S3: a copy in
    /// the cache directory, downloaded once (hashed on the way, and checked
    /// against `expected_sha256` when given) and reused while its recorded
    /// sha256 matches `expected_sha256`; otherwise downloaded again. A fresh
    /// download that does not match is `Checksum` and is not kept. Concurrent
    /// calls for one artifact download it once.
    pub async fn local_copy(
        &self,
        build_id: &str,
        name: &str,
        expected_sha256: Option<&str>,
    ) -> Result<PathBuf> {
        check_name("build id", build_id)?;
        check_name("artifact name", name)?;
        let expected = expected_sha256.map(check_sha256).transpose()?;
        match &self.backend {
            Backend::Local { root } => {
                let path = root.join(build_id).join(name);
                match tokio::fs::metadata(&path).await {
                    Ok(m) if m.is_file() => Ok(path),
                    Ok(_) => Err(Error::not_found(build_id, name)),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                        Err(Error::not_found(build_id, name))
                    }
                    Err(e) => Err(Error::io(path.display(), e)),
                }
            }
            Backend::S3 { cache, .. } => {
                let entry = cache.entry(build_id, name);
                let _guard = cache.lock(&entry.path).await;
                if let Some(path) = entry.reuse(expected.as_deref()).await? {
                    return Ok(path);
                }
                let download = self.get(build_id, name, None).await?;
                let path = entry.fill(download.stream, expected.as_deref()).await?;
                cache.evict(&path).await;
                Ok(path)
            }
        }
    }

    /// Delete every artifact of the build (and, on S3, its cached copies). A
    /// build with none is no error.
    ///
    /// On the local store this removes the whole directory
    /// `<builds_dir>/<build_id>`, whatever else the build left in it.
    pub async fn delete_build(&self, build_id: &str) -> Result<()> {
        check_name("build id", build_id)?;
        match &self.backend {
            Backend::Local { root } => {
                let dir = root.join(build_id);
                match tokio::fs::remove_dir_all(&dir).await {
                    Ok(()) => Ok(()),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                    Err(e) => Err(Error::io(dir.display(), e)),
                }
            }
            Backend::S3 { prefix, cache, .. } => {
                let dir = self.build_key(prefix, build_id)?;
                let listed = self
                    .store
                    .list(Some(&dir))
                    .map_ok(|meta| meta.location)
                    .boxed();
                self.store
                    .delete_stream(listed)
                    .try_for_each(|_| futures::future::ready(Ok(())))
                    .await
                    .map_err(|e| Error::Unavailable(e.to_string()))?;
                cache.remove_build(build_id).await
            }
        }
    }

    /// A URL anyone holding it may `GET` the artifact with, without
    /// credentials, for `expires` (at most [`MAX_PRESIGNED_EXPIRY`], 7 days):
    /// S3 only; `None` on the local store. Signing makes no request, so the
    /// URL of a missing artifact answers 404: check with [`head`](Self::head).
    /// The URL names the configured endpoint, so that must be reachable by
    /// whoever gets it.
    pub async fn presigned_get(
        &self,
        build_id: &str,
        name: &str,
        expires: Duration,
    ) -> Result<Option<Url>> {
        check_name("build id", build_id)?;
        check_name("artifact name", name)?;
        if expires.is_zero() || expires > MAX_PRESIGNED_EXPIRY {
            return Err(Error::invalid(format!(
                "expiry {expires:?}: more than zero and at most 7 days"
            )));
        }
        match &self.backend {
            Backend::Local { .. } => Ok(None),
            Backend::S3 { s3, .. } => s3
                .signed_url(Method::GET, &self.key(build_id, name)?, expires)
                .await
                .map(Some)
                .map_err(|e| Error::Unavailable(e.to_string())),
        }
    }

    /// The key of one artifact: `[prefix/]build_id/name`.
    fn key(&self, build_id: &str, name: &str) -> Result<Key> {
        let prefix = match &self.backend {
            Backend::Local { .. } => "",
            Backend::S3 { prefix, .. } => prefix.as_str(),
        };
        let dir = self.build_key(prefix, build_id)?;
        Ok(dir.join(name))
    }

    fn build_key(&self, prefix: &str, build_id: &str) -> Result<Key> {
        let joined = if prefix.is_empty() {
            build_id.to_owned()
        } else {
            format!("{prefix}/{build_id}")
        };
        Key::parse(joined).map_err(|e| Error::invalid(format!("key: {e}")))
    }
}

/// The S3 client's settings: the environment, then the location's own
/// fields over it; path-style; bounded retries; no overall request timeout
/// (a 1 GiB download takes as long as its reader), but connect and read
/// timeouts.
fn s3_builder(s3: &S3Location) -> Result<AmazonS3Builder> {
    let mut b = AmazonS3Builder::from_env()
        .with_bucket_name(&s3.bucket)
        .with_virtual_hosted_style_request(false)
        .with_retry(RetryConfig {
            max_retries: 3,
            retry_timeout: Duration::from_secs(60),
            ..RetryConfig::default()
        })
        .with_client_options(
            ClientOptions::new()
                .with_timeout_disabled()
                .with_connect_timeout(Duration::from_secs(5))
                .with_read_timeout(Duration::from_secs(120)),
        );
    if let Some(endpoint) = &s3.endpoint {
        b = b.with_endpoint(endpoint);
    }
    if let Some(region) = &s3.region {
        b = b.with_region(region);
    }
    if let Some(id) = &s3.access_key_id {
        b = b.with_access_key_id(id);
    }
    if let Some(secret) = &s3.secret_access_key {
        b = b.with_secret_access_key(secret);
    }
    // `with_client_options` replaced what AWS_ALLOW_HTTP said: say it again,
    // and allow plain HTTP for an http:// endpoint.
    let endpoint = b
        .get_config_value(&AmazonS3ConfigKey::Endpoint)
        .or_else(|| std::env::var("AWS_ENDPOINT_URL_S3").ok())
        .unwrap_or_default();
    let env_allows = std::env::var("AWS_ALLOW_HTTP").is_ok_and(|v| v.eq_ignore_ascii_case("true"));
    if endpoint.starts_with("http://") || env_allows {
        b = b.with_allow_http(true);
    }
    let id = b.get_config_value(&AmazonS3ConfigKey::AccessKeyId);
    let secret = b.get_config_value(&AmazonS3ConfigKey::SecretAccessKey);
    match (id.is_some(), secret.is_some()) {
        (true, true) => {}
        (true, false) => {
            return Err(Error::Config(
                "an S3 access key id without its secret: set AWS_SECRET_ACCESS_KEY".into(),
            ));
        }
        (false, true) => {
            return Err(Error::Config(
                "an S3 secret access key without its id: set AWS_ACCESS_KEY_ID".into(),
            ));
        }
        (false, false) => {
            let other = [
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
                "AWS_CONTAINER_CREDENTIALS_FULL_URI",
            ];
            if !other.iter().any(|v| std::env::var_os(v).is_some()) {
                return Err(Error::Config(
                    "no S3 credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or \
                     AWS_WEB_IDENTITY_TOKEN_FILE with AWS_ROLE_ARN)"
                        .into(),
                ));
            }
        }
    }
    Ok(b)
}

/// One upload in progress: buffered until it passes [`PART_SIZE`], then
/// multipart. Hashes what passes through. Dropped unfinished, it aborts.
struct Upload {
    store: Arc<dyn ObjectStore>,
    key: Key,
    hasher: Sha256,
    size: u64,
    pending: Vec<Bytes>,
    pending_len: usize,
    multipart: Option<WriteMultipart>,
}

impl Upload {
    fn new(store: Arc<dyn ObjectStore>, key: Key) -> Upload {
        Upload {
            store,
            key,
            hasher: Sha256::new(),
            size: 0,
            pending: Vec::new(),
            pending_len: 0,
            multipart: None,
        }
    }

    async fn push(&mut self, chunk: Bytes) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        self.hasher.update(&chunk);
        self.size += chunk.len() as u64;
        if let Some(mp) = &mut self.multipart {
            mp.wait_for_capacity(PARTS_IN_FLIGHT)
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            mp.put(chunk);
            return Ok(());
        }
        self.pending_len += chunk.len();
        self.pending.push(chunk);
        if self.pending_len > PART_SIZE {
            let upload = self
                .store
                .put_multipart(&self.key)
                .await
                .map_err(|e| Error::Unavailable(e.to_string()))?;
            let mut mp = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
            for chunk in self.pending.drain(..) {
                mp.put(chunk);
            }
            self.pending_len = 0;
            self.multipart = Some(mp);
        }
        Ok(())
    }

    /// Check the sha256, then make the object visible (one `PUT`, or complete
    /// the multipart upload); on a mismatch abort instead.
    async fn finish(mut self, expected: Option<String>) -> Result<Receipt> {
        let sha256 = hex::encode(std::mem::take(&mut self.hasher).finalize());
        let multipart = self.multipart.take();
        if let Some(expected) = expected
            && expected != sha256
        {
            if let Some(mp) = multipart
                && let Err(e) = mp.abort().await
            {
                tracing::warn!(key = %self.key, error = %e, "could not abort a refused upload");
            }
            return Err(Error::Checksum {
                expected,
                actual: sha256,
            });
        }
        match multipart {
            Some(mp) => mp.finish().await,
            None => {
                let payload: PutPayload = std::mem::take(&mut self.pending).into_iter().collect();
                self.store.put(&self.key, payload).await
            }
        }
        .map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(Receipt {
            size_bytes: self.size,
            sha256,
        })
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        if let Some(mp) = self.multipart.take()
            && let Ok(runtime) = tokio::runtime::Handle::try_current()
        {
            let key = self.key.clone();
            runtime.spawn(async move {
                if let Err(e) = mp.abort().await {
                    tracing::warn!(%key, error = %e, "could not abort an unfinished upload");
                }
            });
        }
    }
}

/// Build ids and artifact names: 1–[`MAX_NAME_LEN`] lowercase letters,
/// digits, `-`, `.`, starting with a letter or digit, without `..`.
fn check_name(what: &str, value: &str) -> Result<()> {
    let ok = !value.is_empty()
        && value.len() <= MAX_NAME_LEN
        && value
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
        && value.as_bytes()[0].is_ascii_alphanumeric()
        && !value.contains("..");
    if ok {
        Ok(())
    } else {
        let shown: String = value
            .chars()
            .take(MAX_NAME_LEN)
            .collect::<String>()
            .escape_debug()
            .to_string();
        Err(Error::invalid(format!(
            "{what} `{shown}`: 1–{MAX_NAME_LEN} lowercase letters, digits, `-` and `.`, \
             starting with a letter or digit, without `..`"
        )))
    }
}

/// A sha256 as given by a caller: 64 hex digits, returned lowercase.
fn check_sha256(value: &str) -> Result<String> {
    if value.len() == 64 && value.bytes().all(|b| b.is_ascii_hexdigit()) {
        Ok(value.to_ascii_lowercase())
    } else {
        Err(Error::invalid(format!(
            "expected sha256 `{}`: 64 hex digits",
            value.chars().take(80).collect::<String>().escape_debug()
        )))
    }
}

/// Whether two paths name one existing file.
async fn same_file(a: &Path, b: &Path) -> bool {
    match (
        tokio::fs::canonicalize(a).await,
        tokio::fs::canonicalize(b).await,
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Size and sha256 of a local file, read off the async runtime.
async fn hash_file(path: PathBuf) -> Result<Receipt> {
    tokio::task::spawn_blocking(move || {
        use std::io::Read;
        let mut file = std::fs::File::open(&path)
            .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
        let mut hasher = Sha256::new();
        let mut buf = vec![0u8; READ_CHUNK];
        let mut size = 0u64;
        loop {
            let n = file
                .read(&mut buf)
                .map_err(|e| Error::Source(format!("{}: {e}", path.display())))?;
            if n == 0 {
                break;
            }
            hasher.update(&buf[..n]);
            size += n as u64;
        }
        Ok(Receipt {
            size_bytes: size,
            sha256: hex::encode(hasher.finalize()),
        })
    })
    .await
    .map_err(|e| Error::Unavailable(format!("hashing a file: {e}")))?
}

/// A stream's bytes in memory, refusing more than `max` (the object may have
/// grown since its size was read).
async fn collect(mut stream: ByteStream, max: u64) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk?;
        if (out.len() + chunk.len()) as u64 > max {
            return Err(Error::invalid(format!("size: more than {max} bytes")));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_stay_inside_their_build() {
        for good in [
            "openfactory.iso",
            "build.log",
            "sbom.spdx.json",
            "0a1b2c3d4e5f",
            "a",
        ] {
            check_name("name", good).unwrap();
        }
        for bad in [
            "", ".", "..", "../x", "a/b", "/etc", "a..b", ".hidden", "-x", "UPPER", "a b", "a\0b",
            "a\\b", "é", "a%2fb",
        ] {
            assert!(
                matches!(check_name("name", bad), Err(Error::Invalid { .. })),
                "{bad:?} accepted"
            );
        }
        assert!(check_name("name", &"a".repeat(MAX_NAME_LEN)).is_ok());
        assert!(check_name("name", &"a".repeat(MAX_NAME_LEN + 1)).is_err());
    }

    #[test]
    fn checksums_are_hex() {
        let upper = "AB".repeat(32);
        assert_eq!(check_sha256(&upper).unwrap(), "ab".repeat(32));
        assert!(check_sha256("abc").is_err());
        assert!(check_sha256(&"g".repeat(64)).is_err());
    }

    /// The store's futures go into axum handlers and spawned tasks.
    #[allow(dead_code)]
    fn futures_are_send(store: &ArtifactStore) {
        fn send<T: Send>(_: T) {}
        let body = futures::stream::empty::<std::result::Result<Bytes, std::io::Error>>();
        send(store.put_stream("b", "n", body, None));
        send(store.put_file("b", "n", Path::new("/x")));
        send(store.get("b", "n", None));
        send(store.local_copy("b", "n", None));
        send(store.delete_build("b"));
        send(store.tail("b", "n", 1));
        send(store.presigned_get("b", "n", Duration::from_secs(1)));
    }
}
