//! The local store: today's layout `<builds_dir>/<build_id>/<name>`, through
//! the same calls as S3.

mod common;

use std::path::Path;
use std::time::Duration;

use common::{chunks, data, read_all, read_range, sha256};
use openfactory_artifacts::{ArtifactStore, Bytes, Error, Location, PART_SIZE};

fn open(dir: &Path) -> ArtifactStore {
    let builds = dir.join("builds");
    ArtifactStore::open(&Location::Local(builds), &dir.join("cache")).unwrap()
}

/// Every file under `dir`, relative, sorted (staging files included).
fn files(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                walk(base, &p, out);
            } else {
                out.push(p.strip_prefix(base).unwrap().display().to_string());
            }
        }
    }
    let mut out = Vec::new();
    walk(dir, dir, &mut out);
    out.sort();
    out
}

#[tokio::test]
async fn keeps_todays_layout() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let builds = tmp.path().join("builds");
    let dir = store.local_dir("0a1b2c3d4e5f").unwrap().unwrap();
    assert_eq!(dir, builds.join("0a1b2c3d4e5f"));

    // A build writes its outputs straight into its directory…
    std::fs::create_dir_all(&dir).unwrap();
    let iso = data(3 * 1024 * 1024 + 17, 1);
    std::fs::write(dir.join("openfactory.iso"), &iso).unwrap();
    std::fs::write(dir.join("build.log"), b"line 1\nline 2\n").unwrap();

    // …and the store serves them from there.
    assert_eq!(
        read_all(&store, "0a1b2c3d4e5f", "openfactory.iso").await,
        iso
    );
    let meta = store
        .head("0a1b2c3d4e5f", "openfactory.iso")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(meta.size_bytes, iso.len() as u64);
    assert_eq!(
        store
            .read_small("0a1b2c3d4e5f", "build.log", 1024)
            .await
            .unwrap()
            .unwrap(),
        b"line 1\nline 2\n"
    );
    assert_eq!(
        store
            .local_copy("0a1b2c3d4e5f", "openfactory.iso", None)
            .await
            .unwrap(),
        dir.join("openfactory.iso")
    );
    assert_eq!(
        store.head("0a1b2c3d4e5f", "sbom.spdx.json").await.unwrap(),
        None
    );
    assert!(matches!(
        store
            .local_copy("0a1b2c3d4e5f", "sbom.spdx.json", None)
            .await,
        Err(Error::NotFound { .. })
    ));
    assert!(
        store
            .presigned_get("0a1b2c3d4e5f", "openfactory.iso", Duration::from_secs(60))
            .await
            .unwrap()
            .is_none()
    );

    // Storing a file that already is at its place only hashes it.
    let receipt = store
        .put_file(
            "0a1b2c3d4e5f",
            "openfactory.iso",
            &dir.join("openfactory.iso"),
        )
        .await
        .unwrap();
    assert_eq!(receipt.sha256, sha256(&iso));
    assert_eq!(receipt.size_bytes, iso.len() as u64);
    assert_eq!(std::fs::read(dir.join("openfactory.iso")).unwrap(), iso);

    // What the store writes lands at the same paths.
    let sbom = br#"{"spdxVersion":"SPDX-2.3"}"#;
    store
        .put_stream(
            "0a1b2c3d4e5f",
            "sbom.spdx.json",
            chunks(sbom, 5),
            Some(&sha256(sbom)),
        )
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.join("sbom.spdx.json")).unwrap(), sbom);
    let elsewhere = tmp.path().join("packages.json");
    std::fs::write(&elsewhere, b"[]").unwrap();
    store
        .put_file("0a1b2c3d4e5f", "packages.json", &elsewhere)
        .await
        .unwrap();
    assert_eq!(std::fs::read(dir.join("packages.json")).unwrap(), b"[]");
    assert_eq!(
        files(&builds),
        [
            "0a1b2c3d4e5f/build.log",
            "0a1b2c3d4e5f/openfactory.iso",
            "0a1b2c3d4e5f/packages.json",
            "0a1b2c3d4e5f/sbom.spdx.json"
        ]
    );
    store.check().await.unwrap();
}

#[tokio::test]
async fn a_big_stream_is_stored_whole() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let body = data(2 * PART_SIZE + 12345, 2);
    let receipt = store
        .put_stream(
            "b1",
            "openfactory.iso",
            chunks(&body, 64 * 1024),
            Some(&sha256(&body)),
        )
        .await
        .unwrap();
    assert_eq!(receipt.sha256, sha256(&body));
    assert_eq!(receipt.size_bytes, body.len() as u64);
    assert_eq!(
        std::fs::read(tmp.path().join("builds/b1/openfactory.iso")).unwrap(),
        body
    );
    assert_eq!(files(&tmp.path().join("builds")), ["b1/openfactory.iso"]);
}

