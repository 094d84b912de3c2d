//! `cargo xtask catalog [--unproven] [TEMPLATE…]`: every template in
//! `recipes/` built with the first-party plugins, booted in a throwaway VM
//! (QEMU, TCG) and its declared checks run, through the CLI a user has
//! (`openfactory build`, `openfactory test`). Prints a table (template, build
//! seconds, ISO MiB, checks passed/total, the first failure) and records each
//! template's run in `recipes/proofs.toml` for its recipe digest (plugin
//! digests included), which the server shows in the catalog. Exits non-zero
//! if a template fails to build or a check fails.
//!
//! `--unproven` runs only the templates not proven at their current digest:
//! one that changed since its recorded run (the template, or a plugin it
//! uses), one never run, and one whose recorded run failed. That is what CI
//! runs on every change, so a change that breaks a proven template, a new
//! template that does not build, and a template left failing all fail CI;
//! a template proven at its current digest is not booted again.
//!
//! The next template builds while the previous one boots (a boot under TCG
//! keeps one core busy; the build takes the other), one ISO ahead at most.
//! The proofs file is rewritten after each template, so an interrupted run
//! keeps what it proved.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use openfactory_core::proof::{self, Outcome, Proof, Proofs};
use serde_json::Value;

/// One template to prove: its id and its digest now.
struct Target {
    id: String,
    digest: String,
}

/// A template built (or not).
struct Built {
    target: Target,
    seconds: f64,
    /// The ISO and the build's directory (removed once tested), or why it failed.
    result: Result<(PathBuf, PathBuf, u64), String>,
}

/// One row of the table.
struct Row {
    id: String,
    proof: Proof,
}

