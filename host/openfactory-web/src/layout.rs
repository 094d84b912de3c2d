//! The page shell (head, navigation, footer) and the small pieces every page
//! uses: status badges, times, sizes, progress, copyable snippets.

use axum::http::StatusCode;
use axum::response::{Html, IntoResponse, Response};
use maud::{DOCTYPE, Markup, PreEscaped, html};

use openfactory_service::vms::VmState;
use openfactory_service::{Action, Error, ErrorKind, Next};

use crate::assets;
use crate::session::Viewer;

/// Which navigation entry a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Nav {
    Overview,
    Catalog,
    Builds,
    Vms,
    TestRuns,
    Plugins,
    Settings,
    None,
}

const LOGO: &str = r##"<svg viewBox="0 0 32 32" aria-hidden="true" focusable="false"><rect width="32" height="32" rx="8" fill="#1d63d8"/><path d="M16 6.5 24.5 11v10L16 25.5 7.5 21V11z" fill="none" stroke="#fff" stroke-width="2" stroke-linejoin="round"/><path d="M7.8 11.2 16 15.6l8.2-4.4M16 15.6v9.6" fill="none" stroke="#fff" stroke-width="2" stroke-linejoin="round"/></svg>"##;

fn nav_link(href: &str, label: &str, this: Nav, current: Nav) -> Markup {
    html! {
        @if this == current {
            a href=(href) aria-current="page" { (label) }
        } @else {
            a href=(href) { (label) }
        }
    }
}

/// A whole page: `title` in the tab, `body` in `<main>`.
pub fn page(viewer: &Viewer, title: &str, nav: Nav, body: Markup) -> Response {
    shell(viewer, title, nav, false, body)
}

/// A page whose content changes while it is open: without JavaScript, it
/// reloads itself every few seconds instead.
pub fn live_page(viewer: &Viewer, title: &str, nav: Nav, live: bool, body: Markup) -> Response {
    shell(viewer, title, nav, live, body)
}

fn shell(viewer: &Viewer, title: &str, nav: Nav, refresh: bool, body: Markup) -> Response {
    let markup = html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · OpenFactory" }
                link rel="icon" href=(assets::url("logo.svg")) type="image/svg+xml";
                link rel="stylesheet" href=(assets::url("web.css"));
                script type="module" src=(assets::url("web.js")) {}
                @if refresh {
                    noscript { meta http-equiv="refresh" content="5"; }
                }
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.topbar {
                    div.topbar-inner {
                        a.brand href="/" { (PreEscaped(LOGO)) span { "OpenFactory" } }
                        nav.nav aria-label="Main" {
                            @if viewer.account.is_some() {
                                (nav_link("/", "Overview", Nav::Overview, nav))
                            }
                            (nav_link("/catalog", "Catalog", Nav::Catalog, nav))
                            @if viewer.account.is_some() {
                                (nav_link("/builds", "Builds", Nav::Builds, nav))
                                (nav_link("/vms", "VMs", Nav::Vms, nav))
                                (nav_link("/test-runs", "Test runs", Nav::TestRuns, nav))
                            }
                            (nav_link("/plugins", "Plugins", Nav::Plugins, nav))
                            @if viewer.account.is_some() {
                                (nav_link("/settings", "Settings", Nav::Settings, nav))
                            }
                        }
                        div.account {
                            @if let Some(account) = &viewer.account {
                                span.break { (account.email) }
                                form method="post" action="/signout" {
                                    (csrf(viewer))
                                    button.btn.small type="submit" { "Sign out" }
                                }
                            } @else {
                                a.btn.small href={ "/signin?next=" (crate::form::encode(&viewer.path)) } { "Sign in" }
                                a.btn.small.primary href="/signup" { "Create account" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    @if let Some(flash) = &viewer.flash {
                        div.flash.ok[flash.ok].bad[!flash.ok] role="status" { (flash.text) }
                    }
                    (body)
                }
                footer {
                    "OpenFactory " (env!("CARGO_PKG_VERSION"))
                    " · MCP at " code { "/api/mcp/sse" } " and " code { "/api/mcp" }
                    " · " a href="/healthz" { "health" }
                }
            }
        }
    };
    Html(markup.into_string()).into_response()
}

/// A page that says what went wrong and what to do, with `status`.
pub fn error_page(viewer: &Viewer, status: StatusCode, title: &str, message: &str) -> Response {
    let body = html! {
        div.card.empty {
            h1 { (title) }
            p { (message) }
            p.actions.center {
                a.btn href="/" { "Go to the overview" }
                a.btn href="/catalog" { "Browse the catalog" }
            }
        }
    };
    let mut response = page(viewer, title, Nav::None, body);
    *response.status_mut() = status;
    response
}

/// Where the console does what the service points to.
fn where_to(action: &Action) -> &'static str {
    match action {
        Action::ListRecipeCategories | Action::ListRecipes => "the Catalog lists them",
        Action::CreateBuild => "Build on a recipe's catalog page starts a new one",
        Action::ListBuilds => "the Builds page lists yours",
        Action::GetBuildStatus { .. } | Action::GetTestResults { .. } => "its page follows it",
        Action::GetBuildLog => "Full log on the build's page shows the whole log",
        Action::CancelBuild => "Cancel build on the build's page stops it",
        Action::RetryBuild => "Retry on the build's page starts it again",
        Action::DeleteBuild => "Delete on a build's page removes it",
        Action::GetIsoDownloadUrl => "the build's page has its downloads",
        Action::ListVms => "the VMs page lists yours",
        Action::StartVm => "Start on the VM's page starts it",
        Action::StopVm { force: true } => "Force stop stops it at once",
        Action::StopVm { force: false } => "Stop on the VM's page stops it",
        Action::DeleteVm => "Delete on the VM's page removes it",
        Action::GetVmSerialLog => "the serial console on the VM's page shows its output",
        Action::ListTestRuns => "the Test runs page lists yours",
        Action::StopTestRun => "Stop run on the run's page stops it",
        Action::ListKeys => "Settings lists your keys",
    }
}

