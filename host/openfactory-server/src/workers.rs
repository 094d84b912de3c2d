//! The control plane's side of the worker API (`openfactory_worker::wire`): remote
//! workers claim jobs, report through their leases, upload a build's outputs
//! and fetch the ISO a test run boots. Workers hold no database credentials;
//! every call is checked against the store (a revoked worker is refused on
//! its next call, on every control plane).

use std::sync::Arc;

use axum::Json;
use axum::body::Body;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use openfactory_service::App;
use openfactory_store::{JobKind, JobToken, Lease, WorkerLookup, WorkerRecord};

use openfactory_worker::control::{BUILD_OUTPUTS, ControlError, Task};
use openfactory_worker::local::{CLAIM_WAIT, claim, finish_build, finish_test_run};
use openfactory_worker::wire::{self, JOB_TOKEN, Refusal, SHA256};

/// The routes, under [`wire::PREFIX`].
pub fn router(app: Arc<App>) -> axum::Router {
    let jobs = format!("{}/jobs/{{kind}}/{{id}}", wire::PREFIX);
    axum::Router::new()
        .route(&format!("{}/whoami", wire::PREFIX), get(whoami))
        .route(&format!("{}/claim", wire::PREFIX), post(claim_job))
        .route(&format!("{jobs}/heartbeat"), post(heartbeat))
        .route(&format!("{jobs}/progress"), post(progress))
        .route(&format!("{jobs}/vm"), post(set_vm))
        .route(&format!("{jobs}/finish"), post(finish))
        .route(&format!("{jobs}/release"), post(release))
        .route(&format!("{jobs}/iso"), get(iso))
        .route(
            &format!("{jobs}/outputs/{{name}}"),
            put(upload).layer(DefaultBodyLimit::disable()),
        )
        .with_state(app)
}

/// A refusal as the wire says it.
struct Refused(StatusCode, Refusal);

impl Refused {
    fn new(status: StatusCode, error: impl Into<String>) -> Refused {
        Refused(
            status,
            Refusal {
                error: error.into(),
                lease_lost: false,
            },
        )
    }
}

impl IntoResponse for Refused {
    fn into_response(self) -> Response {
        (self.0, Json(self.1)).into_response()
    }
}

impl From<ControlError> for Refused {
    fn from(e: ControlError) -> Refused {
        match e {
            ControlError::LeaseLost { .. } => Refused(
                StatusCode::CONFLICT,
                Refusal {
                    error: format!("{e}: stop working on this job"),
                    lease_lost: true,
                },
            ),
            ControlError::Refused(message) => Refused::new(StatusCode::BAD_REQUEST, message),
            ControlError::Unavailable(message) => {
                tracing::warn!(error = %message, "worker API: store unavailable");
                Refused::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "the control plane's database is unavailable; retry",
                )
            }
        }
    }
}

impl From<openfactory_store::StoreError> for Refused {
    fn from(e: openfactory_store::StoreError) -> Refused {
        ControlError::from(e).into()
    }
}

type Reply<T> = Result<T, Refused>;

/// The worker a request's bearer token belongs to.
async fn worker(app: &App, headers: &HeaderMap, capabilities: Option<&str>) -> Reply<WorkerRecord> {
    let token = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .map(str::trim)
        .ok_or_else(|| {
            Refused::new(
                StatusCode::UNAUTHORIZED,
                "Authorization: send `Bearer of_wkr_…`, a worker token (`openfactory worker-token create`)",
            )
        })?;
    let hash = openfactory_service::workers::token_hash(token).ok_or_else(|| {
        Refused::new(
            StatusCode::UNAUTHORIZED,
            "Authorization: that is not a worker token (they start with of_wkr_)",
        )
    })?;
    match app.store.worker_by_token(&hash, capabilities).await? {
        WorkerLookup::Valid(worker) => Ok(worker),
        WorkerLookup::Revoked(worker) => Err(Refused::new(
            StatusCode::UNAUTHORIZED,
            format!(
                "worker `{}`: its token was revoked; enrol it again with a new token",
                worker.name
            ),
        )),
        WorkerLookup::Unknown => Err(Refused::new(
            StatusCode::UNAUTHORIZED,
            "Authorization: unknown worker token",
        )),
    }
}

