//! The recipe as a plugin sees it.
//!
//! The host passes only the top-level fields a plugin lists in
//! [`Info::reads`](crate::Info), plus `name` and `base_image`, with defaults
//! applied. Fields not passed are empty here. Unknown fields are ignored, so a
//! plugin keeps working when a newer host adds recipe fields.

use serde::Deserialize;

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct RecipeView {
    pub name: String,
    /// `debian-bookworm` or `debian-trixie`.
    pub base_image: String,
    pub hostname: Option<String>,
    pub packages: Vec<String>,
    pub services: Vec<String>,
    pub users: Vec<UserView>,
    pub networking: NetworkingView,
    pub security: SecurityView,
    pub kernel_args: Vec<String>,
    /// The recipe's features, normalised to `{name, options}` (passed when `features` is read).
    pub features: Vec<FeatureView>,
}

impl RecipeView {
    /// An error for every name in `names` that is not a recipe user, at
    /// `options.<field>[i]`, suggesting the closest user name. `purpose` ends
    /// the message: "… so it cannot be added to the docker group".
    pub fn unknown_users(
        &self,
        names: &[String],
        code: &str,
        field: &str,
        purpose: &str,
    ) -> Vec<crate::Diagnostic> {
        let known: Vec<&str> = self.users.iter().map(|u| u.name.as_str()).collect();
        names
            .iter()
            .enumerate()
            .filter(|(_, name)| !known.contains(&name.as_str()))
            .map(|(i, name)| {
                let hint = match crate::diag::closest(name, known.iter().copied()) {
                    Some(close) => format!("did you mean `{close}`?"),
                    None => format!(
                        "add a user named `{name}` to the recipe's users, or remove it here"
                    ),
                };
                crate::diag::error(
                    code,
                    &format!("options.{field}[{i}]"),
                    format!("`{name}` is not one of the recipe's users, so {purpose}"),
                )
                .suggest(hint)
            })
            .collect()
    }

    /// Whether the recipe enables a feature (meaningful when the plugin reads `features`).
    pub fn has_feature(&self, name: &str) -> bool {
        self.features.iter().any(|f| f.name == name)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct FeatureView {
    pub name: String,
    pub options: serde_json::Value,
}

impl RecipeView {
    /// The Debian suite of the base image (`bookworm`, `trixie`).
    pub fn suite(&self) -> &str {
        self.base_image
            .strip_prefix("debian-")
            .unwrap_or(&self.base_image)
    }
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct UserView {
    pub name: String,
    pub groups: Vec<String>,
    pub sudo: bool,
    pub ssh_authorized_keys: Vec<String>,
    pub shell: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default)]
pub struct NetworkingView {
    pub dhcp: bool,
    pub nameservers: Vec<String>,
    pub allowed_ports: Vec<PortView>,
}

impl Default for NetworkingView {
    fn default() -> Self {
        NetworkingView {
            dhcp: true,
            nameservers: Vec::new(),
            allowed_ports: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
pub struct PortView {
    pub port: u16,
    #[serde(default = "tcp")]
    pub protocol: String,
}

fn tcp() -> String {
    "tcp".into()
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default)]
pub struct SecurityView {
    pub root_login: bool,
    pub password_authentication: bool,
}
