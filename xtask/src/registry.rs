//! An OCI registry for the tests: Debian's `docker-registry` (the CNCF
//! Distribution registry), without systemd, on 127.0.0.1 only, storing
//! under /var/cache/openfactory/registry, anonymous (the test that needs
//! credentials starts its own with an htpasswd file).
//!
//! `cargo xtask registry` starts it (or finds it running) and prints
//! `export OPENFACTORY_TEST_REGISTRY=127.0.0.1:5000`; `cargo xtask test`
//! does the same when `OPENFACTORY_TEST_REGISTRY` is unset.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};

pub const ADDRESS: &str = "127.0.0.1:5000";
/// A cache: safe to delete, made anew on demand.
const DIR: &str = "/var/cache/openfactory/registry";

/// Whether a registry answers the distribution API's base endpoint at
/// `address` to anonymous callers (Debian's own service asks for
/// credentials, and is not the tests').
pub fn answers(address: &str) -> bool {
    let Ok(mut stream) = TcpStream::connect_timeout(
        &address.parse().expect("a socket address"),
        Duration::from_secs(1),
    ) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    let request = format!("GET /v2/ HTTP/1.0\r\nHost: {address}\r\n\r\n");
    if stream.write_all(request.as_bytes()).is_err() {
        return false;
    }
    let mut answer = String::new();
    let _ = stream.take(4096).read_to_string(&mut answer);
    let ok = answer.starts_with("HTTP/1.0 200") || answer.starts_with("HTTP/1.1 200");
    ok && answer
        .to_ascii_lowercase()
        .contains("docker-distribution-api-version")
}

/// Start the registry unless one answers; its address.
pub fn ensure() -> Result<String> {
    if let Ok(address) = std::env::var("OPENFACTORY_TEST_REGISTRY") {
        if !answers(&address) {
            bail!("OPENFACTORY_TEST_REGISTRY is {address}, but no registry answers there");
        }
        return Ok(address);
    }
    if answers(ADDRESS) {
        return Ok(ADDRESS.to_owned());
    }
    let binary = "/usr/bin/docker-registry";
    if !Path::new(binary).is_file() {
        bail!(
            "{binary} is missing: `apt-get install docker-registry` (cargo xtask test installs it)"
        );
    }
    std::fs::create_dir_all(format!("{DIR}/data"))?;
    let config = format!("{DIR}/config.yml");
    std::fs::write(
        &config,
        format!(
            "# Written by `cargo xtask registry`: the tests' registry, on this machine only.\n\
             version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {DIR}/data\n  delete:\n    enabled: true\n\
             http:\n  addr: {ADDRESS}\n"
        ),
    )?;
    let log = std::fs::File::create(format!("{DIR}/registry.log"))?;
    Command::new(binary)
        .args(["serve", &config])
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log)
        .spawn()
        .context("starting docker-registry")?;
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(20) {
        if answers(ADDRESS) {
            return Ok(ADDRESS.to_owned());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    bail!("docker-registry did not answer on {ADDRESS} within 20 s (see {DIR}/registry.log)")
}

pub fn print_env() -> Result<()> {
    println!("export OPENFACTORY_TEST_REGISTRY={}", ensure()?);
    Ok(())
}