#[tokio::test]
async fn a_checksum_mismatch_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let wrong = "0".repeat(64);
    for (name, size) in [("small.json", 1000), ("big.iso", PART_SIZE + PART_SIZE / 2)] {
        let body = data(size, 3);
        let err = store
            .put_stream("b1", name, chunks(&body, 100_000), Some(&wrong))
            .await
            .unwrap_err();
        match err {
            Error::Checksum { expected, actual } => {
                assert_eq!(expected, wrong);
                assert_eq!(actual, sha256(&body));
            }
            other => panic!("{name}: {other}"),
        }
        assert_eq!(store.head("b1", name).await.unwrap(), None);
    }
    // No staging file either.
    assert_eq!(files(&tmp.path().join("builds")), Vec::<String>::new());
    // A malformed checksum is refused before anything is read.
    assert!(matches!(
        store
            .put_stream("b1", "x", chunks(b"x", 1), Some("abc"))
            .await,
        Err(Error::Invalid { .. })
    ));
}

#[tokio::test]
async fn an_upload_cut_off_leaves_nothing() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    // Past one part, then the client goes silent and the request is dropped.
    let first = Bytes::from(data(PART_SIZE + 1000, 4));
    let body =
        futures::stream::iter([Ok::<_, std::io::Error>(first)]).chain(futures::stream::pending());
    use futures::StreamExt;
    let cut = tokio::time::timeout(
        Duration::from_millis(500),
        store.put_stream("b1", "openfactory.iso", body, None),
    )
    .await;
    assert!(cut.is_err(), "the upload cannot finish");
    // The abort runs in the background.
    for _ in 0..50 {
        if files(&tmp.path().join("builds")).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(files(&tmp.path().join("builds")), Vec::<String>::new());

    // A stream that fails is the source's error, and leaves nothing too.
    let failing = futures::stream::iter([
        Ok(Bytes::from(data(PART_SIZE + 1, 5))),
        Err(std::io::Error::other("client hung up")),
    ]);
    let err = store
        .put_stream("b1", "openfactory.iso", failing, None)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Source(m) if m.contains("client hung up")),
        "{err}"
    );
    for _ in 0..50 {
        if files(&tmp.path().join("builds")).is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(files(&tmp.path().join("builds")), Vec::<String>::new());
}

#[tokio::test]
async fn reads_ranges_and_tails() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    let body = data(100_000, 6);
    store
        .put_stream("b1", "build.log", chunks(&body, 7000), None)
        .await
        .unwrap();

    let (size, range, bytes) = read_range(&store, "b1", "build.log", 10..20).await;
    assert_eq!((size, range), (100_000, 10..20));
    assert_eq!(bytes, &body[10..20]);
    // An end past the end is clamped.
    let (_, range, bytes) = read_range(&store, "b1", "build.log", 99_990..200_000).await;
    assert_eq!(range, 99_990..100_000);
    assert_eq!(bytes, &body[99_990..]);
    // A start at or past the end, or an empty range, is refused.
    for bad in [100_000..100_001, 200_000..300_000, 5..5] {
        let err = store
            .get("b1", "build.log", Some(bad.clone()))
            .await
            .unwrap_err();
        assert!(matches!(err, Error::Invalid { .. }), "{bad:?}: {err}");
    }
    assert!(matches!(
        store.get("b1", "missing.log", Some(0..10)).await,
        Err(Error::NotFound { .. })
    ));

    assert_eq!(
        store.tail("b1", "build.log", 1000).await.unwrap().unwrap(),
        &body[99_000..]
    );
    assert_eq!(
        store
            .tail("b1", "build.log", 1_000_000)
            .await
            .unwrap()
            .unwrap(),
        body
    );
    assert_eq!(
        store.tail("b1", "build.log", 0).await.unwrap().unwrap(),
        b""
    );
    assert_eq!(store.tail("b1", "missing.log", 10).await.unwrap(), None);
    store
        .put_stream("b1", "empty.log", chunks(b"", 1), None)
        .await
        .unwrap();
    assert_eq!(
        store.tail("b1", "empty.log", 10).await.unwrap().unwrap(),
        b""
    );
    assert_eq!(
        store
            .read_small("b1", "empty.log", 10)
            .await
            .unwrap()
            .unwrap(),
        b""
    );

    assert_eq!(
        store
            .read_small("b1", "build.log", 100_000)
            .await
            .unwrap()
            .unwrap(),
        body
    );
    assert!(matches!(
        store.read_small("b1", "build.log", 99_999).await,
        Err(Error::Invalid { .. })
    ));
    assert_eq!(
        store.read_small("b1", "missing.log", 10).await.unwrap(),
        None
    );
}

