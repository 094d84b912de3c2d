//! [`Control`] on another machine: `openfactory worker` talks to a control
//! plane's worker API ([`crate::wire`]) over HTTP(S), with its worker token;
//! it holds no database credentials. Builds write into its own work
//! directory and upload their outputs; test runs download the ISO they boot
//! (verified, cached by SHA-256).

use std::path::{Path, PathBuf};
use std::time::Duration;

use openfactory_store::{JobKind, JobToken, Lease, Signal};
use reqwest::StatusCode;
use sha2::Digest;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::capabilities::Capabilities;
use crate::control::{
    BUILD_OUTPUTS, BuildOutcome, BuildTask, Control, ControlError, Reply, Task, TestOutcome,
    TestTask,
};
use crate::wire::{self, JOB_TOKEN, SHA256};

/// How often a failed upload or download is tried again.
const TRIES: u32 = 3;

pub struct RemoteControl {
    http: reqwest::Client,
    /// The control plane's base URL, without a trailing `/`.
    server: String,
    token: String,
    work_dir: PathBuf,
    /// Set when the control plane refuses this worker's token.
    refused: tokio::sync::watch::Sender<Option<String>>,
    /// The name the control plane knows it by (from `whoami`), for its logs.
    name: std::sync::OnceLock<String>,
}

impl RemoteControl {
    pub fn new(server: &str, token: &str, work_dir: &Path) -> Result<RemoteControl, ControlError> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("openfactory-worker/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ControlError::Unavailable(format!("HTTP client: {e}")))?;
        Ok(RemoteControl {
            http,
            server: server.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
            work_dir: work_dir.to_owned(),
            refused: tokio::sync::watch::channel(None).0,
            name: std::sync::OnceLock::new(),
        })
    }

    /// The name the control plane knows this worker by: a quick check of the
    /// URL and the token before any job is asked for.
    pub async fn whoami(&self) -> Reply<String> {
        let request = self.http.get(self.url("/whoami")).bearer_auth(&self.token);
        let me: wire::WhoAmI = json(self.send(request, None).await?).await?;
        let _ = self.name.set(me.name.clone());
        Ok(me.name)
    }

    /// Resolves when the control plane refuses this worker's token (it was
    /// revoked): the worker should stop.
    pub async fn refused(&self) -> String {
        let mut rx = self.refused.subscribe();
        loop {
            if let Some(reason) = rx.borrow_and_update().clone() {
                return reason;
            }
            if rx.changed().await.is_err() {
                std::future::pending::<()>().await;
            }
        }
    }

    fn note(&self, reply: Reply<reqwest::Response>) -> Reply<reqwest::Response> {
        if let Err(ControlError::Refused(reason)) = &reply {
            if reason.starts_with(wire::UNAUTHORIZED) {
                self.refused.send_replace(Some(reason.clone()));
            }
        }
        reply
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}{path}", self.server, wire::PREFIX)
    }

    fn job_url(&self, lease: &Lease, what: &str) -> String {
        self.url(&format!(
            "/jobs/{}/{}/{what}",
            lease.kind.as_str(),
            lease.id
        ))
    }

    fn post(&self, url: String, lease: Option<&Lease>) -> reqwest::RequestBuilder {
        let request = self.http.post(url).bearer_auth(&self.token);
        match lease {
            Some(lease) => request.header(JOB_TOKEN, lease.token.as_str()),
            None => request,
        }
    }

    /// Send a request; its answer, or the refusal as a [`ControlError`].
    async fn send(
        &self,
        request: reqwest::RequestBuilder,
        lease: Option<&Lease>,
    ) -> Reply<reqwest::Response> {
        let response = request
            .timeout(Duration::from_secs(60))
            .send()
            .await
            .map_err(|e| {
                ControlError::Unavailable(format!("the control plane {}: {e}", self.server))
            })?;
        self.note(refusal(response, lease).await)
    }

    async fn signal(&self, request: reqwest::RequestBuilder, lease: &Lease) -> Reply<Signal> {
        let reply: wire::SignalReply = json(self.send(request, Some(lease)).await?).await?;
        Ok(Signal {
            cancel: reply.cancel,
        })
    }

    /// Upload one output, streamed, with its SHA-256 (tried a few times).
    async fn upload(&self, lease: &Lease, name: &str, path: &Path) -> Reply<()> {
        let sha256 = sha256_file(path).await?;
        let mut last = None;
        for attempt in 1..=TRIES {
            let file = tokio::fs::File::open(path).await.map_err(io)?;
            let size = file.metadata().await.map_err(io)?.len();
            let body = reqwest::Body::wrap_stream(tokio_util::io::ReaderStream::with_capacity(
                file,
                1 << 20,
            ));
            let request = self
                .http
                .put(self.job_url(lease, &format!("outputs/{name}")))
                .bearer_auth(&self.token)
                .header(JOB_TOKEN, lease.token.as_str())
                .header(SHA256, &sha256)
                .header(reqwest::header::CONTENT_LENGTH, size)
                .body(body)
                .timeout(Duration::from_secs(3600));
            match request.send().await {
                Ok(response) => match refusal(response, Some(lease)).await {
                    Ok(_) => return Ok(()),
                    Err(e @ (ControlError::LeaseLost { .. } | ControlError::Refused(_))) => {
                        return Err(e);
                    }
                    Err(e) => last = Some(e),
                },
                Err(e) => last = Some(ControlError::Unavailable(format!("uploading {name}: {e}"))),
            }
            tracing::warn!(build = %lease.id, name, attempt, "upload failed; trying again");
            tokio::time::sleep(Duration::from_secs(u64::from(attempt) * 2)).await;
        }
        Err(last.expect("a try failed"))
    }
}

