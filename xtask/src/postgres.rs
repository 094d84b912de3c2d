//! A PostgreSQL server for the tests, without systemd: a cluster of its own
//! (not Debian's `main`), owned by the `postgres` user, listening on
//! 127.0.0.1 only, trusting local connections. Tests create a fresh database
//! per server through the admin URL and drop it afterwards.
//!
//! `cargo xtask postgres [--data DIR] [--port N]` starts it (or finds it
//! running) and prints the admin URL; `cargo xtask test` does the same when
//! `OPENFACTORY_TEST_POSTGRES` is unset and it runs as root.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// Not Debian's 5432: a machine's own cluster may be running there.
pub const PORT: u16 = 5433;
/// A cache like the compiled dependencies: safe to delete, rebuilt on demand.
pub const DATA_DIR: &str = "/var/cache/openfactory/postgres/data";

/// Only for tests: durability off (a crash may lose the cluster, which is then
/// made anew), room for several servers' pools and parallel Rust tests.
const SETTINGS: &[&str] = &[
    "listen_addresses=127.0.0.1",
    "fsync=off",
    "synchronous_commit=off",
    "full_page_writes=off",
    "max_connections=300",
];

/// Who may connect: the local socket and 127.0.0.1, nothing else.
const PG_HBA: &str = "\
# Written by `cargo xtask postgres`: a test cluster, reachable from this machine only.
local all all trust
host  all all 127.0.0.1/32 trust
";

