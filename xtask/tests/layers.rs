//! Each layer speaks only its own language, checked on the manifests and
//! sources themselves: the core has no runtime, only the MCP crate knows
//! JSON-RPC (rmcp), only the web crate knows HTML (maud), nothing below the
//! front ends knows an HTTP framework, and the service names no MCP tool.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The workspace, from cargo's run-time `CARGO_MANIFEST_DIR` first (a build
/// cache shared between clones may hold this test compiled in another).
fn root() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
        .parent()
        .unwrap()
        .to_owned()
}

/// The `[dependencies]` (not dev-dependencies) of host/<krate>.
fn dependencies(krate: &str) -> BTreeSet<String> {
    let path = root().join("host").join(krate).join("Cargo.toml");
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let manifest: toml::Table = text.parse().unwrap();
    manifest
        .get("dependencies")
        .and_then(|d| d.as_table())
        .map(|d| d.keys().cloned().collect())
        .unwrap_or_default()
}

fn crates() -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(root().join("host"))
        .unwrap()
        .flatten()
        .filter(|e| e.path().join("Cargo.toml").is_file())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

fn refuse(krate: &str, forbidden: &[&str], why: &str) -> Vec<String> {
    let deps = dependencies(krate);
    forbidden
        .iter()
        .filter(|f| deps.contains(**f))
        .map(|f| format!("{krate} depends on {f}: {why}"))
        .collect()
}

#[test]
fn layers_depend_only_downward() {
    let mut problems = Vec::new();
    problems.extend(refuse(
        "openfactory-core",
        &[
            "tokio", "wasmtime", "sqlx", "axum", "rmcp", "hyper", "reqwest", "virt", "cap-std",
        ],
        "the planning core runs nothing and does no I/O",
    ));
    for krate in crates() {
        match krate.as_str() {
            // The front ends, and the binary that assembles them.
            "openfactory-mcp" | "openfactory-web" | "openfactory-server" | "openfactory" => {}
            _ => problems.extend(refuse(
                &krate,
                &["axum", "rmcp", "maud", "tower", "tower-http", "hyper"],
                "below the front ends nothing knows an HTTP framework, JSON-RPC or HTML",
            )),
        }
        if krate != "openfactory-mcp" && krate != "openfactory" {
            problems.extend(refuse(
                &krate,
                &["rmcp"],
                "only the MCP crate knows JSON-RPC",
            ));
        }
        if krate != "openfactory-web" {
            problems.extend(refuse(&krate, &["maud"], "only the web crate knows HTML"));
        }
    }
    problems.extend(refuse(
        "openfactory-plugin-host",
        &["tokio", "reqwest", "oci-client", "openfactory-oci"],
        "the plugin host verifies and runs bundles; fetching them from registries is openfactory-oci's",
    ));
    problems.extend(refuse(
        "openfactory-mcp",
        &["openfactory-web", "maud"],
        "the MCP crate knows MCP only",
    ));
    problems.extend(refuse(
        "openfactory-web",
        &["openfactory-mcp", "rmcp"],
        "the web crate knows pages only",
    ));
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

fn rust_sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The MCP tool names, read from the `#[tool(…)]` methods of the MCP crate.
fn tool_names() -> BTreeSet<String> {
    let mut files = Vec::new();
    rust_sources(&root().join("host/openfactory-mcp/src"), &mut files);
    let mut names = BTreeSet::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        let mut in_tool = false;
        for line in text.lines() {
            let line = line.trim();
            if line.starts_with("#[tool(") {
                in_tool = true;
            }
            if in_tool
                && let Some(rest) = line
                    .strip_prefix("async fn ")
                    .or(line.strip_prefix("pub async fn "))
            {
                names.insert(rest.split('(').next().unwrap().trim().to_owned());
                in_tool = false;
            }
        }
    }
    names
}

#[test]
fn the_service_names_no_mcp_tool() {
    let tools = tool_names();
    assert!(tools.len() >= 21, "found only {tools:?}");
    let mut files = Vec::new();
    rust_sources(&root().join("host/openfactory-service/src"), &mut files);
    let mut problems = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        // A module's own unit tests are not what callers read.
        let text = text.split("#[cfg(test)]").next().unwrap();
        for (line, literal) in string_literals(text) {
            // Only what a caller could read: string literals, not identifiers
            // (the service's own `fn create_build` is its word, not MCP's).
            for word in literal.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
                if tools.contains(word) {
                    problems.push(format!(
                        "{}:{line}: names the MCP tool `{word}`",
                        file.strip_prefix(root()).unwrap().display(),
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the service words next steps as data, never as tool names:\n{}",
        problems.join("\n")
    );
}

/// Every string literal and `///` doc line of a Rust source with the line it
/// starts on (escapes kept as written; `'"'` is not a string).
fn string_literals(text: &str) -> Vec<(usize, String)> {
    let chars: Vec<char> = text.chars().collect();
    let (mut out, mut line, mut i) = (Vec::new(), 1, 0);
    while i < chars.len() {
        match chars[i] {
            '\n' => line += 1,
            '\'' if chars.get(i + 2) == Some(&'\'') => i += 2,
            // Comments are the code's own, except `///` docs: on an answer
            // type they become its JSON Schema descriptions, read by callers.
            '/' if chars.get(i + 1) == Some(&'/') => {
                let doc = chars.get(i + 2) == Some(&'/');
                let mut comment = String::new();
                while i < chars.len() && chars[i] != '\n' {
                    comment.push(chars[i]);
                    i += 1;
                }
                if doc {
                    out.push((line, comment));
                }
                continue;
            }
            '"' => {
                let (start, mut literal) = (line, String::new());
                i += 1;
                while i < chars.len() && chars[i] != '"' {
                    if chars[i] == '\\' {
                        literal.push(chars[i]);
                        i += 1;
                    }
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    literal.push(chars[i]);
                    i += 1;
                }
                out.push((start, literal));
            }
            _ => {}
        }
        i += 1;
    }
    out
}

#[test]
fn front_ends_know_only_the_vm_trait() {
    // What only a backend may know: its types, files and hypervisor words.
    const BACKEND_WORDS: [&str; 8] = [
        "QemuBackend",
        "LibvirtBackend",
        "pidfile",
        "qmp",
        "domain_xml",
        "virt::",
        "qemu-system",
        "VmPaths",
    ];
    let mut problems = Vec::new();
    for krate in ["openfactory-service", "openfactory-web", "openfactory-mcp"] {
        let mut files = Vec::new();
        rust_sources(&root().join("host").join(krate).join("src"), &mut files);
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for word in BACKEND_WORDS {
                if text.contains(word) {
                    problems.push(format!(
                        "{} mentions `{word}`",
                        file.strip_prefix(root()).unwrap().display()
                    ));
                }
            }
        }
    }
    assert!(
        problems.is_empty(),
        "the service and the front ends call VmBackend and nothing else of a backend:\n{}",
        problems.join("\n")
    );
}
