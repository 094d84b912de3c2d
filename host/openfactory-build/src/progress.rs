//! What a running build tells the outside world: its stage, how far along it
//! is, its log lines; and how the outside world stops it.

use std::fmt;
use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use serde::{Deserialize, Serialize};

/// The four stages of a build, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum Stage {
    /// A minimal Debian root file system (cached).
    Bootstrap,
    /// The plan's steps, inside the image root.
    Apply,
    /// Kernel, initramfs, squashfs layers and the hybrid ISO.
    Image,
    /// Checksum, package manifest, SBOM.
    Finish,
}

impl Stage {
    pub const ALL: [Stage; 4] = [Stage::Bootstrap, Stage::Apply, Stage::Image, Stage::Finish];

    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Bootstrap => "bootstrap",
            Stage::Apply => "apply",
            Stage::Image => "image",
            Stage::Finish => "finish",
        }
    }

    /// The overall percentage range this stage covers: a cold bootstrap is
    /// the longest part of a build, the finish the shortest.
    pub fn span(self) -> (u8, u8) {
        match self {
            Stage::Bootstrap => (0, 40),
            Stage::Apply => (40, 75),
            Stage::Image => (75, 96),
            Stage::Finish => (96, 100),
        }
    }

    /// Overall percentage for a fraction (0.0..=1.0) of this stage.
    pub fn percent(self, fraction: f64) -> u8 {
        let (from, to) = self.span();
        let fraction = fraction.clamp(0.0, 1.0);
        from + ((to - from) as f64 * fraction).round() as u8
    }
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for Stage {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Stage::ALL
            .into_iter()
            .find(|stage| stage.as_str() == s)
            .ok_or_else(|| format!("unknown stage `{s}`"))
    }
}

/// Receives a build's progress. Called from the build's thread; keep it quick.
pub trait Observer: Send + Sync {
    /// The build entered `stage`, or moved within it; `percent` is overall.
    fn progress(&self, stage: Stage, percent: u8, message: &str);
    /// One line of the build log (already written to the log file).
    fn log(&self, _line: &str) {}
}

/// An observer that ignores everything.
pub struct Silent;

impl Observer for Silent {
    fn progress(&self, _: Stage, _: u8, _: &str) {}
}

/// Asks a running build to stop. Cheap to clone; checked between commands
/// and while a command runs (the command is killed).
#[derive(Debug, Clone, Default)]
pub struct CancelFlag(Arc<AtomicBool>);

impl CancelFlag {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn cancel(&self) {
        self.0.store(true, Ordering::SeqCst);
    }
    pub fn is_cancelled(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// The build log: a file, with every line also handed to the observer.
pub struct Log<'a> {
    file: Mutex<File>,
    observer: &'a dyn Observer,
    started: std::time::Instant,
}

impl<'a> Log<'a> {
    pub fn create(path: &Path, observer: &'a dyn Observer) -> std::io::Result<Self> {
        Ok(Log {
            file: Mutex::new(File::options().create(true).append(true).open(path)?),
            observer,
            started: std::time::Instant::now(),
        })
    }

    pub fn line(&self, line: &str) {
        let line = line.trim_end_matches(['\r', '\n']);
        if let Ok(mut file) = self.file.lock() {
            // A log write that fails (disk full) must not fail the build by
            // itself: the step that filled the disk reports it.
            let _ = writeln!(file, "{line}");
        }
        self.observer.log(line);
    }

    pub fn progress(&self, stage: Stage, fraction: f64, message: &str) {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.line(&format!("==> [{stage} {elapsed:.1}s] {message}"));
        self.observer
            .progress(stage, stage.percent(fraction), message);
    }

    pub fn observer(&self) -> &dyn Observer {
        self.observer
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stages_cover_zero_to_a_hundred_in_order() {
        let mut end = 0;
        for stage in Stage::ALL {
            let (from, to) = stage.span();
            assert_eq!(from, end);
            assert!(to > from);
            end = to;
            assert_eq!(stage.as_str().parse::<Stage>().unwrap(), stage);
        }
        assert_eq!(end, 100);
        assert_eq!(Stage::Apply.percent(0.5), 58);
        assert_eq!(Stage::Finish.percent(7.0), 100);
    }
}