impl Control for RemoteControl {
    async fn claim(&self, kinds: &[JobKind]) -> Reply<Option<Task>> {
        let request = wire::ClaimRequest {
            kinds: kinds.to_vec(),
            capabilities: Capabilities::measure(&self.work_dir),
            wait_seconds: None,
        };
        let response = self
            .post(self.url("/claim"), None)
            .json(&request)
            .timeout(crate::local::CLAIM_WAIT + Duration::from_secs(15))
            .send()
            .await
            .map_err(|e| {
                ControlError::Unavailable(format!("the control plane {}: {e}", self.server))
            })?;
        let response = self.note(refusal(response, None).await)?;
        if response.status() == StatusCode::NO_CONTENT {
            return Ok(None);
        }
        let claimed: wire::Claimed = json(response).await?;
        let token = JobToken::parse(&claimed.token).ok_or_else(|| {
            ControlError::Unavailable("the control plane sent a malformed job token".into())
        })?;
        let lease = Lease {
            kind: claimed.kind,
            id: claimed.id,
            token,
            worker: format!("worker:{}", self.name.get().map_or("?", String::as_str)),
            attempt: claimed.attempt,
            requeued_because: claimed.requeued_because,
        };
        Ok(Some(match claimed.job {
            wire::Job::Build { plan } => Task::Build(BuildTask { lease, plan: *plan }),
            wire::Job::TestRun(spec) => Task::TestRun(TestTask { lease, spec }),
        }))
    }

    async fn progress(
        &self,
        lease: &Lease,
        stage: &str,
        percent: u8,
        message: &str,
        report: Option<&str>,
    ) -> Reply<Signal> {
        let body = wire::Progress {
            stage: stage.into(),
            percent,
            message: message.into(),
            report: report.map(Into::into),
        };
        self.signal(
            self.post(self.job_url(lease, "progress"), Some(lease))
                .json(&body),
            lease,
        )
        .await
    }

    async fn heartbeat(&self, lease: &Lease) -> Reply<Signal> {
        self.signal(
            self.post(self.job_url(lease, "heartbeat"), Some(lease)),
            lease,
        )
        .await
    }

    async fn set_vm(&self, lease: &Lease, vm_id: &str) -> Reply<()> {
        let body = wire::SetVm {
            vm_id: vm_id.into(),
        };
        self.send(
            self.post(self.job_url(lease, "vm"), Some(lease))
                .json(&body),
            Some(lease),
        )
        .await?;
        Ok(())
    }

    fn build_dir(&self, build_id: &str) -> PathBuf {
        self.work_dir.join("builds").join(build_id)
    }

    async fn publish(&self, lease: &Lease) -> Reply<()> {
        let dir = self.build_dir(&lease.id);
        for name in BUILD_OUTPUTS {
            let path = dir.join(name);
            if path.is_file() {
                self.upload(lease, name, &path).await?;
            }
        }
        Ok(())
    }

    async fn finish_build(&self, lease: &Lease, outcome: BuildOutcome, seconds: f64) -> Reply<()> {
        let body = wire::FinishBuild { outcome, seconds };
        let sent = self
            .send(
                self.post(self.job_url(lease, "finish"), Some(lease))
                    .json(&body),
                Some(lease),
            )
            .await;
        // Uploaded (or refused): the local copy has no further use.
        let _ = tokio::fs::remove_dir_all(self.build_dir(&lease.id)).await;
        sent.map(|_| ())
    }

