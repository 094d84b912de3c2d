//! Running one external tool: its output goes to the build log line by line,
//! a cancelled build kills it with everything it started, and a failure
//! carries the last lines it printed.
//!
//! Each command leads a process group of its own, and cancelling kills the
//! group: mmdebstrap's apt and dpkg, grub-mkrescue's xorriso go with it. (The
//! commands that enter the image, and the bootstrap, also run in a PID
//! namespace of their own, which the kernel empties when its first process
//! dies, so not even a process that left the group survives.)

use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::process::CommandExt as _;
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use crate::progress::{CancelFlag, Log};

/// How many of a failed command's last lines its error keeps.
const TAIL_LINES: usize = 25;

#[derive(Debug, thiserror::Error)]
pub enum CommandError {
    #[error("`{program}` could not be started: {source}")]
    Spawn {
        program: String,
        #[source]
        source: std::io::Error,
    },
    #[error("`{program}` exited with {status}{}", tail_text(.tail))]
    Failed {
        program: String,
        status: String,
        tail: Vec<String>,
    },
    #[error("cancelled")]
    Cancelled,
}

fn tail_text(tail: &[String]) -> String {
    if tail.is_empty() {
        String::new()
    } else {
        format!(":\n{}", tail.join("\n"))
    }
}

impl CommandError {
    /// The last lines the command printed, most useful first for people:
    /// apt's `E:` lines, then the rest.
    pub fn summary(&self) -> String {
        match self {
            CommandError::Failed {
                program,
                status,
                tail,
            } => {
                let errors: Vec<&String> = tail
                    .iter()
                    .filter(|l| l.starts_with("E:") || l.contains("rror"))
                    .collect();
                let shown: Vec<&String> = if errors.is_empty() {
                    tail.iter().rev().take(8).rev().collect()
                } else {
                    errors.into_iter().rev().take(8).rev().collect()
                };
                let lines: Vec<&str> = shown.iter().map(|s| s.as_str()).collect();
                format!("`{program}` exited with {status}: {}", lines.join(" | "))
            }
            other => other.to_string(),
        }
    }
}

/// `program` in fresh mount and PID namespaces (and UTS and IPC ones with
/// `uts_ipc`): what it mounts goes away with it, and when it dies, or is
/// killed on cancel, the kernel kills every process it started.
pub fn isolated(program: &str, uts_ipc: bool) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.arg("--mount");
    if uts_ipc {
        cmd.args(["--uts", "--ipc"]);
    }
    cmd.args([
        "--pid",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        "--",
        program,
    ]);
    cmd
}

/// What a finished command printed (stdout only when asked to capture it).
#[derive(Debug, Default)]
pub struct Output {
    pub stdout: Vec<u8>,
}

/// Runs commands for one build.
pub struct Runner<'a> {
    pub log: &'a Log<'a>,
    pub cancel: &'a CancelFlag,
}

