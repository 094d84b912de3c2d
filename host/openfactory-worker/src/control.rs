//! What an executor needs from whoever handed it a job: a narrow trait with
//! two implementations, the store in this process ([`crate::LocalControl`])
//! and a control plane over HTTPS ([`crate::RemoteControl`]). Executors never
//! know which; every call but `claim` goes through the job's lease.

use std::future::Future;
use std::path::PathBuf;

use openfactory_core::Plan;
use openfactory_core::plan::PlannedCheck;
use openfactory_store::{JobKind, Lease, Signal};
use serde::{Deserialize, Serialize};

/// Why a call through a lease did not happen.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// The lease is no longer this worker's (the job was requeued or ended):
    /// stop working on it and report nothing more.
    #[error("the lease on {kind} {id} was lost")]
    LeaseLost { kind: JobKind, id: String },
    /// This worker may not ask (its token was revoked or is unknown).
    #[error("refused: {0}")]
    Refused(String),
    /// The control plane or the store did not answer; worth retrying.
    #[error("{0}")]
    Unavailable(String),
}

/// A claimed build: the plan was made on the control plane, where the
/// recipe's plugins ran; the worker only executes it.
#[derive(Debug, Clone)]
pub struct BuildTask {
    pub lease: Lease,
    pub plan: Plan,
}

/// A claimed test run: the checks, the VM's size, and the build to boot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestSpec {
    pub build_id: String,
    pub iso_sha256: String,
    pub iso_size_bytes: u64,
    pub checks: Vec<PlannedCheck>,
    pub memory_mb: u32,
    pub vcpus: u32,
    pub timeout_seconds: u32,
}

#[derive(Debug, Clone)]
pub struct TestTask {
    pub lease: Lease,
    pub spec: TestSpec,
}

#[derive(Debug, Clone)]
pub enum Task {
    Build(BuildTask),
    TestRun(TestTask),
}

/// How a build ended, as its worker saw it.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum BuildOutcome {
    Completed {
        iso_sha256: String,
        iso_size_bytes: u64,
        /// Stage timings, layers, the base used.
        result: serde_json::Value,
    },
    Failed {
        error: String,
        failed_step: Option<String>,
    },
    Cancelled,
}

impl BuildOutcome {
    /// The word metrics count it under.
    pub fn word(&self) -> &'static str {
        match self {
            BuildOutcome::Completed { .. } => "completed",
            BuildOutcome::Failed { .. } => "failed",
            BuildOutcome::Cancelled => "cancelled",
        }
    }
}

/// How a test run ended.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TestOutcome {
    /// passed, failed, error, stopped or timed_out.
    pub status: String,
    pub message: String,
    pub passed: u32,
    pub total: u32,
    /// The whole report (`openfactory_testrun::RunReport`).
    pub report: serde_json::Value,
}

/// The files a build leaves for its owner, in the order they are published.
pub const BUILD_OUTPUTS: [&str; 4] = [
    openfactory_build::pipeline::LOG_FILE,
    openfactory_build::pipeline::PACKAGES_FILE,
    openfactory_build::pipeline::SBOM_FILE,
    openfactory_build::pipeline::ISO_FILE,
];

pub type Reply<T> = Result<T, ControlError>;

/// The calls an executor makes.
pub trait Control: Send + Sync + 'static {
    /// The next job of one of `kinds` this worker can run, waiting a while
    /// for one; `None` when none came.
    fn claim(&self, kinds: &[JobKind]) -> impl Future<Output = Reply<Option<Task>>> + Send;

    /// Progress (a heartbeat as well), with a test run's report so far.
    fn progress(
        &self,
        lease: &Lease,
        stage: &str,
        percent: u8,
        message: &str,
        report: Option<&str>,
    ) -> impl Future<Output = Reply<Signal>> + Send;

    fn heartbeat(&self, lease: &Lease) -> impl Future<Output = Reply<Signal>> + Send;

    /// Record a test run's VM before it exists.
    fn set_vm(&self, lease: &Lease, vm_id: &str) -> impl Future<Output = Reply<()>> + Send;

    /// Where a build writes its outputs on this machine.
    fn build_dir(&self, build_id: &str) -> PathBuf;

    /// Put a build's outputs (those of [`BUILD_OUTPUTS`] that exist in its
    /// build directory) where its owner downloads them from.
    fn publish(&self, lease: &Lease) -> impl Future<Output = Reply<()>> + Send;

    fn finish_build(
        &self,
        lease: &Lease,
        outcome: BuildOutcome,
        seconds: f64,
    ) -> impl Future<Output = Reply<()>> + Send;

    /// The ISO a test run boots, on this machine's disk.
    fn iso(&self, task: &TestTask) -> impl Future<Output = Reply<PathBuf>> + Send;

    fn finish_test_run(
        &self,
        lease: &Lease,
        outcome: TestOutcome,
    ) -> impl Future<Output = Reply<()>> + Send;

    /// Hand a job back unfinished (this worker is stopping).
    fn release(&self, lease: &Lease, reason: &str) -> impl Future<Output = Reply<()>> + Send;
}