    async fn iso(&self, task: &TestTask) -> Reply<PathBuf> {
        let sha256 = &task.spec.iso_sha256;
        if sha256.len() != 64 || !sha256.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(ControlError::Unavailable(
                "the control plane sent a malformed ISO SHA-256".into(),
            ));
        }
        let cache = self.work_dir.join("isos");
        let path = cache.join(format!("{sha256}.iso"));
        if path.is_file() {
            return Ok(path);
        }
        tokio::fs::create_dir_all(&cache).await.map_err(io)?;
        let mut last = None;
        for attempt in 1..=TRIES {
            match self.download(&task.lease, &path, sha256).await {
                Ok(()) => return Ok(path),
                Err(e @ ControlError::LeaseLost { .. }) => return Err(e),
                Err(e) => last = Some(e),
            }
            tracing::warn!(run = %task.lease.id, attempt, "ISO download failed; trying again");
            tokio::time::sleep(Duration::from_secs(u64::from(attempt) * 2)).await;
        }
        Err(last.expect("a try failed"))
    }

    async fn finish_test_run(&self, lease: &Lease, outcome: TestOutcome) -> Reply<()> {
        let body = wire::FinishTestRun { outcome };
        self.send(
            self.post(self.job_url(lease, "finish"), Some(lease))
                .json(&body),
            Some(lease),
        )
        .await?;
        Ok(())
    }

    async fn release(&self, lease: &Lease, reason: &str) -> Reply<()> {
        let body = wire::Release {
            reason: reason.into(),
        };
        self.send(
            self.post(self.job_url(lease, "release"), Some(lease))
                .json(&body),
            Some(lease),
        )
        .await?;
        let _ = tokio::fs::remove_dir_all(self.build_dir(&lease.id)).await;
        Ok(())
    }
}

impl RemoteControl {
    /// Download a test run's ISO to `path`, keeping it only if its SHA-256 is
    /// the build's.
    async fn download(&self, lease: &Lease, path: &Path, sha256: &str) -> Reply<()> {
        let request = self
            .http
            .get(self.job_url(lease, "iso"))
            .bearer_auth(&self.token)
            .header(JOB_TOKEN, lease.token.as_str())
            .timeout(Duration::from_secs(3600));
        let response = request
            .send()
            .await
            .map_err(|e| ControlError::Unavailable(format!("downloading the ISO: {e}")))?;
        let mut response = refusal(response, Some(lease)).await?;
        let partial = path.with_extension("partial");
        let mut file = tokio::fs::File::create(&partial).await.map_err(io)?;
        let mut hasher = sha2::Sha256::new();
        while let Some(chunk) = response
            .chunk()
            .await
            .map_err(|e| ControlError::Unavailable(format!("downloading the ISO: {e}")))?
        {
            hasher.update(&chunk);
            file.write_all(&chunk).await.map_err(io)?;
        }
        file.flush().await.map_err(io)?;
        drop(file);
        let actual = hex::encode(hasher.finalize());
        if actual != sha256 {
            let _ = tokio::fs::remove_file(&partial).await;
            return Err(ControlError::Unavailable(format!(
                "the ISO downloaded has SHA-256 {actual}, not the build's {sha256}"
            )));
        }
        tokio::fs::rename(&partial, path).await.map_err(io)
    }
}

/// A response, or what its refusal means.
async fn refusal(response: reqwest::Response, lease: Option<&Lease>) -> Reply<reqwest::Response> {
    let status = response.status();
    if status.is_success() {
        return Ok(response);
    }
    let refusal: Option<wire::Refusal> = response.json().await.ok();
    let error = refusal
        .as_ref()
        .map_or_else(|| status.to_string(), |r| r.error.clone());
    Err(match (status, lease) {
        (_, Some(lease)) if refusal.as_ref().is_some_and(|r| r.lease_lost) => {
            ControlError::LeaseLost {
                kind: lease.kind,
                id: lease.id.clone(),
            }
        }
        (StatusCode::UNAUTHORIZED, _) => {
            ControlError::Refused(format!("{}: {error}", wire::UNAUTHORIZED))
        }
        (StatusCode::FORBIDDEN | StatusCode::BAD_REQUEST | StatusCode::NOT_FOUND, _) => {
            ControlError::Refused(error)
        }
        _ => ControlError::Unavailable(error),
    })
}

async fn json<T: serde::de::DeserializeOwned>(response: reqwest::Response) -> Reply<T> {
    response.json().await.map_err(|e| {
        ControlError::Unavailable(format!(
            "the control plane's answer was not understood: {e}"
        ))
    })
}

async fn sha256_file(path: &Path) -> Reply<String> {
    let mut file = tokio::fs::File::open(path).await.map_err(io)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file.read(&mut buf).await.map_err(io)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hex::encode(hasher.finalize()))
}

fn io(e: std::io::Error) -> ControlError {
    ControlError::Unavailable(format!("this worker's disk: {e}"))
}
