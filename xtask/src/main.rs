//! Repository automation: `cargo xtask <task>`.
//!
//! - `plugins`: build every plugin for wasm32-wasip2 and pack signed bundles
//!   into target/bundles (first-party) and target/test-bundles (fixtures).
//! - `install [--home DIR]`: trust the project key and install the bundles
//!   (default home: target/dev-home).
//! - `run -- ARGS`: install into target/dev-home, then run `openfactory ARGS`.
//! - `test`: plugins, then the whole test suite.
//! - `bench`: plugins, then the benchmarks (release build).
//! - `bench-build`: an image by hand against `openfactory build`, cold and
//!   warm, and whether two builds give the same ISO (root, network, ~10 min).

mod bench_build;
mod bench_tests;

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail};

const TARGET: &str = "wasm32-wasip2";
/// Every build of the host has the libvirt VM backend (ensure_build_tools
/// installs libvirt-dev), so `run`, `test` and `bench` share one binary.
const HOST_FEATURES: [&str; 2] = ["--features", "openfactory/libvirt"];
/// Plugin crates that are test fixtures, never shipped as first-party bundles.
const FIXTURES: &[&str] = &["hostile"];

fn main() -> Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let root = root();
    std::env::set_current_dir(&root)?;
    match args.first().map(String::as_str) {
        Some("plugins") => plugins(&root),
        Some("install") => {
            let home = match args.get(1).map(String::as_str) {
                Some("--home") => PathBuf::from(args.get(2).context("--home needs a directory")?),
                _ => root.join("target/dev-home"),
            };
            plugins(&root)?;
            novnc(&root)?;
            install(&root, &home)
        }
        Some("run") => {
            ensure_build_tools()?;
            plugins(&root)?;
            let home = root.join("target/dev-home");
            install(&root, &home)?;
            let novnc = novnc(&root)?;
            let rest: Vec<&String> = args.iter().skip(1).skip_while(|a| *a == "--").collect();
            let status = cargo()
                .args(["run", "-q", "-p", "openfactory"])
                .args(HOST_FEATURES)
                .arg("--")
                .args(rest)
                .env("OPENFACTORY_HOME", &home)
                .env("OPENFACTORY_NOVNC_DIR", &novnc)
                .status()?;
            std::process::exit(status.code().unwrap_or(1));
        }
        Some("test") => {
            let mut parts = Parts::default();
            parts.time("set-up (tools, plugins, noVNC, browser driver)", || {
                ensure_build_tools()?;
                plugins(&root)?;
                novnc(&root)?;
                browser_driver(&root)?;
                ensure_libvirtd()
            })?;
            let rust = parts.time("Rust tests (cargo test --workspace)", || {
                run(cargo()
                    .args(["test", "--workspace", "--no-fail-fast"])
                    .args(HOST_FEATURES)
                    .envs(test_env(&root)))
            });
            // The MCP end-to-end suite drives the real binary with the official Python SDK.
            let python = parts.time("MCP suite (tests/mcp, official Python SDK)", || {
                mcp_tests(&root)
            });
            parts.print();
            rust.and(python)
        }
        Some("bench") => {
            plugins(&root)?;
            run(cargo()
                .args(["bench", "-p", "openfactory"])
                .args(HOST_FEATURES)
                .envs(test_env(&root)))
        }
        Some("bench-tests") => {
            ensure_build_tools()?;
            run(cargo()
                .args(["build", "-q", "-p", "openfactory"])
                .args(HOST_FEATURES))?;
            bench_tests::bench_tests(&root)
        }
        Some("bench-build") => {
            ensure_build_tools()?;
            bench_build::bench_build(&root)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <plugins | install [--home DIR] | run -- ARGS | test | bench | bench-build | bench-tests>"
            );
            bail!("unknown task")
        }
    }
}

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("xtask lives in the workspace")
        .to_owned()
}

/// Where cargo puts the host's build: `$CARGO_TARGET_DIR` when set (CI keeps
/// it outside the clone, so a fresh clone reuses compiled dependencies), else
/// `target/`.
fn cargo_target(root: &Path) -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target"))
}

/// The `openfactory` binary that `cargo build -p openfactory` made.
pub(crate) fn host_binary(root: &Path, profile: &str) -> PathBuf {
    cargo_target(root).join(profile).join("openfactory")
}

