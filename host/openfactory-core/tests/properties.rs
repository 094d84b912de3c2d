//! Property tests: recipe parsing and validation never panic, whatever they
//! are given, and always answer with diagnostics that say where.
//!
//! Inputs: arbitrary JSON values built from the recipe's own field names (so
//! the checks past the first level are reached), arbitrary text, and real
//! catalog recipes with bytes cut out or flipped. Each test prints how many
//! cases it ran.

use openfactory_core::validate::{Format, check_text, check_value};
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use serde_json::{Map, Value};

const CASES: u32 = 512;

/// Names a recipe has at some level, so generated objects hit real checks.
const FIELDS: &[&str] = &[
    "name",
    "description",
    "base_image",
    "hostname",
    "timezone",
    "features",
    "options",
    "packages",
    "services",
    "kernel_args",
    "users",
    "sudo",
    "groups",
    "ssh_authorized_keys",
    "password_hash",
    "files",
    "path",
    "content",
    "mode",
    "owner",
    "networking",
    "allowed_ports",
    "port",
    "protocol",
    "security",
    "root_login",
    "password_authentication",
    "checks",
    "command_succeeds",
    "timeout_seconds",
    "tags",
];

fn key() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => proptest::sample::select(FIELDS).prop_map(str::to_owned),
        1 => "\\PC{0,12}",
    ]
}

fn json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        any::<i64>().prop_map(Value::from),
        any::<f64>()
            .prop_map(|f| serde_json::Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop_oneof![
            "\\PC{0,40}",
            Just("debian-bookworm".to_owned()),
            Just("/etc/x".to_owned()),
            Just("0644".to_owned())
        ]
        .prop_map(Value::String),
    ];
    leaf.prop_recursive(6, 96, 8, |inner| {
        prop_oneof![
            proptest::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            proptest::collection::vec((key(), inner), 0..10)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

/// Every error says where (a field path) unless it is about the whole text.
fn assert_well_formed(checked: &openfactory_core::validate::Checked, input_is_object: bool) {
    if checked.recipe.is_none() {
        assert!(checked.diagnostics.has_errors(), "no recipe, yet no error");
    }
    for d in checked.diagnostics.iter() {
        assert!(!d.code.is_empty() && !d.message.is_empty(), "{d:?}");
        assert!(
            d.message.len() <= 2_000,
            "an unbounded message: {}",
            d.message.len()
        );
        if input_is_object && d.is_error() {
            assert!(
                !d.path.is_empty() || d.code == "recipe.too-large",
                "an error on an object names no field: {d:?}"
            );
        }
    }
}

fn runner() -> TestRunner {
    TestRunner::new(Config {
        cases: CASES,
        failure_persistence: None,
        ..Config::default()
    })
}

#[test]
fn any_json_value_is_checked_without_panicking_and_errors_name_their_field() {
    let ran = std::cell::Cell::new(0u32);
    runner()
        .run(&json(), |value| {
            ran.set(ran.get() + 1);
            let is_object = value.is_object();
            assert_well_formed(&check_value(value.clone()), is_object);
            // The same value as JSON text goes the same way.
            let text = serde_json::to_string(&value).unwrap();
            assert_well_formed(&check_text(&text, Format::Json), is_object);
            Ok(())
        })
        .unwrap();
    println!(
        "recipe JSON values: {} cases, no panic, every error on an object names its field",
        ran.get()
    );
}

#[test]
fn any_text_is_checked_without_panicking() {
    let ran = std::cell::Cell::new(0u32);
    let text = prop_oneof![
        "\\PC{0,400}",
        ".{0,400}",
        proptest::collection::vec(any::<u8>(), 0..400)
            .prop_map(|b| String::from_utf8_lossy(&b).into_owned())
    ];
    runner()
        .run(&text, |text| {
            ran.set(ran.get() + 2);
            assert_well_formed(&check_text(&text, Format::Toml), false);
            assert_well_formed(&check_text(&text, Format::Json), false);
            Ok(())
        })
        .unwrap();
    println!("recipe text (TOML and JSON): {} cases, no panic", ran.get());
}

#[test]
fn damaged_catalog_recipes_are_checked_without_panicking() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../recipes");
    let mut recipes = Vec::new();
    for category in std::fs::read_dir(&root).unwrap().flatten() {
        if let Ok(files) = std::fs::read_dir(category.path()) {
            for file in files.flatten() {
                recipes.push(std::fs::read_to_string(file.path()).unwrap());
            }
        }
    }
    assert!(recipes.len() >= 19, "{} recipes", recipes.len());
    let damage = (
        0..recipes.len(),
        proptest::collection::vec((any::<prop::sample::Index>(), 0..4u8, any::<char>()), 1..6),
    );
    let ran = std::cell::Cell::new(0u32);
    runner()
        .run(&damage, |(which, edits)| {
            ran.set(ran.get() + 1);
            let mut chars: Vec<char> = recipes[which].chars().collect();
            for (at, kind, c) in edits {
                if chars.is_empty() {
                    break;
                }
                let i = at.index(chars.len());
                match kind {
                    0 => {
                        chars.remove(i);
                    }
                    1 => chars.insert(i, c),
                    2 => chars[i] = c,
                    _ => chars.truncate(i),
                }
            }
            let text: String = chars.into_iter().collect();
            assert_well_formed(&check_text(&text, Format::Toml), false);
            Ok(())
        })
        .unwrap();
    println!("damaged catalog recipes: {} cases, no panic", ran.get());
}
