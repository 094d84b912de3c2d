//! `openfactory test`: a test run here, on an ISO built from a recipe: the
//! recipe's declared checks (and `--test` additions) in a throwaway QEMU VM,
//! with a progress bar, a summary, and JUnit XML for CI.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use openfactory_testrun::{CheckResult, CheckStatus, RunObserver, RunSettings, RunStatus, Stage};
use openfactory_vm::{AccelSetting, QemuBackend};
use tokio_util::sync::CancellationToken;

use crate::config::Config;

#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// The recipe the ISO was built from (file or template id): its declared checks run.
    pub recipe: PathBuf,
    /// The ISO to boot (from `openfactory build … -o FILE`).
    #[arg(long, value_name = "FILE")]
    pub iso: PathBuf,
    /// Choose or add checks, as run_tests' `tests`: a check or source name (`docker`), or a
    /// JSON object (`{"port_open": 22}`). Repeat for several.
    #[arg(long = "test", value_name = "CHECK")]
    pub tests: Vec<String>,
    /// Write the results as JUnit XML here.
    #[arg(long, value_name = "FILE")]
    pub junit: Option<PathBuf>,
    /// Print the whole report as JSON on stdout.
    #[arg(long)]
    pub json: bool,
    #[arg(long, default_value = "auto")]
    pub accel: AccelSetting,
    #[arg(long, default_value_t = 1024)]
    pub memory_mb: u32,
    /// The whole run's budget (boot and checks), in seconds.
    #[arg(long, default_value_t = 900)]
    pub timeout_seconds: u64,
}

struct Bar(ProgressBar);

impl RunObserver for Bar {
    fn progress(&self, stage: Stage, percent: u8, message: &str, _done: &[CheckResult]) {
        self.0.set_prefix(stage.as_str());
        self.0.set_position(percent.into());
        self.0.set_message(message.to_owned());
    }
}

fn mark(status: CheckStatus) -> &'static str {
    match status {
        CheckStatus::Passed => "✓",
        CheckStatus::Failed | CheckStatus::TimedOut => "✗",
        CheckStatus::Error => "!",
        CheckStatus::Skipped => "-",
    }
}

pub fn run(args: TestArgs, config: &Config) -> anyhow::Result<ExitCode> {
    let Some(plan) = super::recipe::plan_or_report(config, &args.recipe)? else {
        return Ok(ExitCode::from(1));
    };
    anyhow::ensure!(
        plan.guest_agent,
        "the recipe says guest_agent = false: checks cannot reach inside its image"
    );
    anyhow::ensure!(args.iso.is_file(), "{} is not a file", args.iso.display());
    let tests: Vec<serde_json::Value> = args
        .tests
        .iter()
        .map(|t| {
            if t.trim_start().starts_with('{') {
                serde_json::from_str(t).with_context(|| format!("--test {t}: not valid JSON"))
            } else {
                Ok(serde_json::Value::String(t.clone()))
            }
        })
        .collect::<anyhow::Result<_>>()?;
    let checks =
        openfactory_testrun::select(&plan.checks, (!tests.is_empty()).then_some(&tests[..]))
            .map_err(|errors| anyhow::anyhow!("--test:\n  {}", errors.join("\n  ")))?;

    let mut id = [0u8; 8];
    getrandom::fill(&mut id).expect("the OS has randomness");
    let settings = RunSettings {
        vm_id: hex::encode(id),
        iso: std::fs::canonicalize(&args.iso)?,
        memory_mb: args.memory_mb,
        vcpus: 1,
        timeout: Duration::from_secs(args.timeout_seconds),
    };
    let backend = QemuBackend::new(&config.home.join("vms"), args.accel);
    let bar = ProgressBar::new(100);
    bar.set_style(
        ProgressStyle::with_template(
            "{spinner} [{elapsed_precise}] {bar:32.cyan/blue} {pos:>3}% {prefix:7} {wide_msg}",
        )
        .expect("valid template")
        .progress_chars("█▓░"),
    );
    bar.enable_steady_tick(Duration::from_millis(120));
    eprintln!(
        "Testing {} with {} checks",
        args.iso.display(),
        checks.len()
    );
    let runtime = tokio::runtime::Runtime::new()?;
    let report = runtime.block_on(async {
        let stop = CancellationToken::new();
        let on_signal = stop.clone();
        tokio::spawn(async move {
            if tokio::signal::ctrl_c().await.is_ok() {
                on_signal.cancel();
            }
        });
        openfactory_testrun::run(&backend, &settings, &checks, &Bar(bar.clone()), stop).await
    });
    bar.finish_and_clear();
    for c in &report.checks {
        eprintln!(
            "  {} {} ({:.1}s) {}",
            mark(c.status),
            c.name,
            c.duration_seconds,
            if c.status == CheckStatus::Passed {
                ""
            } else {
                &c.message
            }
        );
    }
    eprintln!(
        "{}: {} (boot {}, {:.0} s in all)",
        report.status.as_str(),
        report.message,
        report
            .boot_seconds
            .map_or("-".into(), |b| format!("{b:.1} s")),
        report.duration_seconds
    );
    if let Some(path) = &args.junit {
        std::fs::write(
            path,
            report.junit(&format!("openfactory test {}", plan.recipe_name)),
        )
        .with_context(|| format!("writing {}", path.display()))?;
    }
    if args.json {
        super::print_json(&report)?;
    }
    Ok(if report.status == RunStatus::Passed {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}
