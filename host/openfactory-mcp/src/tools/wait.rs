//! Waiting for a build or a test run to move, with MCP progress notifications.

use std::time::Duration;

use rmcp::RoleServer;
use rmcp::model::ProgressNotificationParam;
use rmcp::service::RequestContext;

/// How often a wait looks again.
const POLL: Duration = Duration::from_millis(500);

/// Where a polled thing is.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Progress {
    /// Still queued or running.
    pub active: bool,
    pub percent: u8,
    /// `stage percent%: message`.
    pub message: String,
}

impl Progress {
    /// `stage` is the current stage, or the status when there is none.
    pub fn new(active: bool, stage: &str, percent: u8, message: &str) -> Self {
        Progress {
            active,
            percent,
            message: format!("{stage} {percent}%: {message}"),
        }
    }
}

/// Fetch with `fetch` until what it gives is no longer active or `wait` has passed; the last
/// answer. When the caller gave a progress token (and `wait` is not zero), a progress
/// notification goes out first and then each time the progress changes; and when the
/// client asked for log messages (`logging/setLevel`, or the request's log level), an
/// info message too.
pub(crate) async fn wait_with_progress<R, Fut>(
    server: &super::OpenFactoryServer,
    ctx: &RequestContext<RoleServer>,
    wait: Duration,
    fetch: impl FnMut() -> Fut,
    progress: impl Fn(&R) -> Progress,
) -> Result<R, String>
where
    Fut: Future<Output = Result<R, String>>,
{
    let token = ctx.meta.get_progress_token().filter(|_| !wait.is_zero());
    poll(wait, POLL, fetch, progress, |now| {
        let token = token.clone();
        let peer = ctx.peer.clone();
        async move {
            server
                .log_info(
                    ctx,
                    serde_json::json!({ "message": now.message, "percent": now.percent }),
                )
                .await;
            let Some(token) = token else { return };
            // A client that went away misses a notification; the answer still goes out.
            let _ = peer
                .notify_progress(
                    ProgressNotificationParam::new(token, f64::from(now.percent))
                        .with_total(100.0)
                        .with_message(now.message),
                )
                .await;
        }
    })
    .await
}

/// The loop of [`wait_with_progress`], with `notify` called on the first answer and on each
/// change.
async fn poll<R, Fut, N>(
    wait: Duration,
    every: Duration,
    mut fetch: impl FnMut() -> Fut,
    progress: impl Fn(&R) -> Progress,
    mut notify: impl FnMut(Progress) -> N,
) -> Result<R, String>
where
    Fut: Future<Output = Result<R, String>>,
    N: Future<Output = ()>,
{
    let deadline = tokio::time::Instant::now() + wait;
    let mut reported: Option<Progress> = None;
    loop {
        let current = fetch().await?;
        let now = progress(&current);
        if reported.as_ref() != Some(&now) {
            notify(now.clone()).await;
        }
        if !now.active || tokio::time::Instant::now() >= deadline {
            return Ok(current);
        }
        reported = Some(now);
        tokio::time::sleep(every).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A sequence of (active, percent) answers, one per fetch; the last one repeats.
    async fn run(
        answers: &[(bool, u8)],
        wait: Duration,
    ) -> (Result<(bool, u8), String>, Vec<u8>, usize) {
        let fetched = std::cell::Cell::new(0usize);
        let sent = std::cell::RefCell::new(Vec::new());
        let result = poll(
            wait,
            Duration::from_millis(1),
            || {
                let i = fetched.get();
                fetched.set(i + 1);
                let answer = answers[i.min(answers.len() - 1)];
                async move { Ok::<_, String>(answer) }
            },
            |&(active, percent)| Progress::new(active, "build", percent, "working"),
            |p| {
                sent.borrow_mut().push(p.percent);
                async {}
            },
        )
        .await;
        (result, sent.into_inner(), fetched.get())
    }

    #[tokio::test]
    async fn notifies_on_change_and_stops_when_done() {
        let answers = [(true, 0), (true, 0), (true, 40), (true, 40), (false, 100)];
        let (result, sent, fetched) = run(&answers, Duration::from_secs(10)).await;
        assert_eq!(result, Ok((false, 100)));
        assert_eq!(sent, vec![0, 40, 100]);
        assert_eq!(fetched, 5);
    }

    #[tokio::test]
    async fn no_wait_is_one_look() {
        let (result, sent, fetched) = run(&[(true, 10)], Duration::ZERO).await;
        assert_eq!(result, Ok((true, 10)));
        assert_eq!((sent, fetched), (vec![10], 1));
    }

    #[tokio::test]
    async fn a_deadline_ends_the_wait() {
        let (result, sent, _) = run(&[(true, 10)], Duration::from_millis(30)).await;
        assert_eq!(result, Ok((true, 10)));
        assert_eq!(sent, vec![10]);
    }

    #[tokio::test]
    async fn a_failed_fetch_is_the_answer() {
        let result = poll(
            Duration::from_secs(1),
            Duration::from_millis(1),
            || async { Err::<(), _>("build `x` not found".to_owned()) },
            |_| Progress::new(true, "build", 0, ""),
            |_| async {},
        )
        .await;
        assert_eq!(result, Err("build `x` not found".to_owned()));
    }
}
