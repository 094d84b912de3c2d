//! ARCHITECTURE.md stays true: its code map names every crate and every
//! module, and every invariant names the test that guards it, and that test
//! exists. Adding a module or an invariant without its line fails here.

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

fn architecture() -> String {
    std::fs::read_to_string(root().join("ARCHITECTURE.md")).unwrap()
}

/// The text of the code map's section for `heading` (up to the next `###` or `##`).
fn section<'a>(doc: &'a str, heading: &str) -> Option<&'a str> {
    let start = doc.find(heading)?;
    let rest = &doc[start + heading.len()..];
    let end = rest
        .find("\n### ")
        .into_iter()
        .chain(rest.find("\n## "))
        .min()
        .unwrap_or(rest.len());
    Some(&rest[..end])
}

fn rust_files(dir: &Path, base: &Path, out: &mut Vec<String>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, base, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(
                path.strip_prefix(base)
                    .unwrap()
                    .to_string_lossy()
                    .into_owned(),
            );
        }
    }
}

#[test]
fn the_code_map_names_every_crate_and_module() {
    let doc = architecture();
    let mut missing = Vec::new();
    let mut crates: Vec<PathBuf> = std::fs::read_dir(root().join("host"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.join("Cargo.toml").is_file())
        .collect();
    crates.sort();
    assert!(crates.len() >= 10, "{crates:?}");
    for krate in crates {
        let name = krate.file_name().unwrap().to_string_lossy().into_owned();
        let heading = format!("### `host/{name}`");
        let Some(text) = section(&doc, &heading) else {
            missing.push(format!("a section `{heading}`"));
            continue;
        };
        let mut files = Vec::new();
        rust_files(&krate.join("src"), &krate.join("src"), &mut files);
        files.sort();
        for file in files {
            // `pages/builds.rs` may be named as `pages/builds.rs` or `builds.rs`
            // (inside a line about `pages/`); `cli/mod.rs` as `cli/`.
            let leaf = file.rsplit('/').next().unwrap();
            let named = text.contains(&format!("`{file}`"))
                || text.contains(&format!("`{leaf}`"))
                || (leaf == "mod.rs"
                    && text.contains(&format!("`{}/`", file.trim_end_matches("/mod.rs"))));
            if !named {
                missing.push(format!("host/{name}/src/{file}"));
            }
        }
    }
    assert!(
        missing.is_empty(),
        "ARCHITECTURE.md's code map does not name:\n  {}",
        missing.join("\n  ")
    );
}

#[test]
fn every_invariant_names_a_test_that_exists() {
    let doc = architecture();
    let invariants = section(&doc, "## Architecture invariants").expect("an invariants section");
    let mut sources = String::new();
    let mut files = Vec::new();
    for top in ["host", "xtask", "tests"] {
        rust_files(&root().join(top), &root(), &mut files);
    }
    for file in &files {
        sources.push_str(&std::fs::read_to_string(root().join(file)).unwrap_or_default());
    }
    for dir in ["tests/mcp", "tests/browser"] {
        for entry in std::fs::read_dir(root().join(dir)).unwrap().flatten() {
            sources.push_str(&std::fs::read_to_string(entry.path()).unwrap_or_default());
        }
    }
    let mut problems = Vec::new();
    let items: Vec<String> = invariants
        .split("\n- ")
        .skip(1)
        .map(|item| item.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect();
    assert!(items.len() >= 10, "{items:?}");
    for item in &items {
        let title = item.split("**").nth(1).unwrap_or(item);
        let Some(guard) = item.split("Guarded by ").nth(1) else {
            problems.push(format!(
                "`{title}` names no test (\"Guarded by `test_name`\")"
            ));
            continue;
        };
        let names: Vec<&str> = guard.split('`').skip(1).step_by(2).collect();
        if names.is_empty() {
            problems.push(format!("`{title}`: no test name in backquotes"));
        }
        for test in names {
            let leaf = test.rsplit("::").next().unwrap();
            if !sources.contains(&format!("fn {leaf}("))
                && !sources.contains(&format!("def {leaf}("))
            {
                problems.push(format!("`{title}`: no test `{test}` in the tree"));
            }
        }
    }
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}
