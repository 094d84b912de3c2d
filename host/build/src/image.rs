//! The image stage: squashfs layers, kernel and initramfs, GRUB's
//! configuration, and one hybrid ISO that boots under BIOS and UEFI.
//!
//! ```text
//! /live/vmlinuz, /live/initrd.img
//! /live/00-base.squashfs        the cached base, compressed once per base
//! /live/10-build.squashfs       only what this build changed (the overlay's upper dir)
//! /live/filesystem.module       the layer order, bottom first, for live-boot
//! /boot/grub/grub.cfg           serial console + VGA, `boot=live`, the plan's kernel arguments
//! ```

use std::path::Path;
use std::process::Command;

use crate::command::{CommandError, Runner};
use crate::error::{BuildError, IoContext, Result};
use crate::progress::Stage;

pub const BASE_LAYER: &str = "00-base.squashfs";
pub const BUILD_LAYER: &str = "10-build.squashfs";

/// Kernel arguments every image boots with: live-boot, and a console on both
/// the screen and the first serial port (the last `console=` gets
/// `/dev/console`, so boot messages and a login prompt reach the serial log).
pub const BASE_KERNEL_ARGS: &[&str] = &["boot=live", "console=tty0", "console=ttyS0,115200n8"];

/// GRUB's configuration for the ISO. `kernel_args` were validated by the
/// core (letters, digits and `_-.,:/=+` only), so they need no quoting.
pub fn grub_cfg(title: &str, kernel_args: &[String]) -> String {
    let mut args: Vec<&str> = BASE_KERNEL_ARGS.to_vec();
    args.extend(kernel_args.iter().map(String::as_str));
    let title: String = title
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | ' '))
        .collect();
    format!(
        "serial --unit=0 --speed=115200\n\
         terminal_input console serial\n\
         terminal_output console serial\n\
         set timeout=1\n\
         set default=0\n\
         \n\
         menuentry \"{title}\" {{\n\
         \tlinux /live/vmlinuz {}\n\
         \tinitrd /live/initrd.img\n\
         }}\n",
        args.join(" ")
    )
}

/// live-boot's layer list, bottom first.
pub fn filesystem_module(layers: &[&str]) -> String {
    layers.iter().map(|l| format!("{l}\n")).collect()
}

fn command_error(stage: Stage, tool: &str, e: CommandError) -> BuildError {
    match e {
        CommandError::Cancelled => BuildError::Cancelled,
        CommandError::Spawn { .. } => BuildError::MissingTool(format!("{tool}: {e}")),
        e => BuildError::Stage {
            stage,
            detail: e.summary(),
        },
    }
}

/// Compress a tree into a squashfs. mksquashfs takes `SOURCE_DATE_EPOCH` as
/// the file system's time and clamps every later file time to it, so that the
/// same tree gives the same bytes.
pub fn squash(
    stage: Stage,
    runner: &Runner,
    source: &Path,
    target: &Path,
    source_date_epoch: i64,
    excludes: &[&str],
) -> Result<()> {
    if target.exists() {
        std::fs::remove_file(target).context(|| format!("removing {}", target.display()))?;
    }
    let epoch = source_date_epoch.max(0).to_string();
    let mut cmd = Command::new("mksquashfs");
    cmd.arg(source).arg(target).args([
        "-noappend",
        "-comp",
        "zstd",
        "-no-progress",
        "-reproducible",
    ]);
    if !excludes.is_empty() {
        cmd.arg("-wildcards").arg("-e").args(excludes);
    }
    cmd.env("SOURCE_DATE_EPOCH", &epoch);
    runner
        .run(&mut cmd, None)
        .map_err(|e| command_error(stage, "mksquashfs", e))
}

/// Make the hybrid ISO from a prepared tree.
pub fn make_iso(runner: &Runner, tree: &Path, iso: &Path, source_date_epoch: i64) -> Result<()> {
    let epoch = source_date_epoch.max(0).to_string();
    let mut cmd = Command::new("grub-mkrescue");
    cmd.arg("--output")
        .arg(iso)
        .arg("--product-name=OpenFactory")
        .arg(tree)
        .args(["--", "-volid", "OPENFACTORY"])
        .env("SOURCE_DATE_EPOCH", &epoch)
        .env("LC_ALL", "C.UTF-8")
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin");
    runner
        .run(&mut cmd, None)
        .map_err(|e| command_error(Stage::Image, "grub-mkrescue", e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grub_boots_live_with_a_serial_console_and_the_plan_arguments() {
        let cfg = grub_cfg(
            "web \"server\"; reboot",
            &["apparmor=1".into(), "security=apparmor".into()],
        );
        assert!(cfg.contains("menuentry \"web server reboot\""), "{cfg}");
        assert!(cfg.contains(
            "linux /live/vmlinuz boot=live console=tty0 console=ttyS0,115200n8 apparmor=1 security=apparmor\n"
        ));
        assert!(cfg.starts_with("serial --unit=0 --speed=115200\n"));
    }

    #[test]
    fn layers_are_listed_bottom_first() {
        assert_eq!(
            filesystem_module(&[BASE_LAYER, BUILD_LAYER]),
            "00-base.squashfs\n10-build.squashfs\n"
        );
    }
}
