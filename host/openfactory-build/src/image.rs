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

/// The system directories tools are looked up in.
const SYSTEM_PATH: &str = "/usr/sbin:/usr/bin:/sbin:/bin";

/// xorriso commands (after grub-mkrescue's own) that pin every date and id
/// in the ISO to `source_date_epoch`: volume dates, file dates, the GPT GUIDs
/// (derived from the volume uuid).
pub fn xorriso_reproducible_args(source_date_epoch: i64) -> Vec<String> {
    let epoch = source_date_epoch.max(0);
    let at = format!("={epoch}");
    let uuid = time::OffsetDateTime::from_unix_timestamp(epoch)
        .ok()
        .and_then(|t| {
            t.format(time::macros::format_description!(
                "[year][month][day][hour][minute][second]00"
            ))
            .ok()
        })
        .unwrap_or_else(|| "1970010100000000".into());
    [
        "-volid",
        "OPENFACTORY",
        "-volume_date",
        "uuid",
        &uuid,
        "-volume_date",
        "c",
        &at,
        "-volume_date",
        "m",
        &at,
        "-volume_date",
        "all_file_dates",
        &at,
        "-iso_nowtime",
        &at,
        "-boot_image",
        "any",
        "gpt_disk_guid=volume_date_uuid",
        "-alter_date_r",
        "b",
        &at,
        "/",
        "--",
    ]
    .into_iter()
    .map(String::from)
    .collect()
}

/// grub-mkrescue makes the UEFI boot image with `mformat`, which picks a
/// random volume serial; this wrapper (first in PATH) fixes it.
fn mformat_wrapper(dir: &Path) -> Result<()> {
    let real = SYSTEM_PATH
        .split(':')
        .map(|d| Path::new(d).join("mformat"))
        .find(|p| p.is_file())
        .ok_or_else(|| BuildError::MissingTool("mformat (apt-get install mtools)".into()))?;
    std::fs::create_dir_all(dir).context(|| format!("creating {}", dir.display()))?;
    let wrapper = dir.join("mformat");
    std::fs::write(
        &wrapper,
        format!("#!/bin/sh\nexec {} -N 4f464143 \"$@\"\n", real.display()),
    )
    .context(|| "writing the mformat wrapper".into())?;
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&wrapper, std::fs::Permissions::from_mode(0o755))
        .context(|| "making the mformat wrapper executable".into())
}

/// Make the hybrid ISO from a prepared tree; `tools` is a scratch directory.
pub fn make_iso(
    runner: &Runner,
    tree: &Path,
    iso: &Path,
    source_date_epoch: i64,
    tools: &Path,
) -> Result<()> {
    let epoch = source_date_epoch.max(0).to_string();
    mformat_wrapper(tools)?;
    let mut cmd = Command::new("grub-mkrescue");
    cmd.arg("--output")
        .arg(iso)
        .arg("--product-name=OpenFactory")
        .arg(tree)
        .arg("--")
        .args(xorriso_reproducible_args(source_date_epoch))
        .env("SOURCE_DATE_EPOCH", &epoch)
        .env("LC_ALL", "C.UTF-8")
        .env("PATH", format!("{}:{SYSTEM_PATH}", tools.display()));
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
    fn iso_dates_and_ids_come_from_the_epoch() {
        let args = xorriso_reproducible_args(1_700_000_000);
        let joined = args.join(" ");
        assert!(
            joined.contains("-volume_date uuid 2023111422132000"),
            "{joined}"
        );
        assert!(
            joined.contains("-alter_date_r b =1700000000 / --"),
            "{joined}"
        );
        assert!(
            joined.contains("gpt_disk_guid=volume_date_uuid"),
            "{joined}"
        );
    }

    #[test]
    fn layers_are_listed_bottom_first() {
        assert_eq!(
            filesystem_module(&[BASE_LAYER, BUILD_LAYER]),
            "00-base.squashfs\n10-build.squashfs\n"
        );
    }
}
