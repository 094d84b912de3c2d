//! The worker API's messages: what `openfactory worker` and the control
//! plane say to each other, as JSON over HTTPS. Paths are under
//! [`PREFIX`]; a worker authenticates with `Authorization: Bearer of_wkr_…`
//! and every call about a job carries that job's token in [`JOB_TOKEN`].

use openfactory_core::Plan;
use openfactory_store::JobKind;
use serde::{Deserialize, Serialize};

use crate::capabilities::Capabilities;
use crate::control::{BuildOutcome, TestOutcome, TestSpec};

pub const PREFIX: &str = "/api/worker/v1";
/// The header that carries a job's token.
pub const JOB_TOKEN: &str = "x-openfactory-job-token";
/// The header that carries an uploaded file's SHA-256.
pub const SHA256: &str = "x-openfactory-sha256";

/// How a refused worker token is reported (the worker then stops).
pub const UNAUTHORIZED: &str = "unauthorized";

/// `GET /whoami`: the worker a token belongs to.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WhoAmI {
    pub name: String,
}

/// `POST /claim`: the next job of one of `kinds` this worker can run. The
/// answer waits up to about 20 s for one; `204 No Content` when none came.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub kinds: Vec<JobKind>,
    pub capabilities: Capabilities,
    /// How long to wait for a job when none is ready (at most, and by
    /// default, about 20 s).
    #[serde(default)]
    pub wait_seconds: Option<u32>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claimed {
    pub kind: JobKind,
    pub id: String,
    /// The job token: shown once, needed by every later call about the job.
    pub token: String,
    pub attempt: u32,
    pub requeued_because: Option<String>,
    pub job: Job,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Job {
    Build { plan: Box<Plan> },
    TestRun(TestSpec),
}

/// `POST /jobs/{kind}/{id}/progress` (also a heartbeat).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Progress {
    pub stage: String,
    pub percent: u8,
    pub message: String,
    /// A test run's report so far (JSON text).
    #[serde(default)]
    pub report: Option<String>,
}

/// The answer to progress and `POST /jobs/{kind}/{id}/heartbeat`.
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct SignalReply {
    /// The owner asked for the job to stop.
    pub cancel: bool,
}

/// `POST /jobs/test_run/{id}/vm`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SetVm {
    pub vm_id: String,
}

/// `POST /jobs/build/{id}/finish`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishBuild {
    pub outcome: BuildOutcome,
    pub seconds: f64,
}

/// `POST /jobs/test_run/{id}/finish`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FinishTestRun {
    pub outcome: TestOutcome,
}

/// `POST /jobs/{kind}/{id}/release`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Release {
    pub reason: String,
}

/// `PUT /jobs/build/{id}/outputs/{name}` answers with what it stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stored {
    pub size_bytes: u64,
    pub sha256: String,
}

/// Every refusal: what is wrong and what to do.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Refusal {
    pub error: String,
    /// The lease is gone: stop working on the job.
    #[serde(default)]
    pub lease_lost: bool,
}