/// The plugins workspace's build: beside the host's, never inside the clone's
/// `target/` when the host's is kept elsewhere.
fn plugins_target(root: &Path) -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => PathBuf::from(dir).join("plugins"),
        None => root.join("plugins/target"),
    }
}

/// The parts of a long task, each timed; `print` shows the table CI logs.
#[derive(Default)]
struct Parts(Vec<(&'static str, std::time::Duration, bool)>);

impl Parts {
    fn time<T>(&mut self, name: &'static str, part: impl FnOnce() -> Result<T>) -> Result<T> {
        eprintln!("xtask: == {name}");
        let started = std::time::Instant::now();
        let result = part();
        let took = started.elapsed();
        eprintln!(
            "xtask: == {name}: {} in {}",
            if result.is_ok() { "done" } else { "FAILED" },
            minutes(took)
        );
        self.0.push((name, took, result.is_ok()));
        result
    }

    fn print(&self) {
        eprintln!("xtask: part durations");
        for (name, took, ok) in &self.0 {
            eprintln!(
                "xtask:   {:>8}  {}{name}",
                minutes(*took),
                if *ok { "" } else { "FAILED " }
            );
        }
    }
}

fn minutes(d: std::time::Duration) -> String {
    format!("{}m{:02}s", d.as_secs() / 60, d.as_secs() % 60)
}

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

/// noVNC version served by the browser console (npm `@novnc/novnc`).
const NOVNC: &str = "1.7.0";

/// Install noVNC under target/ (once) for the console; its package directory.
fn novnc(root: &Path) -> Result<PathBuf> {
    let prefix = root.join("target/novnc");
    let package = prefix.join("node_modules/@novnc/novnc");
    let version = std::fs::read_to_string(package.join("package.json")).unwrap_or_default();
    if !version.contains(&format!("\"version\": \"{NOVNC}\"")) {
        std::fs::create_dir_all(&prefix)?;
        eprintln!("xtask: installing @novnc/novnc {NOVNC} for the VM console");
        run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(&prefix)
            .arg(format!("@novnc/novnc@{NOVNC}")))?;
    }
    Ok(package)
}

/// What the browser tests run in Node: playwright-core (driving Debian's
/// chromium) and axe-core (accessibility rules, run inside each page).
const BROWSER_PACKAGES: [(&str, &str); 2] = [("playwright-core", "1.64.1"), ("axe-core", "4.14.1")];

fn browser_driver(root: &Path) -> Result<()> {
    let prefix = root.join("target/browser");
    let installed = |name: &str, version: &str| {
        std::fs::read_to_string(prefix.join("node_modules").join(name).join("package.json"))
            .unwrap_or_default()
            .contains(&format!("\"version\": \"{version}\""))
    };
    if BROWSER_PACKAGES.iter().all(|(n, v)| installed(n, v)) {
        return Ok(());
    }
    std::fs::create_dir_all(&prefix)?;
    let specs: Vec<String> = BROWSER_PACKAGES
        .iter()
        .map(|(n, v)| format!("{n}@{v}"))
        .collect();
    eprintln!(
        "xtask: installing {} for the browser tests",
        specs.join(" ")
    );
    run(Command::new("npm")
        .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
        .arg(&prefix)
        .args(&specs))
}

/// The environment tests and benchmarks use to find the built bundles.
fn test_env(root: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        (
            "OPENFACTORY_NOVNC_DIR",
            root.join("target/novnc/node_modules/@novnc/novnc"),
        ),
        ("OPENFACTORY_BROWSER_DIR", root.join("target/browser")),
        ("OPENFACTORY_BUNDLES", root.join("target/bundles")),
        ("OPENFACTORY_TEST_BUNDLES", root.join("target/test-bundles")),
        (
            "OPENFACTORY_PROJECT_KEY",
            root.join("target/signing/project.pub"),
        ),
    ]
}