impl Runner<'_> {
    /// Run `command`, logging stdout and stderr; feed it `stdin` if given.
    pub fn run(&self, command: &mut Command, stdin: Option<&[u8]>) -> Result<(), CommandError> {
        self.run_inner(command, stdin, false).map(|_| ())
    }

    /// Run `command`, logging stderr and returning stdout.
    pub fn capture(&self, command: &mut Command) -> Result<Output, CommandError> {
        self.run_inner(command, None, true)
    }

    fn run_inner(
        &self,
        command: &mut Command,
        stdin: Option<&[u8]>,
        capture: bool,
    ) -> Result<Output, CommandError> {
        if self.cancel.is_cancelled() {
            return Err(CommandError::Cancelled);
        }
        let program = command.get_program().to_string_lossy().into_owned();
        tracing::debug!(?command, "running");
        command
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        // If the host dies, its tools die with it instead of running on in a
        // half-built root (unshare's --kill-child takes the namespace along).
        command.process_group(0);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(command, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let mut child = command.spawn().map_err(|source| CommandError::Spawn {
            program: program.clone(),
            source,
        })?;
        if let (Some(bytes), Some(mut pipe)) = (stdin, child.stdin.take()) {
            // Small inputs (a password hash line); write before reading.
            let _ = pipe.write_all(bytes);
        }

        let (tx, rx) = mpsc::channel::<String>();
        let stderr = child.stderr.take().expect("piped");
        let err_tx = tx.clone();
        let err_reader = thread::spawn(move || forward_lines(stderr, err_tx));
        let stdout = child.stdout.take().expect("piped");
        let out_reader = if capture {
            thread::spawn(move || {
                let mut bytes = Vec::new();
                let _ = BufReader::new(stdout).read_to_end(&mut bytes);
                drop(tx);
                bytes
            })
        } else {
            thread::spawn(move || {
                forward_lines(stdout, tx);
                Vec::new()
            })
        };

        let mut tail = VecDeque::with_capacity(TAIL_LINES);
        let mut keep = |line: String, log: &Log| {
            log.line(&line);
            if tail.len() == TAIL_LINES {
                tail.pop_front();
            }
            tail.push_back(line);
        };
        let status = loop {
            match rx.recv_timeout(Duration::from_millis(100)) {
                Ok(line) => {
                    keep(line, self.log);
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => {
                    // Both pipes closed: the process is exiting.
                    match child.wait() {
                        Ok(status) => break status,
                        Err(source) => {
                            return Err(CommandError::Spawn { program, source });
                        }
                    }
                }
            }
            if self.cancel.is_cancelled() {
                // The group the command leads (its id is the command's pid): all of it.
                // SAFETY: killpg only sends a signal.
                unsafe { libc::killpg(child.id() as libc::pid_t, libc::SIGKILL) };
                let _ = child.kill();
                let _ = child.wait();
                return Err(CommandError::Cancelled);
            }
        };
        while let Ok(line) = rx.try_recv() {
            keep(line, self.log);
        }
        let _ = err_reader.join();
        let stdout = out_reader.join().unwrap_or_default();
        if status.success() {
            Ok(Output { stdout })
        } else {
            Err(CommandError::Failed {
                program,
                status: status.to_string(),
                tail: tail.into_iter().collect(),
            })
        }
    }
}

fn forward_lines(pipe: impl Read, tx: mpsc::Sender<String>) {
    let mut reader = BufReader::new(pipe);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                let line = String::from_utf8_lossy(&buf);
                // Progress bars redraw with `\r`: keep the last state only.
                let line = line.trim_end().rsplit('\r').next().unwrap_or("").to_owned();
                if tx.send(line).is_err() {
                    return;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::progress::Silent;

    fn log(dir: &tempfile::TempDir) -> Log<'static> {
        Log::create(&dir.path().join("log"), &Silent).unwrap()
    }

    #[test]
    fn output_is_logged_and_failures_keep_the_tail() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        let cancel = CancelFlag::new();
        let runner = Runner {
            log: &log,
            cancel: &cancel,
        };
        let err = runner
            .run(
                Command::new("sh").args(["-c", "echo one; echo 'E: broken' >&2; exit 3"]),
                None,
            )
            .unwrap_err();
        let CommandError::Failed { tail, status, .. } = &err else {
            panic!("{err:?}")
        };
        assert!(status.contains('3'), "{status}");
        assert!(tail.contains(&"E: broken".to_owned()), "{tail:?}");
        assert!(err.summary().contains("E: broken"));
        let text = std::fs::read_to_string(dir.path().join("log")).unwrap();
        assert!(text.contains("one") && text.contains("E: broken"), "{text}");
    }

    #[test]
    fn capture_returns_stdout_and_stdin_is_fed() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        let cancel = CancelFlag::new();
        let runner = Runner {
            log: &log,
            cancel: &cancel,
        };
        let out = runner.capture(Command::new("echo").arg("hello")).unwrap();
        assert_eq!(out.stdout, b"hello\n");
        runner
            .run(
                Command::new("grep").arg("-q").arg("secret"),
                Some(b"a secret\n"),
            )
            .unwrap();
    }

    #[test]
    fn cancelling_kills_the_command() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        let cancel = CancelFlag::new();
        let flag = cancel.clone();
        let killer = thread::spawn(move || {
            thread::sleep(Duration::from_millis(200));
            flag.cancel();
        });
        let runner = Runner {
            log: &log,
            cancel: &cancel,
        };
        let started = std::time::Instant::now();
        let err = runner
            .run(Command::new("sleep").arg("30"), None)
            .unwrap_err();
        killer.join().unwrap();
        assert!(matches!(err, CommandError::Cancelled), "{err:?}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    /// Processes whose command line holds `marker`.
    fn processes_with(marker: &str) -> Vec<String> {
        std::fs::read_dir("/proc")
            .unwrap()
            .flatten()
            .filter(|e| {
                e.file_name()
                    .to_string_lossy()
                    .bytes()
                    .all(|b| b.is_ascii_digit())
            })
            .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
            .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
            .filter(|c| c.contains(marker))
            .collect()
    }

    #[test]
    fn cancelling_kills_what_the_command_started_too() {
        let dir = tempfile::tempdir().unwrap();
        let log = log(&dir);
        let cancel = CancelFlag::new();
        let runner = Runner {
            log: &log,
            cancel: &cancel,
        };
        // A shell that starts children (as mmdebstrap starts apt, and apt dpkg), each
        // marked with a duration no other process uses.
        let marker = format!("{}.{}", 300 + std::process::id() % 100, std::process::id());
        let script = format!("sleep {marker} & sleep {marker} & (sleep {marker}; true) & wait");
        let flag = cancel.clone();
        let probe = marker.clone();
        let killer = thread::spawn(move || {
            // Cancel once the children run.
            for _ in 0..100 {
                if processes_with(&format!("sleep {probe}")).len() >= 3 {
                    break;
                }
                thread::sleep(Duration::from_millis(50));
            }
            flag.cancel();
        });
        let err = runner
            .run(Command::new("sh").args(["-c", &script]), None)
            .unwrap_err();
        killer.join().unwrap();
        assert!(matches!(err, CommandError::Cancelled), "{err:?}");
        // SIGKILL is delivered at once; give the kernel a moment to reap.
        let mut left = processes_with(&format!("sleep {marker}"));
        for _ in 0..40 {
            if left.is_empty() {
                break;
            }
            thread::sleep(Duration::from_millis(50));
            left = processes_with(&format!("sleep {marker}"));
        }
        assert!(left.is_empty(), "still running after cancel: {left:?}");
    }
}
