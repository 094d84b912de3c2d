//! How guests execute, and the `auto` choice: KVM only once a guest has been
//! seen running under it, TCG otherwise.

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use tokio::process::Command;
use tokio::sync::OnceCell;

use crate::error::VmError;

/// How guests execute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Accel {
    Kvm,
    Tcg,
}

impl fmt::Display for Accel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Accel::Kvm => "kvm",
            Accel::Tcg => "tcg",
        })
    }
}

/// The operator's choice: `auto` proves KVM runs a guest before using it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AccelSetting {
    Auto,
    Kvm,
    Tcg,
}

impl FromStr for AccelSetting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "auto" => Ok(AccelSetting::Auto),
            "kvm" => Ok(AccelSetting::Kvm),
            "tcg" => Ok(AccelSetting::Tcg),
            other => Err(format!(
                "`{other}` is not an accelerator; use auto, kvm or tcg"
            )),
        }
    }
}

/// The setting, and for `auto` the answer of one probe, kept for the
/// process's lifetime.
pub struct AccelChooser {
    setting: AccelSetting,
    /// Where the probe may write its scratch files.
    scratch: PathBuf,
    probed: OnceCell<Accel>,
}

impl AccelChooser {
    pub fn new(setting: AccelSetting, scratch: &Path) -> Self {
        AccelChooser {
            setting,
            scratch: scratch.to_owned(),
            probed: OnceCell::new(),
        }
    }

    /// The accelerator for a VM booting `iso` (whose kernel the probe boots).
    pub async fn choose(&self, iso: &Path) -> Accel {
        match self.setting {
            AccelSetting::Kvm => Accel::Kvm,
            AccelSetting::Tcg => Accel::Tcg,
            AccelSetting::Auto => {
                *self
                    .probed
                    .get_or_init(|| async {
                        let accel = match probe_kvm(iso, &self.scratch).await {
                            Ok(true) => Accel::Kvm,
                            Ok(false) => Accel::Tcg,
                            Err(e) => {
                                tracing::info!(error = %e, "KVM probe could not run; using TCG");
                                Accel::Tcg
                            }
                        };
                        tracing::info!(%accel, "accelerator chosen");
                        accel
                    })
                    .await
            }
        }
    }
}

/// Does KVM run a guest here? Boot the ISO's kernel under KVM with nothing
/// else and look for its first line on the serial port.
async fn probe_kvm(iso: &Path, scratch: &Path) -> Result<bool, VmError> {
    if std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/kvm")
        .is_err()
    {
        return Ok(false);
    }
    let dir = scratch.join(".kvm-probe");
    std::fs::create_dir_all(&dir)?;
    let kernel = dir.join("vmlinuz");
    let serial = dir.join("serial.log");
    let _ = std::fs::remove_file(&serial);
    let out = Command::new("xorriso")
        .args(["-osirrox", "on", "-indev"])
        .arg(iso)
        .args(["-extract", "/live/vmlinuz"])
        .arg(&kernel)
        .output()
        .await?;
    if !out.status.success() {
        return Err(VmError::Start(
            "could not read the kernel from the ISO".into(),
        ));
    }
    let mut child = Command::new(crate::qemu::QEMU)
        .args([
            "-accel",
            "kvm",
            "-cpu",
            "host",
            "-m",
            "256",
            "-nodefaults",
            "-display",
            "none",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&kernel)
        .args(["-append", "console=ttyS0 panic=-1"])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        // A KVM that cannot run guests says so loudly on stderr; the answer is what counts.
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .kill_on_drop(true)
        .spawn()?;
    let started = Instant::now();
    let mut works = false;
    while started.elapsed() < Duration::from_secs(20) {
        if std::fs::read(&serial)
            .is_ok_and(|s| String::from_utf8_lossy(&s).contains("Linux version"))
        {
            works = true;
            break;
        }
        if child.try_wait()?.is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = child.kill().await;
    let _ = std::fs::remove_dir_all(&dir);
    Ok(works)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accelerators_parse() {
        assert_eq!("auto".parse::<AccelSetting>().unwrap(), AccelSetting::Auto);
        assert!(
            "xen"
                .parse::<AccelSetting>()
                .unwrap_err()
                .contains("auto, kvm or tcg")
        );
    }
}
