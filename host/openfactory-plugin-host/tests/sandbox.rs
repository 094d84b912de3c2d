//! The sandbox holds against a plugin that attacks it, and the host survives.

mod common;

use common::Home;
use openfactory_core::plan::{self, FeatureSet};
use openfactory_core::step::Step;
use openfactory_core::validate::Format;
use openfactory_plugin_host::PluginHost;

fn hostile_host() -> (Home, PluginHost) {
    let home = Home::new();
    home.install(&common::test_bundles().join("hostile"))
        .unwrap();
    let host = home.load();
    assert!(host.problems().is_empty(), "{:?}", host.problems());
    (home, host)
}

fn attack(host: &dyn FeatureSet, what: &str) -> plan::Outcome {
    let text = format!(
        "name = \"h1\"\nbase_image = \"debian-bookworm\"\nfeatures = [{{ name = \"hostile\", options = {{ attack = \"{what}\" }} }}]\n"
    );
    plan::plan_text(&text, Format::Toml, host, true)
}

fn only(outcome: &plan::Outcome, code: &str) -> String {
    let found: Vec<_> = outcome
        .diagnostics
        .iter()
        .filter(|d| d.code == code)
        .collect();
    assert_eq!(
        found.len(),
        1,
        "expected one {code}: {:#?}",
        outcome.diagnostics
    );
    assert!(
        !outcome
            .diagnostics
            .iter()
            .any(|d| d.code == "hostile.escaped"),
        "{:#?}",
        outcome.diagnostics
    );
    found[0].message.clone()
}

#[test]
fn an_infinite_loop_is_stopped_and_named() {
    let (_home, host) = hostile_host();
    let outcome = attack(&host, "loop");
    assert!(outcome.plan.is_none());
    let message = only(&outcome, "plugin.failed");
    assert!(
        message.contains("plugin `hostile`") && message.contains("CPU budget"),
        "{message}"
    );
    // The host is unharmed: the same plugin plans normally afterwards.
    assert!(attack(&host, "none").plan.is_some());
}

#[test]
fn a_memory_bomb_is_refused() {
    let (_home, host) = hostile_host();
    let message = only(&attack(&host, "memory"), "plugin.failed");
    assert!(message.contains("memory limit"), "{message}");
}

#[test]
fn a_panic_is_a_diagnostic_not_a_crash() {
    let (_home, host) = hostile_host();
    let message = only(&attack(&host, "panic"), "plugin.failed");
    assert!(message.contains("panicked"), "{message}");
}

#[test]
fn host_files_are_out_of_reach() {
    let (_home, host) = hostile_host();
    let message = only(&attack(&host, "read-host-file"), "hostile.denied");
    assert!(message.starts_with("read /etc/passwd"), "{message}");
}

#[test]
fn own_assets_are_readable_but_not_writable() {
    let (_home, host) = hostile_host();
    let message = only(&attack(&host, "read-assets"), "hostile.denied");
    assert!(
        message.contains("asset-content-ok"),
        "the plugin should read its own asset: {message}"
    );
    only(&attack(&host, "write-assets"), "hostile.denied");
}

#[test]
fn sockets_are_denied() {
    let (_home, host) = hostile_host();
    let message = only(&attack(&host, "socket"), "hostile.denied");
    assert!(message.starts_with("open a TCP connection"), "{message}");
}

#[test]
fn the_environment_is_empty() {
    let (_home, host) = hostile_host();
    // SAFETY: tests in this binary do not read the environment concurrently.
    unsafe { std::env::set_var("OPENFACTORY_SECRET_FOR_TEST", "leak") };
    only(&attack(&host, "environment"), "hostile.denied");
}

#[test]
fn invalid_steps_are_rejected_by_the_host() {
    let (_home, host) = hostile_host();
    let outcome = attack(&host, "bad-steps");
    assert!(outcome.plan.is_none());
    let messages: Vec<&str> = outcome
        .diagnostics
        .iter()
        .filter(|d| d.code == "plugin.invalid-step")
        .map(|d| d.message.as_str())
        .collect();
    assert_eq!(messages.len(), 3, "{:#?}", outcome.diagnostics);
    assert!(
        messages[0].contains("install_packages") && messages[0].contains("`;`"),
        "{}",
        messages[0]
    );
    assert!(
        messages[1].contains("write_file") && messages[1].contains("normalised"),
        "{}",
        messages[1]
    );
    assert!(messages[2].contains("run"), "{}", messages[2]);
}

#[test]
fn each_plan_gets_a_fresh_instance() {
    // The fixture counts its plans in a static: an instance kept between
    // evaluations would write 2 the second time.
    let (_home, host) = hostile_host();
    for _ in 0..3 {
        let plan = attack(&host, "remember").plan.unwrap();
        let counts: Vec<&str> = plan
            .steps
            .iter()
            .filter_map(|s| match &s.step {
                Step::WriteFile(f) if f.path == "/etc/hostile-plans" => Some(f.content.as_str()),
                _ => None,
            })
            .collect();
        assert_eq!(counts, ["1\n"], "state leaked between evaluations");
    }
}
