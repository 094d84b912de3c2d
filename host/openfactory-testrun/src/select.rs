//! Which checks a test run has. Without `tests`, every check the plan
//! declared (base, recipe, features). With `tests`, strings choose among the
//! plan's checks (a check's full name, or a source: `base`, `recipe`, a
//! feature name) and objects add the caller's own; when only objects are
//! given, they come on top of every planned check. A run's checks are
//! [`PlannedCheck`]s like the plan's: the caller's own have the source `user`.

use openfactory_core::plan::PlannedCheck;
use openfactory_core::rules;
use openfactory_core::step::CheckKind;
use serde_json::Value;

/// Source of the caller's own checks.
pub const USER: &str = "user";
/// How long a caller's check may retry unless it says otherwise.
pub const DEFAULT_USER_TIMEOUT: u32 = 10;
pub const MAX_CHECK_TIMEOUT: u32 = 600;
pub const MAX_TESTS: usize = 64;

const KINDS: &[&str] = &[
    "unit_active",
    "command_succeeds",
    "port_open",
    "file_exists",
    "package_installed",
    "http_get",
];

/// The run's checks, or every problem with `tests` (each naming its
/// position and the fix).
pub fn select(
    planned: &[PlannedCheck],
    tests: Option<&[Value]>,
) -> Result<Vec<PlannedCheck>, Vec<String>> {
    let Some(tests) = tests else {
        return Ok(planned.to_vec());
    };
    let mut errors = Vec::new();
    if tests.len() > MAX_TESTS {
        return Err(vec![format!(
            "tests: {} entries is too many; give at most {MAX_TESTS}",
            tests.len()
        )]);
    }
    let mut chosen: Vec<PlannedCheck> = Vec::new();
    let mut added: Vec<PlannedCheck> = Vec::new();
    let mut any_selector = false;
    for (i, test) in tests.iter().enumerate() {
        match test {
            Value::String(selector) => {
                any_selector = true;
                let matching: Vec<&PlannedCheck> = planned
                    .iter()
                    .filter(|c| c.name == *selector || c.source == *selector)
                    .collect();
                if matching.is_empty() {
                    errors.push(unknown_selector(i, selector, planned));
                }
                for c in matching {
                    if !chosen.iter().any(|t| t.name == c.name) {
                        chosen.push(c.clone());
                    }
                }
            }
            Value::Object(_) => match user_check(i, test) {
                Ok(check) => {
                    if added.iter().any(|t| t.name == check.name) {
                        errors.push(format!(
                            "tests[{i}].name: `{}` is used twice; give each check its own name",
                            check.name
                        ));
                    } else {
                        added.push(check);
                    }
                }
                Err(mut e) => errors.append(&mut e),
            },
            other => errors.push(format!(
                "tests[{i}]: expected a check name (string) or a check (object like {{\"command_succeeds\": [\"true\"]}}), got {}",
                rules::json_kind(other)
            )),
        }
    }
    if !errors.is_empty() {
        return Err(errors);
    }
    let mut checks = if any_selector {
        chosen
    } else {
        planned.to_vec()
    };
    checks.extend(added);
    if checks.is_empty() {
        return Err(vec![
            "tests: nothing to run; name a planned check or add one".into(),
        ]);
    }
    Ok(checks)
}

fn unknown_selector(i: usize, selector: &str, planned: &[PlannedCheck]) -> String {
    let mut names: Vec<&str> = planned
        .iter()
        .flat_map(|c| [c.name.as_str(), c.source.as_str()])
        .collect();
    names.sort();
    names.dedup();
    let near = names
        .iter()
        .map(|n| (strsim::jaro_winkler(n, selector), *n))
        .filter(|(score, _)| *score > 0.85)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, n)| format!(" Did you mean `{n}`?"))
        .unwrap_or_default();
    let mut sources: Vec<&str> = planned.iter().map(|c| c.source.as_str()).collect();
    sources.dedup();
    format!(
        "tests[{i}]: no planned check or source is named `{}`.{near} This build's sources: {}; list the checks with get_build",
        rules::truncate(selector, 60).escape_debug(),
        sources.join(", ")
    )
}

