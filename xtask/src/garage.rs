//! Garage (S3-compatible object storage, written in Rust) on this machine, for
//! the tests of `openfactory-artifacts` against a real S3 API.
//!
//! [`ensure_garage`] installs Garage when it is missing, starts one single-node
//! server in the background unless it already runs, gives it a layout, a
//! bucket and a key, and returns the environment the tests read. It is
//! idempotent: a second call finds the server running and only checks.
//!
//! Everything lives outside the clone, so a fresh clone reuses it:
//! - the binary: `/var/cache/openfactory/tools/garage/bin/garage`
//!   (`cargo install`, 7–8 min niced on 2 cores, once);
//! - the server's state (config, metadata, data, log, pid, key):
//!   `/var/tmp/openfactory-garage`, or `$OPENFACTORY_GARAGE_DIR`.
//!
//! The server listens on 127.0.0.1 only (S3 API on port 3900, RPC on 3901, or
//! free ports when those are taken). Stop it with `kill $(cat
//! /var/tmp/openfactory-garage/garage.pid)`; remove the directory to start
//! afresh.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::fs::OpenOptionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

/// The Garage release the tests run against.
pub const VERSION: &str = "2.5.0";
/// Where `cargo install` puts Garage (`bin/garage` under it).
const TOOLS_DIR: &str = "/var/cache/openfactory/tools/garage";
/// Garage's own build directory, kept so a reinstall is incremental.
const BUILD_DIR: &str = "/var/cache/openfactory/garage-build";
/// The server's state, unless `$OPENFACTORY_GARAGE_DIR` says otherwise.
const STATE_DIR: &str = "/var/tmp/openfactory-garage";
/// The bucket the tests use, and the name of their key.
pub const BUCKET: &str = "openfactory-test";
/// The region Garage signs for (its `s3_region`).
pub const REGION: &str = "garage";
/// Ports tried first; free ones are picked when these are taken.
const S3_PORT: u16 = 3900;
const RPC_PORT: u16 = 3901;

/// Make sure a Garage server runs here with the test bucket and key, and
/// return the environment the artifact store's S3 tests read:
/// `OPENFACTORY_TEST_S3_ENDPOINT` (`http://127.0.0.1:PORT`),
/// `OPENFACTORY_TEST_S3_BUCKET`, `OPENFACTORY_TEST_S3_ACCESS_KEY_ID`,
/// `OPENFACTORY_TEST_S3_SECRET_ACCESS_KEY` and `OPENFACTORY_TEST_S3_REGION`.
///
/// `_root` is the workspace root, unused: Garage and its state live outside
/// the clone. Installs Garage first when it is missing (minutes, once).
pub fn ensure_garage(_root: &Path) -> Result<Vec<(&'static str, String)>> {
    let garage = ensure_installed()?;
    let state = state_dir();
    fs::create_dir_all(&state).with_context(|| format!("creating {}", state.display()))?;
    // One caller at a time sets the server up (two test runs starting at once).
    let lock = File::create(state.join("lock"))?;
    lock.lock().context("locking Garage's state directory")?;

    let secrets = Secrets::load_or_create(&state.join("secrets"))?;
    let config = state.join("garage.toml");
    let cli = Cli {
        garage: garage.clone(),
        config: config.clone(),
    };
    let s3_port = match running_s3_port(&cli, &config) {
        Some(port) => port,
        None => start(&cli, &state, &secrets)?,
    };
    setup(&cli, &secrets)?;
    wait_for_tcp(
        SocketAddr::from(([127, 0, 0, 1], s3_port)),
        Duration::from_secs(10),
    )?;
    Ok(vec![
        (
            "OPENFACTORY_TEST_S3_ENDPOINT",
            format!("http://127.0.0.1:{s3_port}"),
        ),
        ("OPENFACTORY_TEST_S3_BUCKET", BUCKET.to_owned()),
        ("OPENFACTORY_TEST_S3_ACCESS_KEY_ID", secrets.key_id),
        ("OPENFACTORY_TEST_S3_SECRET_ACCESS_KEY", secrets.secret_key),
        ("OPENFACTORY_TEST_S3_REGION", REGION.to_owned()),
    ])
}

/// [`ensure_garage`], then the environment as `export NAME='value'` lines on
/// stdout, for `eval "$(…)"` in a shell.
pub fn print_env(root: &Path) -> Result<()> {
    for (name, value) in ensure_garage(root)? {
        println!("export {name}='{value}'");
    }
    Ok(())
}

