//! The tools' input schemas are the real types, and every bad argument is the project's own
//! field error, never serde's.

use std::collections::{BTreeMap, BTreeSet};

use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use super::OpenFactoryServer;
use super::args::ToolArgs;
use super::builds::{BuildIdArgs, BuildLogArgs, BuildStatusArgs, CreateBuildArgs, ListBuildsArgs};
use super::recipes::{
    CreateFromTemplateArgs, ListRecipesArgs, PlanArgs, RecipeIdArgs, ValidateArgs,
};
use super::test_runs::{ListTestRunsArgs, RunIdArgs, RunTestsArgs, TestResultsArgs};
use super::vms::{CreateVmArgs, ListVmsArgs, SerialLogArgs, StopVmArgs, VmNameArgs};

/// What rmcp does with a call's arguments (`Parameters`), then the tool's own check.
fn check<A: ToolArgs + DeserializeOwned>(args: Value) -> Result<A::Valid, String> {
    let parsed: A = serde_json::from_value(args)
        .unwrap_or_else(|e| panic!("arguments must always deserialize, got: {e}"));
    parsed.validate()
}

/// Each tool with arguments: its arguments' fields, and `check` as a plain function.
type Checker = fn(Value) -> Result<(), String>;

fn checker<A: ToolArgs + DeserializeOwned>() -> (&'static [&'static str], Checker) {
    (A::FIELDS, |v| check::<A>(v).map(|_| ()))
}

fn tools_with_args() -> BTreeMap<&'static str, (&'static [&'static str], Checker)> {
    BTreeMap::from([
        ("list_recipes", checker::<ListRecipesArgs>()),
        ("get_recipe", checker::<RecipeIdArgs>()),
        ("validate_recipe", checker::<ValidateArgs>()),
        (
            "create_recipe_from_template",
            checker::<CreateFromTemplateArgs>(),
        ),
        ("plan_recipe", checker::<PlanArgs>()),
        ("create_build", checker::<CreateBuildArgs>()),
        ("list_builds", checker::<ListBuildsArgs>()),
        ("get_build", checker::<BuildIdArgs>()),
        ("get_build_status", checker::<BuildStatusArgs>()),
        ("get_iso_download_url", checker::<BuildIdArgs>()),
        ("retry_build", checker::<BuildIdArgs>()),
        ("cancel_build", checker::<BuildIdArgs>()),
        ("delete_build", checker::<BuildIdArgs>()),
        ("get_build_log", checker::<BuildLogArgs>()),
        ("create_vm", checker::<CreateVmArgs>()),
        ("list_vms", checker::<ListVmsArgs>()),
        ("start_vm", checker::<VmNameArgs>()),
        ("stop_vm", checker::<StopVmArgs>()),
        ("delete_vm", checker::<VmNameArgs>()),
        ("get_vm_console_url", checker::<VmNameArgs>()),
        ("get_vm_serial_log", checker::<SerialLogArgs>()),
        ("run_tests", checker::<RunTestsArgs>()),
        ("get_test_results", checker::<TestResultsArgs>()),
        ("list_test_runs", checker::<ListTestRunsArgs>()),
        ("stop_test_run", checker::<RunIdArgs>()),
    ])
}

