//! The plugin author's loop: `openfactory plugin new` scaffolds a plugin (in
//! Rust, Python or JavaScript) that builds at once, and `openfactory plugin
//! test` builds it, plans a recipe with it in a throwaway home, shows the
//! steps and, with `--boot`, builds and boots the image and runs its checks.

pub mod scaffold;
mod toolchain;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use openfactory_plugin_host::{TrustStore, bundle, cache, grants, registry};

use crate::config::Config;
use crate::render::safe;

/// `plugin new NAME`: a plugin in `dir` (default `./NAME`) that builds for
/// wasm32-wasip2 and packs as it is: a Rust crate against the SDK at `sdk`,
/// or a Python app with its helper library and contract beside it.
pub fn new(
    name: &str,
    lang: scaffold::Lang,
    dir: Option<PathBuf>,
    sdk: Option<PathBuf>,
) -> anyhow::Result<ExitCode> {
    bundle::check_name(name).map_err(|r| anyhow::anyhow!("`{}`: {r}", safe(name)))?;
    let dir = dir.unwrap_or_else(|| PathBuf::from(name));
    if dir.exists() && std::fs::read_dir(&dir)?.next().is_some() {
        bail!(
            "{} exists and is not empty; choose another --dir, or remove it",
            dir.display()
        );
    }
    let files = scaffold::files(name, lang, sdk)?;
    for (path, text) in &files {
        let target = dir.join(path);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
        }
        std::fs::write(&target, text).with_context(|| format!("writing {}", target.display()))?;
    }
    println!("created plugin `{name}` in {}:", dir.display());
    for (path, _) in &files {
        println!("  {path}");
    }
    println!(
        "next: openfactory plugin test {}   (builds it, plans a recipe with it, shows the steps)",
        dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

/// `plugin test DIR`: build the plugin in `dir`, install it (unsigned, with
/// every privilege it declares) into a throwaway home beside the operator's
/// installed plugins, plan `recipe` (default: a recipe with just this
/// feature), show the plan; with `boot`, build the image and run its checks.
pub fn test(
    dir: &Path,
    recipe: Option<PathBuf>,
    boot: bool,
    config: &Config,
) -> anyhow::Result<ExitCode> {
    let component = toolchain::build(dir)?;
    let scratch = tempfile::tempdir()?;
    let home = throwaway_home(config, scratch.path())?;
    let name = install_unsigned(&home, dir, &component, scratch.path())?;
    let recipe = match recipe {
        Some(path) => path,
        None => {
            let path = scratch.path().join(format!("{name}-test.toml"));
            std::fs::write(
                &path,
                format!(
                    "name = \"{name}-test\"\nbase_image = \"debian-bookworm\"\nfeatures = [{{ name = \"{name}\" }}]\n"
                ),
            )?;
            println!("recipe: a recipe with just `{name}` (give one with --recipe FILE)");
            path
        }
    };
    let outcome = super::recipe::evaluate(&home, &recipe, true)?;
    let Some(plan) = &outcome.plan else {
        print!(
            "{}",
            crate::render::validation(&recipe.display().to_string(), &outcome)
        );
        return Ok(ExitCode::from(1));
    };
    print!("{}", crate::render::plan(plan, &outcome.diagnostics));
    if !boot {
        return Ok(ExitCode::SUCCESS);
    }
    let iso = scratch.path().join(format!("{name}-test.iso"));
    let built = super::build::run(
        super::build::BuildArgs {
            recipe: recipe.clone(),
            output: Some(iso.clone()),
            log: false,
            json: false,
        },
        &home,
    )?;
    if built != ExitCode::SUCCESS {
        return Ok(built);
    }
    super::test::run(
        super::test::TestArgs {
            recipe,
            iso,
            tests: Vec::new(),
            junit: None,
            json: false,
            accel: openfactory_vm::AccelSetting::Auto,
            memory_mb: 1024,
            timeout_seconds: 900,
        },
        &home,
    )
}

/// A home in `scratch` with the operator's trusted keys and installed
/// plugins (and what each was granted), unsigned plugins allowed, and links
/// to the components the operator's home has compiled (keyed by digest), so
/// that installed plugins are not compiled again. What this home compiles
/// goes with it: the author's builds, whose digests change with every
/// Python or JavaScript build, never fill the operator's cache.
fn throwaway_home(config: &Config, scratch: &Path) -> anyhow::Result<Config> {
    let home = Config {
        home: scratch.join("home"),
        allow_unsigned: true,
        ..config.clone()
    };
    std::fs::create_dir_all(home.plugins_dir())?;
    std::fs::create_dir_all(home.cache_dir())?;
    if let Ok(compiled) = std::fs::read_dir(config.cache_dir()) {
        for entry in compiled.flatten() {
            std::os::unix::fs::symlink(entry.path(), home.cache_dir().join(entry.file_name()))?;
        }
    }
    if config.trusted_keys_dir().is_dir() {
        registry::copy_dir(&config.trusted_keys_dir(), &home.trusted_keys_dir())?;
    }
    for installed in registry::bundle_dirs(&config.plugins_dir())? {
        let name = installed
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        registry::copy_dir(&installed, &home.plugins_dir().join(&name))?;
        grants::save(
            &home.plugins_dir(),
            &name,
            &grants::load(&config.plugins_dir(), &name),
        )?;
    }
    Ok(home)
}

/// Pack `component` with `dir`'s assets and capabilities, unsigned, and
/// install it into `home` (over an installed plugin of its name), granted
/// every privilege it declares: its name.
fn install_unsigned(
    home: &Config,
    dir: &Path,
    component: &Path,
    scratch: &Path,
) -> anyhow::Result<String> {
    let assets = dir.join("assets");
    let capabilities = dir.join("capabilities.toml");
    let packed = scratch.join("bundle");
    let (bundle, _) = super::plugin::pack_component(
        &cache::CompiledCache::new(Some(home.cache_dir())),
        component,
        assets.is_dir().then_some(assets.as_path()),
        capabilities.is_file().then_some(capabilities.as_path()),
        None,
        Some(&packed),
        true,
    )?;
    let name = bundle.name().to_owned();
    let plugins = home.plugins_dir();
    if plugins.join(&name).exists() {
        std::fs::remove_dir_all(plugins.join(&name))?;
    }
    let host = home.host();
    let trust = TrustStore::load(&home.trusted_keys_dir())?;
    let options = registry::InstallOptions {
        allow_unsigned: true,
        cache_dir: host.cache_dir.clone(),
        limits: host.limits,
        ..registry::InstallOptions::new(&trust)
    };
    let done = registry::install_with(&plugins, &packed, &options)
        .map_err(|e| anyhow::anyhow!("{}", safe(e)))?;
    let declared = done.bundle.manifest.capabilities.privileges();
    grants::save(&plugins, &name, &declared)?;
    let granted = if declared.is_empty() {
        String::new()
    } else {
        let names: Vec<String> = declared.iter().map(|p| p.to_string()).collect();
        format!("; granted what it declares: {}", names.join(", "))
    };
    println!(
        "plugin {} {}: built, packed and installed in a throwaway home (unsigned{granted})",
        safe(&name),
        safe(&done.bundle.manifest.version),
    );
    Ok(name)
}