/// A service error in the console's words: the message, and where the
/// console does what it points to (for a conflict, what to do first).
pub fn say(e: &Error) -> String {
    match &e.see {
        None => e.message.clone(),
        Some(a) if e.kind == ErrorKind::Conflict => {
            format!("{} first; {}", e.message, where_to(a))
        }
        Some(a) => format!("{}; {}", e.message, where_to(a)),
    }
}

/// A hint in the console's words.
pub fn say_next(next: &Next) -> String {
    let mut text = next.sentence.clone();
    for a in &next.actions {
        text.push_str("; ");
        text.push_str(where_to(a));
    }
    text
}

/// A service error as a page with its status; "not found" says so plainly,
/// without saying whether the thing exists for someone else.
pub fn service_error(viewer: &Viewer, what: &str, e: &Error) -> Response {
    if e.is_not_found() {
        error_page(
            viewer,
            StatusCode::NOT_FOUND,
            &format!("{what} not found"),
            &format!(
                "There is no such {} in your account. It may have been deleted, or the link may belong to someone else.",
                what.to_lowercase()
            ),
        )
    } else {
        error_page(viewer, e.kind.http_status(), what, &say(e))
    }
}

/// The hidden field every form carries.
pub fn csrf(viewer: &Viewer) -> Markup {
    html! { input type="hidden" name="csrf" value=(viewer.csrf); }
}

/// A POST button (a form of one button), optionally asking first.
pub fn action(
    viewer: &Viewer,
    to: &str,
    label: &str,
    class: &str,
    confirm: Option<&str>,
) -> Markup {
    html! {
        form.inline method="post" action=(to) data-confirm=[confirm] {
            (csrf(viewer))
            button type="submit" class={ "btn small " (class) } { (label) }
        }
    }
}

/// A status as a coloured badge with its name (never colour alone).
pub fn status(status: impl std::fmt::Display) -> Markup {
    let status = status.to_string();
    html! { span class={ "badge s-" (status) } { (status.replace('_', " ")) } }
}

/// A VM's state: running is its healthy state (green), unlike a build's.
pub fn vm_state(state: VmState) -> Markup {
    let class = if state == VmState::Running {
        "s-active"
    } else {
        "s-stopped"
    };
    html! { span class={ "badge " (class) } { (state.as_str()) } }
}

