//! `openfactory plugin …`

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context as _, bail};
use clap::Subcommand;
use openfactory_plugin_host::runtime::{self, Runtime};
use openfactory_plugin_host::{
    Bundle, PluginHost, PublicKey, SecretKey, Signer, TrustStore, bundle, cache, registry,
};
use serde_json::json;

use crate::config::Config;

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
    /// Verify and install a bundle directory.
    Install {
        bundle: PathBuf,
        /// Replace an installed bundle of the same name.
        #[arg(long)]
        replace: bool,
    },
    /// Remove an installed plugin.
    Remove { name: String },
    /// Verify a bundle directory, or an installed plugin by name.
    Verify { bundle: String },
    /// Trust a public key to sign bundles (copies it into the trusted keys).
    Trust { key: PathBuf },
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
        #[arg(long)]
        out: PathBuf,
        /// Read-only files the plugin may read at /assets.
        #[arg(long)]
        assets: Option<PathBuf>,
        /// Sign the bundle with this key.
        #[arg(long)]
        key: Option<PathBuf>,
    },
    /// Sign (or re-sign) a bundle directory.
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
                        i.name,
                        i.version,
                        i.category,
                        i.summary,
                        signer(&p.signer)
                    );
                }
                for p in host.problems() {
                    println!("{:<12} NOT LOADED: {}", p.bundle, p.reason);
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
                println!("{} {} — {}", i.name, i.version, i.summary);
                println!("category:  {}", i.category);
                println!("reads:     {}", list(&i.reads));
                println!("requires:  {}", list(&i.requires));
                println!("conflicts: {}", list(&i.conflicts));
                println!(
                    "component: sha256:{} ({})",
                    p.feature.digest, p.bundle.manifest.wit
                );
                println!("signer:    {}", signer(&p.signer));
                println!("options:");
                print!("{}", crate::render::options(&i.options_schema));
            }
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Install { bundle, replace } => {
            let trust = TrustStore::load(&config.trusted_keys_dir())?;
            let (installed, signer_) = registry::install(
                &config.plugins_dir(),
                &bundle,
                &trust,
                config.allow_unsigned,
                replace,
            )?;
            println!(
                "installed {} {} ({})",
                installed.name(),
                installed.manifest.version,
                signer(&signer_)
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Remove { name } => {
            registry::remove(&config.plugins_dir(), &name)?;
            println!("removed {name}");
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Verify { bundle } => {
            let dir = if std::path::Path::new(&bundle).is_dir() {
                PathBuf::from(&bundle)
            } else {
                config.plugins_dir().join(&bundle)
            };
            let trust = TrustStore::load(&config.trusted_keys_dir())?;
            let opened = Bundle::open(&dir)?;
            match opened.verify(&trust, false) {
                Ok(s) => {
                    println!(
                        "{} {}: OK ({})",
                        opened.name(),
                        opened.manifest.version,
                        signer(&s)
                    );
                    Ok(ExitCode::SUCCESS)
                }
                Err(e) => {
                    println!("{}: FAILED: {e}", opened.name());
                    Ok(ExitCode::from(1))
                }
            }
        }
        PluginCommand::Trust { key } => {
            let public = PublicKey::read(&key)?;
            let dir = config.trusted_keys_dir();
            std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
            let target = dir.join(format!("{}.pub", public.id()));
            std::fs::write(&target, public.to_line())
                .with_context(|| format!("writing {}", target.display()))?;
            println!("trusted key {} ({})", public.id(), public.comment);
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
            assets,
            key,
        } => {
            let key = key.map(|k| SecretKey::read(&k)).transpose()?;
            let rt =
                Runtime::new(runtime::Limits::default()).map_err(|e| anyhow::anyhow!("{e}"))?;
            let digest = bundle::sha256_file(&component)?;
            let (prepared, _) = runtime::load(
                &rt,
                &cache::CompiledCache::new(None),
                "unpacked",
                &digest,
                &component,
                assets.clone(),
            )
            .map_err(|e| anyhow::anyhow!("{}: {e}", component.display()))?;
            let info = prepared
                .describe()
                .map_err(|e| anyhow::anyhow!("{}: describe failed: {e}", component.display()))?;
            let packed = bundle::pack(
                &out,
                &info.name,
                &info.version,
                &component,
                assets.as_deref(),
                key.as_ref(),
            )?;
            let state = if key.is_some() { "signed" } else { "unsigned" };
            println!(
                "packed {} {} into {} ({state})",
                packed.name(),
                packed.manifest.version,
                out.display()
            );
            Ok(ExitCode::SUCCESS)
        }
        PluginCommand::Sign { bundle, key } => {
            let secret = SecretKey::read(&key)?;
            bundle::sign(&bundle, &secret)?;
            println!(
                "signed {} with key {}",
                bundle.display(),
                secret.public("").id()
            );
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn signer(s: &Signer) -> String {
    match s {
        Signer::Trusted { key_id, comment } => format!("signed by {comment} ({key_id})"),
        Signer::Unverified { reason } => format!("UNVERIFIED: {reason}"),
    }
}

fn list(xs: &[String]) -> String {
    if xs.is_empty() {
        "—".into()
    } else {
        xs.join(", ")
    }
}
