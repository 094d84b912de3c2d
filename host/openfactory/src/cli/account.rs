//! `openfactory account …` and `openfactory key …`: accounts and MCP API keys
//! for deployments without sign-up (the operator creates them).

use std::io::Read as _;
use std::process::ExitCode;

use anyhow::Context as _;
use clap::Subcommand;
use openfactory_service::auth;
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

async fn store(config: &Config, url: Option<String>) -> anyhow::Result<Store> {
    std::fs::create_dir_all(&config.home)?;
    let url =
        url.unwrap_or_else(|| format!("sqlite://{}", config.home.join("openfactory.db").display()));
    Store::open(&url)
        .await
        .with_context(|| format!("opening the database {url}"))
}

async fn account_id(store: &Store, email: &str) -> anyhow::Result<String> {
    let email = auth::check_email(email).map_err(anyhow::Error::msg)?;
    Ok(store
        .account_by_email(&email)
        .await?
        .with_context(|| {
            format!("no account has the email {email}; create it with `openfactory account create`")
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
            let email = auth::check_email(&email).map_err(anyhow::Error::msg)?;
            let mut password = String::new();
            std::io::stdin().read_to_string(&mut password)?;
            let password = password.lines().next().unwrap_or("").to_owned();
            let hash = auth::hash_password(&password).map_err(anyhow::Error::msg)?;
            runtime.block_on(async {
                let store = store(config, database_url).await?;
                let account = store
                    .create_account(&auth::new_id(), &email, &hash)
                    .await
                    .map_err(|e| anyhow::anyhow!("{e}"))?;
                if operator {
                    store.set_operator(&account.email, true).await?;
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
            let id = account_id(&store, &email).await?;
            let account = store.account(&id).await?.context("the account vanished")?;
            store.set_operator(&account.email, !revoke).await?;
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
                let name = auth::check_key_name(&name).map_err(anyhow::Error::msg)?;
                let (key, prefix, hash) = auth::new_key();
                let stored = store
                    .create_key(&id, &auth::new_id(), &name, &prefix, &hash)
                    .await?;
                eprintln!(
                    "created key {} ({}) for {email}; it is shown only now:",
                    stored.key_id, stored.name
                );
                println!("{key}");
                store.close().await;
            }
            KeyCommand::List {
                email,
                database_url,
            } => {
                let store = store(config, database_url).await?;
                let id = account_id(&store, &email).await?;
                for k in store.keys(&id).await? {
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
                store.revoke_key(&id, &key_id).await?.with_context(|| {
                    format!("{email} has no key {key_id}; `openfactory key list` shows them")
                })?;
                println!("revoked {key_id}");
                store.close().await;
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}
