//! `motd`: a message of the day and a pre-login banner.
//!
//! This is the template for plugin authors: copy the directory, rename the
//! crate and the feature, and replace the options, steps and checks.

use openfactory_plugin_sdk::prelude::*;

/// Options of the `motd` feature. Doc comments become the schema's
/// descriptions, which assistants read to fill the options in.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct Options {
    /// Text shown after login (/etc/motd). `{hostname}` is replaced by the image's hostname.
    #[schemars(length(max = 4096))]
    pub message: String,
    /// Text shown before login on consoles (/etc/issue). Empty keeps Debian's.
    #[schemars(length(max = 4096))]
    pub banner: String,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            message: "Welcome to {hostname}, built by OpenFactory.".into(),
            banner: String::new(),
        }
    }
}

pub struct Motd;

impl Feature for Motd {
    type Options = Options;

    fn info() -> Info {
        Info::new(
            "motd",
            env!("CARGO_PKG_VERSION"),
            "Message of the day and login banner",
            "system",
        )
        .reads(&["hostname", "features"])
    }

    fn validate(ctx: &Context<Options>) -> Vec<Diagnostic> {
        let mut problems = Vec::new();
        for (field, text) in [
            ("options.message", &ctx.options.message),
            ("options.banner", &ctx.options.banner),
        ] {
            if text
                .chars()
                .any(|c| c.is_control() && c != '\n' && c != '\t')
            {
                problems.push(
                    diag::error(
                        "motd.control-characters",
                        field,
                        "control characters (escape sequences) are not allowed",
                    )
                    .suggest("remove terminal escape codes; plain text and newlines only"),
                );
            }
        }
        // hardening writes /etc/issue too (unless its login_banner is ""), and
        // two features writing one file is a plan error: say which option to use.
        let hardening_banner = ctx
            .recipe
            .features
            .iter()
            .find(|f| f.name == "hardening")
            .is_some_and(|f| f.options.get("login_banner").and_then(|b| b.as_str()) != Some(""));
        if !ctx.options.banner.is_empty() && hardening_banner {
            problems.push(
                diag::error(
                    "motd.banner-conflict",
                    "options.banner",
                    "the `hardening` feature writes the console banner (/etc/issue) too",
                )
                .suggest(
                    "set the banner in hardening's `login_banner` and leave this `banner` empty",
                ),
            );
        }
        problems
    }

    fn plan(ctx: &Context<Options>) -> Result<Vec<Step>, Vec<Diagnostic>> {
        let hostname = ctx.recipe.hostname.as_deref().unwrap_or(&ctx.recipe.name);
        let mut steps = vec![step::write_file(
            "/etc/motd",
            &format!("{}\n", ctx.options.message.replace("{hostname}", hostname)),
        )];
        if !ctx.options.banner.is_empty() {
            steps.push(step::write_file(
                "/etc/issue",
                &format!("{}\n", ctx.options.banner),
            ));
        }
        Ok(steps)
    }

    fn checks(_ctx: &Context<Options>) -> Vec<BootCheck> {
        vec![check::file_exists(
            "motd-present",
            "the message of the day is in place",
            "/etc/motd",
        )]
    }
}

export_feature!(Motd);
