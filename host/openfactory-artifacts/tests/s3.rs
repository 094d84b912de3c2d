//! The S3 store against a real S3 API: the test Garage of
//! `xtask/src/garage.rs` (`OPENFACTORY_TEST_S3_*`). Skipped when
//! `OPENFACTORY_TEST_S3_ENDPOINT` is unset, failed then with
//! `OPENFACTORY_REQUIRE_S3=1`. Each test works under a prefix of its own.

mod common;

use std::time::Duration;

use common::{S3Env, chunks, data, read_all, read_range, s3_env, sha256, unique};
use openfactory_artifacts::{ArtifactStore, Error, Location, PART_SIZE, S3Location};

struct Fixture {
    env: S3Env,
    store: ArtifactStore,
    prefix: String,
    cache: tempfile::TempDir,
}

impl Fixture {
    /// Remove what the test stored (a failed test leaves its prefix behind).
    async fn done(self, build_ids: &[&str]) {
        for id in build_ids {
            self.store.delete_build(id).await.unwrap();
        }
    }
}

fn fixture(tag: &str) -> Option<Fixture> {
    let env = s3_env()?;
    let prefix = format!("tests/{}", unique(tag));
    let cache = tempfile::tempdir().unwrap();
    let store = env.open(&prefix, cache.path());
    Some(Fixture {
        env,
        store,
        prefix,
        cache,
    })
}

#[tokio::test]
async fn a_file_bigger_than_a_part_goes_up_and_comes_back() {
    let Some(f) = fixture("put-file") else { return };
    let body = data(20 * 1024 * 1024 + 333, 10);
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("openfactory.iso");
    std::fs::write(&path, &body).unwrap();

    let started = std::time::Instant::now();
    let receipt = f
        .store
        .put_file("b1", "openfactory.iso", &path)
        .await
        .unwrap();
    eprintln!("put_file of 20 MiB: {:?}", started.elapsed());
    assert_eq!(receipt.size_bytes, body.len() as u64);
    assert_eq!(receipt.sha256, sha256(&body));
    assert_eq!(
        f.store
            .head("b1", "openfactory.iso")
            .await
            .unwrap()
            .unwrap()
            .size_bytes,
        body.len() as u64
    );
    let started = std::time::Instant::now();
    let back = read_all(&f.store, "b1", "openfactory.iso").await;
    eprintln!("get of 20 MiB: {:?}", started.elapsed());
    assert_eq!(sha256(&back), receipt.sha256);
    assert!(f.store.local_dir("b1").unwrap().is_none());
    f.store.check().await.unwrap();
    f.done(&["b1"]).await;
}

#[tokio::test]
async fn ranges_and_tails() {
    let Some(f) = fixture("ranges") else { return };
    let body = data(PART_SIZE + 4 * 1024 * 1024, 11);
    f.store
        .put_stream(
            "b1",
            "openfactory.iso",
            chunks(&body, 1 << 20),
            Some(&sha256(&body)),
        )
        .await
        .unwrap();
    // Across the boundary between the two parts.
    let r = (PART_SIZE as u64 - 1000)..(PART_SIZE as u64 + 1000);
    let (size, range, bytes) = read_range(&f.store, "b1", "openfactory.iso", r.clone()).await;
    assert_eq!((size, range.clone()), (body.len() as u64, r.clone()));
    assert_eq!(bytes, &body[r.start as usize..r.end as usize]);
    // An end past the end is clamped; a start past it refused.
    let end = body.len() as u64;
    let (_, range, bytes) =
        read_range(&f.store, "b1", "openfactory.iso", end - 10..end + 100).await;
    assert_eq!(range, end - 10..end);
    assert_eq!(bytes, &body[body.len() - 10..]);
    let err = f
        .store
        .get("b1", "openfactory.iso", Some(end..end + 1))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Invalid { .. }), "{err}");
    assert!(matches!(
        f.store.get("b1", "missing.iso", Some(0..10)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        f.store.get("b1", "missing.iso", None).await,
        Err(Error::NotFound { .. })
    ));

    let log = b"line 1\nline 2\nline 3\n";
    f.store
        .put_stream("b1", "build.log", chunks(log, 4), None)
        .await
        .unwrap();
    assert_eq!(
        f.store.tail("b1", "build.log", 7).await.unwrap().unwrap(),
        b"line 3\n"
    );
    assert_eq!(
        f.store
            .tail("b1", "build.log", 1000)
            .await
            .unwrap()
            .unwrap(),
        log
    );
    assert_eq!(f.store.tail("b1", "missing.log", 10).await.unwrap(), None);
    assert_eq!(
        f.store
            .read_small("b1", "build.log", 100)
            .await
            .unwrap()
            .unwrap(),
        log
    );
    assert!(matches!(
        f.store.read_small("b1", "build.log", 10).await,
        Err(Error::Invalid { .. })
    ));
    assert_eq!(
        f.store.read_small("b1", "missing.log", 10).await.unwrap(),
        None
    );
    f.store
        .put_stream("b1", "empty.log", chunks(b"", 1), None)
        .await
        .unwrap();
    assert_eq!(
        f.store.tail("b1", "empty.log", 10).await.unwrap().unwrap(),
        b""
    );
    assert_eq!(
        f.store
            .read_small("b1", "empty.log", 10)
            .await
            .unwrap()
            .unwrap(),
        b""
    );
    assert_eq!(
        f.store
            .head("b1", "empty.log")
            .await
            .unwrap()
            .unwrap()
            .size_bytes,
        0
    );
    f.done(&["b1"]).await;
}