/// The lease a request names: its kind and id in the path, its token in a header.
fn lease(worker: &WorkerRecord, headers: &HeaderMap, kind: &str, id: &str) -> Reply<Lease> {
    let kind = match kind {
        "build" => JobKind::Build,
        "test_run" => JobKind::TestRun,
        other => {
            return Err(Refused::new(
                StatusCode::NOT_FOUND,
                format!(
                    "`{}` is not a job kind; use build or test_run",
                    other.escape_debug()
                ),
            ));
        }
    };
    let token = headers
        .get(JOB_TOKEN)
        .and_then(|v| v.to_str().ok())
        .and_then(JobToken::parse)
        .ok_or_else(|| {
            Refused::new(
                StatusCode::BAD_REQUEST,
                format!("{JOB_TOKEN}: send the job token the claim answered with"),
            )
        })?;
    Ok(Lease {
        kind,
        id: id.to_owned(),
        token,
        worker: worker.worker_id(),
        attempt: 0,
        requeued_because: None,
    })
}

/// A call about one job: the worker its bearer token belongs to, and the
/// lease the path (kind, id) and the job-token header name.
struct Leased {
    worker: WorkerRecord,
    lease: Lease,
}

impl axum::extract::FromRequestParts<Arc<App>> for Leased {
    type Rejection = Refused;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        app: &Arc<App>,
    ) -> Result<Self, Self::Rejection> {
        let Path(params) =
            Path::<std::collections::HashMap<String, String>>::from_request_parts(parts, app)
                .await
                .map_err(|_| Refused::new(StatusCode::NOT_FOUND, "no such worker API path"))?;
        let (Some(kind), Some(id)) = (params.get("kind"), params.get("id")) else {
            return Err(Refused::new(
                StatusCode::NOT_FOUND,
                "no such worker API path",
            ));
        };
        let worker = worker(app, &parts.headers, None).await?;
        let lease = lease(&worker, &parts.headers, kind, id)?;
        Ok(Leased { worker, lease })
    }
}

/// A JSON body, or a refusal that names the field (never the parser's words
/// about Rust types).
fn body<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Reply<T> {
    let mut json = serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(&mut json).map_err(|e| {
        let path = e.path().to_string();
        let field = if path.is_empty() || path == "." {
            "the request body".to_owned()
        } else {
            format!("field `{path}`")
        };
        let inner = e.into_inner();
        Refused::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{field}: not what the worker API expects (line {}, column {}); upgrade the worker to this control plane's version",
                inner.line(),
                inner.column()
            ),
        )
    })
}

async fn whoami(State(app): State<Arc<App>>, headers: HeaderMap) -> Reply<Json<wire::WhoAmI>> {
    let worker = worker(&app, &headers, None).await?;
    Ok(Json(wire::WhoAmI { name: worker.name }))
}

async fn claim_job(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    bytes: axum::body::Bytes,
) -> Reply<Response> {
    let request: wire::ClaimRequest = body(&bytes)?;
    let capabilities = serde_json::to_string(&request.capabilities).ok();
    let worker = worker(&app, &headers, capabilities.as_deref()).await?;
    if request.kinds.is_empty() {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "kinds: name at least one of build, test_run",
        ));
    }
    let wait = request.wait_seconds.map_or(CLAIM_WAIT, |s| {
        std::time::Duration::from_secs(u64::from(s)).min(CLAIM_WAIT)
    });
    let deadline = tokio::time::Instant::now() + wait;
    loop {
        for &kind in &request.kinds {
            if let Some(task) =
                claim(&app, &worker.worker_id(), &request.capabilities, kind).await?
            {
                tracing::info!(worker = %worker.name, %kind, "a remote worker claimed a job");
                return Ok(Json(claimed(task)).into_response());
            }
        }
        let wake = &app.wake;
        tokio::select! {
            _ = wake.builds.notified(), if request.kinds.contains(&JobKind::Build) => {}
            _ = wake.test_runs.notified(), if request.kinds.contains(&JobKind::TestRun) => {}
            _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            _ = tokio::time::sleep_until(deadline) => return Ok(StatusCode::NO_CONTENT.into_response()),
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
    }
}

