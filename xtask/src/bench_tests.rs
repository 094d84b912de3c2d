//! `cargo xtask bench-tests`: how long a test run takes from VM start to
//! results, against a raw QEMU boot of the same ISO to its login prompt, in
//! one run on this machine. Goal: ≤ 1.2×.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

const RECIPE: &str = "name = \"bench-tests\"\nbase_image = \"debian-bookworm\"\n";

/// Boot the ISO under plain QEMU (TCG, as test runs use here) until the
/// serial console shows the login prompt.
fn raw_boot(iso: &Path, dir: &Path) -> Result<f64> {
    let serial = dir.join("raw-serial.log");
    let _ = std::fs::remove_file(&serial);
    let started = Instant::now();
    let mut qemu = Command::new("qemu-system-x86_64")
        .args([
            "-accel",
            "tcg",
            "-cpu",
            "max",
            "-m",
            "1024",
            "-smp",
            "1",
            "-nodefaults",
            "-display",
            "none",
            "-vga",
            "std",
        ])
        .arg("-serial")
        .arg(format!("file:{}", serial.display()))
        .args([
            "-netdev",
            "user,id=n0",
            "-device",
            "virtio-net-pci,netdev=n0",
        ])
        .arg("-drive")
        .arg(format!(
            "file={},media=cdrom,readonly=on,if=ide,index=0",
            iso.display()
        ))
        .args(["-boot", "order=d"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .spawn()
        .context("starting qemu-system-x86_64")?;
    let seconds = loop {
        if std::fs::read(&serial)
            .is_ok_and(|s| String::from_utf8_lossy(&s).contains("bench-tests login:"))
        {
            break started.elapsed().as_secs_f64();
        }
        if started.elapsed() > Duration::from_secs(600) {
            let _ = qemu.kill();
            bail!("no login prompt within 600 s");
        }
        std::thread::sleep(Duration::from_millis(250));
    };
    let _ = qemu.kill();
    let _ = qemu.wait();
    Ok(seconds)
}

pub fn bench_tests(root: &Path) -> Result<()> {
    let cli = crate::host_binary(root, "debug");
    let work = std::env::var_os("OPENFACTORY_BENCH_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("/var/tmp/openfactory-bench-tests"));
    std::fs::create_dir_all(&work)?;
    let recipe = work.join("bench-tests.toml");
    std::fs::write(&recipe, RECIPE)?;
    let home = work.join("home");
    let iso = work.join("bench-tests.iso");
    let _ = std::fs::remove_file(&iso);

    eprintln!("bench-tests: building the ISO …");
    let out = Command::new(&cli)
        .arg("--home")
        .arg(&home)
        .arg("build")
        .arg(&recipe)
        .arg("-o")
        .arg(&iso)
        .output()?;
    if !out.status.success() {
        bail!(
            "openfactory build failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    eprintln!("bench-tests: raw QEMU boot to the login prompt …");
    let raw = raw_boot(&iso, &work)?;
    eprintln!("bench-tests: raw boot {raw:.1} s; openfactory test …");
    let started = Instant::now();
    let out = Command::new(&cli)
        .arg("--home")
        .arg(&home)
        .arg("test")
        .arg(&recipe)
        .arg("--iso")
        .arg(&iso)
        .args(["--accel", "tcg", "--json"])
        .output()?;
    let tested = started.elapsed().as_secs_f64();
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "openfactory test printed no report:\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })?;
    if report["status"] != "passed" {
        bail!("the test run did not pass: {}", report["message"]);
    }
    let checks = report["checks"].as_array().map_or(0, Vec::len);
    println!("minimal bookworm live ISO, TCG, 1 vCPU, 1 GiB");
    println!("  raw QEMU boot to the login prompt                 {raw:>7.1} s");
    println!(
        "  openfactory test: boot to results ({checks:>2} checks)      {tested:>7.1} s   (boot {:.1} s)",
        report["boot_seconds"].as_f64().unwrap_or(0.0)
    );
    println!(
        "  test run / raw boot   {:.2}×   (goal ≤ 1.2×)",
        tested / raw
    );
    Ok(())
}
