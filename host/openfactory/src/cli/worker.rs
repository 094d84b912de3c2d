//! `openfactory worker` (builds and test runs on another machine, for a
//! control plane reached over HTTPS) and `openfactory worker-token …` (the
//! operator's side: enrol, list, revoke).

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use clap::Subcommand;
use openfactory_service::workers;
use openfactory_store::{JobKind, LeaseSettings};
use openfactory_worker::{Executors, RemoteControl};
use tokio_util::sync::CancellationToken;

use crate::cli::account::store;
use crate::cli::serve::VmArgs;
use crate::config::Config;

#[derive(Debug, Subcommand)]
pub enum WorkerTokenCommand {
    /// Enrol a worker: its token is printed once (give it to `openfactory worker --token`).
    Create {
        /// The worker's name: lowercase letters, digits and -, e.g. build-01.
        #[arg(long)]
        name: String,
        #[arg(long, env = "OPENFACTORY_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Every enrolled worker (never their tokens), with when each was last seen.
    List {
        #[arg(long, env = "OPENFACTORY_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Revoke a worker's token: it is refused from its next call, and its jobs go back to the queue.
    Revoke {
        name: String,
        #[arg(long, env = "OPENFACTORY_DATABASE_URL")]
        database_url: Option<String>,
    },
}

/// Which jobs a worker takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Jobs {
    Build,
    Test,
}

#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// The control plane's URL, e.g. https://factory.example.org.
    #[arg(long, env = "OPENFACTORY_SERVER", value_name = "URL")]
    pub server: String,
    /// This worker's token (`openfactory worker-token create` on the control plane).
    #[arg(long, env = "OPENFACTORY_WORKER_TOKEN", hide_env_values = true)]
    pub token: String,
    /// Which jobs to take.
    #[arg(long, value_delimiter = ',', default_value = "build,test")]
    pub jobs: Vec<Jobs>,
    /// Builds at the same time.
    #[arg(long, default_value_t = 1)]
    pub build_concurrency: usize,
    /// Test runs at the same time (each boots a VM).
    #[arg(long, default_value_t = 1)]
    pub test_concurrency: usize,
    #[command(flatten)]
    pub vms: VmArgs,
}

pub fn token(cmd: WorkerTokenCommand, config: &Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        match cmd {
            WorkerTokenCommand::Create { name, database_url } => {
                let store = store(config, database_url).await?;
                let enrolled = workers::enrol(&store, &name).await.map_err(anyhow::Error::msg)?;
                eprintln!("Worker {} enrolled. Its token (shown once):", enrolled.name);
                println!("{}", enrolled.token);
                eprintln!(
                    "Start it on its machine: openfactory worker --server URL --token {}…",
                    enrolled.prefix
                );
            }
            WorkerTokenCommand::List { database_url } => {
                let store = store(config, database_url).await?;
                let all = workers::list(&store).await.map_err(anyhow::Error::msg)?;
                if all.is_empty() {
                    eprintln!("No workers are enrolled; `openfactory worker-token create --name NAME` enrols one.");
                }
                for w in all {
                    let state = match &w.revoked_at {
                        Some(at) => format!("revoked {at}"),
                        None => "active".into(),
                    };
                    println!(
                        "{}\t{}…\t{state}\tlast seen {}\t{}",
                        w.name,
                        w.prefix,
                        w.last_seen_at.as_deref().unwrap_or("never"),
                        w.capabilities_json.as_deref().unwrap_or("")
                    );
                }
            }
            WorkerTokenCommand::Revoke { name, database_url } => {
                let store = store(config, database_url).await?;
                let (worker, requeued) = workers::revoke(&store, &name, LeaseSettings::default())
                    .await
                    .map_err(anyhow::Error::msg)?;
                println!(
                    "Worker {} revoked; {} of its jobs went back to the queue.",
                    worker.name,
                    requeued.len()
                );
            }
        }
        Ok(ExitCode::SUCCESS)
    })
}

pub fn run(args: WorkerArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let work_dir = config.home.join("worker");
        std::fs::create_dir_all(&work_dir)
            .with_context(|| format!("creating {}", work_dir.display()))?;
        let control =
            RemoteControl::new(&args.server, &args.token, &work_dir).map_err(anyhow::Error::msg)?;
        let name = control
            .whoami()
            .await
            .with_context(|| format!("asking {} who this worker is", args.server))?;
        let builder = Arc::new(config.builder());
        let removed = builder.recover()?;
        if !removed.is_empty() {
            tracing::warn!(scratch = ?removed, "removed scratch space of interrupted builds");
        }
        let vms = Arc::new(crate::vms::backend(&args.vms, &config.home.join("vms")).await?);
        // A worker's VMs are all throwaway test VMs of runs it held: after a
        // crash, what is left goes (the runs themselves were requeued).
        for vm in openfactory_vm::VmBackend::list(&*vms) {
            match openfactory_vm::VmBackend::delete(&*vms, &vm).await {
                Ok(()) => {
                    tracing::warn!(%vm, "removed a test VM an earlier run of this worker left")
                }
                Err(e) => tracing::warn!(%vm, error = %e, "could not remove a test VM left behind"),
            }
        }
        let control = Arc::new(control);
        let executors = Arc::new(Executors { builder, vms });
        let shutdown = CancellationToken::new();
        let mut slots = Vec::new();
        for (jobs, kind, concurrency) in [
            (Jobs::Build, JobKind::Build, args.build_concurrency),
            (Jobs::Test, JobKind::TestRun, args.test_concurrency),
        ] {
            if args.jobs.contains(&jobs) && concurrency > 0 {
                slots.push(tokio::spawn(openfactory_worker::slots::run(
                    control.clone(),
                    executors.clone(),
                    kind,
                    concurrency,
                    shutdown.clone(),
                )));
            }
        }
        anyhow::ensure!(
            !slots.is_empty(),
            "--jobs and the concurrencies leave nothing to run; take builds, tests or both"
        );
        eprintln!(
            "OpenFactory worker {name} is taking {} from {}",
            args.jobs
                .iter()
                .map(|j| match j {
                    Jobs::Build => "builds",
                    Jobs::Test => "test runs",
                })
                .collect::<Vec<_>>()
                .join(" and "),
            args.server
        );
        let on_signal = shutdown.clone();
        tokio::spawn(async move {
            crate::cli::serve::wait_for_signal().await;
            tracing::info!("shutting down: handing running jobs back");
            on_signal.cancel();
        });
        let refused = control.refused();
        tokio::select! {
            _ = shutdown.cancelled() => {}
            reason = refused => {
                eprintln!("error: the control plane refused this worker: {reason}");
                shutdown.cancel();
                for slot in slots {
                    let _ = slot.await;
                }
                return Ok(ExitCode::from(3));
            }
        }
        for slot in slots {
            let _ = slot.await;
        }
        Ok(ExitCode::SUCCESS)
    })
}
