//! The test runner against the in-memory VM backend: whatever way a run
//! ends, its VM is gone; checks are retried until their deadline and keep
//! their evidence when they fail.

use std::sync::Mutex;
use std::time::Duration;

use openfactory_core::plan::PlannedCheck;
use openfactory_core::step::CheckKind;
use openfactory_testrun::exec::ExecTimings;
use openfactory_testrun::probe::probe;
use openfactory_testrun::{
    CheckResult, CheckStatus, RunObserver, RunReport, RunSettings, RunStatus, Stage, Timings,
    run_with_timings,
};
use openfactory_vm::double::{AgentMode, Call, Exec};
use openfactory_vm::{DoubleBackend, VmBackend};
use tokio_util::sync::CancellationToken;

/// The real pacing, scaled down about a hundredfold.
fn fast() -> Timings {
    Timings {
        boot_ping: Duration::from_millis(10),
        boot_poll: Duration::from_millis(5),
        expected_boot: Duration::from_millis(500),
        retry: Duration::from_millis(10),
        journal: Duration::from_millis(200),
        exec: ExecTimings {
            // The double answers at once; only a silent agent waits this out.
            request: Duration::from_secs(5),
            poll: Duration::from_millis(2),
        },
    }
}

/// A run that would take minutes if any of `fast`'s waits were real ones.
const RUN: Duration = Duration::from_secs(20);

const SERIAL: &str = "\u{1b}[0;32m  OK  \u{1b}[0m Started ssh.service\r\ndebian login: ";

fn settings(vm_id: &str, timeout: Duration) -> RunSettings {
    RunSettings {
        vm_id: vm_id.into(),
        iso: "/builds/b1/image.iso".into(),
        memory_mb: 1024,
        vcpus: 1,
        timeout,
    }
}

fn check(name: &str, kind: CheckKind, timeout_seconds: u32) -> PlannedCheck {
    PlannedCheck {
        name: format!("recipe/{name}"),
        source: "recipe".into(),
        description: format!("{name} works"),
        kind,
        timeout_seconds,
    }
}

fn unit(name: &str) -> CheckKind {
    CheckKind::UnitActive { unit: name.into() }
}

fn command(argv: &[&str]) -> CheckKind {
    CheckKind::CommandSucceeds {
        argv: argv.iter().map(|a| (*a).to_owned()).collect(),
    }
}

/// `systemctl is-active -- <unit>` answers `state` (exit 0 when active).
fn script_unit(vms: &DoubleBackend, name: &str, state: &str) {
    let code = if state == "active" { 0 } else { 3 };
    vms.script(
        probe(&unit(name)).argv,
        [Exec::output(code, &format!("{state}\n"), "")],
    );
}

/// Records what the run reported and lets a test act at a given moment
/// (stop the run, crash the VM).
struct Observer {
    seen: Mutex<Vec<(Stage, u8, String)>>,
    hook: Box<dyn Fn(Stage, u8) + Send + Sync>,
}

impl Observer {
    fn new(hook: impl Fn(Stage, u8) + Send + Sync + 'static) -> Self {
        Observer {
            seen: Mutex::new(Vec::new()),
            hook: Box::new(hook),
        }
    }

    fn stages(&self) -> Vec<Stage> {
        let mut stages: Vec<Stage> = self.seen.lock().unwrap().iter().map(|s| s.0).collect();
        stages.dedup();
        stages
    }
}

impl RunObserver for Observer {
    fn progress(&self, stage: Stage, percent: u8, message: &str, _done: &[CheckResult]) {
        self.seen
            .lock()
            .unwrap()
            .push((stage, percent, message.to_owned()));
        (self.hook)(stage, percent);
    }
}

/// One way a run can end.
struct Way {
    name: &'static str,
    ends: RunStatus,
    timeout: Duration,
    checks: Vec<PlannedCheck>,
    /// How the backend behaves before the run.
    setup: fn(&DoubleBackend),
    /// Called on every progress report, with the run's VM id.
    during: fn(Stage, u8, &DoubleBackend, &CancellationToken, &str),
}

fn nothing_during(_: Stage, _: u8, _: &DoubleBackend, _: &CancellationToken, _: &str) {}

fn ssh_active(vms: &DoubleBackend) {
    script_unit(vms, "ssh", "active");
}