pub fn catalog(root: &Path, args: &[String]) -> Result<()> {
    let mut unproven_only = false;
    let mut chosen = Vec::new();
    for arg in args {
        match arg.as_str() {
            "--unproven" => unproven_only = true,
            a if a.starts_with('-') => bail!("catalog: unknown option {a} (options: --unproven)"),
            a => chosen.push(a.to_owned()),
        }
    }
    crate::ensure_build_tools()?;
    crate::plugins(root)?;
    let work = root.join("target/catalog");
    let home = work.join("home");
    crate::install(root, &home)?;
    let cli = crate::host_binary(root, "debug");

    let proofs_file = root.join("recipes").join(proof::FILE);
    let mut proofs = match std::fs::read_to_string(&proofs_file) {
        Ok(text) => Proofs::parse(&text).map_err(anyhow::Error::msg)?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Proofs::default(),
        Err(e) => return Err(e).context("reading recipes/proofs.toml"),
    };

    let all = templates(&cli, &home)?;
    for id in &chosen {
        if !all.iter().any(|t| &t.id == id) {
            bail!("catalog: `{id}` is no template (see `openfactory recipe list`)");
        }
    }
    // Proofs of templates that no longer exist go.
    proofs
        .templates
        .retain(|id, _| all.iter().any(|t| &t.id == id));
    // What the file says of each template now.
    let by_status = |status: proof::Status| -> Vec<&str> {
        all.iter()
            .filter(|t| proofs.status(&t.id, &t.digest) == status)
            .map(|t| t.id.as_str())
            .collect()
    };
    let moved = |t: &Target| {
        proofs
            .templates
            .get(&t.id)
            .is_some_and(|p| p.recipe_digest != t.digest)
    };
    println!(
        "catalog: recipes/proofs.toml: {} proven at their current digest; failed: [{}]; changed since their run: [{}]; never run: [{}]",
        by_status(proof::Status::Proven).len(),
        by_status(proof::Status::Failed).join(", "),
        all.iter()
            .filter(|t| moved(t))
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
        all.iter()
            .filter(|t| !proofs.templates.contains_key(&t.id))
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(", "),
    );
    let targets: Vec<Target> = all
        .iter()
        .filter(|t| chosen.is_empty() || chosen.contains(&t.id))
        .filter(|t| !unproven_only || proofs.status(&t.id, &t.digest) != proof::Status::Proven)
        .map(|t| Target {
            id: t.id.clone(),
            digest: t.digest.clone(),
        })
        .collect();
    if targets.is_empty() {
        println!(
            "catalog: every template chosen is proven at its current digest; nothing to build"
        );
        std::fs::write(&proofs_file, proofs.to_toml())?;
        return Ok(());
    }
    println!(
        "catalog: {} template(s) to build, boot and check: {}",
        targets.len(),
        targets
            .iter()
            .map(|t| t.id.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );

    let started = Instant::now();
    let (tx, rx) = mpsc::sync_channel::<Built>(0);
    let builder = {
        let (cli, home, work) = (cli.clone(), home.clone(), work.clone());
        std::thread::spawn(move || {
            for target in targets {
                let built = build(&cli, &home, &work, target);
                if tx.send(built).is_err() {
                    break;
                }
            }
        })
    };
    let mut rows = Vec::new();
    for built in rx {
        let row = prove(&cli, &home, built);
        eprintln!(
            "catalog: {} {:?} ({} of checks {}){}",
            row.id,
            row.proof.outcome,
            row.proof.checks_passed,
            row.proof.checks_total,
            row.proof
                .first_failure
                .as_deref()
                .map(|f| format!(": {f}"))
                .unwrap_or_default()
        );
        proofs.templates.insert(row.id.clone(), row.proof.clone());
        std::fs::write(&proofs_file, proofs.to_toml())?;
        rows.push(row);
    }
    builder
        .join()
        .map_err(|_| anyhow::anyhow!("the build thread panicked"))?;

    print_table(&rows);
    let failed = rows
        .iter()
        .filter(|r| r.proof.outcome == Outcome::Failed)
        .count();
    println!(
        "catalog: {} passed, {failed} failed, in {:.1} min; recorded in recipes/proofs.toml",
        rows.len() - failed,
        started.elapsed().as_secs_f64() / 60.0
    );
    if failed > 0 {
        bail!("{failed} template(s) failed: see the table");
    }
    Ok(())
}

/// Every template with its digest as the installed plugins plan it.
fn templates(cli: &Path, home: &Path) -> Result<Vec<Target>> {
    let listed = json(
        Command::new(cli)
            .arg("--home")
            .arg(home)
            .args(["recipe", "list", "--json"]),
    )?;
    let mut out = Vec::new();
    for r in listed.as_array().context("recipe list: not a list")? {
        let id = r["id"]
            .as_str()
            .context("recipe list: an entry without `id`")?;
        let planned = json(
            Command::new(cli)
                .arg("--home")
                .arg(home)
                .args(["recipe", "plan", id, "--json"]),
        )?;
        let digest = planned["plan"]["recipe_digest"]
            .as_str()
            .with_context(|| format!("`{id}` does not plan: {}", planned["errors"]))?;
        out.push(Target {
            id: id.to_owned(),
            digest: digest.to_owned(),
        });
    }
    Ok(out)
}

fn build(cli: &Path, home: &Path, work: &Path, target: Target) -> Built {
    let iso = work.join(format!("{}.iso", target.id));
    let _ = std::fs::remove_file(&iso);
    eprintln!("catalog: building {} …", target.id);
    let started = Instant::now();
    let out = Command::new(cli)
        .arg("--home")
        .arg(home)
        .args(["build", &target.id, "--json", "-o"])
        .arg(&iso)
        .output();
    let seconds = started.elapsed().as_secs_f64();
    let result = match out {
        Err(e) => Err(format!("build: openfactory did not start: {e}")),
        Ok(out) => {
            let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
            if out.status.success() {
                let dir = PathBuf::from(report["directory"].as_str().unwrap_or_default());
                let bytes = report["iso_size_bytes"].as_u64().unwrap_or_default();
                Ok((iso, dir, bytes))
            } else {
                Err(match report["error"].as_str() {
                    Some(e) => format!("build: {e}"),
                    None => format!("build: {}", last_line(&out.stderr)),
                })
            }
        }
    };
    Built {
        target,
        seconds,
        result,
    }
}

fn prove(cli: &Path, home: &Path, built: Built) -> Row {
    let Built {
        target,
        seconds,
        result,
    } = built;
    let mut proof = Proof {
        recipe_digest: target.digest,
        proven_at: now(),
        outcome: Outcome::Failed,
        build_seconds: seconds.round() as u32,
        iso_mib: 0,
        checks_passed: 0,
        checks_total: 0,
        first_failure: None,
    };
    match result {
        Err(why) => proof.first_failure = Some(why),
        Ok((iso, dir, bytes)) => {
            proof.iso_mib = bytes.div_ceil(1024 * 1024) as u32;
            eprintln!("catalog: booting {} and running its checks …", target.id);
            let out = Command::new(cli)
                .arg("--home")
                .arg(home)
                .args(["test", &target.id, "--accel", "tcg", "--json", "--iso"])
                .arg(&iso)
                .output();
            match out {
                Err(e) => {
                    proof.first_failure = Some(format!("test: openfactory did not start: {e}"))
                }
                Ok(out) => {
                    let report: Value = serde_json::from_slice(&out.stdout).unwrap_or_default();
                    // The whole report (every check's stdout and stderr) stays for whoever reads a failure.
                    let kept = iso.with_extension("test.json");
                    let _ = std::fs::write(&kept, &out.stdout);
                    let checks = report["checks"].as_array().cloned().unwrap_or_default();
                    proof.checks_total = checks.len() as u32;
                    proof.checks_passed =
                        checks.iter().filter(|c| c["status"] == "passed").count() as u32;
                    let first = checks.iter().find(|c| c["status"] != "passed");
                    proof.first_failure = match (report["status"].as_str(), first) {
                        (Some("passed"), None) if !checks.is_empty() => None,
                        (_, Some(c)) => Some(format!(
                            "{}: {} ({}){}",
                            c["name"].as_str().unwrap_or("a check"),
                            c["status"].as_str().unwrap_or("?"),
                            c["message"].as_str().unwrap_or_default(),
                            evidence(c)
                        )),
                        (Some("passed"), None) => Some("the run declared no checks".into()),
                        (status, None) => Some(format!(
                            "test: {} ({})",
                            status.unwrap_or("no report"),
                            report["message"]
                                .as_str()
                                .map_or_else(|| last_line(&out.stderr), str::to_owned)
                        )),
                    };
                    if proof.first_failure.is_none() {
                        proof.outcome = Outcome::Passed;
                    }
                }
            }
            let _ = std::fs::remove_file(&iso);
            if dir.starts_with(home) {
                let _ = std::fs::remove_dir_all(&dir);
            }
        }
    }
    Row {
        id: target.id,
        proof,
    }
}

fn print_table(rows: &[Row]) {
    let width = rows.iter().map(|r| r.id.len()).max().unwrap_or(8).max(8);
    println!();
    println!(
        "{:width$}  {:>7}  {:>7}  {:>7}  first failure",
        "template", "build s", "ISO MiB", "checks"
    );
    for r in rows {
        let p = &r.proof;
        println!(
            "{:width$}  {:>7}  {:>7}  {:>7}  {}",
            r.id,
            p.build_seconds,
            p.iso_mib,
            format!("{}/{}", p.checks_passed, p.checks_total),
            p.first_failure.as_deref().unwrap_or("")
        );
    }
    println!();
}

fn json(cmd: &mut Command) -> Result<Value> {
    let out = cmd.output().with_context(|| format!("running {cmd:?}"))?;
    serde_json::from_slice(&out.stdout).with_context(|| {
        format!(
            "{cmd:?} printed no JSON: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

/// What a failed check printed, in a line: the end of its stderr, or of its stdout when
/// stderr is empty (the base check `no-failed-units` names the failed units there).
fn evidence(check: &Value) -> String {
    ["stderr", "stdout"]
        .iter()
        .find_map(|stream| {
            let text = check[*stream].as_str()?;
            let lines: Vec<&str> = text
                .lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect();
            let tail = lines[lines.len().saturating_sub(3)..].join(" | ");
            (!tail.is_empty()).then(|| format!("; {stream}: {tail}"))
        })
        .unwrap_or_default()
}

fn last_line(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes)
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("no output")
        .trim()
        .to_owned()
}

/// Now, RFC 3339 UTC, to the second.
fn now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (y, m, d) = civil_from_days(days as i64);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

/// The calendar date of a day count since 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_become_dates() {
        assert_eq!(civil_from_days(0), (1970, 1, 1));
        assert_eq!(civil_from_days(20_423), (2025, 12, 1));
        assert_eq!(civil_from_days(20_788), (2026, 12, 1));
        assert_eq!(civil_from_days(11_016), (2000, 2, 29));
    }
}
