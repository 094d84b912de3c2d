//! Workers: what runs builds and test runs, wherever it runs.
//!
//! The executors ([`build`], [`test`]) and the slot loop ([`slots`]) are
//! written once against [`Control`], the narrow trait through which a worker
//! claims jobs and reports on them. Inside `openfactory serve` that is the
//! store ([`LocalControl`]); in `openfactory worker` on another machine it is
//! the control plane's worker API over HTTPS ([`RemoteControl`]), whose
//! messages are [`wire`] and whose routes the server crate serves (it calls
//! [`local::claim`] and the `finish_*` functions, so a job is handed out and
//! recorded the same way whoever runs it). Plans are made on the control
//! plane (where the recipe's plugins ran); a worker only executes a `Plan`.

pub mod build;
pub mod capabilities;
pub mod control;
pub mod local;
pub mod remote;
pub mod slots;
pub mod test;
pub mod wire;

pub use capabilities::Capabilities;
pub use control::{BuildOutcome, Control, ControlError, Task, TestOutcome};
pub use local::LocalControl;
pub use remote::RemoteControl;
pub use slots::Executors;
