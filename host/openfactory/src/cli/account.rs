//! `openfactory account …` and `openfactory key …`: accounts and MCP API keys
//! for deployments without sign-up (the operator creates them), through the
//! same service operations as the web console and `/api/auth/*`.

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use openfactory_service::auth;
use openfactory_service::{Action, Error};
use openfactory_store::Store;

use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum AccountCommand {
    /// Create an account; the password is read from stdin (one line).
    Create {
        email: String,
        /// Make it an operator (sees plugin load problems and bundle locations in the web console).
        #[arg(long)]
        operator: bool,
        #[arg(long, env = "OPENFACTORY_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Make an account an operator, or (with --revoke) no longer one.
    Operator {
        email: String,
        #[arg(long)]
        revoke: bool,
        #[arg(long, env = "OPENFACTORY_DATABASE_URL")]
        database_url: Option<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum KeyCommand {
    /// Create an MCP API key for an account; the key is printed once.
    Create {
        #[arg(long)]
        email: String,
        /// What the key is for, e.g. "Claude Desktop".
        #[arg(long)]
        name: String,
        #[arg(long, env = "OPENFACTORY_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// An account's keys (never their secrets).
    List {
        #[arg(long)]
        email: String,
        #[arg(long, env = "OPENFACTORY_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Revoke a key: a running server refuses it from its next request on.
    Revoke {
        #[arg(long)]
        email: String,
        key_id: String,
        #[arg(long, env = "OPENFACTORY_DATABASE_URL")]
        database_url: Option<String>,
    },
}

/// The database of `url`, or SQLite in the home directory (for the CLI's
/// database commands).
pub(crate) async fn store(config: &Config, url: Option<String>) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.home)?;
    let url =
        url.unwrap_or_else(|| format!("sqlite://{}", config.home.join("openfactory.db").display()));
    Store::open(&url)
        .await
        .with_context(|| format!("opening the database {url}"))
}

/// A service error as the CLI says it: its message, and the command that helps.
fn said(e: Error) -> anyhow::Error {
    match e.see {
        Some(Action::ListKeys) => anyhow::anyhow!("{e}; `openfactory key list` shows them"),
        _ => anyhow::Error::msg(e),
    }
}

async fn account_id(store: &Store, email: &str) -> anyhow::Result<String> {
    Ok(auth::account_by_email(store, email)
        .await
        .map_err(said)?
        .with_context(|| {
            format!(
                "no account has the email {}; create it with `openfactory account create`",
                email.trim().to_ascii_lowercase()
            )
        })?
        .id)
}

pub fn account(cmd: AccountCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    match cmd {
        AccountCommand::Create {
            email,
            operator,
            database_url,
        } => {
            // A wrong email is said before the password is waited for.
            auth::check_email(&email).map_err(said)?;
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.lines().next().unwrap_or("").to_owned();
            runtime.block_on(async {
                let store = store(config, database_url).await?;
                let account = auth::create_account(&store, &email, &password)
                    .await
                    .map_err(said)?;
                if operator {
                    auth::set_operator(&store, &account.email, true)
                        .await
                        .map_err(said)?;
                }
                println!(
                    "created account {} ({}){}",
                    account.id,
                    account.email,
                    if operator { ", an operator" } else { "" }
                );
                store.close().await;
                Ok(ExitCode::SUCCESS)
            })
        }
        AccountCommand::Operator {
            email,
            revoke,
            database_url,
        } => runtime.block_on(async {
            let store = store(config, database_url).await?;
            let account = auth::set_operator(&store, &email, !revoke)
                .await
                .map_err(said)?;
            println!(
                "{} is {} an operator",
                account.email,
                if revoke { "no longer" } else { "now" }
            );
            store.close().await;
            Ok(ExitCode::SUCCESS)
        }),
    }
}

pub fn key(cmd: KeyCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cmd {
            KeyCommand::Create {
                email,
                name,
                database_url,
            } => {
                let store = store(config, database_url).await?;
                let id = account_id(&store, &email).await?;
                let created = auth::create_key(&store, &id, &name).await.map_err(said)?;
                eprintln!(
                    "created key {} ({}) for {email}; it is shown only now:",
                    created.key_id, created.name
                );
                println!("{}", created.key);
                store.close().await;
            }
            KeyCommand::List {
                email,
                database_url,
            } => {
                let store = store(config, database_url).await?;
                let id = account_id(&store, &email).await?;
                for k in auth::keys(&store, &id).await.map_err(said)? {
                    println!(
                        "{}  {}…  {:<24}  created {}  last used {}{}",
                        k.key_id,
                        k.prefix,
                        k.name,
                        k.created_at,
                        k.last_used_at.as_deref().unwrap_or("never"),
                        k.revoked_at
                            .map(|r| format!("  revoked {r}"))
                            .unwrap_or_default()
                    );
                }
                store.close().await;
            }
            KeyCommand::Revoke {
                email,
                key_id,
                database_url,
            } => {
                let store = store(config, database_url).await?;
                let id = account_id(&store, &email).await?;
                // This process holds no streams: a running server refuses
                // the key from its next request on.
                let streams = auth::Auth::default();
                auth::revoke_key(&store, &streams, &id, &key_id)
                    .await
                    .map_err(said)?;
                println!("revoked {key_id}");
                store.close().await;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