#[tokio::test]
async fn a_wrong_checksum_leaves_nothing_under_the_key() {
    let Some(f) = fixture("checksum") else { return };
    let wrong = "f".repeat(64);
    // One PUT, and a multipart upload aborted before completion.
    for (name, size) in [
        ("packages.json", 5000),
        ("openfactory.iso", 2 * PART_SIZE + 1),
    ] {
        let body = data(size, 12);
        let err = f
            .store
            .put_stream("b1", name, chunks(&body, 256 * 1024), Some(&wrong))
            .await
            .unwrap_err();
        match err {
            Error::Checksum { expected, actual } => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, sha256(&body));
            }
            other => panic!("{name}: {other}"),
        }
        assert_eq!(f.store.head("b1", name).await.unwrap(), None, "{name}");
        // The right checksum (in capitals, as some clients send it) is taken.
        let receipt = f
            .store
            .put_stream(
                "b1",
                name,
                chunks(&body, 256 * 1024),
                Some(&sha256(&body).to_uppercase()),
            )
            .await
            .unwrap();
        assert_eq!(receipt.sha256, sha256(&body));
    }
    f.done(&["b1"]).await;
}

#[tokio::test]
async fn local_copy_downloads_once_and_verifies() {
    let Some(f) = fixture("local-copy") else {
        return;
    };
    let v1 = data(3 * 1024 * 1024, 13);
    let v2 = data(3 * 1024 * 1024, 14);
    f.store
        .put_stream("b1", "openfactory.iso", chunks(&v1, 1 << 20), None)
        .await
        .unwrap();

    let path = f
        .store
        .local_copy("b1", "openfactory.iso", Some(&sha256(&v1)))
        .await
        .unwrap();
    assert!(path.starts_with(f.cache.path()), "{}", path.display());
    assert_eq!(std::fs::read(&path).unwrap(), v1);

    // Reused, not downloaded again: it is still served once the object is
    // gone (deleted by a second store on the bucket, with its own cache).
    let side_cache = tempfile::tempdir().unwrap();
    let side = f.env.open(&f.prefix, side_cache.path());
    side.delete_build("b1").await.unwrap();
    assert_eq!(f.store.head("b1", "openfactory.iso").await.unwrap(), None);
    assert_eq!(
        f.store
            .local_copy("b1", "openfactory.iso", Some(&sha256(&v1)))
            .await
            .unwrap(),
        path
    );
    assert_eq!(
        f.store
            .local_copy("b1", "openfactory.iso", None)
            .await
            .unwrap(),
        path
    );

    // A different expected checksum means a new download: v2 replaced v1.
    f.store
        .put_stream("b1", "openfactory.iso", chunks(&v2, 1 << 20), None)
        .await
        .unwrap();
    let path2 = f
        .store
        .local_copy("b1", "openfactory.iso", Some(&sha256(&v2)))
        .await
        .unwrap();
    assert_eq!(path2, path);
    assert_eq!(std::fs::read(&path2).unwrap(), v2);

    // An expectation the object does not meet: Checksum, and no copy kept
    // that a later call would trust.
    let err = f
        .store
        .local_copy("b1", "openfactory.iso", Some(&sha256(&v1)))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Checksum { expected, actual } if *expected == sha256(&v1) && *actual == sha256(&v2)),
        "{err}"
    );
    let path3 = f
        .store
        .local_copy("b1", "openfactory.iso", Some(&sha256(&v2)))
        .await
        .unwrap();
    assert_eq!(std::fs::read(path3).unwrap(), v2);

    // Concurrent callers share one download.
    f.store
        .put_stream("b2", "openfactory.iso", chunks(&v1, 1 << 20), None)
        .await
        .unwrap();
    let (a, b) = tokio::join!(
        f.store.local_copy("b2", "openfactory.iso", None),
        f.store.local_copy("b2", "openfactory.iso", None)
    );
    assert_eq!(a.unwrap(), b.unwrap());
    let leftovers: Vec<_> = std::fs::read_dir(f.cache.path().join("b2"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut leftovers = leftovers;
    leftovers.sort();
    assert_eq!(leftovers, [".openfactory.iso.sha256", "openfactory.iso"]);
    assert!(matches!(
        f.store.local_copy("b2", "missing.iso", None).await,
        Err(Error::NotFound { .. })
    ));
    f.done(&["b1", "b2"]).await;
}

#[tokio::test]
async fn a_presigned_url_works_with_a_plain_get() {
    let Some(f) = fixture("presigned") else {
        return;
    };
    let body = data(100_000, 15);
    f.store
        .put_stream("b1", "sbom.spdx.json", chunks(&body, 10_000), None)
        .await
        .unwrap();
    let url = f
        .store
        .presigned_get("b1", "sbom.spdx.json", Duration::from_secs(300))
        .await
        .unwrap()
        .unwrap();
    assert!(url.as_str().starts_with(&f.env.endpoint), "{url}");
    assert!(
        url.query().unwrap_or_default().contains("X-Amz-Signature"),
        "{url}"
    );
    let client = reqwest::Client::new();
    let resp = client.get(url.clone()).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.bytes().await.unwrap(), body);
    // With a Range header, as a browser resuming a download sends.
    let resp = client
        .get(url.clone())
        .header("Range", "bytes=10-19")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 206);
    assert_eq!(resp.bytes().await.unwrap(), &body[10..20]);
    // The signature covers the key: another key with it is refused.
    let forged = url.as_str().replace("sbom.spdx.json", "build.log");
    let resp = client.get(forged).send().await.unwrap();
    assert_eq!(resp.status(), 403);
    // Bounds of the expiry.
    for bad in [Duration::ZERO, Duration::from_secs(8 * 24 * 3600)] {
        assert!(matches!(
            f.store.presigned_get("b1", "sbom.spdx.json", bad).await,
            Err(Error::Invalid { .. })
        ));
    }
    f.done(&["b1"]).await;
}