fn ways_out() -> Vec<Way> {
    vec![
        Way {
            name: "passed",
            ends: RunStatus::Passed,
            timeout: RUN,
            checks: vec![check("ssh", unit("ssh"), 30)],
            setup: |vms| {
                vms.set_agent(AgentMode::BootsAfter(3));
                ssh_active(vms);
            },
            during: nothing_during,
        },
        Way {
            name: "a failed check",
            ends: RunStatus::Failed,
            timeout: RUN,
            checks: vec![check("ssh", unit("ssh"), 30)],
            setup: |vms| {
                script_unit(vms, "ssh", "failed");
                vms.script_program("journalctl", [Exec::output(0, "ssh: bad config", "")]);
            },
            during: nothing_during,
        },
        Way {
            name: "a check the guest agent cannot run",
            ends: RunStatus::Failed,
            timeout: RUN,
            checks: vec![check("tool", command(&["/usr/bin/missing"]), 30)],
            setup: |vms| {
                vms.script(
                    ["/usr/bin/missing"],
                    [Exec::Refused("Failed to execute child process".into())],
                );
            },
            during: nothing_during,
        },
        Way {
            name: "the agent never answering",
            ends: RunStatus::TimedOut,
            timeout: Duration::from_millis(200),
            checks: vec![check("ssh", unit("ssh"), 30)],
            setup: |vms| vms.set_agent(AgentMode::Silent),
            during: nothing_during,
        },
        Way {
            name: "the VM dying while it boots",
            ends: RunStatus::Error,
            timeout: RUN,
            checks: vec![check("ssh", unit("ssh"), 30)],
            setup: |vms| vms.set_agent(AgentMode::Silent),
            during: |stage, percent, vms, _, id| {
                // Past "starting the test VM": the VM exists and boots.
                if stage == Stage::Boot && percent > 1 && vms.is_running(id) {
                    vms.crash(id);
                }
            },
        },
        Way {
            name: "an error creating the VM",
            ends: RunStatus::Error,
            timeout: RUN,
            checks: vec![check("ssh", unit("ssh"), 30)],
            setup: |vms| vms.fail_create(Some("qemu-system-x86_64: no KVM")),
            during: nothing_during,
        },
        Way {
            name: "a stop request while the VM is being created",
            ends: RunStatus::Stopped,
            timeout: RUN,
            checks: vec![check("ssh", unit("ssh"), 30)],
            setup: |vms| vms.set_create_delay(Duration::from_secs(60)),
            during: |stage, _, _, stop, _| {
                if stage == Stage::Boot {
                    stop.cancel();
                }
            },
        },
        Way {
            name: "a stop request while it boots",
            ends: RunStatus::Stopped,
            timeout: RUN,
            checks: vec![check("ssh", unit("ssh"), 30)],
            setup: |vms| vms.set_agent(AgentMode::Silent),
            during: |stage, percent, _, stop, _| {
                if stage == Stage::Boot && percent > 1 {
                    stop.cancel();
                }
            },
        },
        Way {
            name: "a stop request while a check runs",
            ends: RunStatus::Stopped,
            timeout: RUN,
            checks: vec![check("slow", command(&["sleep", "infinity"]), 30)],
            setup: |vms| vms.script(["sleep", "infinity"], [Exec::Hangs]),
            during: |stage, _, _, stop, _| {
                if stage == Stage::Checks {
                    stop.cancel();
                }
            },
        },
        Way {
            name: "the run's own timeout while the VM is being created",
            ends: RunStatus::TimedOut,
            timeout: Duration::from_millis(100),
            checks: vec![check("ssh", unit("ssh"), 30)],
            setup: |vms| vms.set_create_delay(Duration::from_secs(60)),
            during: nothing_during,
        },
        Way {
            name: "the run's own timeout while a check waits for the agent",
            ends: RunStatus::TimedOut,
            timeout: Duration::from_millis(200),
            checks: vec![
                check("ssh", unit("ssh"), 30),
                check("slow", command(&["sleep", "1"]), 30),
            ],
            setup: |vms| {
                ssh_active(vms);
                vms.script(["sleep", "1"], [Exec::exit(0)]);
            },
            during: |stage, percent, vms, _, _| {
                // The second check (past 40 %) asks an agent that has hung.
                if stage == Stage::Checks && percent > 40 {
                    vms.set_agent(AgentMode::Silent);
                }
            },
        },
    ]
}

async fn run_way(way: &Way, vm: &str) -> (DoubleBackend, RunReport, Observer) {
    let vms = DoubleBackend::new();
    vms.set_serial_log(SERIAL);
    (way.setup)(&vms);
    let stop = CancellationToken::new();
    let observer = {
        let (vms, stop, vm) = (vms.clone(), stop.clone(), vm.to_owned());
        let during = way.during;
        Observer::new(move |stage, percent| during(stage, percent, &vms, &stop, &vm))
    };
    let report = tokio::time::timeout(
        RUN * 2,
        run_with_timings(
            &vms,
            &settings(vm, way.timeout),
            &fast(),
            &way.checks,
            &observer,
            stop,
        ),
    )
    .await
    .unwrap_or_else(|_| panic!("{}: the run never ended", way.name));
    (vms, report, observer)
}

