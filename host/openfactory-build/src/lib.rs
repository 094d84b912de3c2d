//! OpenFactory's build executor.
//!
//! The planning core decides *what* an image is (an ordered plan of typed
//! steps); this crate makes it, with real Debian tools, in four stages:
//!
//! 1. **bootstrap** ([`base`], [`cache`]): a minimal Debian root with a kernel
//!    and live-boot, made by mmdebstrap once per base and cached.
//! 2. **apply** ([`apply`], [`chroot`], [`overlay`]): the plan's steps, inside
//!    an overlay on the cached base, each command in fresh namespaces.
//! 3. **image** ([`image`]): squashfs layers (base + this build's changes),
//!    kernel, initramfs, GRUB, one hybrid BIOS/UEFI ISO.
//! 4. **finish** ([`manifest`]): SHA-256, package manifest, SPDX SBOM.
//!
//! Everything here runs on the host as root; nothing here knows about jobs,
//! databases or MCP.

pub mod apply;
pub mod base;
pub mod cache;
pub mod chroot;
pub mod command;
pub mod error;
pub mod image;
pub mod lock;
pub mod manifest;
pub mod overlay;
pub mod pipeline;
pub mod progress;

pub use base::Mirrors;
pub use error::BuildError;
pub use pipeline::{BuildJob, BuildOutput, Builder};
pub use progress::{CancelFlag, Observer, Silent, Stage};