/// An RFC 3339 time, as "3 min ago" with the exact time on hover.
pub fn when(rfc3339: &str) -> Markup {
    html! { time datetime=(rfc3339) title=(rfc3339) { (ago(rfc3339)) } }
}

/// "just now", "5 min ago", "3 h ago", "2 days ago", or the date.
pub fn ago(rfc3339: &str) -> String {
    let Ok(t) =
        time::OffsetDateTime::parse(rfc3339, &time::format_description::well_known::Rfc3339)
    else {
        return rfc3339.to_owned();
    };
    let secs = (time::OffsetDateTime::now_utc() - t).whole_seconds();
    match secs {
        s if s < 45 => "just now".into(),
        s if s < 3600 => format!("{} min ago", (s + 30) / 60),
        s if s < 86_400 => format!("{} h ago", s / 3600),
        s if s < 14 * 86_400 => format!("{} days ago", s / 86_400),
        _ => rfc3339.get(..10).unwrap_or(rfc3339).to_owned(),
    }
}

/// "1 min 05 s", "42 s".
pub fn duration(seconds: u64) -> String {
    match seconds {
        s if s < 60 => format!("{s} s"),
        s if s < 3600 => format!("{} min {:02} s", s / 60, s % 60),
        s => format!("{} h {:02} min", s / 3600, (s % 3600) / 60),
    }
}

pub fn bytes(n: u64) -> String {
    openfactory_build::cache::human_bytes(n)
}

/// A labelled progress bar.
pub fn progress(percent: u8, label: &str) -> Markup {
    html! {
        div.progress {
            progress value=(percent) max="100" aria-label=(label) { (percent) "%" }
            span.pct { (percent) "%" }
        }
    }
}

/// A block of text with a copy button (shown when scripts run).
pub fn snippet(id: &str, title: &str, text: &str) -> Markup {
    html! {
        div.snippet {
            h3 id={ (id) "-title" } { (title) }
            pre.code id=(id) tabindex="0" aria-labelledby={ (id) "-title" } { (text) }
            button.btn.small.copy type="button" data-copy={ "#" (id) } hidden { "Copy" }
        }
    }
}

/// An empty state: what is missing and what to do.
pub fn empty(title: &str, text: &str, action: Option<(&str, &str)>) -> Markup {
    html! {
        div.empty {
            h2 { (title) }
            p { (text) }
            @if let Some((href, label)) = action {
                a.btn.primary href=(href) { (label) }
            }
        }
    }
}

/// A fragment (for the page script to swap in), as its own response.
pub fn fragment(markup: Markup) -> Response {
    Html(markup.into_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_errors_map_to_one_status_each_and_read_in_console_words() {
        use openfactory_store::StoreError;
        for (e, status) in [
            (Error::not_found("x"), 404),
            (Error::invalid("limit", "x"), 400),
            (Error::conflict("x"), 409),
            (Error::limit_reached("x"), 409),
            (Error::from(StoreError::Corrupt("x".into())), 503),
            (Error::internal("x"), 500),
            (Error::unauthorized("x"), 401),
        ] {
            assert_eq!(e.kind.http_status().as_u16(), status, "{e:?}");
        }
        let e = Error::conflict("build `a` is running; stop it").see(Action::CancelBuild);
        assert_eq!(
            say(&e),
            "build `a` is running; stop it first; Cancel build on the build's page stops it"
        );
        let next = Next::new("Started", [Action::GetVmSerialLog]);
        assert!(!say_next(&next).contains('_'), "{}", say_next(&next));
    }

    #[test]
    fn times_and_durations_read_well() {
        assert_eq!(duration(5), "5 s");
        assert_eq!(duration(65), "1 min 05 s");
        assert_eq!(duration(7260), "2 h 01 min");
        assert_eq!(ago("not a time"), "not a time");
        assert_eq!(ago("2020-01-02T03:04:05Z"), "2020-01-02");
        let now = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap();
        assert_eq!(ago(&now), "just now");
    }

    #[test]
    fn markup_escapes_what_it_is_given() {
        let html = status("<script>").into_string();
        assert!(html.contains("&lt;script&gt;") && !html.contains("<script>"));
        let html = snippet("k", "Key", "\"><img src=x onerror=alert(1)>").into_string();
        assert!(!html.contains("<img"), "{html}");
    }
}