#[tokio::test]
async fn the_vm_is_deleted_on_every_way_out() {
    for (i, way) in ways_out().iter().enumerate() {
        let vm = format!("7e57{i:02x}");
        let (vms, report, observer) = run_way(way, &vm).await;
        let name = way.name;
        assert_eq!(report.status, way.ends, "{name}: {}", report.message);

        // Deleted once, and nothing asked of it afterwards.
        assert_eq!(vms.deletes(&vm), 1, "{name}: {:#?}", vms.calls_for(&vm));
        assert!(vms.list().is_empty(), "{name}: {:?} left", vms.list());
        assert_eq!(
            vms.calls_for(&vm).last(),
            Some(&Call::Delete(vm.clone())),
            "{name}: the delete is the last word"
        );
        let calls = vms.calls().len();
        tokio::time::sleep(Duration::from_millis(30)).await;
        assert_eq!(
            vms.calls().len(),
            calls,
            "{name}: something still talks to the VM: {:?}",
            &vms.calls()[calls..]
        );

        // The evidence is taken before the VM goes, whatever happened.
        let serial_at = vms
            .calls_for(&vm)
            .iter()
            .position(|c| *c == Call::SerialLog(vm.clone()));
        assert!(serial_at.is_some(), "{name}: the serial log was not read");
        assert_eq!(
            report.serial_log,
            ["  OK   Started ssh.service", "debian login: "],
            "{name}"
        );

        // Every check is accounted for, and cleanup was the last stage.
        assert_eq!(report.checks.len(), way.checks.len(), "{name}");
        assert_eq!(observer.stages().last(), Some(&Stage::Cleanup), "{name}");
    }
}

#[tokio::test]
async fn each_way_out_reports_why() {
    let ways = ways_out();
    let find = |name: &str| ways.iter().find(|w| w.name == name).unwrap();

    let (vms, report, _) = run_way(find("passed"), "a1").await;
    assert_eq!(report.checks[0].status, CheckStatus::Passed);
    assert_eq!(report.accelerator.as_deref(), Some("tcg"));
    assert!(report.boot_seconds.is_some());
    assert!(
        report.message.starts_with("all 1 checks passed"),
        "{}",
        report.message
    );
    let pings = vms
        .calls_for("a1")
        .iter()
        .filter(|c| matches!(c, Call::Agent { request, .. } if request["execute"] == "guest-ping"))
        .count();
    assert_eq!(pings, 4, "three unanswered boot probes, then the answer");

    let (_, report, _) = run_way(find("the agent never answering"), "a2").await;
    assert!(report.boot_seconds.is_none());
    assert_eq!(report.checks[0].status, CheckStatus::Skipped);
    assert_eq!(
        report.checks[0].message,
        "not run: the run's time budget ran out"
    );

    let (_, report, _) = run_way(find("an error creating the VM"), "a3").await;
    assert!(
        report.message.contains("did not start") && report.message.contains("no KVM"),
        "{}",
        report.message
    );
    assert_eq!(
        report.checks[0].message,
        "not run: the VM never became ready"
    );

    let (_, report, _) = run_way(find("the VM dying while it boots"), "a4").await;
    assert!(
        report.message.contains("stopped while booting"),
        "{}",
        report.message
    );

    let (_, report, _) = run_way(find("a stop request while a check runs"), "a5").await;
    assert_eq!(report.message, "stopped on request");
    assert_eq!(report.checks[0].status, CheckStatus::Skipped);

    let (_, report, _) = run_way(
        find("the run's own timeout while a check waits for the agent"),
        "a6",
    )
    .await;
    assert_eq!(report.checks[0].status, CheckStatus::Passed);
    assert_eq!(report.checks[1].status, CheckStatus::Skipped);

    let (_, report, _) = run_way(find("a check the guest agent cannot run"), "a7").await;
    assert_eq!(report.checks[0].status, CheckStatus::Error);
    assert!(
        report.checks[0]
            .message
            .contains("Failed to execute child process"),
        "{}",
        report.checks[0].message
    );
}

#[tokio::test]
async fn the_observer_sees_the_stages_in_order() {
    let vms = DoubleBackend::new();
    ssh_active(&vms);
    let observer = Observer::new(|_, _| {});
    let report = run_with_timings(
        &vms,
        &settings("b1", RUN),
        &fast(),
        &[check("ssh", unit("ssh"), 30)],
        &observer,
        CancellationToken::new(),
    )
    .await;
    assert_eq!(report.status, RunStatus::Passed);
    assert_eq!(
        observer.stages(),
        [Stage::Boot, Stage::Checks, Stage::Cleanup]
    );
    let percents: Vec<u8> = observer.seen.lock().unwrap().iter().map(|s| s.1).collect();
    assert!(percents.windows(2).all(|w| w[0] <= w[1]), "{percents:?}");
}

