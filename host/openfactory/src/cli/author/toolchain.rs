//! Building a plugin's component for `openfactory plugin test`: cargo for
//! Rust, componentize-py for Python, componentize-js for JavaScript.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, bail};

/// The componentize-py release `plugin test` is tested with (and `cargo
/// xtask test` installs).
pub const COMPONENTIZE_PY_VERSION: &str = "0.25.1";

/// The componentize-js release `plugin test` is tested with (and `cargo
/// xtask test` installs).
pub const COMPONENTIZE_JS_VERSION: &str = "0.23.0";

/// Build the plugin in `dir` by its language: the component's path.
pub fn build(dir: &Path) -> anyhow::Result<PathBuf> {
    if dir.join("Cargo.toml").is_file() {
        build_rust(dir)
    } else if dir.join("app.py").is_file() {
        build_python(dir)
    } else if dir.join("app.js").is_file() {
        build_js(dir)
    } else {
        bail!(
            "{} holds neither Cargo.toml (a Rust plugin), app.py (a Python plugin) nor \
             app.js (a JavaScript plugin); `openfactory plugin new NAME` makes one",
            dir.display()
        );
    }
}

/// `cargo build --release` for wasm32-wasip2: the component's path. The
/// target directory is cargo's own choice (`CARGO_TARGET_DIR`, else
/// `DIR/target`).
fn build_rust(dir: &Path) -> anyhow::Result<PathBuf> {
    let manifest = dir.join("Cargo.toml");
    let text = std::fs::read_to_string(&manifest)
        .with_context(|| format!("reading {}", manifest.display()))?;
    let package: toml::Table = text
        .parse()
        .with_context(|| format!("reading {}", manifest.display()))?;
    let crate_name = package
        .get("package")
        .and_then(|p| p.get("name"))
        .and_then(|n| n.as_str())
        .with_context(|| format!("{}: no [package] name", manifest.display()))?
        .replace('-', "_");
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| dir.join("target"));
    eprintln!("building {} for wasm32-wasip2 (cargo)…", dir.display());
    let status = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()))
        .args(["build", "--release", "--target", "wasm32-wasip2", "--manifest-path"])
        .arg(&manifest)
        .arg("--target-dir")
        .arg(&target_dir)
        .status()
        .context(
            "running cargo (is the Rust toolchain installed, with `rustup target add wasm32-wasip2`?)",
        )?;
    if !status.success() {
        bail!("the plugin did not build (cargo said why, above)");
    }
    Ok(target_dir.join(format!("wasm32-wasip2/release/{crate_name}.wasm")))
}

/// componentize-py on `DIR/app.py` against `DIR/wit`.
fn build_python(dir: &Path) -> anyhow::Result<PathBuf> {
    let tool = Componentizer {
        var: "COMPONENTIZE_PY",
        program: "componentize-py",
        install: format!("pip install componentize-py=={COMPONENTIZE_PY_VERSION}"),
    };
    tool.build(dir, |command, out| {
        command
            .arg("-d")
            .arg(dir.join("wit"))
            .args(["-w", "plugin", "componentize", "app", "-p"])
            .arg(dir)
            .arg("-o")
            .arg(out);
    })
}

/// componentize-js on `DIR/app.js` against `DIR/wit/feature.wit`. The host
/// offers no HTTP, so the component imports none.
fn build_js(dir: &Path) -> anyhow::Result<PathBuf> {
    let tool = Componentizer {
        var: "COMPONENTIZE_JS",
        program: "componentize-js",
        install: format!(
            "npm install -g @bytecodealliance/componentize-js@{COMPONENTIZE_JS_VERSION}"
        ),
    };
    tool.build(dir, |command, out| {
        command
            .arg(dir.join("app.js"))
            .arg("--wit")
            .arg(dir.join("wit/feature.wit"))
            .args(["-n", "plugin", "-d", "http", "fetch-event", "-o"])
            .arg(out);
    })
}

/// A tool that builds a component from an interpreted language's source:
/// the program named by the environment variable `var`, else `program` on
/// the PATH; `install` says how to get it.
struct Componentizer {
    var: &'static str,
    program: &'static str,
    install: String,
}

impl Componentizer {
    /// Build `DIR/target/plugin.wasm` with the arguments `args` adds (given
    /// that path), unless no source changed since it was built.
    fn build(&self, dir: &Path, args: impl FnOnce(&mut Command, &Path)) -> anyhow::Result<PathBuf> {
        let out = dir.join("target/plugin.wasm");
        if up_to_date(dir, &out) {
            return Ok(out);
        }
        if !dir.join("wit/feature.wit").is_file() {
            bail!(
                "{} holds no wit/feature.wit: copy the contract there (wit/feature.wit of \
                 OpenFactory; `openfactory plugin new --lang python|js` does)",
                dir.display()
            );
        }
        std::fs::create_dir_all(dir.join("target"))?;
        let tool = std::env::var_os(self.var).unwrap_or_else(|| self.program.into());
        let shown = Path::new(&tool).display().to_string();
        eprintln!("building {} for wasm32-wasip2 ({shown})…", dir.display());
        let mut command = Command::new(&tool);
        args(&mut command, &out);
        let status = command.status().with_context(|| {
            format!(
                "running {shown}: install it (`{}`), or set {} to its path",
                self.install, self.var
            )
        })?;
        if !status.success() {
            bail!("the plugin did not build ({shown} said why, above)");
        }
        Ok(out)
    }
}

/// Whether `out` is newer than every source file in `dir` (all but
/// `target/`, `node_modules/` and `__pycache__/`): then a Python or
/// JavaScript build, which is never incremental, is skipped.
fn up_to_date(dir: &Path, out: &Path) -> bool {
    fn newest(dir: &Path) -> Option<std::time::SystemTime> {
        let mut latest = std::fs::metadata(dir).ok()?.modified().ok()?;
        for entry in std::fs::read_dir(dir).ok()?.flatten() {
            let name = entry.file_name();
            if ["target", "node_modules", "__pycache__"].contains(&name.to_str().unwrap_or("")) {
                continue;
            }
            let kind = entry.file_type().ok()?;
            let modified = if kind.is_dir() {
                newest(&entry.path())?
            } else {
                entry.metadata().ok()?.modified().ok()?
            };
            latest = latest.max(modified);
        }
        Some(latest)
    }
    let built = std::fs::metadata(out).and_then(|m| m.modified()).ok();
    let fresh = matches!((built, newest(dir)), (Some(built), Some(source)) if built > source);
    if fresh {
        eprintln!(
            "{} is up to date (no source changed since it was built)",
            out.display()
        );
    }
    fresh
}
