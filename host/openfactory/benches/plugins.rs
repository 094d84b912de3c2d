//! Plugin start-up and planning benchmark: `cargo xtask bench`.
//!
//! Prints, for the first-party bundles built by `cargo xtask plugins`:
//! cold start (compile every component), warm start (compiled cache), and one
//! full plan of a five-feature recipe, each against its goal.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use openfactory_core::plan;
use openfactory_core::validate::{Format, check_text};
use openfactory_plugin_host::{HostConfig, Limits, PluginHost, PublicKey, TrustStore, registry};

const RECIPE: &str = r#"
name = "bench"
base_image = "debian-bookworm"
features = ["ssh", "docker", "monitoring", "firewall", "hardening"]
packages = ["vim", "htop"]
[[users]]
name = "admin"
sudo = true
"#;

fn main() {
    let bundles = PathBuf::from(
        std::env::var("OPENFACTORY_BUNDLES").expect("run through `cargo xtask bench`"),
    );
    let key = PublicKey::read(std::path::Path::new(
        &std::env::var("OPENFACTORY_PROJECT_KEY").unwrap(),
    ))
    .unwrap();
    let home = tempfile::tempdir().unwrap();
    let trust = TrustStore::with_keys(vec![key.clone()]);
    std::fs::create_dir_all(home.path().join("keys")).unwrap();
    std::fs::write(home.path().join("keys/project.pub"), key.to_line()).unwrap();
    let mut dirs: Vec<_> = std::fs::read_dir(&bundles)
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    dirs.sort();
    for d in &dirs {
        let (installed, _) =
            registry::install(&home.path().join("plugins"), d, &trust, false, false).unwrap();
        openfactory_plugin_host::grants::save(
            &home.path().join("plugins"),
            installed.name(),
            &installed.manifest.capabilities.privileges(),
        )
        .unwrap();
    }
    let config = |cache: &str| HostConfig {
        plugins_dir: home.path().join("plugins"),
        trusted_keys_dir: home.path().join("keys"),
        cache_dir: Some(home.path().join(cache)),
        allow_unsigned: false,
        limits: Limits::default(),
    };

    let runs = 5;
    let mut cold = Vec::new();
    for i in 0..runs {
        let started = Instant::now();
        let host = PluginHost::load(&config(&format!("cold-{i}"))).unwrap();
        cold.push(started.elapsed());
        assert_eq!(host.stats().from_cache, 0);
    }
    let mut warm = Vec::new();
    for _ in 0..runs {
        let started = Instant::now();
        let host = PluginHost::load(&config("cold-0")).unwrap();
        warm.push(started.elapsed());
        assert_eq!(host.stats().from_cache, host.stats().plugins);
    }

    let host = PluginHost::load(&config("cold-0")).unwrap();
    let recipe = check_text(RECIPE, Format::Toml).recipe.unwrap();
    assert!(plan::plan(&recipe, &host).plan.is_some());
    let mut plans = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        let outcome = plan::plan(&recipe, &host);
        plans.push(started.elapsed());
        assert!(outcome.plan.is_some());
    }

    let bare = check_text(
        "name = \"bare\"\nbase_image = \"debian-bookworm\"\npackages = [\"vim\"]\n",
        Format::Toml,
    )
    .recipe
    .unwrap();
    let mut core_only = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        assert!(plan::plan(&bare, &host).plan.is_some());
        core_only.push(started.elapsed());
    }

    let one = check_text(
        "name = \"one\"\nbase_image = \"debian-bookworm\"\nfeatures = [\"motd\"]\n",
        Format::Toml,
    )
    .recipe
    .unwrap();
    let mut one_feature = Vec::new();
    for _ in 0..200 {
        let started = Instant::now();
        assert!(plan::plan(&one, &host).plan.is_some());
        one_feature.push(started.elapsed());
    }

    println!("plugins: {} first-party bundles", host.stats().plugins);
    report("cold start, all plugins (compile)", &mut cold, None);
    report(
        "warm start, all plugins (compiled cache)",
        &mut warm,
        Some(Duration::from_millis(300)),
    );
    report("plan, no features (core alone)", &mut core_only, None);
    report("plan, 1 trivial feature (motd)", &mut one_feature, None);
    report(
        "plan, 5 features (warm)",
        &mut plans,
        Some(Duration::from_millis(1)),
    );
}

fn report(what: &str, samples: &mut [Duration], goal: Option<Duration>) {
    samples.sort();
    let median = samples[samples.len() / 2];
    let p99 = samples[(samples.len() * 99 / 100).min(samples.len() - 1)];
    let goal = match goal {
        Some(g) => format!(
            "  goal {:?}: {:.2}× the goal ({})",
            g,
            median.as_secs_f64() / g.as_secs_f64(),
            if median <= g { "met" } else { "MISSED" }
        ),
        None => String::new(),
    };
    println!("{what:<44} median {median:>10.3?}  p99 {p99:>10.3?}{goal}");
}