#[tokio::test]
async fn a_check_that_fails_first_is_retried_until_it_passes() {
    let vms = DoubleBackend::new();
    let argv = ["test", "-e", "/run/ready"];
    vms.script(
        argv,
        [
            Exec::exit(1),
            Exec::exit(1).after_polls(2),
            Exec::output(0, "", ""),
        ],
    );
    let report = run_with_timings(
        &vms,
        &settings("c1", RUN),
        &fast(),
        &[check(
            "ready",
            CheckKind::FileExists {
                path: "/run/ready".into(),
            },
            30,
        )],
        &Observer::new(|_, _| {}),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(report.status, RunStatus::Passed, "{}", report.message);
    let result = &report.checks[0];
    assert_eq!(result.status, CheckStatus::Passed);
    assert_eq!(result.attempts, 3);
    assert_eq!(result.exit_code, Some(0));
    assert_eq!(vms.execs("c1"), [argv, argv, argv]);
}

#[tokio::test]
async fn a_check_that_never_passes_is_retried_until_its_deadline() {
    let vms = DoubleBackend::new();
    vms.script(["false"], [Exec::exit(1)]);
    ssh_active(&vms);
    let timings = Timings {
        retry: Duration::from_millis(50),
        ..fast()
    };
    let report = run_with_timings(
        &vms,
        &settings("c2", RUN),
        &timings,
        &[
            check("never", command(&["false"]), 1),
            check("ssh", unit("ssh"), 30),
        ],
        &Observer::new(|_, _| {}),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(report.status, RunStatus::Failed, "{}", report.message);
    let never = &report.checks[0];
    assert_eq!(never.status, CheckStatus::Failed);
    // One second of attempts 50 ms apart; not one attempt more after it.
    assert!(
        (0.9..1.5).contains(&never.duration_seconds),
        "{}",
        never.duration_seconds
    );
    assert!(
        (10..=21).contains(&never.attempts),
        "{} attempts",
        never.attempts
    );
    assert_eq!(vms.execs("c2").len() as u32, never.attempts + 1);
    assert!(
        never
            .message
            .starts_with("the command ended with exit code 1 (still, after 1 s and "),
        "{}",
        never.message
    );
    // Its deadline is its own: the next check still runs.
    assert_eq!(report.checks[1].status, CheckStatus::Passed);
    assert_eq!(report.message, "1 of 2 checks did not pass: recipe/never");
}

#[tokio::test]
async fn a_failed_check_keeps_its_evidence() {
    let vms = DoubleBackend::new();
    vms.set_serial_log(SERIAL);
    vms.script(
        ["/usr/local/bin/selftest", "--quick"],
        [
            Exec::output(2, "step 1 ok\n", "first try\n"),
            Exec::output(
                2,
                "step 1 ok\nstep 2 failed\n",
                "selftest: /etc/app.conf: no such file\n",
            ),
        ],
    );
    script_unit(&vms, "app", "failed");
    vms.script_program(
        "journalctl",
        [Exec::output(0, "app[312]: cannot bind :80\n", "")],
    );
    let report = run_with_timings(
        &vms,
        &settings("d1", RUN),
        &fast(),
        &[
            check(
                "selftest",
                command(&["/usr/local/bin/selftest", "--quick"]),
                1,
            ),
            check("app", unit("app"), 30),
        ],
        &Observer::new(|_, _| {}),
        CancellationToken::new(),
    )
    .await;
    assert_eq!(report.status, RunStatus::Failed);

    // A command retried to its deadline: the last attempt's exit code and output.
    let selftest = &report.checks[0];
    assert_eq!(selftest.status, CheckStatus::Failed);
    assert_eq!(selftest.command, "/usr/local/bin/selftest --quick");
    assert_eq!(selftest.exit_code, Some(2));
    assert_eq!(selftest.stdout, "step 1 ok\nstep 2 failed\n");
    assert_eq!(selftest.stderr, "selftest: /etc/app.conf: no such file\n");
    assert!(selftest.attempts > 1);

    // A unit in `failed` fails at once, with its state and its journal.
    let app = &report.checks[1];
    assert_eq!(app.status, CheckStatus::Failed);
    assert_eq!(app.attempts, 1);
    assert_eq!(app.message, "app entered the failed state");
    assert_eq!(app.exit_code, Some(3));
    assert_eq!(app.stdout, "failed\n");
    assert_eq!(
        app.stderr,
        "journalctl -u app:\napp[312]: cannot bind :80\n"
    );
    assert_eq!(
        vms.execs("d1").last().unwrap(),
        &["journalctl", "--no-pager", "-n", "30", "-u", "app"]
    );

    // And the console, escape codes removed.
    assert_eq!(
        report.serial_log,
        ["  OK   Started ssh.service", "debian login: "]
    );
    assert_eq!(vms.deletes("d1"), 1);
}
