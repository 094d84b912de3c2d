//! Why a build stopped, said so that a person can act on it.

use std::io;
use std::path::PathBuf;

use crate::progress::Stage;

#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// A step of the plan failed; `step` names it as the plan shows it.
    #[error("step {index} ({source_}: {step}) failed: {detail}")]
    Step {
        index: usize,
        source_: String,
        step: String,
        detail: String,
    },
    /// A stage failed outside any one step.
    #[error("{stage} failed: {detail}")]
    Stage { stage: Stage, detail: String },
    #[error(
        "disk full during {stage}: no space left under {}; free some space or lower the cache size limit",
        path.display()
    )]
    DiskFull { stage: Stage, path: PathBuf },
    #[error("a tool the build needs is missing: {0}")]
    MissingTool(String),
    #[error("cancelled")]
    Cancelled,
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: io::Error,
    },
}

impl BuildError {
    pub fn io(context: impl Into<String>, source: io::Error) -> Self {
        BuildError::Io {
            context: context.into(),
            source,
        }
    }

    /// The step that failed, as `source: step`, when one did.
    pub fn failed_step(&self) -> Option<String> {
        match self {
            BuildError::Step { source_, step, .. } => Some(format!("{source_}: {step}")),
            _ => None,
        }
    }

    /// Rewrite I/O and command failures caused by a full disk.
    pub fn in_stage(self, stage: Stage, path: &std::path::Path) -> Self {
        let full = match &self {
            BuildError::Io { source, .. } => source.raw_os_error() == Some(libc::ENOSPC),
            BuildError::Stage { detail, .. } | BuildError::Step { detail, .. } => {
                mentions_disk_full(detail)
            }
            _ => false,
        };
        if full {
            BuildError::DiskFull {
                stage,
                path: path.to_owned(),
            }
        } else {
            self
        }
    }
}

/// Whether a tool's output says the disk is full.
pub fn mentions_disk_full(text: &str) -> bool {
    let text = text.to_ascii_lowercase();
    text.contains("no space left on device")
        || text.contains("you don't have enough free space")
        || text.contains("disk full")
}

pub type Result<T, E = BuildError> = std::result::Result<T, E>;

/// Attach context to an I/O result.
pub trait IoContext<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> IoContext<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| BuildError::io(what(), e))
    }
}