/// A caller's check: exactly one kind key, plus optional `name`,
/// `description` and `timeout_seconds`.
fn user_check(i: usize, test: &Value) -> Result<PlannedCheck, Vec<String>> {
    let object = test.as_object().expect("called with objects");
    let mut errors = Vec::new();
    let field = |key: &str| format!("tests[{i}].{key}");
    for key in object.keys() {
        if !KINDS.contains(&key.as_str())
            && !["name", "description", "timeout_seconds"].contains(&key.as_str())
        {
            errors.push(format!(
                "{}: unknown field; a check has one of {} (plus name, description, timeout_seconds)",
                field(&rules::truncate(key, 40)),
                KINDS.join(", ")
            ));
        }
    }
    let kinds: Vec<&str> = KINDS
        .iter()
        .copied()
        .filter(|k| object.contains_key(*k))
        .collect();
    let kind = match kinds.as_slice() {
        [one] => {
            let value = &object[*one];
            let f = field(one);
            let parsed = match *one {
                "unit_active" => value
                    .as_str()
                    .map(|u| CheckKind::UnitActive { unit: u.to_owned() })
                    .ok_or_else(|| format!("{f}: give the unit's name as a string, e.g. \"nginx.service\"")),
                "command_succeeds" => value
                    .as_array()
                    .and_then(|a| a.iter().map(|v| v.as_str().map(String::from)).collect::<Option<Vec<_>>>())
                    .map(|argv| CheckKind::CommandSucceeds { argv })
                    .ok_or_else(|| format!("{f}: give the command as a list of strings, e.g. [\"systemctl\", \"is-system-running\"]")),
                "port_open" => value
                    .as_u64()
                    .and_then(|p| u16::try_from(p).ok())
                    .filter(|p| *p > 0)
                    .map(|port| CheckKind::PortOpen {
                        port,
                        protocol: openfactory_core::recipe::Protocol::Tcp,
                    })
                    .ok_or_else(|| format!("{f}: give a TCP port from 1 to 65535, e.g. 22")),
                "file_exists" => value
                    .as_str()
                    .map(|p| CheckKind::FileExists { path: p.to_owned() })
                    .ok_or_else(|| format!("{f}: give an absolute path as a string, e.g. \"/etc/hostname\"")),
                "package_installed" => value
                    .as_str()
                    .map(|p| CheckKind::PackageInstalled { package: p.to_owned() })
                    .ok_or_else(|| format!("{f}: give a Debian package name as a string, e.g. \"curl\"")),
                "http_get" => value
                    .as_str()
                    .map(|u| CheckKind::HttpGet { url: u.to_owned() })
                    .ok_or_else(|| format!("{f}: give a URL as a string, e.g. \"http://127.0.0.1:9100/metrics\"")),
                _ => unreachable!("KINDS"),
            };
            match parsed {
                Ok(kind) => {
                    for (sub, reason) in kind.check() {
                        errors.push(format!("{f}: {sub} {reason}"));
                    }
                    Some(kind)
                }
                Err(e) => {
                    errors.push(e);
                    None
                }
            }
        }
        [] => {
            errors.push(format!(
                "tests[{i}]: a check needs one of {}, e.g. {{\"port_open\": 22}}",
                KINDS.join(", ")
            ));
            None
        }
        many => {
            errors.push(format!(
                "tests[{i}]: one check per object; this one has {}: split it into several objects",
                many.join(" and ")
            ));
            None
        }
    };
    let name = match object.get("name") {
        None => kinds
            .first()
            .map(|k| format!("{}-{i}", k.replace('_', "-")))
            .unwrap_or_default(),
        Some(Value::String(n)) if rules::slug(n).is_ok() && n.len() <= 40 => n.clone(),
        Some(_) => {
            errors.push(format!(
                "{}: use 1 to 40 lowercase letters, digits and `-`, e.g. \"api-up\"",
                field("name")
            ));
            String::new()
        }
    };
    let description = match object.get("description") {
        None => None,
        Some(Value::String(d)) if d.chars().count() <= 200 && !d.chars().any(char::is_control) => {
            Some(d.clone())
        }
        Some(_) => {
            errors.push(format!(
                "{}: give at most 200 characters of plain text",
                field("description")
            ));
            None
        }
    };
    let timeout_seconds = match object.get("timeout_seconds") {
        None => DEFAULT_USER_TIMEOUT,
        Some(v) => match v
            .as_u64()
            .filter(|t| (1..=u64::from(MAX_CHECK_TIMEOUT)).contains(t))
        {
            Some(t) => t as u32,
            None => {
                errors.push(format!(
                    "{}: give whole seconds from 1 to {MAX_CHECK_TIMEOUT}",
                    field("timeout_seconds")
                ));
                0
            }
        },
    };
    match kind {
        Some(kind) if errors.is_empty() => Ok(PlannedCheck {
            description: description.unwrap_or_else(|| kind.to_string()),
            name: format!("{USER}/{name}"),
            source: USER.into(),
            kind,
            timeout_seconds,
        }),
        _ => Err(errors),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn planned() -> Vec<PlannedCheck> {
        let check = |source: &str, name: &str, unit: &str| PlannedCheck {
            name: format!("{source}/{name}"),
            source: source.into(),
            description: format!("{unit} is active"),
            kind: CheckKind::UnitActive { unit: unit.into() },
            timeout_seconds: 120,
        };
        vec![
            check("base", "multi-user", "multi-user.target"),
            check("docker", "dockerd-active", "docker.service"),
            check("ssh", "sshd-active", "ssh.service"),
        ]
    }

    fn names(checks: &[PlannedCheck]) -> Vec<&str> {
        checks.iter().map(|c| c.name.as_str()).collect()
    }

    #[test]
    fn without_tests_every_planned_check_runs() {
        let checks = select(&planned(), None).unwrap();
        assert_eq!(
            names(&checks),
            [
                "base/multi-user",
                "docker/dockerd-active",
                "ssh/sshd-active"
            ]
        );
    }

    #[test]
    fn strings_choose_by_name_or_source_and_objects_add() {
        let tests = [
            json!("docker"),
            json!("base/multi-user"),
            json!({"command_succeeds": ["false"], "name": "broken"}),
        ];
        let checks = select(&planned(), Some(&tests)).unwrap();
        assert_eq!(
            names(&checks),
            ["docker/dockerd-active", "base/multi-user", "user/broken"]
        );
        assert_eq!(checks[2].timeout_seconds, DEFAULT_USER_TIMEOUT);
        assert_eq!(checks[2].source, "user");
        // Only additions: on top of everything planned.
        let checks = select(
            &planned(),
            Some(&[json!({"port_open": 22, "timeout_seconds": 5})]),
        )
        .unwrap();
        assert_eq!(names(&checks).len(), 4);
        assert_eq!(checks[3].name, "user/port-open-0");
    }

    #[test]
    fn every_problem_is_reported_with_its_place_and_fix() {
        let tests = [
            json!("dokcer"),
            json!({"command_succeeds": "false"}),
            json!({"port_open": 70000}),
            json!({"file_exists": "../etc/passwd"}),
            json!({"http_get": "http://x/$(reboot)"}),
            json!({"unit_active": "a", "port_open": 1}),
            json!({"name": "x"}),
            json!({"unit_active": "ssh.service", "bogus": 1, "timeout_seconds": 0, "name": "Bad Name"}),
            json!(42),
        ];
        let errors = select(&planned(), Some(&tests)).unwrap_err();
        let all = errors.join("\n");
        for wanted in [
            "tests[0]: no planned check or source is named `dokcer`. Did you mean `docker`?",
            "tests[1].command_succeeds: give the command as a list of strings",
            "tests[2].port_open: give a TCP port from 1 to 65535",
            "tests[3].file_exists: path must be an absolute path",
            "tests[4].http_get: url the path must be",
            "tests[5]: one check per object",
            "tests[6]: a check needs one of",
            "tests[7].bogus: unknown field",
            "tests[7].timeout_seconds: give whole seconds",
            "tests[7].name: use 1 to 40 lowercase letters",
            "tests[8]: expected a check name (string) or a check (object",
        ] {
            assert!(all.contains(wanted), "missing `{wanted}` in:\n{all}");
        }
        assert_eq!(errors.len(), 11, "{all}");
    }

    #[test]
    fn hostile_values_are_not_echoed_in_full() {
        let long = "x".repeat(5000);
        let errors = select(&planned(), Some(&[json!(long)])).unwrap_err();
        assert!(errors[0].len() < 400, "{}", errors[0]);
        let errors = select(&planned(), Some(&vec![json!("base"); MAX_TESTS + 1])).unwrap_err();
        assert!(errors[0].contains("too many"));
    }
}
