//! `openfactory plugin …`

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use openfactory_plugin_host::runtime::{self, Runtime};
use openfactory_plugin_host::{
    Bundle, PluginHost, PublicKey, SecretKey, Signer, TrustStore, archive, bundle, cache, registry,
    signing,
};
use serde_json::json;

use std::collections::BTreeSet;

use openfactory_core::capability::{Capabilities, Privilege};
use openfactory_plugin_host::grants;

use crate::config::Config;
use crate::render::safe;

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// List installed plugins.
    List {
        #[arg(long)]
        json: bool,
    },
    /// Show one plugin: options schema, what it reads, requires and conflicts with, signer.
    Info {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Verify and install a bundle: a `NAME-VERSION.ofbundle` file, a bundle
    /// directory, or `oci://REGISTRY/REPOSITORY:TAG` (or `@sha256:…`, pinned);
    /// prints what it may do.
    ///
    /// The component is loaded in the sandbox first and must describe itself
    /// as its manifest says; nothing is installed otherwise.
    Install {
        bundle: String,
        /// Replace an installed bundle of the same name.
        #[arg(long)]
        replace: bool,
        /// With --replace: accept a bundle signed by another key than the
        /// installed one (or signed over unsigned, or unsigned over signed).
        /// Without it such a replacement is refused.
        #[arg(long, requires = "replace")]
        new_signer: bool,
        /// Grant privileges the bundle declares: names separated by commas
        /// (`pam,sudoers`), or `declared` for all it declares. Without a
        /// grant, steps that need a privilege are refused at plan time.
        #[arg(long, value_name = "PRIVILEGES")]
        grant: Option<String>,
    },
    /// Set the privileges an installed plugin is granted (replacing earlier
    /// grants; `none` revokes them all).
    Grant {
        name: String,
        /// Privilege names separated by commas, `declared`, or `none`.
        privileges: String,
    },
    /// Remove an installed plugin.
    Remove { name: String },
    /// Verify an installed plugin by name (`ssh`), or a bundle file or
    /// directory by path (anything with a `/` or ending in `.ofbundle`:
    /// `./ssh`, `ssh-0.1.0.ofbundle`, `target/bundles/ssh`).
    Verify { bundle: String },
    /// Push a bundle (a `.ofbundle` file or a bundle directory) to an OCI
    /// registry; prints the location pinned to its digest. Credentials come
    /// from Docker's config.json (`docker login`).
    Push {
        bundle: PathBuf,
        /// `oci://REGISTRY/REPOSITORY:TAG`.
        location: String,
    },
    /// Trust a public key to sign bundles (copies it into the trusted keys).
    Trust {
        key: PathBuf,
        /// Trust the key only for bundles of these names, separated by
        /// commas (`ssh,docker`). Without it the key may sign any name.
        /// Trusting a key again replaces its restriction.
        #[arg(long, value_name = "NAMES")]
        names: Option<String>,
    },
    /// Create a signing key pair (KEY and KEY.pub).
    Keygen {
        key: PathBuf,
        /// Who owns the key, stored in the public key.
        #[arg(long, default_value = "OpenFactory plugin author")]
        comment: String,
    },
    /// Make a bundle from a component: its name and version come from the component itself.
    Pack {
        component: PathBuf,
        /// Where to write the bundle: a file ending in `.ofbundle`, or a
        /// directory (missing, empty, or a previous bundle, replaced only
        /// once the new one is complete). Default: `NAME-VERSION.ofbundle`
        /// in the current directory.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Replace a directory --out even when it is neither empty nor a
        /// bundle, and everything in it.
        #[arg(long)]
        force: bool,
        /// Read-only files the plugin may read at /assets.
        #[arg(long)]
        assets: Option<PathBuf>,
        /// Sign the bundle with this key.
        #[arg(long)]
        key: Option<PathBuf>,
        /// What the plugin's steps touch (a TOML file: packages, files,
        /// units, groups, users, sysctls, kernel_args, ports,
        /// package_sources, run, privileges; see plugins/README.md). Without
        /// it the plugin may emit no step.
        #[arg(long, value_name = "FILE")]
        capabilities: Option<PathBuf>,
    },
    /// Scaffold a new plugin that builds and packs as it is (then `plugin test DIR`).
    New {
        name: String,
        #[arg(long, value_enum, default_value = "rust")]
        lang: super::author::scaffold::Lang,
        /// Where to create it (default: ./NAME); must be missing or empty.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// The plugin SDK to build against (plugins/sdk of an OpenFactory
        /// checkout; default: the checkout this binary was built from).
        #[arg(long)]
        sdk: Option<PathBuf>,
    },
    /// The author's loop: build the plugin in DIR, install it into a
    /// throwaway home beside the installed plugins, plan a recipe with it and
    /// show the steps; with --boot, build the image, boot it and run its checks.
    Test {
        dir: PathBuf,
        /// The recipe to plan (default: one with just this feature).
        #[arg(long, value_name = "FILE")]
        recipe: Option<PathBuf>,
        /// Build and boot the image and run its checks too (root, several minutes).
        #[arg(long)]
        boot: bool,
    },
    /// Sign (or re-sign) a bundle file or directory.
    Sign {
        bundle: PathBuf,
        #[arg(long)]
        key: PathBuf,
    },
}

