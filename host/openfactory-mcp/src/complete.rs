//! Completions (`completion/complete`): what an argument of a prompt or a
//! resource template names, and the values that complete what the client
//! typed. Pure: the server fetches the candidates (owner-scoped) and this
//! module picks, orders and bounds them.

use rmcp::model::CompletionInfo;

/// What kind of thing an argument's value names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Names {
    /// Free text (a package list, a VM name to create): nothing to complete.
    Text,
    /// A catalog template id.
    Template,
    /// A template or one of the caller's recipes.
    Recipe,
    /// Installed feature names, comma-separated.
    Features,
    /// One installed feature.
    Feature,
    /// An option of the feature that the argument `feature` names (from the
    /// completion's context).
    FeatureOption,
    /// A build status, as list_builds filters on.
    BuildStatus,
    /// A base image.
    Base,
    /// One of the caller's builds.
    Build,
    /// One of the caller's test runs.
    TestRun,
    /// One of the caller's VMs.
    Vm,
}

/// The candidates that complete `typed`, best first: those that start with
/// it, then those that contain it (case-insensitive), each group in the
/// order given (newest first for the caller's things). For a comma-separated
/// list ([`Names::Features`]) the last word is completed and the words
/// before it kept, and a name already in the list is not offered again.
pub fn complete(names: Names, typed: &str, candidates: &[String]) -> CompletionInfo {
    let (kept, word) = match names {
        Names::Features => match typed.rsplit_once(',') {
            Some((before, last)) => (Some(before.trim_end()), last.trim_start()),
            None => (None, typed.trim_start()),
        },
        _ => (None, typed.trim()),
    };
    let taken: Vec<&str> = kept
        .map(|k| k.split(',').map(str::trim).collect())
        .unwrap_or_default();
    let needle = word.to_lowercase();
    let (taken, needle) = (&taken, &needle);
    let fitting = |starts: bool| {
        candidates
            .iter()
            .filter(move |c| !taken.contains(&c.as_str()))
            .filter(move |c| {
                let c = c.to_lowercase();
                if starts {
                    c.starts_with(needle.as_str())
                } else {
                    !c.starts_with(needle.as_str()) && c.contains(needle.as_str())
                }
            })
    };
    let matches: Vec<String> = fitting(true)
        .chain(fitting(false))
        .map(|c| match kept {
            Some(k) if !k.is_empty() => format!("{k}, {c}"),
            _ => c.clone(),
        })
        .collect();
    let total = matches.len();
    let values: Vec<String> = matches
        .into_iter()
        .take(CompletionInfo::MAX_VALUES)
        .collect();
    let more = total > values.len();
    CompletionInfo::with_pagination(values, Some(u32::try_from(total).unwrap_or(u32::MAX)), more)
        .expect("at most MAX_VALUES values")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn list(items: &[&str]) -> Vec<String> {
        items.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn prefixes_first_then_the_rest_that_contain_it() {
        let templates = list(&["debian-minimal-server", "gxp-medtech", "web-server-nginx"]);
        let got = complete(Names::Template, "serv", &templates);
        assert_eq!(
            got.values,
            list(&["debian-minimal-server", "web-server-nginx"])
        );
        let got = complete(Names::Template, "GX", &templates);
        assert_eq!(got.values, list(&["gxp-medtech"]));
        assert_eq!(complete(Names::Template, "", &templates).values, templates);
        assert!(
            complete(Names::Template, "zzz", &templates)
                .values
                .is_empty()
        );
    }

    #[test]
    fn a_feature_list_completes_its_last_word() {
        let features = list(&["docker", "firewall", "monitoring", "ssh"]);
        let got = complete(Names::Features, "ssh, do", &features);
        assert_eq!(got.values, list(&["ssh, docker"]));
        // Names already chosen are not offered again.
        let got = complete(Names::Features, "ssh,", &features);
        assert_eq!(
            got.values,
            list(&["ssh, docker", "ssh, firewall", "ssh, monitoring"])
        );
    }

    #[test]
    fn at_most_a_hundred_values_with_the_total() {
        let many: Vec<String> = (0..250).map(|i| format!("b{i:03}")).collect();
        let got = complete(Names::Build, "b", &many);
        assert_eq!(got.values.len(), 100);
        assert_eq!((got.total, got.has_more), (Some(250), Some(true)));
        let got = complete(Names::Build, "b24", &many);
        assert_eq!((got.values.len(), got.has_more), (10, Some(false)));
    }
}