#[tokio::test]
async fn hostile_names_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    std::fs::write(tmp.path().join("secret"), b"do not serve").unwrap();
    let hostile = [
        "..",
        "../secret",
        "../../etc/passwd",
        "a/b",
        "/etc/passwd",
        ".",
        ".hidden",
        "a..b",
        "",
        "UPPER",
        "x y",
        "a\\b",
        "%2e%2e",
        "a\0",
        "naïve",
    ];
    for bad in hostile {
        let expect_invalid = |what: &str, r: Result<(), Error>| {
            assert!(
                matches!(r, Err(Error::Invalid { .. })),
                "{what}({bad:?}) was not refused: {r:?}"
            )
        };
        for (id, name) in [(bad, "build.log"), ("b1", bad)] {
            expect_invalid("head", store.head(id, name).await.map(drop));
            expect_invalid("get", store.get(id, name, None).await.map(drop));
            expect_invalid("read_small", store.read_small(id, name, 10).await.map(drop));
            expect_invalid("tail", store.tail(id, name, 10).await.map(drop));
            expect_invalid(
                "local_copy",
                store.local_copy(id, name, None).await.map(drop),
            );
            expect_invalid(
                "put_stream",
                store
                    .put_stream(id, name, chunks(b"x", 1), None)
                    .await
                    .map(drop),
            );
            expect_invalid(
                "put_file",
                store
                    .put_file(id, name, &tmp.path().join("secret"))
                    .await
                    .map(drop),
            );
            expect_invalid(
                "presigned_get",
                store
                    .presigned_get(id, name, Duration::from_secs(1))
                    .await
                    .map(drop),
            );
        }
        expect_invalid("delete_build", store.delete_build(bad).await);
        expect_invalid("local_dir", store.local_dir(bad).map(drop));
    }
    assert!(tmp.path().join("secret").exists());
    assert_eq!(files(&tmp.path().join("builds")), Vec::<String>::new());
}

#[tokio::test]
async fn delete_build_removes_that_build_only() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    for id in ["b1", "b10"] {
        for name in [
            "openfactory.iso",
            "build.log",
            "packages.json",
            "sbom.spdx.json",
        ] {
            store
                .put_stream(id, name, chunks(name.as_bytes(), 3), None)
                .await
                .unwrap();
        }
    }
    // Whatever else the build left in its directory goes too.
    std::fs::create_dir_all(tmp.path().join("builds/b1/work")).unwrap();
    std::fs::write(tmp.path().join("builds/b1/work/x"), b"x").unwrap();
    store.delete_build("b1").await.unwrap();
    assert!(!tmp.path().join("builds/b1").exists());
    assert_eq!(store.head("b1", "build.log").await.unwrap(), None);
    assert_eq!(read_all(&store, "b10", "build.log").await, b"build.log");
    assert_eq!(files(&tmp.path().join("builds")).len(), 4);
    // Deleting what is not there is no error.
    store.delete_build("b1").await.unwrap();
    store.delete_build("never-built").await.unwrap();
}

#[tokio::test]
async fn an_upload_cut_off_by_a_dead_process_is_removed_at_the_next_start() {
    let tmp = tempfile::tempdir().unwrap();
    let store = open(tmp.path());
    store
        .put_stream("b1", "image.iso", chunks(&data(3 * 1024, 7), 1024), None)
        .await
        .unwrap();
    // What a multipart write leaves beside its target when its process is killed.
    std::fs::write(tmp.path().join("builds/b1/log.txt#1"), b"half").unwrap();
    std::fs::create_dir_all(tmp.path().join("builds/b2")).unwrap();
    std::fs::write(tmp.path().join("builds/b2/image.iso#7"), b"half").unwrap();
    let mut removed: Vec<String> = store
        .remove_unfinished_uploads()
        .unwrap()
        .iter()
        .map(|p| p.strip_prefix(tmp.path()).unwrap().display().to_string())
        .collect();
    removed.sort();
    assert_eq!(removed, ["builds/b1/log.txt#1", "builds/b2/image.iso#7"]);
    assert_eq!(files(&tmp.path().join("builds")), ["b1/image.iso"]);
    assert!(store.remove_unfinished_uploads().unwrap().is_empty());
}