pub fn run(cmd: PluginCommand, config: &Config) -> anyhow::Result<ExitCode> {
    match cmd {
        PluginCommand::List { json } => {
            let host = PluginHost::load(&config.host())?;
            if json {
                let rows: Vec<_> = host
                    .plugins()
                    .map(|p| {
                        let i = &p.feature.info;
                        json!({"name": i.name, "version": i.version, "category": i.category, "summary": i.summary, "digest": p.feature.digest, "signer": signer(&p.signer)})
                    })
                    .collect();
                let problems: Vec<_> = host
                    .problems()
                    .iter()
                    .map(|p| json!({"bundle": p.bundle, "reason": p.reason}))
                    .collect();
                super::print_json(&json!({"plugins": rows, "not_loaded": problems}))?;
            } else {
                if host.plugins().next().is_none() {
                    println!(
                        "No plugins installed in {}.",
                        config.plugins_dir().display()
                    );
                }
                for p in host.plugins() {
                    let i = &p.feature.info;
                    println!(
                        "{:<12} {:<8} {:<14} {}  [{}]",
                        safe(&i.name),
                        safe(&i.version),
                        safe(&i.category),
                        safe(&i.summary),
                        signer(&p.signer)
                    );
                    for (privilege, state) in
                        privileges(&p.feature.capabilities, &p.feature.granted)
                    {
                        println!("{:<12} privilege {privilege}: {state}", "");
                    }
                }
                for p in host.problems() {
                    println!("{:<12} NOT LOADED: {}", safe(&p.bundle), safe(&p.reason));
                }
            }
            Ok(if host.problems().is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            })
        }
        PluginCommand::Info { name, json } => {
            let host = PluginHost::load(&config.host())?;
            let Some(p) = host.plugin(&name) else {
                bail!("plugin `{name}` is not installed (see `openfactory plugin list`)");
            };
            let i = &p.feature.info;
            let value = json!({
                "name": i.name, "version": i.version, "summary": i.summary, "category": i.category,
                "reads": i.reads, "requires": i.requires, "conflicts": i.conflicts,
                "options_schema": i.options_schema, "digest": p.feature.digest,
                "wit": p.bundle.manifest.wit, "signer": signer(&p.signer), "path": p.bundle.dir,
            });
            if json {
                super::print_json(&value)?;
            } else {
                println!(
                    "{} {} — {}",
                    safe(&i.name),
                    safe(&i.version),
                    safe(&i.summary)
                );
                println!("category:  {}", safe(&i.category));
                println!("reads:     {}", safe(list(&i.reads)));
                println!("requires:  {}", safe(list(&i.requires)));
                println!("conflicts: {}", safe(list(&i.conflicts)));
                print!(
                    "{}",
                    capabilities(&p.feature.capabilities, &p.feature.granted)
                );
                println!(
                    "digest:    sha256:{} (component and assets: what recipe ids cover)",
                    p.feature.digest
                );
                println!(
                    "component: sha256:{} ({})",
                    p.bundle.manifest.component_digest().unwrap_or("?"),
                    p.bundle.manifest.wit
                );
                println!("signer:    {}", signer(&p.signer));
                println!("options:");
                print!("{}", crate::render::options(&i.options_schema));
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Install {
            bundle,
            replace,
            new_signer,
            grant,
        } => {
            let trust = TrustStore::load(&config.trusted_keys_dir())?;
            let source = fetch(&bundle, config)?;
            let bundle = source.dir().to_owned();
            // Parse the grant before anything lands: a typo installs nothing.
            let declared = source.bundle.manifest.capabilities.privileges();
            let granted = grant
                .map(|g| grants::parse(&g, &declared))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--grant: {e}"))?;
            let before = grants::load(&config.plugins_dir(), source.bundle.name());
            let host = config.host();
            let options = registry::InstallOptions {
                trust: &trust,
                allow_unsigned: config.allow_unsigned,
                replace,
                new_signer,
                cache_dir: host.cache_dir,
                limits: host.limits,
            };
            // The messages carry plugin-supplied text (names, versions, key
            // comments): escaped.
            let done = registry::install_with(&config.plugins_dir(), &bundle, &options)
                .map_err(|e| anyhow::anyhow!("{}", safe(e)))?;
            let (installed, signer_) = (done.bundle, done.signer);
            let name = installed.name().to_owned();
            if let Some(granted) = &granted {
                grants::save(&config.plugins_dir(), &name, granted)?;
            }
            let granted = grants::load(&config.plugins_dir(), &name);
            println!(
                "installed {} {} ({})",
                safe(&name),
                safe(&installed.manifest.version),
                signer(&signer_)
            );
            if let Some(old) = &done.replaced {
                if old.signer_changed {
                    println!(
                        "SIGNER CHANGED: replaced version {} ({}) with a bundle {}",
                        safe(&old.version),
                        safe(&old.signer),
                        signer(&signer_)
                    );
                    if !before.is_empty() {
                        let revoked: Vec<String> = before.iter().map(|p| p.to_string()).collect();
                        println!(
                            "the privileges granted to the previous signer's bundle were revoked: {}",
                            revoked.join(", ")
                        );
                    }
                } else {
                    println!(
                        "replaced version {} ({})",
                        safe(&old.version),
                        safe(&old.signer)
                    );
                }
            }
            print!(
                "{}",
                capabilities(&installed.manifest.capabilities, &granted)
            );
            let missing: Vec<String> = declared
                .difference(&granted)
                .map(|p| p.to_string())
                .collect();
            if !missing.is_empty() {
                println!(
                    "not granted: {} (steps that need them are refused; grant with `openfactory plugin grant {name} {}`)",
                    missing.join(", "),
                    missing.join(",")
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Grant { name, privileges } => {
            let dir = config.plugins_dir().join(&name);
            let installed = Bundle::open(&dir).with_context(|| {
                format!("plugin `{name}` is not installed (see `openfactory plugin list`)")
            })?;
            let declared = installed.manifest.capabilities.privileges();
            let granted =
                grants::parse(&privileges, &declared).map_err(|e| anyhow::anyhow!("{e}"))?;
            let undeclared: Vec<String> = granted
                .difference(&declared)
                .map(|p| p.to_string())
                .collect();
            if !undeclared.is_empty() {
                bail!(
                    "plugin `{name}` does not declare {}; a grant gives only what the bundle declares",
                    undeclared.join(", ")
                );
            }
            grants::save(&config.plugins_dir(), &name, &granted)?;
            print!(
                "{}",
                capabilities(&installed.manifest.capabilities, &granted)
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Remove { name } => {
            registry::remove(&config.plugins_dir(), &name)?;
            println!("removed {name}");
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Verify { bundle } => {
            // A name is the installed plugin of that name, whatever the
            // current directory holds; a path says so with a `/`.
            let installed =
                !bundle.contains('/') && !bundle.ends_with(&format!(".{}", archive::EXTENSION));
            let dir = if installed {
                bundle::check_name(&bundle).map_err(|r| {
                    anyhow::anyhow!(
                        "`{}`: {r} (to verify a bundle directory, give its path: `./{}`)",
                        safe(&bundle),
                        safe(&bundle)
                    )
                })?;
                let dir = config.plugins_dir().join(&bundle);
                if !dir.is_dir() {
                    bail!(
                        "plugin `{bundle}` is not installed in {} (see `openfactory plugin list`; to verify a bundle directory, give its path: `./{bundle}`)",
                        config.plugins_dir().display()
                    );
                }
                dir
            } else {
                PathBuf::from(&bundle)
            };
            let trust = TrustStore::load(&config.trusted_keys_dir())?;
            let source = archive::Source::open(&dir, &std::env::temp_dir())
                .map_err(|e| anyhow::anyhow!("{}", safe(e)))?;
            let opened = &source.bundle;
            let checked = if installed && opened.name() != bundle {
                Err(format!(
                    "the installed directory `{bundle}` holds a bundle whose manifest names it `{}`, so it is not loaded; a plugin's directory is its name",
                    opened.name()
                ))
            } else {
                opened.verify(&trust, false).map_err(|e| e.to_string())
            };
            match checked {
                Ok(s) => {
                    println!(
                        "{} {}: OK ({})",
                        safe(opened.name()),
                        safe(&opened.manifest.version),
                        signer(&s)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("{}: FAILED: {}", safe(opened.name()), safe(e));
                    Ok(ExitCode::from(1))
                }
            }
        }
        PluginCommand::Trust { key, names } => {
            let public = PublicKey::read(&key)?;
            let names = names
                .map(|n| signing::parse_names(&n))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--names: {e}"))?;
            let dir = config.trusted_keys_dir();
            let target = signing::trust(&dir, &public, names.as_ref())?;
            let scope = match &names {
                Some(names) => format!(
                    "for bundles named {} only",
                    names.iter().cloned().collect::<Vec<_>>().join(", ")
                ),
                None => "for any bundle name".into(),
            };
            println!(
                "trusted key {} ({}) {scope}, in {}",
                public.id(),
                safe(&public.comment),
                target.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Keygen { key, comment } => {
            let secret = SecretKey::generate()?;
            let public = secret.write(&key, &comment)?;
            println!(
                "secret key: {} (keep it private)\npublic key: {} (id {})",
                key.display(),
                public.display(),
                secret.public(&comment).id()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Pack {
            component,
            out,
            force,
            assets,
            key,
            capabilities,
        } => {
            let key = key.map(|k| SecretKey::read(&k)).transpose()?;
            let (packed, out) = pack_component(
                &cache::CompiledCache::new(None),
                &component,
                assets.as_deref(),
                capabilities.as_deref(),
                key.as_ref(),
                out.as_deref(),
                force,
            )?;
            let state = if key.is_some() { "signed" } else { "unsigned" };
            println!(
                "packed {} {} into {} ({state})",
                safe(packed.name()),
                safe(&packed.manifest.version),
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::New {
            name,
            lang,
            dir,
            sdk,
        } => super::author::new(&name, lang, dir, sdk),
        PluginCommand::Test { dir, recipe, boot } => {
            super::author::test(&dir, recipe, boot, config)
        }
        PluginCommand::Push { bundle, location } => {
            let location = openfactory_oci::Location::parse(&location)?;
            let scratch = tempfile::tempdir()?;
            let source = archive::Source::open(&bundle, scratch.path())
                .map_err(|e| anyhow::anyhow!("{}", safe(e)))?;
            let opened = &source.bundle;
            let bytes = archive::to_bytes(source.dir())?;
            let info = openfactory_oci::BundleInfo {
                file_name: archive::file_name(opened),
                name: opened.name().to_owned(),
                version: opened.manifest.version.clone(),
            };
            let pushed = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(openfactory_oci::push(&location, &info, bytes))?;
            let state = if opened.signature_key_id().is_some() {
                "signed"
            } else {
                "unsigned"
            };
            println!(
                "pushed {} {} ({state}) to {location}\ndigest: {}\ninstall it with: openfactory plugin install {}",
                safe(opened.name()),
                safe(&opened.manifest.version),
                pushed.digest,
                pushed.pinned
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Sign { bundle, key } => {
            let secret = SecretKey::read(&key)?;
            if archive::is_bundle_file(&bundle) {
                // Unpacked, signed, and written back whole.
                let scratch = tempfile::tempdir()?;
                let unpacked = archive::unpack(&bundle, scratch.path())?;
                bundle::sign(unpacked.path(), &secret)?;
                archive::write(unpacked.path(), &bundle)?;
            } else {
                bundle::sign(&bundle, &secret)?;
            }
            println!(
                "signed {} with key {}",
                bundle.display(),
                secret.public("").id()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// Pack `component` (compiled through `cache`; its name and version from its own description) with
/// its assets, declared capabilities (a TOML file) and signature into `out`:
/// a `.ofbundle` file, or a directory (see `bundle::pack_with`; `force`
/// replaces a directory that is not a bundle). Without `out`, the file
/// `NAME-VERSION.ofbundle` here. Returns the bundle and where it went.
pub fn pack_component(
    cache: &cache::CompiledCache,
    component: &Path,
    assets: Option<&Path>,
    capabilities: Option<&Path>,
    key: Option<&SecretKey>,
    out: Option<&Path>,
    force: bool,
) -> anyhow::Result<(Bundle, PathBuf)> {
    let declared: Capabilities = match capabilities {
        Some(file) => {
            let text = std::fs::read_to_string(file)
                .with_context(|| format!("reading {}", file.display()))?;
            let caps: Capabilities = toml::from_str(&text)
                .map_err(|e| anyhow::anyhow!("{}: {}", file.display(), e.message()))?;
            if let Some((field, reason)) = caps.check().into_iter().next() {
                bail!("{}: `{field}` {reason}", file.display());
            }
            caps
        }
        None => Capabilities::default(),
    };
    let rt = Runtime::new(runtime::Limits::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
    let digest = bundle::sha256_file(component)?;
    let (prepared, _) = runtime::load(
        &rt,
        cache,
        "unpacked",
        &digest,
        component,
        assets.map(Path::to_owned),
    )
    .map_err(|e| anyhow::anyhow!("{}: {e}", component.display()))?;
    let info = prepared
        .describe()
        .map_err(|e| anyhow::anyhow!("{}: describe failed: {e}", component.display()))?;
    let out = out.map(Path::to_owned).unwrap_or_else(|| {
        PathBuf::from(format!(
            "{}-{}.{}",
            info.name,
            info.version,
            archive::EXTENSION
        ))
    });
    // A file is packed as a directory first, then written whole.
    let as_file = out.extension().is_some_and(|e| e == archive::EXTENSION);
    let staging = tempfile::tempdir()?;
    let dir = if as_file {
        staging.path().join(&info.name)
    } else {
        out.clone()
    };
    let packed = bundle::pack_with(
        &dir,
        force,
        &info.name,
        &info.version,
        component,
        assets,
        &declared,
        key,
    )?;
    if as_file {
        archive::write(&dir, &out)?;
    }
    Ok((packed, out))
}

/// A bundle to install, opened: a directory, a `.ofbundle` file (unpacked
/// into the plugins directory's scratch space), or an OCI location (pulled,
/// its digests checked, then unpacked likewise). Nothing is installed yet.
pub fn fetch(source: &str, config: &Config) -> anyhow::Result<archive::Source> {
    let scratch = config.plugins_dir();
    std::fs::create_dir_all(&scratch).with_context(|| format!("creating {}", scratch.display()))?;
    if openfactory_oci::Location::is_oci(source) {
        let location = openfactory_oci::Location::parse(source)?;
        let pulled = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?
            .block_on(openfactory_oci::pull(&location))?;
        let what = PathBuf::from(location.to_string());
        let unpacked = archive::unpack_bytes(&pulled.bytes, &what, &scratch)
            .map_err(|e| anyhow::anyhow!("{}", safe(e)))?;
        return archive::Source::from_unpacked(unpacked)
            .map_err(|e| anyhow::anyhow!("{}", safe(e)));
    }
    archive::Source::open(std::path::Path::new(source), &scratch)
        .map_err(|e| anyhow::anyhow!("{}", safe(e)))
}

/// Have the bundle at `source` installed (`serve --plugin`): kept when the
/// installed bundle of its name has the same digest, installed or replaced
/// otherwise, with every check `plugin install --replace` makes (a bundle
/// from another signer is refused). Says what it did, in one line.
pub fn ensure_installed(source: &str, config: &Config) -> anyhow::Result<String> {
    let fetched = fetch(source, config)?;
    let wanted = &fetched.bundle;
    let name = wanted.name().to_owned();
    if let Ok(installed) = Bundle::open(&config.plugins_dir().join(&name))
        && installed.manifest.bundle_digest() == wanted.manifest.bundle_digest()
    {
        return Ok(format!(
            "plugin {} {}: installed already, at sha256:{}",
            safe(&name),
            safe(&wanted.manifest.version),
            wanted.manifest.bundle_digest()
        ));
    }
    let trust = TrustStore::load(&config.trusted_keys_dir())?;
    let host = config.host();
    let options = registry::InstallOptions {
        trust: &trust,
        allow_unsigned: config.allow_unsigned,
        replace: true,
        new_signer: false,
        cache_dir: host.cache_dir,
        limits: host.limits,
    };
    let done = registry::install_with(&config.plugins_dir(), fetched.dir(), &options)
        .map_err(|e| anyhow::anyhow!("{}", safe(e)))?;
    let verb = match &done.replaced {
        Some(old) => format!("replaced version {} with", safe(&old.version)),
        None => "installed".into(),
    };
    Ok(format!(
        "plugin {}: {verb} {} ({}), at sha256:{}",
        safe(&name),
        safe(&done.bundle.manifest.version),
        signer(&done.signer),
        done.bundle.manifest.bundle_digest()
    ))
}

fn signer(s: &Signer) -> String {
    match s {
        Signer::Trusted { key_id, comment } => {
            format!("signed by {} ({key_id})", safe(comment))
        }
        Signer::Unverified { reason } => format!("UNVERIFIED: {}", safe(reason)),
    }
}

/// Each privilege the capabilities imply, and whether it is granted.
fn privileges(
    caps: &Capabilities,
    granted: &BTreeSet<Privilege>,
) -> impl Iterator<Item = (Privilege, &'static str)> {
    caps.privileges().into_iter().map(|p| {
        let state = if granted.contains(&p) {
            "granted"
        } else {
            "NOT granted"
        };
        (p, state)
    })
}

/// What a plugin may touch, and its privileges with whether each is granted.
fn capabilities(caps: &Capabilities, granted: &BTreeSet<Privilege>) -> String {
    let mut out = String::new();
    let summary = caps.summary();
    if summary.is_empty() {
        out.push_str(
            "may touch: nothing (the bundle declares no capabilities; its steps are refused)\n",
        );
    } else {
        out.push_str("may touch:\n");
        for (what, items) in summary {
            out.push_str(&format!("  {what}: {}\n", safe(items)));
        }
    }
    for (privilege, state) in privileges(caps, granted) {
        out.push_str(&format!(
            "privilege {privilege} ({}): {state}\n",
            privilege.meaning()
        ));
    }
    out
}

fn list(xs: &[String]) -> String {
    if xs.is_empty() {
        "—".into()
    } else {
        xs.join(", ")
    }
}