/// Build, pack and sign every plugin.
fn plugins(root: &Path) -> Result<()> {
    ensure_wasm_target()?;
    let plugins_dir = root.join("plugins");
    let plugins_target = plugins_target(root);
    run(cargo()
        .current_dir(&plugins_dir)
        .args(["build", "--release", "--workspace", "--target", TARGET])
        .env("CARGO_TARGET_DIR", &plugins_target))?;
    // The CLI packs the bundles: the same code path authors use.
    run(cargo()
        .args(["build", "-q", "-p", "openfactory"])
        .args(HOST_FEATURES))?;
    let cli = host_binary(root, "debug");

    let key = match std::env::var_os("OPENFACTORY_SIGNING_KEY") {
        Some(k) => PathBuf::from(k),
        None => root.join("target/signing/project.key"),
    };
    if !key.exists() {
        eprintln!(
            "xtask: generating a local project signing key at {}",
            key.display()
        );
        run(Command::new(&cli)
            .args([
                "plugin",
                "keygen",
                "--comment",
                "OpenFactory project (local build)",
            ])
            .arg(&key))?;
    }

    let bundles = root.join("target/bundles");
    let fixtures = root.join("target/test-bundles");
    let mut crates: Vec<PathBuf> = std::fs::read_dir(&plugins_dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file() && p.join("src/lib.rs").is_file())
        .collect();
    crates.sort();
    for dir in crates {
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml"))?;
        if !manifest.contains("crate-type = [\"cdylib\"]") {
            continue; // the SDK
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let package = manifest
            .lines()
            .find_map(|l| {
                l.strip_prefix("name = \"")
                    .and_then(|r| r.strip_suffix('"'))
            })
            .with_context(|| format!("{}: no package name", dir.display()))?;
        let wasm = plugins_target
            .join(TARGET)
            .join("release")
            .join(format!("{}.wasm", package.replace('-', "_")));
        let out = if FIXTURES.contains(&name.as_str()) {
            &fixtures
        } else {
            &bundles
        }
        .join(&name);
        let mut pack = Command::new(&cli);
        pack.args(["plugin", "pack"])
            .arg(&wasm)
            .arg("--out")
            .arg(&out)
            .arg("--key")
            .arg(&key)
            .env("OPENFACTORY_HOME", root.join("target/xtask-home"));
        let assets = dir.join("assets");
        if assets.is_dir() {
            pack.arg("--assets").arg(&assets);
        }
        run(&mut pack)?;
    }
    Ok(())
}

/// Run tests/mcp with the official MCP Python SDK in a virtualenv under target/.
fn mcp_tests(root: &Path) -> Result<()> {
    let venv = root.join("target/venv");
    let python = venv.join("bin/python");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&python)
        .args([
            "-m",
            "pip",
            "install",
            "--quiet",
            "--disable-pip-version-check",
            "-r",
        ])
        .arg(root.join("tests/mcp/requirements.txt")))?;
    run(cargo()
        .args(["build", "-q", "-p", "openfactory"])
        .args(HOST_FEATURES))?;
    run(Command::new(&python)
        .args(["-m", "pytest", "tests/mcp", "-q", "-p", "no:cacheprovider"])
        .env("OPENFACTORY_BIN", host_binary(root, "debug"))
        .envs(test_env(root)))
}

/// Debian packages builds and their tests use, by a command each provides.
const BUILD_TOOLS: &[(&str, &str)] = &[
    ("mmdebstrap", "mmdebstrap"),
    ("mksquashfs", "squashfs-tools"),
    ("grub-mkrescue", "grub-common"),
    ("xorriso", "xorriso"),
    ("mformat", "mtools"),
    ("qemu-system-x86_64", "qemu-system-x86"),
    ("qemu-img", "qemu-utils"),
    ("chromium", "chromium"),
    ("mkfs.ext4", "e2fsprogs"),
    ("pkg-config", "pkg-config"),
    ("libvirtd", "libvirt-daemon-system"),
    ("virsh", "libvirt-clients"),
];
/// Packages without a command to look for.
const BUILD_FILES: &[(&str, &str)] = &[
    ("/usr/lib/grub/i386-pc/cdboot.img", "grub-pc-bin"),
    ("/usr/lib/grub/x86_64-efi/linux.mod", "grub-efi-amd64-bin"),
    ("/usr/share/ovmf/OVMF.fd", "ovmf"),
    ("/usr/include/libvirt/libvirt.h", "libvirt-dev"),
    (
        "/usr/lib/x86_64-linux-gnu/libvirt/connection-driver/libvirt_driver_qemu.so",
        "libvirt-daemon-driver-qemu",
    ),
];