/// The newest installed server's binaries (`/usr/lib/postgresql/15/bin`).
pub fn bin_dir() -> Option<PathBuf> {
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .flatten()
        .filter_map(|e| {
            let major = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            (bin.join("initdb").is_file() && bin.join("pg_ctl").is_file()).then_some((major, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin)
}

/// The admin URL of the server on `port`.
pub fn admin_url(port: u16) -> String {
    format!("postgres://postgres@127.0.0.1:{port}/postgres")
}

/// Whether a server answers at `url` (pg_isready: accepting connections).
pub fn is_ready(url: &str) -> bool {
    Command::new("pg_isready")
        .args(["-q", "-t", "2", "-d", url])
        .stdin(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// Start the test cluster in `data` on `port` unless it already answers; its
/// admin URL. Needs root (it runs the server as `postgres`).
pub fn ensure(data: &Path, port: u16) -> Result<String> {
    let url = admin_url(port);
    if is_ready(&url) {
        eprintln!("xtask: PostgreSQL already running on 127.0.0.1:{port}");
        return Ok(url);
    }
    let started = Instant::now();
    let bin = bin_dir().context(
        "no PostgreSQL server under /usr/lib/postgresql: install Debian's `postgresql` package",
    )?;
    let socket_dir = PathBuf::from(format!("/tmp/openfactory-postgres-{port}"));
    owned_by_postgres(&socket_dir, 0o755)?;
    if let Err(e) = start(&bin, data, &socket_dir, port) {
        // The cluster is a cache: a broken one (another major version, a
        // crash with fsync off) is made anew, once. A directory that holds no
        // cluster at all is never removed.
        if !data.join("PG_VERSION").is_file() {
            return Err(e);
        }
        eprintln!(
            "xtask: PostgreSQL did not start from {} ({e:#}); making the cluster anew",
            data.display()
        );
        std::fs::remove_dir_all(data).with_context(|| format!("removing {}", data.display()))?;
        start(&bin, data, &socket_dir, port)?;
    }
    for _ in 0..150 {
        if is_ready(&url) {
            eprintln!(
                "xtask: PostgreSQL ready on 127.0.0.1:{port} (data {}) in {:.1} s",
                data.display(),
                started.elapsed().as_secs_f64()
            );
            return Ok(url);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    bail!(
        "PostgreSQL started but did not answer on 127.0.0.1:{port} within 30 s\n{}",
        log_tail(data)
    )
}

/// initdb if `data` holds no cluster of this server's major version, then
/// `pg_ctl start` (waiting for it) unless it is running already.
fn start(bin: &Path, data: &Path, socket_dir: &Path, port: u16) -> Result<()> {
    let major = bin
        .parent()
        .and_then(|p| p.file_name())
        .and_then(|n| n.to_str())
        .unwrap_or_default()
        .to_owned();
    let version = std::fs::read_to_string(data.join("PG_VERSION")).unwrap_or_default();
    if version.trim() != major {
        if data.exists() && std::fs::read_dir(data)?.next().is_some() {
            bail!(
                "{} holds no PostgreSQL {major} cluster (PG_VERSION {:?})",
                data.display(),
                version.trim()
            );
        }
        if let Some(parent) = data.parent() {
            std::fs::create_dir_all(parent)?;
        }
        owned_by_postgres(data, 0o700)?;
        eprintln!(
            "xtask: creating a PostgreSQL {major} test cluster in {}",
            data.display()
        );
        run_as_postgres(Command::new(bin.join("initdb")).arg("-D").arg(data).args([
            "--username=postgres",
            "--auth=trust",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        ]))?;
    }
    // Rewritten on every start, so a cluster left by an older xtask gets the same rules.
    let hba = data.join("pg_hba.conf");
    if std::fs::read_to_string(&hba).unwrap_or_default() != PG_HBA {
        std::fs::write(&hba, PG_HBA)?;
        run(Command::new("chown").arg("postgres:postgres").arg(&hba))?;
    }
    if postmaster_alive(data) {
        // Running (perhaps still starting up); the caller waits for it.
        return Ok(());
    }
    let mut options = format!("-p {port} -k {}", socket_dir.display());
    for s in SETTINGS {
        options.push_str(" -c ");
        options.push_str(s);
    }
    run_as_postgres(
        Command::new(bin.join("pg_ctl"))
            .arg("-D")
            .arg(data)
            .arg("-l")
            .arg(data.join("server.log"))
            .args(["-w", "-t", "60", "-o", &options, "start"]),
    )
    .map_err(|e| e.context(log_tail(data)))
}

/// Whether the postmaster named in `data/postmaster.pid` is alive: a process
/// of that id that is a `postgres` and no zombie (after a crash the file
/// stays, and its id may belong to another process by now).
fn postmaster_alive(data: &Path) -> bool {
    let Some(pid) = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next()?.trim().parse::<u32>().ok())
    else {
        return false;
    };
    let proc = PathBuf::from(format!("/proc/{pid}"));
    let is_postgres = std::fs::read(proc.join("cmdline")).is_ok_and(|c| {
        c.split(|b| *b == 0)
            .next()
            .is_some_and(|a| a.ends_with(b"postgres"))
    });
    let zombie = std::fs::read_to_string(proc.join("stat"))
        .ok()
        .and_then(|s| {
            s.rsplit_once(')')
                .map(|(_, rest)| rest.trim_start().starts_with('Z'))
        })
        .unwrap_or(true);
    is_postgres && !zombie
}

/// Run `cmd` as the `postgres` user (initdb and pg_ctl refuse root), from `/`
/// (the server must not hold on to, or fail to enter, the caller's directory).
/// Its chatter is dropped; errors go to stderr (stdout stays the admin URL's).
fn run_as_postgres(cmd: &Command) -> Result<()> {
    run(&mut as_postgres(cmd))
}

fn as_postgres(cmd: &Command) -> Command {
    let mut wrapped = Command::new("runuser");
    wrapped
        .args(["-u", "postgres", "--"])
        .arg(cmd.get_program())
        .args(cmd.get_args())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    wrapped
}

/// Create `dir` if missing, owned by `postgres` with `mode`.
fn owned_by_postgres(dir: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))?;
    run(Command::new("chown").arg("postgres:postgres").arg(dir))
}

fn log_tail(data: &Path) -> String {
    let log = std::fs::read_to_string(data.join("server.log")).unwrap_or_default();
    let tail: Vec<&str> = log.lines().rev().take(20).collect();
    let tail: Vec<&str> = tail.into_iter().rev().collect();
    format!(
        "--- {} (tail) ---\n{}",
        data.join("server.log").display(),
        tail.join("\n")
    )
}

fn run(cmd: &mut Command) -> Result<()> {
    let status = cmd.status().with_context(|| format!("running {cmd:?}"))?;
    if !status.success() {
        bail!("{cmd:?} failed with {status}");
    }
    Ok(())
}
