//! Test runs: a build's ISO booted in a throwaway VM, checked from inside
//! through the QEMU guest agent.
//!
//! - [`select`]: which checks a run has (the plan's, chosen or added to by
//!   the caller's `tests`), pure.
//! - [`probe`]: how each kind of check is asked inside the guest, and how
//!   its answer is judged, pure.
//! - [`exec`]: `guest-exec` and `guest-exec-status` over any `VmBackend`.
//! - [`runner`]: the run: VM, boot, checks with retries, evidence, and the
//!   VM always removed.
//! - [`report`]: what a run found, and the same as JUnit XML.

pub mod exec;
pub mod probe;
pub mod report;
pub mod runner;
pub mod select;

pub use report::{CheckResult, CheckStatus, RunReport, RunStatus};
pub use runner::{RunObserver, RunSettings, Stage, Timings, run, run_with_timings};
pub use select::select;