#[tokio::test]
async fn delete_build_removes_all_of_it_and_nothing_else() {
    let Some(f) = fixture("delete") else { return };
    let names = [
        "openfactory.iso",
        "build.log",
        "packages.json",
        "sbom.spdx.json",
    ];
    for id in ["b1", "b10"] {
        for name in names {
            f.store
                .put_stream(id, name, chunks(name.as_bytes(), 4), None)
                .await
                .unwrap();
        }
    }
    f.store.local_copy("b1", "build.log", None).await.unwrap();
    f.store.delete_build("b1").await.unwrap();
    for name in names {
        assert_eq!(f.store.head("b1", name).await.unwrap(), None, "{name}");
        assert!(
            f.store.head("b10", name).await.unwrap().is_some(),
            "{name} of b10"
        );
    }
    assert!(
        !f.cache.path().join("b1").exists(),
        "the cached copies go too"
    );
    f.store.delete_build("b1").await.unwrap();
    f.store.delete_build("b10").await.unwrap();
    assert_eq!(f.store.head("b10", "build.log").await.unwrap(), None);
}

#[tokio::test]
async fn a_cut_off_upload_never_appears() {
    let Some(f) = fixture("cut-off") else { return };
    use futures::StreamExt;
    let first = openfactory_artifacts::Bytes::from(data(PART_SIZE + 1000, 16));
    let body =
        futures::stream::iter([Ok::<_, std::io::Error>(first)]).chain(futures::stream::pending());
    let cut = tokio::time::timeout(
        Duration::from_secs(2),
        f.store.put_stream("b1", "openfactory.iso", body, None),
    )
    .await;
    assert!(cut.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(f.store.head("b1", "openfactory.iso").await.unwrap(), None);
    f.done(&["b1"]).await;
}

#[tokio::test]
async fn bad_settings_are_told_apart() {
    let Some(f) = fixture("settings") else { return };
    // Wrong secret: the backend refuses, which is Unavailable with its message.
    let mut loc = match f.env.location(&f.prefix) {
        Location::S3(s3) => s3,
        Location::Local(_) => unreachable!(),
    };
    loc.secret_access_key = Some("0".repeat(64));
    let tmp = tempfile::tempdir().unwrap();
    let store = ArtifactStore::open(&Location::S3(loc.clone()), tmp.path()).unwrap();
    let err = store.check().await.unwrap_err();
    assert!(matches!(err, Error::Unavailable(_)), "{err}");
    // A bucket that does not exist.
    let mut other = loc.clone();
    other.secret_access_key = Some(f.env.secret_access_key.clone());
    other.bucket = "no-such-bucket-here".into();
    let store = ArtifactStore::open(&Location::S3(other), tmp.path()).unwrap();
    assert!(matches!(store.check().await, Err(Error::Unavailable(_))));
    // Half the credentials: Config, naming the variable (only checkable when
    // the environment does not supply the other half).
    if std::env::var_os("AWS_SECRET_ACCESS_KEY").is_none() {
        let half = S3Location {
            secret_access_key: None,
            ..loc
        };
        match ArtifactStore::open(&Location::S3(half), tmp.path()) {
            Err(Error::Config(m)) => assert!(m.contains("AWS_SECRET_ACCESS_KEY"), "{m}"),
            other => panic!("{other:?}"),
        }
    }
}

/// Peak resident memory of this process so far (Linux `VmHWM`), in MiB.
fn peak_rss_mib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb / 1024)
}