/// Every tool: each property's JSON type (`object|string` for either; `object` for a `$ref`
/// to an object schema), and which are required. The same table as
/// tests/mcp/test_recipes.py's EXPECTED_ARGS, with the types.
/// A tool's (property, type) pairs and required properties.
type Expected = (Vec<(&'static str, &'static str)>, Vec<&'static str>);

fn expected() -> BTreeMap<&'static str, Expected> {
    let build_id = ("build_id", "string");
    let vm_name = ("vm_name", "string");
    BTreeMap::from([
        ("list_recipe_categories", (vec![], vec![])),
        (
            "list_recipes",
            (vec![("category", "string"), ("search", "string")], vec![]),
        ),
        (
            "get_recipe",
            (vec![("recipe_id", "string")], vec!["recipe_id"]),
        ),
        (
            "validate_recipe",
            (vec![("recipe", "object")], vec!["recipe"]),
        ),
        (
            "create_recipe_from_template",
            (
                vec![
                    ("template_id", "string"),
                    ("name", "string"),
                    ("modifications", "object"),
                ],
                vec!["template_id", "name"],
            ),
        ),
        ("list_features", (vec![], vec![])),
        (
            "plan_recipe",
            (vec![("recipe_id", "string"), ("recipe", "object")], vec![]),
        ),
        (
            "create_build",
            (vec![("recipe", "object|string")], vec!["recipe"]),
        ),
        (
            "list_builds",
            (
                vec![("status_filter", "string"), ("limit", "integer")],
                vec![],
            ),
        ),
        ("get_build", (vec![build_id], vec!["build_id"])),
        (
            "get_build_status",
            (
                vec![build_id, ("wait_seconds", "integer")],
                vec!["build_id"],
            ),
        ),
        ("get_iso_download_url", (vec![build_id], vec!["build_id"])),
        ("retry_build", (vec![build_id], vec!["build_id"])),
        ("cancel_build", (vec![build_id], vec!["build_id"])),
        ("delete_build", (vec![build_id], vec!["build_id"])),
        (
            "get_build_log",
            (vec![build_id, ("tail_lines", "integer")], vec!["build_id"]),
        ),
        (
            "create_vm",
            (
                vec![
                    build_id,
                    ("name", "string"),
                    ("memory_mb", "integer"),
                    ("vcpus", "integer"),
                ],
                vec!["build_id", "name"],
            ),
        ),
        ("list_vms", (vec![build_id], vec![])),
        ("start_vm", (vec![vm_name], vec!["vm_name"])),
        (
            "stop_vm",
            (vec![vm_name, ("force", "boolean")], vec!["vm_name"]),
        ),
        ("delete_vm", (vec![vm_name], vec!["vm_name"])),
        ("get_vm_console_url", (vec![vm_name], vec!["vm_name"])),
        (
            "get_vm_serial_log",
            (vec![vm_name, ("tail_lines", "integer")], vec!["vm_name"]),
        ),
        (
            "run_tests",
            (
                vec![
                    build_id,
                    ("tests", "array"),
                    ("memory_mb", "integer"),
                    ("vcpus", "integer"),
                    ("timeout_seconds", "integer"),
                ],
                vec!["build_id"],
            ),
        ),
        (
            "get_test_results",
            (
                vec![
                    ("run_id", "string"),
                    ("wait_seconds", "integer"),
                    ("format", "string"),
                ],
                vec!["run_id"],
            ),
        ),
        (
            "list_test_runs",
            (vec![build_id, ("limit", "integer")], vec![]),
        ),
        (
            "stop_test_run",
            (vec![("run_id", "string")], vec!["run_id"]),
        ),
    ])
}

/// A property's JSON type, following a `$ref` into the root's `$defs`.
fn type_of(root: &serde_json::Map<String, Value>, schema: &Value) -> String {
    if let Some(r) = schema.get("$ref").and_then(Value::as_str) {
        let name = r.strip_prefix("#/$defs/").expect("a local $ref");
        return type_of(root, &root["$defs"][name]);
    }
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        let mut kinds: Vec<String> = any.iter().map(|s| type_of(root, s)).collect();
        kinds.sort();
        return kinds.join("|");
    }
    schema["type"]
        .as_str()
        .unwrap_or_else(|| panic!("no type in {schema}"))
        .to_owned()
}