fn state_dir() -> PathBuf {
    std::env::var_os("OPENFACTORY_GARAGE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(STATE_DIR))
}

/// The garage binary, installed with `cargo install` when missing or of
/// another version.
fn ensure_installed() -> Result<PathBuf> {
    let garage = Path::new(TOOLS_DIR).join("bin/garage");
    let version = Command::new(&garage)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).into_owned())
        .unwrap_or_default();
    if version.contains(&format!("cargo:{VERSION}")) {
        return Ok(garage);
    }
    eprintln!(
        "xtask: installing garage {VERSION} into {TOOLS_DIR} (about 8 minutes on 2 cores, once)"
    );
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new("nice")
        .args(["-n", "10"])
        .arg(cargo)
        .args(["install", "garage", "--version", VERSION])
        .args([
            "--no-default-features",
            "--features",
            "bundled-libs,sqlite",
            "--locked",
        ])
        .args(["--root", TOOLS_DIR])
        .env("CARGO_TARGET_DIR", BUILD_DIR)
        .status()
        .context("running cargo install garage")?;
    if !status.success() {
        bail!("cargo install garage {VERSION} failed with {status}");
    }
    Ok(garage)
}

/// The generated secrets, kept in the state directory so a restarted server
/// keeps the same key: the RPC secret and the test key's id and secret.
struct Secrets {
    rpc_secret: String,
    key_id: String,
    secret_key: String,
}

impl Secrets {
    fn load_or_create(path: &Path) -> Result<Secrets> {
        if let Ok(text) = fs::read_to_string(path) {
            let words: Vec<&str> = text.split_whitespace().collect();
            if let [rpc_secret, key_id, secret_key] = words[..] {
                return Ok(Secrets {
                    rpc_secret: rpc_secret.to_owned(),
                    key_id: key_id.to_owned(),
                    secret_key: secret_key.to_owned(),
                });
            }
        }
        // Garage's formats: RPC secret 32 bytes hex; key ids `GK` + 12 bytes
        // hex; secret keys 32 bytes hex.
        let secrets = Secrets {
            rpc_secret: random_hex(32)?,
            key_id: format!("GK{}", random_hex(12)?),
            secret_key: random_hex(32)?,
        };
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        writeln!(
            file,
            "{} {} {}",
            secrets.rpc_secret, secrets.key_id, secrets.secret_key
        )?;
        Ok(secrets)
    }
}

fn random_hex(bytes: usize) -> Result<String> {
    let mut buf = vec![0u8; bytes];
    File::open("/dev/urandom")?.read_exact(&mut buf)?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}

/// `garage -c CONFIG …`: the admin CLI, talking to the server over RPC.
struct Cli {
    garage: PathBuf,
    config: PathBuf,
}

impl Cli {
    fn command(&self, args: &[&str]) -> Command {
        let mut cmd = Command::new(&self.garage);
        cmd.arg("-c").arg(&self.config).args(args);
        cmd
    }