/// A 512 MiB file up, down and into the cache, in bounded memory. Slow and
/// big: run by hand with `--ignored`.
#[tokio::test]
#[ignore]
async fn a_big_iso_streams_in_bounded_memory() {
    let Some(f) = fixture("big") else { return };
    let tmp = tempfile::tempdir().unwrap();
    let path = tmp.path().join("openfactory.iso");
    {
        use std::io::Write;
        let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
        for i in 0..64 {
            file.write_all(&data(8 * 1024 * 1024, 100 + i)).unwrap();
        }
    }
    let before = peak_rss_mib();
    let started = std::time::Instant::now();
    let receipt = f
        .store
        .put_file("b1", "openfactory.iso", &path)
        .await
        .unwrap();
    let put = started.elapsed();
    let started = std::time::Instant::now();
    let mut d = f.store.get("b1", "openfactory.iso", None).await.unwrap();
    let mut hasher = <sha2::Sha256 as sha2::Digest>::new();
    use futures::StreamExt;
    while let Some(chunk) = d.stream.next().await {
        sha2::Digest::update(&mut hasher, chunk.unwrap());
    }
    assert_eq!(hex::encode(sha2::Digest::finalize(hasher)), receipt.sha256);
    let get = started.elapsed();
    let started = std::time::Instant::now();
    let copy = f
        .store
        .local_copy("b1", "openfactory.iso", Some(&receipt.sha256))
        .await
        .unwrap();
    let cached = started.elapsed();
    assert_eq!(std::fs::metadata(copy).unwrap().len(), 512 * 1024 * 1024);
    eprintln!(
        "512 MiB: put_file {put:?}, get {get:?}, local_copy {cached:?}; peak RSS {before} MiB before, {} MiB after",
        peak_rss_mib()
    );
    assert!(peak_rss_mib() < before + 128, "memory grew with the file");
    f.done(&["b1"]).await;
}
