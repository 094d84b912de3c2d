//! `cargo xtask bench-build`: the same minimal image made by hand (the same
//! Debian tools, the commands an expert would type, no OpenFactory) and by
//! `openfactory build`, cold and warm, in one run; prints the ratios and
//! whether two OpenFactory builds of the same recipe gave the same ISO.
//!
//! Needs root and the network (the Debian mirror). Takes 10 minutes or so.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};

const MIRROR: &str = "http://deb.debian.org/debian";
const SECURITY: &str = "http://deb.debian.org/debian-security";

/// What the minimal recipe below amounts to, as one package list.
const PACKAGES: &str =
    "linux-image-amd64,live-boot,systemd-sysv,dbus,qemu-guest-agent,locales,systemd-resolved";

const RECIPE: &str = "name = \"bench-minimal\"\nbase_image = \"debian-bookworm\"\n";

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}

fn sh(script: &str, dir: &Path) -> Result<()> {
    run(Command::new("bash")
        .args(["-euo", "pipefail", "-c", script])
        .current_dir(dir))
}

/// The by-hand build: mmdebstrap with everything, one squashfs, grub-mkrescue.
fn by_hand(dir: &Path) -> Result<f64> {
    if dir.exists() {
        std::fs::remove_dir_all(dir)?;
    }
    std::fs::create_dir_all(dir)?;
    let started = Instant::now();
    let script = format!(
        r#"
mmdebstrap --mode=root --variant=minbase --include={PACKAGES} \
  --customize-hook='echo bench-minimal > "$1/etc/hostname"' \
  --customize-hook='echo "en_US.UTF-8 UTF-8" > "$1/etc/locale.gen" && chroot "$1" locale-gen' \
  --customize-hook='chroot "$1" systemctl enable systemd-networkd systemd-resolved' \
  bookworm rootfs "deb {MIRROR} bookworm main" "deb {MIRROR} bookworm-updates main" "deb {SECURITY} bookworm-security main" >mmdebstrap.log 2>&1
mkdir -p iso/live iso/boot/grub
cp -L rootfs/vmlinuz iso/live/vmlinuz
cp -L rootfs/initrd.img iso/live/initrd.img
mksquashfs rootfs iso/live/filesystem.squashfs -noappend -comp zstd -no-progress >/dev/null
cat > iso/boot/grub/grub.cfg <<'CFG'
serial --unit=0 --speed=115200
terminal_input console serial
terminal_output console serial
set timeout=1
menuentry "bench-minimal" {{
	linux /live/vmlinuz boot=live console=tty0 console=ttyS0,115200n8
	initrd /live/initrd.img
}}
CFG
grub-mkrescue -o by-hand.iso iso >/dev/null 2>&1
"#
    );
    sh(&script, dir)?;
    Ok(started.elapsed().as_secs_f64())
}

struct Built {
    seconds: f64,
    sha256: String,
}

fn openfactory(cli: &Path, home: &Path, cache: &Path, recipe: &Path) -> Result<Built> {
    let started = Instant::now();
    let out = Command::new(cli)
        .arg("--home")
        .arg(home)
        .arg("--cache")
        .arg(cache)
        .arg("build")
        .arg(recipe)
        .arg("--json")
        .output()
        .context("running openfactory build")?;
    let seconds = started.elapsed().as_secs_f64();
    if !out.status.success() {
        bail!(
            "openfactory build failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let json: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    Ok(Built {
        seconds,
        sha256: json["iso_sha256"].as_str().unwrap_or_default().to_owned(),
    })
}

pub fn bench_build(root: &Path) -> Result<()> {
    let cli = crate::host_binary(root, "release");
    run(
        Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into())).args([
            "build",
            "--release",
            "-q",
            "-p",
            "openfactory",
        ]),
    )?;
    let work: PathBuf = std::env::var_os("OPENFACTORY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/var/tmp/openfactory-bench"));
    std::fs::create_dir_all(&work)?;
    let recipe = work.join("bench-minimal.toml");
    std::fs::write(&recipe, RECIPE)?;
    let home = work.join("home");
    let cache = work.join("cache");
    for dir in [&home, &cache] {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
    }

    eprintln!("bench-build: by hand, cold …");
    let hand = by_hand(&work.join("by-hand"))?;
    eprintln!("bench-build: by hand {hand:.1} s; OpenFactory, cold (empty cache) …");
    let cold = openfactory(&cli, &home, &cache, &recipe)?;
    eprintln!(
        "bench-build: cold {:.1} s; OpenFactory, warm (cached base) …",
        cold.seconds
    );
    let warm = openfactory(&cli, &home, &cache, &recipe)?;
    let warm2 = openfactory(&cli, &home, &cache, &recipe)?;

    // What a single squashfs would cost on every build: compressing the whole
    // root again, where layers compress only the build's own changes.
    let base = std::fs::read_dir(cache.join("bases"))?
        .flatten()
        .map(|e| e.path().join("rootfs"))
        .find(|p| p.is_dir())
        .context("no cached base after the builds")?;
    let single = work.join("single.squashfs");
    let started = Instant::now();
    run(Command::new("mksquashfs").arg(&base).arg(&single).args([
        "-noappend",
        "-comp",
        "zstd",
        "-no-progress",
        "-quiet",
    ]))?;
    let single_seconds = started.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&single);

    println!("minimal bookworm live ISO, {PACKAGES}");
    println!("  by hand (mmdebstrap + mksquashfs + grub-mkrescue)  {hand:>7.1} s");
    println!(
        "  openfactory build, cold                            {:>7.1} s",
        cold.seconds
    );
    println!(
        "  openfactory build, warm                            {:>7.1} s",
        warm.seconds
    );
    println!(
        "  openfactory build, warm again                      {:>7.1} s",
        warm2.seconds
    );
    println!(
        "  cold / by hand   {:.2}×   (goal ≤ 1.15×)",
        cold.seconds / hand
    );
    println!(
        "  warm / cold      {:.2}×   (goal ≤ 0.25×)",
        warm.seconds.min(warm2.seconds) / cold.seconds
    );
    println!(
        "  one squashfs of the whole root (what every build would pay without layers)  {single_seconds:>5.1} s"
    );
    println!(
        "  reproducible: the two warm builds {} ({} / {})",
        if warm.sha256 == warm2.sha256 {
            "gave the same ISO"
        } else {
            "gave different ISOs"
        },
        &warm.sha256[..16.min(warm.sha256.len())],
        &warm2.sha256[..16.min(warm2.sha256.len())]
    );
    Ok(())
}
