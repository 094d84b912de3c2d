//! `openfactory build`: the server's build pipeline, run here, with progress bars.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Mutex;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use openfactory_build::{BuildJob, CancelFlag, Observer, Stage};

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Recipe file (.toml or .json), or a template id from the catalog.
    pub recipe: PathBuf,
    /// Where to put the ISO (default: the build's directory under the home).
    #[arg(short, long, value_name = "FILE")]
    pub output: Option<PathBuf>,
    /// Print the build log as it is written.
    #[arg(long)]
    pub log: bool,
    /// Print the result as JSON on stdout.
    #[arg(long)]
    pub json: bool,
}

/// A random build id: 12 lowercase hex digits.
pub fn new_build_id() -> String {
    let mut bytes = [0u8; 6];
    getrandom::fill(&mut bytes).expect("the OS has randomness");
    hex::encode(bytes)
}

/// One bar for the whole build: overall percentage, stage, current step.
struct Bars {
    bar: ProgressBar,
    show_log: bool,
    last_stage: Mutex<Option<Stage>>,
}

impl Observer for Bars {
    fn progress(&self, stage: Stage, percent: u8, message: &str) {
        let mut last = self.last_stage.lock().expect("not poisoned");
        if *last != Some(stage) {
            if let Some(previous) = *last {
                self.bar.println(format!(
                    "  ✓ {previous} ({})",
                    indicatif::HumanDuration(self.bar.elapsed())
                ));
            }
            *last = Some(stage);
        }
        self.bar.set_prefix(stage.as_str());
        self.bar.set_position(percent.into());
        self.bar.set_message(message.to_owned());
    }

    fn log(&self, line: &str) {
        if self.show_log {
            if self.bar.is_hidden() {
                // Not a terminal: no bar is drawn, and println would be dropped too.
                eprintln!("{line}");
            } else {
                self.bar.println(line);
            }
        }
    }
}

pub fn run(args: BuildArgs, config: &Config) -> anyhow::Result<ExitCode> {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        anyhow::bail!(
            "building needs root: it mounts an overlay, runs apt in a chroot and makes device nodes (run it with sudo)"
        );
    }
    let Some(plan) = super::recipe::plan_or_report(config, &args.recipe)? else {
        return Ok(ExitCode::from(1));
    };

    let build_id = new_build_id();
    let out_dir = config.builds_dir().join(&build_id);
    let builder = config.builder();
    builder
        .recover()
        .context("cleaning up after an interrupted build")?;

    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:32.cyan/blue} {pos:>3}% {prefix:9} {wide_msg}",
        )
        .expect("valid template")
        .progress_chars("█▓░"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    eprintln!(
        "Building {} ({}) as build {build_id}",
        plan.recipe_name, plan.recipe_digest
    );
    let bars = Bars {
        bar: bar.clone(),
        show_log: args.log,
        last_stage: Mutex::new(None),
    };

    let cancel = CancelFlag::new();
    let on_signal = cancel.clone();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("a signal runtime");
        runtime.block_on(async {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_signal.cancel();
            }
        });
    });

    let result = builder.build(&BuildJob {
        build_id: &build_id,
        plan: &plan,
        out_dir: &out_dir,
        observer: &bars,
        cancel: &cancel,
        preface: &[],
    });
    bar.finish_and_clear();
    let log_path = out_dir.join(openfactory_build::pipeline::LOG_FILE);
    match result {
        Ok(output) => {
            let iso = match &args.output {
                Some(path) => {
                    if std::fs::hard_link(&output.iso, path).is_err() {
                        std::fs::copy(&output.iso, path)
                            .with_context(|| format!("copying the ISO to {}", path.display()))?;
                    }
                    path.clone()
                }
                None => output.iso.clone(),
            };
            if args.json {
                super::print_json(&serde_json::json!({
                    "build_id": build_id,
                    "recipe_digest": plan.recipe_digest,
                    "iso": iso,
                    "iso_sha256": output.iso_sha256,
                    "iso_size_bytes": output.iso_size_bytes,
                    "packages": output.packages,
                    "base": output.base_key,
                    "base_reused": output.base_reused,
                    "stage_seconds": output.stage_seconds,
                    "layers": output.layers,
                    "directory": out_dir,
                }))?;
            }
            eprintln!("Built {}", iso.display());
            eprintln!("  sha256   {}", output.iso_sha256);
            eprintln!(
                "  size     {} ({} packages)",
                openfactory_build::cache::human_bytes(output.iso_size_bytes),
                output.packages
            );
            let stages: Vec<String> = output
                .stage_seconds
                .iter()
                .map(|(stage, s)| format!("{stage} {s:.0}s"))
                .collect();
            eprintln!(
                "  stages   {} (base {})",
                stages.join(", "),
                if output.base_reused { "cached" } else { "made" }
            );
            eprintln!("  details  {}", out_dir.display());
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            eprintln!("error: build {build_id} failed: {e}");
            eprintln!("  log: {}", log_path.display());
            if args.json {
                super::print_json(&serde_json::json!({
                    "build_id": build_id,
                    "error": e.to_string(),
                    "failed_step": e.failed_step(),
                    "log": log_path,
                }))?;
            }
            Ok(ExitCode::from(1))
        }
    }
}