    /// Run it; its stdout, or an error with its stderr.
    fn run(&self, args: &[&str]) -> Result<String> {
        let out = self
            .command(args)
            .stdin(Stdio::null())
            .output()
            .with_context(|| format!("running garage {}", args.join(" ")))?;
        if !out.status.success() {
            bail!(
                "garage {} failed: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            );
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// Whether it succeeds (for look-ups whose failure means "absent").
    fn ok(&self, args: &[&str]) -> bool {
        self.command(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }
}

/// The S3 port of our server when it already runs (its config exists and the
/// CLI reaches it over RPC).
fn running_s3_port(cli: &Cli, config: &Path) -> Option<u16> {
    let text = fs::read_to_string(config).ok()?;
    let port = config_port(&text, "[s3_api]")?;
    cli.ok(&["status"]).then_some(port)
}

/// The port of `api_bind_addr` in a section of our own config.
fn config_port(config: &str, section: &str) -> Option<u16> {
    let rest = &config[config.find(section)?..];
    let line = rest.lines().find(|l| l.starts_with("api_bind_addr"))?;
    line.trim_end_matches('"').rsplit(':').next()?.parse().ok()
}

/// A port on 127.0.0.1: `preferred` when free, else one the OS picks.
fn free_port(preferred: u16) -> Result<u16> {
    if TcpListener::bind(("127.0.0.1", preferred)).is_ok() {
        return Ok(preferred);
    }
    Ok(TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port())
}

/// Write the config and start `garage server` in the background, in its own
/// process group (so it outlives this process and a Ctrl-C of it); wait until
/// the CLI reaches it. Returns the S3 port.
fn start(cli: &Cli, state: &Path, secrets: &Secrets) -> Result<u16> {
    let s3_port = free_port(S3_PORT)?;
    let mut rpc_port = free_port(RPC_PORT)?;
    if rpc_port == s3_port {
        rpc_port = free_port(0)?;
    }
    let meta = state.join("meta");
    let data = state.join("data");
    fs::create_dir_all(&meta)?;
    fs::create_dir_all(&data)?;
    let config = format!(
        r#"# Written by `cargo xtask` (xtask/src/garage.rs): a single-node Garage for tests.
metadata_dir = "{meta}"
data_dir = "{data}"
db_engine = "sqlite"
replication_factor = 1
rpc_bind_addr = "127.0.0.1:{rpc_port}"
rpc_public_addr = "127.0.0.1:{rpc_port}"
rpc_secret = "{rpc_secret}"

[s3_api]
s3_region = "{REGION}"
api_bind_addr = "127.0.0.1:{s3_port}"
root_domain = ".s3.garage.localhost"
"#,
        meta = meta.display(),
        data = data.display(),
        rpc_secret = secrets.rpc_secret,
    );
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&cli.config)?;
    file.write_all(config.as_bytes())?;
    drop(file);

    let log_path = state.join("garage.log");
    let log = File::create(&log_path)?;
    let started = Instant::now();
    let mut child = cli
        .command(&["server"])
        .env("RUST_LOG", "garage=warn")
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .process_group(0)
        .spawn()
        .context("starting garage server")?;
    fs::write(state.join("garage.pid"), format!("{}\n", child.id()))?;
    let deadline = started + Duration::from_secs(30);
    loop {
        if cli.ok(&["status"]) {
            break;
        }
        if let Some(status) = child.try_wait()? {
            let log = fs::read_to_string(&log_path).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(20).collect();
            bail!(
                "garage server exited with {status}; the end of {}:\n{}",
                log_path.display(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if Instant::now() > deadline {
            bail!(
                "garage server did not answer within 30 s; see {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "xtask: garage server started on 127.0.0.1:{s3_port} in {:.1} s (pid {})",
        started.elapsed().as_secs_f64(),
        child.id()
    );
    Ok(s3_port)
}

/// The layout (this node, zone dc1, 1 GB), the bucket, the key and its
/// permissions: each only when missing.
fn setup(cli: &Cli, secrets: &Secrets) -> Result<()> {
    let layout = cli.run(&["layout", "show"])?;
    if layout.contains("No nodes currently have a role") {
        let node = cli.run(&["node", "id", "-q"])?;
        let node = node.trim().split('@').next().unwrap_or_default().to_owned();
        if node.is_empty() {
            bail!("garage node id printed no id");
        }
        cli.run(&["layout", "assign", "-z", "dc1", "-c", "1G", &node])?;
        let version = layout
            .lines()
            .find_map(|l| l.strip_prefix("Current cluster layout version:"))
            .and_then(|v| v.trim().parse::<u64>().ok())
            .unwrap_or(0);
        cli.run(&["layout", "apply", "--version", &(version + 1).to_string()])?;
    }
    if !cli.ok(&["bucket", "info", BUCKET]) {
        cli.run(&["bucket", "create", BUCKET])?;
    }
    if !cli.ok(&["key", "info", &secrets.key_id]) {
        cli.run(&[
            "key",
            "import",
            "--yes",
            "-n",
            BUCKET,
            &secrets.key_id,
            &secrets.secret_key,
        ])?;
    }
    cli.run(&[
        "bucket",
        "allow",
        "--read",
        "--write",
        "--owner",
        BUCKET,
        "--key",
        &secrets.key_id,
    ])?;
    Ok(())
}

fn wait_for_tcp(addr: SocketAddr, within: Duration) -> Result<()> {
    let deadline = Instant::now() + within;
    while TcpStream::connect_timeout(&addr, Duration::from_millis(500)).is_err() {
        if Instant::now() > deadline {
            bail!("garage's S3 API on {addr} accepted no connection within {within:?}");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_s3_port_of_its_config() {
        let config = "rpc_bind_addr = \"127.0.0.1:3901\"\n\n[s3_api]\ns3_region = \"garage\"\n\
                      api_bind_addr = \"127.0.0.1:3910\"\n";
        assert_eq!(config_port(config, "[s3_api]"), Some(3910));
        assert_eq!(config_port(config, "[admin]"), None);
    }
}
