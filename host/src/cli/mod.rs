//! Command-line interface.

mod plugin;
mod recipe;
mod serve;

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
    /// Serve MCP over HTTP (legacy SSE at /api/mcp/sse, Streamable HTTP at /api/mcp).
    Serve(serve::ServeArgs),
    /// Serve MCP on stdio.
    Mcp(serve::McpArgs),
}

pub fn run(args: Args) -> anyhow::Result<ExitCode> {
    let config = Config {
        home: args.global.home.unwrap_or_else(Config::default_home),
        recipes_dir: args.global.recipes_dir,
        allow_unsigned: args.global.allow_unsigned_plugins,
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
        Command::Serve(args) => serve::serve(args, &config),
        Command::Mcp(args) => serve::mcp(args, &config),
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
