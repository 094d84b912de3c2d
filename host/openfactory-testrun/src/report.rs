//! What a test run found: per check, its status and evidence; per run, the
//! verdict, totals, boot time and the serial console. Also as JUnit XML.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CheckStatus {
    Passed,
    /// It ran and did not pass by its deadline (or a unit entered `failed`).
    Failed,
    /// It could not be run (the agent refused the command, or the VM went away).
    Error,
    /// Not run: the run stopped, timed out or never booted first.
    Skipped,
    /// Its command was still running at the deadline.
    TimedOut,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum RunStatus {
    Passed,
    Failed,
    Error,
    Stopped,
    TimedOut,
}

impl CheckStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            CheckStatus::Passed => "passed",
            CheckStatus::Failed => "failed",
            CheckStatus::Error => "error",
            CheckStatus::Skipped => "skipped",
            CheckStatus::TimedOut => "timed_out",
        }
    }
}

impl RunStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            RunStatus::Passed => "passed",
            RunStatus::Failed => "failed",
            RunStatus::Error => "error",
            RunStatus::Stopped => "stopped",
            RunStatus::TimedOut => "timed_out",
        }
    }
}

/// One check's result and its evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct CheckResult {
    pub name: String,
    pub source: String,
    pub description: String,
    pub status: CheckStatus,
    /// Why, in a sentence.
    pub message: String,
    pub duration_seconds: f64,
    pub attempts: u32,
    /// The command run inside the guest (last attempt).
    pub command: String,
    pub exit_code: Option<i32>,
    /// Excerpts of the last attempt's output.
    pub stdout: String,
    pub stderr: String,
}

/// Everything a run found.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct RunReport {
    pub status: RunStatus,
    pub message: String,
    /// Seconds from starting the VM to its guest agent answering.
    pub boot_seconds: Option<f64>,
    pub duration_seconds: f64,
    /// kvm or tcg.
    pub accelerator: Option<String>,
    pub checks: Vec<CheckResult>,
    /// The guest's serial console (the last lines), escape codes removed.
    pub serial_log: Vec<String>,
}

/// Longest stdout/stderr excerpt kept per check.
pub const EXCERPT: usize = 2000;

/// The end of `text` (that is where errors are), at most `EXCERPT` characters.
pub fn excerpt(text: &str) -> String {
    let chars = text.chars().count();
    if chars <= EXCERPT {
        return text.to_owned();
    }
    let tail: String = text.chars().skip(chars - EXCERPT).collect();
    format!("…{tail}")
}

impl RunReport {
    pub fn passed(&self) -> u32 {
        self.count(CheckStatus::Passed)
    }

    pub fn count(&self, status: CheckStatus) -> u32 {
        self.checks.iter().filter(|c| c.status == status).count() as u32
    }

    /// The report as JUnit XML (one suite, one case per check) for CI systems.
    pub fn junit(&self, suite: &str) -> String {
        let mut xml = String::from("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n");
        let failures = self.count(CheckStatus::Failed) + self.count(CheckStatus::TimedOut);
        xml.push_str(&format!(
            "<testsuites>\n  <testsuite name=\"{}\" tests=\"{}\" failures=\"{failures}\" errors=\"{}\" skipped=\"{}\" time=\"{:.3}\">\n",
            escape(suite),
            self.checks.len(),
            self.count(CheckStatus::Error),
            self.count(CheckStatus::Skipped),
            self.duration_seconds
        ));
        for c in &self.checks {
            xml.push_str(&format!(
                "    <testcase classname=\"{}\" name=\"{}\" time=\"{:.3}\">",
                escape(&c.source),
                escape(&c.name),
                c.duration_seconds
            ));
            let evidence = format!(
                "{}\ncommand: {}\nexit code: {}\nstdout:\n{}\nstderr:\n{}",
                c.message,
                c.command,
                c.exit_code.map_or("none".into(), |e| e.to_string()),
                c.stdout,
                c.stderr
            );
            match c.status {
                CheckStatus::Passed => {}
                CheckStatus::Failed | CheckStatus::TimedOut => xml.push_str(&format!(
                    "\n      <failure message=\"{}\" type=\"{}\">{}</failure>\n    ",
                    escape(&c.message),
                    if c.status == CheckStatus::Failed {
                        "failed"
                    } else {
                        "timed_out"
                    },
                    escape(&evidence)
                )),
                CheckStatus::Error => xml.push_str(&format!(
                    "\n      <error message=\"{}\">{}</error>\n    ",
                    escape(&c.message),
                    escape(&evidence)
                )),
                CheckStatus::Skipped => xml.push_str(&format!(
                    "\n      <skipped message=\"{}\"/>\n    ",
                    escape(&c.message)
                )),
            }
            xml.push_str("</testcase>\n");
        }
        xml.push_str(&format!(
            "    <system-out>{}</system-out>\n  </testsuite>\n</testsuites>\n",
            escape(&self.serial_log.join("\n"))
        ));
        xml
    }
}

/// XML text and attribute escaping; control characters XML 1.0 forbids are dropped.
fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            '\n' | '\t' => out.push(c),
            c if c.is_control() => {}
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(name: &str, status: CheckStatus) -> CheckResult {
        CheckResult {
            name: name.into(),
            source: "user".into(),
            description: "d".into(),
            status,
            message: "exit 1 <as expected?>".into(),
            duration_seconds: 1.5,
            attempts: 3,
            command: "false".into(),
            exit_code: Some(1),
            stdout: "\u{1b}out & more".into(),
            stderr: String::new(),
        }
    }

    #[test]
    fn junit_counts_and_escapes() {
        let report = RunReport {
            status: RunStatus::Failed,
            message: "1 of 3 checks failed".into(),
            boot_seconds: Some(50.0),
            duration_seconds: 60.0,
            accelerator: Some("tcg".into()),
            checks: vec![
                result("user/ok", CheckStatus::Passed),
                result("user/broken", CheckStatus::Failed),
                result("user/later", CheckStatus::Skipped),
            ],
            serial_log: vec!["login: <x>".into()],
        };
        assert_eq!(report.passed(), 1);
        let xml = report.junit("openfactory build b1");
        assert!(xml.contains(r#"<testsuite name="openfactory build b1" tests="3" failures="1" errors="0" skipped="1""#), "{xml}");
        assert!(
            xml.contains(r#"<failure message="exit 1 &lt;as expected?&gt;" type="failed">"#),
            "{xml}"
        );
        assert!(
            xml.contains("out &amp; more") && !xml.contains('\u{1b}'),
            "{xml}"
        );
        assert!(xml.contains("<system-out>login: &lt;x&gt;</system-out>"));
    }

    #[test]
    fn excerpts_keep_the_end() {
        let long = format!("{}END", "a".repeat(5000));
        let e = excerpt(&long);
        assert!(e.ends_with("END") && e.chars().count() == EXCERPT + 1);
    }
}
