//! How each kind of check is asked inside the guest (a command run by the
//! guest agent, never a shell line built from input: values go in as
//! arguments), and how the answer is judged.

use openfactory_core::recipe::Protocol;
use openfactory_core::step::{CheckKind, HttpUrl, shell_words};

/// Looks for a listening socket in /proc/net (no iproute2 in a minimal image).
/// $1: the port; $2: tcp or udp.
const PORT_OPEN: &str = r#"port=$(printf '%04X' "$1")
if [ "$2" = udp ]; then
  grep -qsE "^ *[0-9]+: [0-9A-F]+:$port " /proc/net/udp /proc/net/udp6
else
  grep -qsE "^ *[0-9]+: [0-9A-F]+:$port [0-9A-F]+:[0-9A-F]+ 0A " /proc/net/tcp /proc/net/tcp6
fi"#;

/// An HTTP/1.0 GET with bash's /dev/tcp (no curl in a minimal image).
/// $1: host, $2: port, $3: path. Prints the status line; 2xx and 3xx pass.
const HTTP_GET: &str = r#"exec 3<>"/dev/tcp/$1/$2" || exit 7
printf 'GET %s HTTP/1.0\r\nHost: %s\r\nConnection: close\r\n\r\n' "$3" "$1" >&3
IFS=' ' read -r proto code rest <&3 || exit 8
echo "$proto $code $rest"
case "$code" in 2??|3??) exit 0 ;; *) exit 1 ;; esac"#;

/// How a probe's outcome is judged.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Exit status 0 passes.
    ExitZero,
    /// `systemctl is-active`: `active` passes, `failed` fails at once.
    UnitActive,
    /// `dpkg-query` printed `installed`.
    PackageInstalled,
}

/// One command inside the guest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Probe {
    pub argv: Vec<String>,
    pub verdict: Verdict,
}

/// What one attempt concluded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Judgement {
    Pass,
    /// Not yet: retry until the check's deadline.
    Retry,
    /// Will not pass: stop retrying (a unit in `failed`).
    Fail,
}

fn strings(items: &[&str]) -> Vec<String> {
    items.iter().map(|s| (*s).to_owned()).collect()
}

pub fn probe(kind: &CheckKind) -> Probe {
    let (argv, verdict) = match kind {
        CheckKind::UnitActive { unit } => (
            strings(&["systemctl", "is-active", "--", unit]),
            Verdict::UnitActive,
        ),
        CheckKind::CommandSucceeds { argv } => (argv.clone(), Verdict::ExitZero),
        CheckKind::PortOpen { port, protocol } => {
            let proto = match protocol {
                Protocol::Tcp => "tcp",
                Protocol::Udp => "udp",
            };
            (
                strings(&["sh", "-c", PORT_OPEN, "port_open", &port.to_string(), proto]),
                Verdict::ExitZero,
            )
        }
        CheckKind::FileExists { path } => (strings(&["test", "-e", path]), Verdict::ExitZero),
        CheckKind::PackageInstalled { package } => (
            strings(&["dpkg-query", "-W", "-f=${db:Status-Status}", "--", package]),
            Verdict::PackageInstalled,
        ),
        CheckKind::HttpGet { url } => {
            // Validated before a run starts; an unparsable URL probes nothing useful.
            let url = HttpUrl::parse(url).unwrap_or(HttpUrl {
                host: "invalid.".into(),
                port: 80,
                path: "/".into(),
            });
            (
                strings(&[
                    "timeout",
                    "10",
                    "bash",
                    "-c",
                    HTTP_GET,
                    "http_get",
                    &url.host,
                    &url.port.to_string(),
                    &url.path,
                ]),
                Verdict::ExitZero,
            )
        }
    };
    Probe { argv, verdict }
}

/// Judge one finished attempt.
pub fn judge(verdict: Verdict, exit_code: i32, stdout: &str) -> Judgement {
    let out = stdout.trim();
    match verdict {
        Verdict::ExitZero if exit_code == 0 => Judgement::Pass,
        Verdict::ExitZero => Judgement::Retry,
        Verdict::UnitActive if out == "active" => Judgement::Pass,
        Verdict::UnitActive if out == "failed" => Judgement::Fail,
        Verdict::UnitActive => Judgement::Retry,
        Verdict::PackageInstalled if exit_code == 0 && out == "installed" => Judgement::Pass,
        Verdict::PackageInstalled => Judgement::Retry,
    }
}

/// The probe as a person would type it, for reports (the fixed scripts by
/// their place only: their name in `$0` says what they do).
pub fn display(argv: &[String]) -> String {
    let shown: Vec<String> = argv
        .iter()
        .map(|a| {
            if a.contains('\n') {
                "<script>".to_owned()
            } else {
                a.clone()
            }
        })
        .collect();
    shell_words(&shown)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_are_arguments_never_shell_text() {
        let p = probe(&CheckKind::UnitActive {
            unit: "x; reboot".into(),
        });
        assert_eq!(p.argv, ["systemctl", "is-active", "--", "x; reboot"]);
        let p = probe(&CheckKind::HttpGet {
            url: "http://127.0.0.1:9100/metrics".into(),
        });
        assert_eq!(&p.argv[5..], ["http_get", "127.0.0.1", "9100", "/metrics"]);
        assert!(!p.argv[4].contains("9100"), "the script is fixed");
        let p = probe(&CheckKind::PortOpen {
            port: 22,
            protocol: Protocol::Tcp,
        });
        assert_eq!(&p.argv[3..], ["port_open", "22", "tcp"]);
    }

    #[test]
    fn answers_are_judged_like_nixos_waits() {
        assert_eq!(judge(Verdict::UnitActive, 0, "active\n"), Judgement::Pass);
        assert_eq!(
            judge(Verdict::UnitActive, 3, "activating\n"),
            Judgement::Retry
        );
        assert_eq!(judge(Verdict::UnitActive, 3, "failed\n"), Judgement::Fail);
        assert_eq!(judge(Verdict::ExitZero, 1, ""), Judgement::Retry);
        assert_eq!(
            judge(Verdict::PackageInstalled, 0, "installed"),
            Judgement::Pass
        );
        assert_eq!(
            judge(Verdict::PackageInstalled, 0, "not-installed"),
            Judgement::Retry
        );
    }

    #[test]
    fn commands_display_quoted_and_scripts_by_name() {
        let argv = strings(&["sh", "-c", "test -z \"$(x)\"", "it's"]);
        assert_eq!(display(&argv), r#"sh -c 'test -z "$(x)"' 'it'\''s'"#);
        let p = probe(&CheckKind::PortOpen {
            port: 22,
            protocol: Protocol::Tcp,
        });
        assert_eq!(display(&p.argv), "sh -c '<script>' port_open 22 tcp");
    }
}