fn claimed(task: Task) -> wire::Claimed {
    let (lease, job) = match task {
        Task::Build(t) => (
            t.lease,
            wire::Job::Build {
                plan: Box::new(t.plan),
            },
        ),
        Task::TestRun(t) => (t.lease, wire::Job::TestRun(t.spec)),
    };
    wire::Claimed {
        kind: lease.kind,
        id: lease.id.clone(),
        token: lease.token.as_str().to_owned(),
        attempt: lease.attempt,
        requeued_because: lease.requeued_because.clone(),
        job,
    }
}

async fn heartbeat(
    State(app): State<Arc<App>>,
    Leased { lease, .. }: Leased,
) -> Reply<Json<wire::SignalReply>> {
    let signal = app.store.heartbeat(&lease).await?;
    Ok(Json(wire::SignalReply {
        cancel: signal.cancel,
    }))
}

async fn progress(
    State(app): State<Arc<App>>,
    Leased { lease, .. }: Leased,
    bytes: axum::body::Bytes,
) -> Reply<Json<wire::SignalReply>> {
    let report: wire::Progress = body(&bytes)?;
    let signal = app
        .store
        .job_progress(&lease, &report.stage, report.percent, &report.message)
        .await?;
    if let (Some(partial), JobKind::TestRun) = (&report.report, lease.kind) {
        app.store.test_run_report(&lease, partial).await?;
    }
    Ok(Json(wire::SignalReply {
        cancel: signal.cancel,
    }))
}

async fn set_vm(
    State(app): State<Arc<App>>,
    Leased { lease, .. }: Leased,
    bytes: axum::body::Bytes,
) -> Reply<StatusCode> {
    let vm: wire::SetVm = body(&bytes)?;
    if vm.vm_id.is_empty()
        || vm.vm_id.len() > 64
        || !vm
            .vm_id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
    {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            "vm_id: letters, digits and -, at most 64",
        ));
    }
    app.store.set_test_run_vm(&lease, &vm.vm_id).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn finish(
    State(app): State<Arc<App>>,
    Leased { worker, lease }: Leased,
    bytes: axum::body::Bytes,
) -> Reply<StatusCode> {
    match lease.kind {
        JobKind::Build => {
            let finish: wire::FinishBuild = body(&bytes)?;
            if let openfactory_worker::BuildOutcome::Completed { iso_sha256, .. } = &finish.outcome
            {
                // The ISO the worker says it made is the one it uploaded.
                let stored =
                    stored_sha256(&app, &lease.id, openfactory_build::pipeline::ISO_FILE).await;
                if stored.as_deref() != Some(iso_sha256.as_str()) {
                    return Err(Refused::new(
                        StatusCode::BAD_REQUEST,
                        "outcome.iso_sha256: no uploaded ISO has that SHA-256; upload the ISO (PUT …/outputs/image.iso) first",
                    ));
                }
            }
            app.metrics
                .build_finished(finish.outcome.word(), finish.seconds);
            finish_build(&app, &lease, &finish.outcome).await?;
        }
        JobKind::TestRun => {
            let finish: wire::FinishTestRun = body(&bytes)?;
            finish_test_run(&app, &lease, &finish.outcome).await?;
        }
    }
    tracing::info!(worker = %worker.name, kind = %lease.kind, id = %lease.id, "a remote worker finished a job");
    Ok(StatusCode::NO_CONTENT)
}

async fn release(
    State(app): State<Arc<App>>,
    Leased { lease, .. }: Leased,
    bytes: axum::body::Bytes,
) -> Reply<StatusCode> {
    let release: wire::Release = body(&bytes)?;
    app.store.release(&lease, &release.reason).await?;
    app.wake.builds.notify_waiters();
    app.wake.test_runs.notify_waiters();
    Ok(StatusCode::NO_CONTENT)
}

