//! MCP server benchmark: `cargo xtask bench`.
//!
//! Starts the real `openfactory serve` (release build) with the first-party
//! plugins, then prints:
//! - tools/list and list_recipes latency (p50, p99) over Streamable HTTP,
//!   stateless (2026-07-28), one keep-alive connection;
//! - the memory the server adds for 1,000 idle legacy SSE sessions.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;
use openfactory_plugin_host::{PublicKey, TrustStore, registry};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const META: &str = r#""_meta":{"io.modelcontextprotocol/protocolVersion":"2026-07-28","io.modelcontextprotocol/clientCapabilities":{}}"#;

struct Server {
    child: Child,
    addr: String,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start(home: &std::path::Path) -> Server {
    let recipes = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let mut child = Command::new(env!("CARGO_BIN_EXE_openfactory"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("OPENFACTORY_HOME", home)
        .env("OPENFACTORY_RECIPES_DIR", recipes)
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting openfactory serve");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr = lines
        .by_ref()
        .map_while(Result::ok)
        .find_map(|l| {
            l.strip_prefix("OpenFactory is listening on http://")
                .map(str::to_owned)
        })
        .expect("the server printed its address");
    std::thread::spawn(move || for _ in lines {});
    Server { child, addr }
}

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap()
}

fn percentiles(samples: &mut [Duration]) -> (Duration, Duration) {
    samples.sort();
    (
        samples[samples.len() / 2],
        samples[(samples.len() * 99 / 100).min(samples.len() - 1)],
    )
}

#[tokio::main]
async fn main() {
    let home = tempfile::tempdir().unwrap();
    let bundles = PathBuf::from(
        std::env::var("OPENFACTORY_BUNDLES").expect("run through `cargo xtask bench`"),
    );
    let key = PublicKey::read(std::path::Path::new(
        &std::env::var("OPENFACTORY_PROJECT_KEY").unwrap(),
    ))
    .unwrap();
    std::fs::create_dir_all(home.path().join("trusted-keys")).unwrap();
    std::fs::write(home.path().join("trusted-keys/project.pub"), key.to_line()).unwrap();
    let trust = TrustStore::with_keys(vec![key]);
    for entry in std::fs::read_dir(&bundles).unwrap().flatten() {
        let (installed, _) = registry::install(
            &home.path().join("plugins"),
            &entry.path(),
            &trust,
            false,
            false,
        )
        .unwrap();
        // The operator grants the first-party privileges (as `--grant declared`).
        openfactory_plugin_host::grants::save(
            &home.path().join("plugins"),
            installed.name(),
            &installed.manifest.capabilities.privileges(),
        )
        .unwrap();
    }
    let server = start(home.path());
    let url = format!("http://{}/api/mcp", server.addr);
    let client: Client<_, Full<Bytes>> = Client::builder(TokioExecutor::new()).build_http();

    let call = |method: &'static str, name: Option<&'static str>, params: &'static str| {
        let body = format!(
            r#"{{"jsonrpc":"2.0","id":1,"method":"{method}","params":{{{params}{META}}}}}"#
        );
        let mut req = hyper::Request::post(&url)
            .header("content-type", "application/json")
            .header("accept", "application/json, text/event-stream")
            .header("mcp-protocol-version", "2026-07-28")
            .header("mcp-method", method);
        if let Some(name) = name {
            req = req.header("mcp-name", name);
        }
        req.body(Full::new(Bytes::from(body))).unwrap()
    };

    let profile = if cfg!(debug_assertions) {
        "debug build: numbers are not representative"
    } else {
        "release build"
    };
    println!(
        "MCP server benchmark ({profile}, server at {})",
        server.addr
    );
    for (label, method, name, params) in [
        ("tools/list", "tools/list", None, ""),
        (
            "tools/call list_recipes",
            "tools/call",
            Some("list_recipes"),
            r#""name":"list_recipes","arguments":{"search":"docker"},"#,
        ),
    ] {
        let mut samples = Vec::new();
        for i in 0..2200 {
            let started = Instant::now();
            let response = client.request(call(method, name, params)).await.unwrap();
            let body = response.into_body().collect().await.unwrap().to_bytes();
            let elapsed = started.elapsed();
            assert!(
                body.windows(8).any(|w| w == b"\"result\""),
                "{}",
                String::from_utf8_lossy(&body)
            );
            if i >= 200 {
                samples.push(elapsed);
            }
        }
        let (p50, p99) = percentiles(&mut samples);
        let goal = Duration::from_millis(1);
        println!(
            "{label:<26} p50 {p50:>9.3?}  p99 {p99:>9.3?}  goal p50 ≤ {goal:?}: {:.2}× ({})",
            p50.as_secs_f64() / goal.as_secs_f64(),
            if p50 <= goal { "met" } else { "MISSED" }
        );
    }

    // Idle legacy SSE sessions.
    let pid = server.child.id();
    let before = rss_kib(pid);
    let sessions = 1000;
    let mut streams = Vec::with_capacity(sessions);
    let started = Instant::now();
    for _ in 0..sessions {
        let mut s = tokio::net::TcpStream::connect(&server.addr).await.unwrap();
        s.write_all(
            b"GET /api/mcp/sse HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n",
        )
        .await
        .unwrap();
        let mut buf = vec![0u8; 1024];
        let mut got = Vec::new();
        while !got.windows(8).any(|w| w == b"endpoint") {
            let n = s.read(&mut buf).await.unwrap();
            assert!(n > 0, "the server closed an SSE stream");
            got.extend_from_slice(&buf[..n]);
        }
        streams.push(s);
    }
    let opened = started.elapsed();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    let added_mib = (after.saturating_sub(before)) as f64 / 1024.0;
    let health = client
        .request(
            hyper::Request::get(format!("http://{}/healthz", server.addr))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap()
        .into_body()
        .collect()
        .await
        .unwrap()
        .to_bytes();
    assert!(
        String::from_utf8_lossy(&health).contains(&format!("\"sse_sessions\":{sessions}")),
        "{}",
        String::from_utf8_lossy(&health)
    );
    println!(
        "{sessions} idle SSE sessions         opened in {opened:.2?}; server RSS {:.1} → {:.1} MiB: +{added_mib:.1} MiB ({:.1} KiB/session)  goal < 100 MiB: {:.2}× ({})",
        before as f64 / 1024.0,
        after as f64 / 1024.0,
        (after.saturating_sub(before)) as f64 / sessions as f64,
        added_mib / 100.0,
        if added_mib < 100.0 { "met" } else { "MISSED" }
    );
    drop(streams);
}
