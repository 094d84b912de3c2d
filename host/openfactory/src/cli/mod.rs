//! Command-line interface.

pub(crate) mod account;
mod author;
mod build;
mod plugin;
mod recipe;
pub mod serve;
mod test;
mod worker;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::config::Config;

#[derive(Debug, Parser)]
#[command(
    name = "openfactory",
    version,
    about = "Build, boot and test Debian images from recipes",
    propagate_version = true
)]
pub struct Args {
    #[command(flatten)]
    pub global: Global,
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, clap::Args)]
pub struct Global {
    /// Data directory: installed plugins, trusted keys, caches.
    #[arg(long, global = true, env = "OPENFACTORY_HOME", value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// The template catalog (`<category>/<template>.toml`).
    #[arg(
        long,
        global = true,
        env = "OPENFACTORY_RECIPES_DIR",
        default_value = "recipes",
        value_name = "DIR"
    )]
    pub recipes_dir: PathBuf,
    /// Load and install plugin bundles whose signature is missing or untrusted.
    #[arg(long, global = true, env = "OPENFACTORY_ALLOW_UNSIGNED_PLUGINS")]
    pub allow_unsigned_plugins: bool,
    /// Build cache: bootstrapped bases and .deb files (default ~/.cache/openfactory).
    #[arg(long, global = true, env = "OPENFACTORY_CACHE", value_name = "DIR")]
    pub cache: Option<PathBuf>,
    /// Largest size of the build cache, in GiB; older entries are evicted.
    #[arg(
        long,
        global = true,
        env = "OPENFACTORY_CACHE_MAX_GIB",
        default_value_t = 20
    )]
    pub cache_max_gib: u64,
    /// Debian mirror builds download from.
    #[arg(
        long,
        global = true,
        env = "OPENFACTORY_MIRROR",
        default_value = "http://deb.debian.org/debian"
    )]
    pub mirror: String,
    /// Mirror of the security suites (`<suite>-security`).
    #[arg(
        long,
        global = true,
        env = "OPENFACTORY_SECURITY_MIRROR",
        default_value = "http://deb.debian.org/debian-security"
    )]
    pub security_mirror: String,
    /// More log output (-v info, -vv debug); OPENFACTORY_LOG overrides.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Validate, plan and browse recipes.
    #[command(subcommand)]
    Recipe(recipe::RecipeCommand),
    /// Manage feature plugins: install, verify, sign.
    #[command(subcommand)]
    Plugin(plugin::PluginCommand),
    /// Build a bootable ISO from a recipe file or template id, here, with progress bars.
    Build(build::BuildArgs),
    /// Boot an ISO in a throwaway VM and run its recipe's checks (and yours), with JUnit output.
    Test(test::TestArgs),
    /// Accounts, for deployments where the operator creates them.
    #[command(subcommand)]
    Account(account::AccountCommand),
    /// MCP API keys (of_mcp_…) of an account.
    #[command(subcommand)]
    Key(account::KeyCommand),
    /// Serve MCP over HTTP (legacy SSE at /api/mcp/sse, Streamable HTTP at /api/mcp).
    Serve(serve::ServeArgs),
    /// Serve MCP on stdio.
    Mcp(serve::McpArgs),
    /// Run builds and test runs for a control plane, on this machine (no database needed).
    Worker(worker::WorkerArgs),
    /// Enrol, list and revoke remote workers (on the control plane's database).
    #[command(subcommand)]
    WorkerToken(worker::WorkerTokenCommand),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config {
        home: args.global.home.unwrap_or_else(Config::default_home),
        recipes_dir: args.global.recipes_dir,
        allow_unsigned: args.global.allow_unsigned_plugins,
        build_cache: args
            .global
            .cache
            .unwrap_or_else(Config::default_build_cache),
        cache_max_bytes: args.global.cache_max_gib.saturating_mul(1 << 30),
        mirrors: openfactory_build::Mirrors {
            debian: args.global.mirror.trim_end_matches('/').to_owned(),
            security: args.global.security_mirror.trim_end_matches('/').to_owned(),
        },
    };
    match args.command {
        Command::Recipe(cmd) => {
            quiet_on_closed_pipe();
            recipe::run(cmd, &config)
        }
        Command::Plugin(cmd) => {
            quiet_on_closed_pipe();
            plugin::run(cmd, &config)
        }
        Command::Build(args) => build::run(args, &config),
        Command::Test(args) => test::run(args, &config),
        Command::Account(cmd) => account::account(cmd, &config),
        Command::Key(cmd) => account::key(cmd, &config),
        Command::Serve(args) => serve::serve(args, &config),
        Command::Mcp(args) => serve::mcp(args, &config),
        Command::Worker(args) => worker::run(args, &config),
        Command::WorkerToken(cmd) => worker::token(cmd, &config),
    }
}

/// Let one-shot commands end quietly when their reader goes away
/// (`openfactory recipe plan x --json | head`), as Unix tools do. Servers keep
/// Rust's default (SIGPIPE ignored), so a vanished client never kills them.
fn quiet_on_closed_pipe() {
    #[cfg(unix)]
    // SAFETY: restoring the default disposition of SIGPIPE before any output.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

/// Print JSON to stdout.
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}