#[test]
fn input_schemas_are_the_real_types() {
    let tools = OpenFactoryServer::router().list_all();
    let expected = expected();
    let names: BTreeSet<&str> = tools.iter().map(|t| t.name.as_ref()).collect();
    assert_eq!(names, expected.keys().copied().collect(), "tool names");
    assert_eq!(tools.len(), 27, "one route per tool");

    for tool in &tools {
        let (props, required) = &expected[tool.name.as_ref()];
        let schema = &tool.input_schema;
        assert_eq!(schema["type"], "object", "{}", tool.name);
        let properties = schema["properties"].as_object().expect("properties");
        let got: BTreeMap<&str, String> = properties
            .iter()
            .map(|(name, s)| (name.as_str(), type_of(schema, s)))
            .collect();
        let want: BTreeMap<&str, String> =
            props.iter().map(|(n, t)| (*n, (*t).to_owned())).collect();
        assert_eq!(got, want, "{} property types", tool.name);
        let got_required: BTreeSet<&str> = schema
            .get("required")
            .map(|r| {
                r.as_array()
                    .unwrap()
                    .iter()
                    .map(|v| v.as_str().unwrap())
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(
            got_required,
            required.iter().copied().collect(),
            "{} required",
            tool.name
        );
        for (name, property) in properties {
            // Ids, statuses and numbers are spelled out: some clients do not
            // follow `$ref` in arguments. Only whole recipes refer to `$defs`.
            if !matches!(name.as_str(), "recipe" | "modifications") {
                assert!(
                    property.get("$ref").is_none(),
                    "{}.{name} is a $ref: {property}",
                    tool.name
                );
            }
            let description = property["description"].as_str().unwrap_or_default();
            assert!(
                !description.is_empty(),
                "{}.{name} has no description",
                tool.name
            );
            assert!(
                !description.starts_with(' '),
                "{}.{name}: {description:?}",
                tool.name
            );
        }
    }

    let bounds = |tool: &str, field: &str| {
        let t = tools.iter().find(|t| t.name == tool).unwrap();
        let p = &t.input_schema["properties"][field];
        (
            p["minimum"].clone(),
            p["maximum"].clone(),
            p["default"].clone(),
        )
    };
    assert_eq!(
        bounds("list_builds", "limit"),
        (json!(1), json!(100), json!(20))
    );
    assert_eq!(
        bounds("list_test_runs", "limit"),
        (json!(1), json!(100), json!(20))
    );
    assert_eq!(
        bounds("get_build_log", "tail_lines"),
        (json!(1), json!(5000), json!(200))
    );
    assert_eq!(
        bounds("get_vm_serial_log", "tail_lines"),
        (json!(1), json!(5000), json!(100))
    );
    assert_eq!(
        bounds("get_build_status", "wait_seconds"),
        (json!(0), json!(50), json!(0))
    );
    assert_eq!(
        bounds("get_test_results", "wait_seconds"),
        (json!(0), json!(50), json!(0))
    );

    let results = tools.iter().find(|t| t.name == "get_test_results").unwrap();
    assert_eq!(
        results.input_schema["properties"]["format"]["enum"],
        json!(["json", "junit"])
    );
    let run = tools.iter().find(|t| t.name == "run_tests").unwrap();
    assert_eq!(
        run.input_schema["properties"]["tests"]["items"],
        json!({"anyOf": [{"type": "string"}, {"type": "object"}]})
    );
}

#[test]
fn every_tool_with_arguments_is_checked_here() {
    let with_args: BTreeSet<&str> = expected()
        .into_iter()
        .filter(|(_, (props, _))| !props.is_empty())
        .map(|(name, _)| name)
        .collect();
    assert_eq!(with_args, tools_with_args().keys().copied().collect());
    for (tool, (fields, _)) in tools_with_args() {
        let props: BTreeSet<&str> = expected()[tool].0.iter().map(|(n, _)| *n).collect();
        assert_eq!(props, fields.iter().copied().collect(), "{tool}");
    }
}

/// Every line names one of the tool's fields, and none is serde's own wording.
fn assert_field_errors(tool: &str, fields: &[&str], args: &Value, text: &str) {
    assert!(text.len() < 2000, "{tool}({args}): {} chars", text.len());
    for line in text.lines() {
        let (field, rest) = line
            .split_once(": ")
            .unwrap_or_else(|| panic!("{tool}({args}): `{line}` names no field"));
        assert!(fields.contains(&field), "{tool}({args}): `{line}`");
        assert!(!rest.is_empty(), "{tool}({args}): `{line}`");
        for serde in [
            "invalid type",
            "missing field",
            "deserialize",
            "expected struct",
            "invalid value",
        ] {
            assert!(!line.contains(serde), "{tool}({args}): `{line}`");
        }
    }
}

#[test]
fn hostile_arguments_get_field_errors() {
    let mut deep = json!("bottom");
    for _ in 0..100 {
        deep = json!({ "a": [deep] });
    }
    let hostile = [
        json!(null),
        json!(true),
        json!(-1),
        json!(0),
        json!(1.5),
        json!(1e300),
        json!(-1e300),
        json!(u64::MAX),
        json!(i64::MIN),
        json!(""),
        json!("x".repeat(100_000)),
        json!("'; DROP TABLE builds; --"),
        json!([]),
        json!([1, "two", {"three": 3}]),
        json!({}),
        json!({"nested": {"object": {"with": ["arrays"]}}}),
        deep,
    ];
    for (tool, (fields, check)) in tools_with_args() {
        // Nothing at all: each required field says so.
        if let Err(text) = check(json!({})) {
            assert_field_errors(tool, fields, &json!({}), &text);
            for line in text.lines() {
                assert!(line.contains(": required; "), "{tool}: `{line}`");
            }
        }
        for field in fields {
            for value in &hostile {
                let args = json!({ *field: value });
                if let Err(text) = check(args.clone()) {
                    assert_field_errors(tool, fields, &args, &text);
                }
            }
        }
        // Every field wrong at once: every problem, one line each.
        let args: serde_json::Map<String, Value> = fields
            .iter()
            .map(|f| ((*f).to_owned(), json!({"not": "this"})))
            .collect();
        if let Err(text) = check(Value::Object(args.clone())) {
            assert_field_errors(tool, fields, &Value::Object(args), &text);
        }
        // Unknown arguments are ignored, as before.
        let _ = check(json!({ "no_such_argument": 1 }));
    }
}

fn err<A: ToolArgs + DeserializeOwned>(args: Value) -> String
where
    A::Valid: std::fmt::Debug,
{
    check::<A>(args.clone()).expect_err(&format!("{args} should be refused"))
}

#[test]
fn create_vm_without_a_name_is_a_field_error() {
    assert_eq!(
        err::<CreateVmArgs>(json!({"build_id": "0123456789ab"})),
        "name: required; a name for the VM, unique among yours: lowercase letters, digits and `-`, e.g. `web-1`."
    );
    assert_eq!(
        err::<CreateVmArgs>(json!({"build_id": "0123456789ab", "name": null})),
        "name: required; a name for the VM, unique among yours: lowercase letters, digits and `-`, e.g. `web-1`."
    );
    let both = err::<CreateVmArgs>(json!({}));
    assert_eq!(
        both.lines()
            .map(|l| l.split(':').next().unwrap())
            .collect::<Vec<_>>(),
        ["build_id", "name"]
    );
}

#[test]
fn wrong_types_say_what_was_expected() {
    let vm = |extra: Value| {
        let mut args = json!({"build_id": "0123456789ab", "name": "web-1"});
        args.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        args
    };
    assert_eq!(
        err::<CreateVmArgs>(vm(json!({"memory_mb": "lots"}))),
        "memory_mb: expected a whole number, got a string"
    );
    assert_eq!(
        err::<CreateVmArgs>(vm(json!({"memory_mb": 1.5}))),
        "memory_mb: expected a whole number, got 1.5"
    );
    assert_eq!(
        err::<CreateVmArgs>(vm(json!({"vcpus": 1e30}))),
        "vcpus: 1e+30 is too large"
    );
    // Range checks against the server's limits stay in the service.
    let ok = check::<CreateVmArgs>(vm(json!({"memory_mb": 2048.0, "vcpus": 512}))).unwrap();
    assert_eq!((ok.memory_mb, ok.vcpus), (Some(2048), Some(512)));
    assert_eq!(
        err::<RecipeIdArgs>(json!({"recipe_id": 123})),
        "recipe_id: expected a string, got a number"
    );
    assert_eq!(
        err::<RecipeIdArgs>(json!({})),
        "recipe_id: required; a template id or one of your recipes' ids, from list_recipes (e.g. `gxp-medtech`)."
    );
    assert_eq!(
        err::<ListRecipesArgs>(json!({"category": 7})),
        "category: expected a string, got a number"
    );
    assert_eq!(
        err::<StopVmArgs>(json!({"vm_name": "web-1", "force": "yes"})),
        "force: expected true or false, got a string"
    );
    assert_eq!(
        err::<RunTestsArgs>(json!({"build_id": "0123456789ab", "tests": "docker"})),
        "tests: expected a list of check names and checks, e.g. [\"docker\", {\"port_open\": 22}], got a string"
    );
    assert_eq!(
        err::<TestResultsArgs>(json!({"run_id": "r", "format": "html"})),
        "format: `html` is not a format; use json or junit"
    );
    assert_eq!(
        err::<TestResultsArgs>(json!({"run_id": "r", "format": 1})),
        "format: expected a string, got a number"
    );
    assert_eq!(
        err::<CreateFromTemplateArgs>(json!({"template_id": ["gxp-medtech"], "name": "wt-1"})),
        "template_id: expected a string, got an array"
    );
    // A recipe is read by the planner, which reports each field: any value but null goes through.
    for recipe in [json!(42), json!("name = 'x'"), json!(["name"]), json!({})] {
        assert!(check::<ValidateArgs>(json!({ "recipe": recipe })).is_ok());
        assert!(check::<CreateBuildArgs>(json!({ "recipe": recipe })).is_ok());
    }
    assert!(
        err::<ValidateArgs>(json!({"recipe": null}))
            .starts_with("recipe: required; the recipe object: ")
    );
}

#[test]
fn bounded_numbers_name_the_range() {
    assert_eq!(
        err::<ListBuildsArgs>(json!({"limit": 500})),
        "limit: 500 is out of range; use 1 to 100 (default 20)"
    );
    assert_eq!(
        err::<ListBuildsArgs>(json!({"limit": 0})),
        "limit: 0 is out of range; use 1 to 100 (default 20)"
    );
    assert_eq!(
        err::<ListTestRunsArgs>(json!({"limit": u64::MAX})),
        "limit: 18446744073709551615 is out of range; use 1 to 100 (default 20)"
    );
    assert_eq!(
        err::<ListBuildsArgs>(json!({"limit": -1e300})),
        "limit: -1e+300 is out of range; use 1 to 100 (default 20)"
    );
    assert_eq!(
        err::<ListBuildsArgs>(json!({"limit": "all"})),
        "limit: expected a whole number, got a string"
    );
    assert_eq!(check::<ListBuildsArgs>(json!({})).unwrap().limit, 20);
    assert_eq!(
        check::<ListBuildsArgs>(json!({"limit": null}))
            .unwrap()
            .limit,
        20
    );
    assert_eq!(
        check::<ListBuildsArgs>(json!({"limit": 100}))
            .unwrap()
            .limit,
        100
    );
    assert_eq!(
        err::<BuildStatusArgs>(json!({"build_id": "0123456789ab", "wait_seconds": 3600})),
        "wait_seconds: 3600 is out of range; use 0 to 50 and call again to wait longer"
    );
    assert_eq!(
        check::<BuildStatusArgs>(json!({"build_id": "0123456789ab"}))
            .unwrap()
            .wait_seconds,
        0
    );
    assert_eq!(
        err::<BuildLogArgs>(json!({"build_id": "0123456789ab", "tail_lines": "all"})),
        "tail_lines: expected a whole number, got a string"
    );
    assert_eq!(
        err::<SerialLogArgs>(json!({"vm_name": "web-1", "tail_lines": 5001})),
        "tail_lines: 5001 is out of range; use 1 to 5000 (default 100)"
    );
    assert_eq!(
        check::<SerialLogArgs>(json!({"vm_name": "web-1"}))
            .unwrap()
            .tail_lines,
        100
    );
}

/// Every place in a schema where a subschema stands, and whether any is a
/// bare `true`/`false` (valid JSON Schema, but MCP Inspector's SDK and other
/// clients refuse a tool list that has one).
fn boolean_subschemas(schema: &Value, at: &str, found: &mut Vec<String>) {
    let Value::Object(map) = schema else { return };
    for (key, value) in map {
        let subschemas: Vec<(String, &Value)> = match (key.as_str(), value) {
            ("properties" | "$defs" | "definitions", Value::Object(m)) => m
                .iter()
                .map(|(k, v)| (format!("{at}.{key}.{k}"), v))
                .collect(),
            ("items" | "not" | "contains", v) => vec![(format!("{at}.{key}"), v)],
            ("anyOf" | "oneOf" | "allOf" | "prefixItems", Value::Array(a)) => a
                .iter()
                .enumerate()
                .map(|(i, v)| (format!("{at}.{key}[{i}]"), v))
                .collect(),
            _ => Vec::new(),
        };
        for (path, sub) in subschemas {
            if sub.is_boolean() {
                found.push(path);
            } else {
                boolean_subschemas(sub, &path, found);
            }
        }
    }
}

#[test]
fn no_schema_has_a_bare_boolean_subschema() {
    let mut found = Vec::new();
    for tool in OpenFactoryServer::router().list_all() {
        let input = Value::Object((*tool.input_schema).clone());
        boolean_subschemas(&input, &format!("{}.input", tool.name), &mut found);
        if let Some(output) = &tool.output_schema {
            let output = Value::Object((**output).clone());
            boolean_subschemas(&output, &format!("{}.output", tool.name), &mut found);
        }
    }
    assert!(found.is_empty(), "bare boolean schemas: {found:#?}");
}
