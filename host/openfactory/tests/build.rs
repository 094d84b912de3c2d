//! `openfactory build` when things go wrong: the mirror is unreachable, the
//! disk fills up. Each failure must name its cause and leave nothing behind.
//! These tests build for real, so they need root (as CI runs them).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const MINIMAL: &str = "name = \"minimal\"\nbase_image = \"debian-bookworm\"\n";

fn require_root() {
    // SAFETY: geteuid has no preconditions.
    assert_eq!(
        unsafe { libc::geteuid() },
        0,
        "build tests need root (overlay mounts, chroot, loop devices); run the suite as CI does, as root"
    );
}

/// Run `openfactory build … --json`; the exit code and the JSON it printed.
fn build(home: &Path, extra: &[&str], recipe: &Path) -> (i32, Value) {
    let out = Command::new(env!("CARGO_BIN_EXE_openfactory"))
        .arg("--home")
        .arg(home)
        .args(extra)
        .arg("build")
        .arg(recipe)
        .arg("--json")
        .env_remove("OPENFACTORY_HOME")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let json = serde_json::from_str(&stdout).unwrap_or_else(|_| {
        panic!(
            "no JSON on stdout:\n{stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().unwrap_or(-1), json)
}

fn mounts_under(dir: &Path) -> Vec<String> {
    std::fs::read_to_string("/proc/self/mounts")
        .unwrap()
        .lines()
        .filter(|l| l.contains(dir.to_str().unwrap()))
        .map(String::from)
        .collect()
}

#[test]
fn an_unreachable_mirror_fails_the_bootstrap_and_says_so() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("minimal.toml");
    std::fs::write(&recipe, MINIMAL).unwrap();
    let cache = dir.path().join("cache");
    // Port 9 (discard) on loopback: nothing listens there.
    let (code, out) = build(
        &dir.path().join("home"),
        &[
            "--cache",
            cache.to_str().unwrap(),
            "--mirror",
            "http://127.0.0.1:9/debian",
            "--security-mirror",
            "http://127.0.0.1:9/debian-security",
        ],
        &recipe,
    );
    assert_eq!(code, 1, "{out}");
    let error = out["error"].as_str().unwrap();
    assert!(error.starts_with("bootstrap failed"), "{error}");
    assert!(error.contains("http://127.0.0.1:9/debian"), "{error}");
    assert!(error.contains("is the mirror reachable?"), "{error}");
    // No half-made base is left for the next build to trip over.
    let bases: Vec<_> = std::fs::read_dir(cache.join("bases"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .filter(|n| !n.to_string_lossy().ends_with(".lock"))
        .collect();
    assert!(bases.is_empty(), "{bases:?}");
    let log = std::fs::read_to_string(out["log"].as_str().unwrap()).unwrap();
    assert!(log.contains("==> failed: bootstrap failed"), "{log}");
}

#[test]
fn a_full_disk_fails_the_build_with_a_clear_error_and_nothing_mounted() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("small.img");
    let small = dir.path().join("small");
    std::fs::create_dir(&small).unwrap();
    let run = |cmd: &mut Command| {
        let out = cmd.output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    run(Command::new("truncate").args(["-s", "128M"]).arg(&image));
    run(Command::new("mkfs.ext4").args(["-q", "-F"]).arg(&image));
    run(Command::new("mount")
        .args(["-o", "loop"])
        .arg(&image)
        .arg(&small));
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = Command::new("umount").arg("-l").arg(self.0).status();
        }
    }
    let _guard = Unmount(&small);

    let recipe = dir.path().join("big.toml");
    std::fs::write(&recipe, format!("{MINIMAL}packages = [\"docker.io\"]\n")).unwrap();
    // The home (scratch space and results) is on the small disk; the shared
    // cache (the base) is not, as in a real deployment.
    let home = small.join("home");
    let (code, out) = build(&home, &[], &recipe);
    assert_eq!(code, 1, "{out}");
    let error = out["error"].as_str().unwrap();
    assert!(error.starts_with("disk full during "), "{error}");
    assert!(error.contains(small.to_str().unwrap()), "{error}");
    assert!(mounts_under(&home).is_empty(), "{:?}", mounts_under(&home));
    let work = home.join("work");
    let left: Vec<_> = std::fs::read_dir(&work)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "scratch left behind: {left:?}");
}

#[test]
fn the_same_recipe_on_the_same_base_gives_the_same_iso() {
    require_root();
    let dir = tempfile::tempdir().unwrap();
    let recipe = dir.path().join("minimal.toml");
    std::fs::write(&recipe, format!("{MINIMAL}packages = [\"less\"]\n")).unwrap();
    let home = dir.path().join("home");
    let (code, first) = build(&home, &[], &recipe);
    assert_eq!(code, 0, "{first}");
    let (code, second) = build(&home, &[], &recipe);
    assert_eq!(code, 0, "{second}");
    assert_ne!(first["build_id"], second["build_id"]);
    assert_eq!(second["base_reused"], true, "{second}");
    // SOURCE_DATE_EPOCH, fixed overlay attributes, pinned ISO dates and ids.
    assert_eq!(first["iso_sha256"], second["iso_sha256"]);
    let packages: Value = serde_json::from_slice(
        &std::fs::read(Path::new(first["directory"].as_str().unwrap()).join("packages.json"))
            .unwrap(),
    )
    .unwrap();
    let names: Vec<&str> = packages
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["name"].as_str().unwrap())
        .collect();
    for wanted in [
        "less",
        "linux-image-amd64",
        "live-boot",
        "qemu-guest-agent",
        "systemd-resolved",
    ] {
        assert!(
            names.contains(&wanted),
            "{wanted} missing from the manifest"
        );
    }
    let sbom: Value = serde_json::from_slice(
        &std::fs::read(Path::new(first["directory"].as_str().unwrap()).join("sbom.spdx.json"))
            .unwrap(),
    )
    .unwrap();
    assert_eq!(sbom["spdxVersion"], "SPDX-2.3");
    assert_eq!(sbom["packages"].as_array().unwrap().len(), names.len() + 1);
    // The real image's SBOM against SPDX 2.3's own JSON schema.
    let schema: Value =
        serde_json::from_str(include_str!("../../../tests/fixtures/spdx-2.3.schema.json")).unwrap();
    let validator = jsonschema::validator_for(&schema).unwrap();
    let errors: Vec<String> = validator
        .iter_errors(&sbom)
        .take(10)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "the SBOM is not valid SPDX 2.3: {errors:?}"
    );
}