/// The SHA-256 recorded when an output was stored.
async fn stored_sha256(app: &App, build_id: &str, name: &str) -> Option<String> {
    let sidecar = format!("{name}.sha256");
    let bytes = app
        .artifacts
        .read_small(build_id, &sidecar, 128)
        .await
        .ok()
        .flatten()?;
    Some(String::from_utf8_lossy(&bytes).trim().to_owned())
}

fn store_refusal(e: openfactory_artifacts::Error) -> Refused {
    match e {
        openfactory_artifacts::Error::Checksum { expected, actual } => Refused::new(
            StatusCode::BAD_REQUEST,
            format!(
                "{SHA256}: the upload's SHA-256 is {actual}, not {expected}; nothing was kept, send it again"
            ),
        ),
        openfactory_artifacts::Error::Source(e) => Refused::new(
            StatusCode::BAD_REQUEST,
            format!("the upload broke off ({e}); send it again"),
        ),
        openfactory_artifacts::Error::NotFound { build_id, name } => Refused::new(
            StatusCode::NOT_FOUND,
            format!("build {build_id} has no stored {name}"),
        ),
        other => {
            tracing::error!(error = %other, "worker API: the artifact store failed");
            Refused::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "the artifact store did not answer; retry",
            )
        }
    }
}

/// `PUT …/outputs/{name}`: one of a build's outputs, streamed into the
/// artifact store while hashed; kept only if its SHA-256 is the one the
/// worker announced (the store never shows a partial or mismatched file).
async fn upload(
    State(app): State<Arc<App>>,
    Path(params): Path<std::collections::HashMap<String, String>>,
    Leased { lease, .. }: Leased,
    headers: HeaderMap,
    request: Body,
) -> Reply<Json<wire::Stored>> {
    let name = params.get("name").cloned().unwrap_or_default();
    if lease.kind != JobKind::Build {
        return Err(Refused::new(
            StatusCode::NOT_FOUND,
            "only builds have outputs",
        ));
    }
    if !BUILD_OUTPUTS.contains(&name.as_str()) {
        return Err(Refused::new(
            StatusCode::BAD_REQUEST,
            format!(
                "name: `{}` is not a build output; use one of {}",
                name.escape_debug(),
                BUILD_OUTPUTS.join(", ")
            ),
        ));
    }
    let expected = headers
        .get(SHA256)
        .and_then(|v| v.to_str().ok())
        .filter(|v| v.len() == 64 && v.bytes().all(|b| b.is_ascii_hexdigit()))
        .map(str::to_ascii_lowercase)
        .ok_or_else(|| {
            Refused::new(
                StatusCode::BAD_REQUEST,
                format!("{SHA256}: send the file's SHA-256 (64 hex digits)"),
            )
        })?;
    // The lease is held (and is checked again at finish).
    app.store.heartbeat(&lease).await?;
    let receipt = app
        .artifacts
        .put_stream(
            &lease.id,
            &name,
            request.into_data_stream(),
            Some(&expected),
        )
        .await
        .map_err(store_refusal)?;
    let sidecar = format!("{name}.sha256");
    let sha = bytes::Bytes::from(receipt.sha256.clone());
    let once = futures::stream::once(async move { Ok::<_, std::io::Error>(sha) });
    app.artifacts
        .put_stream(&lease.id, &sidecar, once, None)
        .await
        .map_err(store_refusal)?;
    Ok(Json(wire::Stored {
        size_bytes: receipt.size_bytes,
        sha256: receipt.sha256,
    }))
}

/// `GET /jobs/test_run/{id}/iso`: the ISO of the build a leased run tests.
async fn iso(State(app): State<Arc<App>>, Leased { lease, .. }: Leased) -> Reply<Response> {
    if lease.kind != JobKind::TestRun {
        return Err(Refused::new(
            StatusCode::NOT_FOUND,
            "only test runs boot an ISO",
        ));
    }
    let build_id = app.store.leased_test_run_build(&lease).await?;
    let download = app
        .artifacts
        .get(&build_id, openfactory_build::pipeline::ISO_FILE, None)
        .await
        .map_err(store_refusal)?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (header::CONTENT_LENGTH, download.size_bytes.to_string()),
        ],
        Body::from_stream(download.stream),
    )
        .into_response())
}