const LIBVIRT_SOCKET: &str = "/var/run/libvirt/libvirt-sock";

/// Start libvirtd and virtlogd (without systemd) when root and they are not
/// running, so the libvirt backend's tests run; they skip without a daemon.
fn ensure_libvirtd() -> Result<()> {
    if Path::new(LIBVIRT_SOCKET).exists() || !is_root() {
        return Ok(());
    }
    eprintln!("xtask: starting virtlogd and libvirtd");
    run(Command::new("virtlogd").arg("-d"))?;
    run(Command::new("libvirtd").arg("-d"))?;
    for _ in 0..100 {
        if Path::new(LIBVIRT_SOCKET).exists() {
            return Ok(());
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    bail!("libvirtd started but {LIBVIRT_SOCKET} did not appear within 20 s")
}

fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Install the Debian packages builds need when some are missing (as root,
/// with apt-get); otherwise say which to install.
fn ensure_build_tools() -> Result<()> {
    let mut missing: Vec<&str> = BUILD_TOOLS
        .iter()
        .filter(|(tool, _)| {
            !Command::new("sh")
                .args(["-c", "command -v \"$1\" >/dev/null", "sh", tool])
                .status()
                .is_ok_and(|s| s.success())
        })
        .map(|(_, package)| *package)
        .collect();
    missing.extend(
        BUILD_FILES
            .iter()
            .filter(|(file, _)| !Path::new(file).exists())
            .map(|(_, package)| *package),
    );
    if missing.is_empty() {
        return Ok(());
    }
    if !is_root() {
        bail!(
            "builds need Debian packages that are missing: run `sudo apt-get install {}`",
            missing.join(" ")
        );
    }
    let mut packages: Vec<String> = missing.iter().map(|p| p.to_string()).collect();
    // Some machines carry a newer qemu-utils (from backports) than the
    // release's QEMU accepts beside it: take the release's own.
    if missing.contains(&"qemu-system-x86")
        && let Some(codename) = debian_codename()
    {
        packages.push(format!("qemu-utils/{codename}"));
    }
    eprintln!("xtask: installing {}", packages.join(" "));
    let install = || {
        let mut cmd = Command::new("apt-get");
        cmd.args(["install", "-y", "-q", "--allow-downgrades"])
            .args(&packages)
            .env("DEBIAN_FRONTEND", "noninteractive");
        cmd
    };
    if install().status().is_ok_and(|s| s.success()) {
        return Ok(());
    }
    run(Command::new("apt-get").args(["update", "-q"]))?;
    run(&mut install())
}

/// `bookworm`, `trixie`…: this Debian release, from /etc/os-release.
fn debian_codename() -> Option<String> {
    std::fs::read_to_string("/etc/os-release")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("VERSION_CODENAME="))
        .map(|c| c.trim_matches('"').to_owned())
        .filter(|c| !c.is_empty())
}

/// Install the wasm32-wasip2 standard library when it is missing.
fn ensure_wasm_target() -> Result<()> {
    let out = Command::new("rustc")
        .args(["--print", "target-libdir", "--target", TARGET])
        .output()?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    if out.status.success() && libdir.is_dir() && std::fs::read_dir(&libdir)?.next().is_some() {
        return Ok(());
    }
    eprintln!("xtask: installing the {TARGET} target");
    run(Command::new("rustup").args(["target", "add", TARGET]))
}

/// Trust the project key and install every first-party bundle into `home`.
fn install(root: &Path, home: &Path) -> Result<()> {
    let cli = host_binary(root, "debug");
    let key = std::env::var_os("OPENFACTORY_SIGNING_KEY")
        .map(PathBuf::from)
        .unwrap_or_else(|| root.join("target/signing/project.key"))
        .with_extension("pub");
    run(Command::new(&cli)
        .arg("--home")
        .arg(home)
        .args(["plugin", "trust"])
        .arg(&key))?;
    let mut bundles: Vec<PathBuf> = std::fs::read_dir(root.join("target/bundles"))?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_dir())
        .collect();
    bundles.sort();
    for bundle in bundles {
        run(Command::new(&cli)
            .arg("--home")
            .arg(home)
            .args(["plugin", "install", "--replace"])
            .arg(&bundle))?;
    }
    Ok(())
}
