//! Signing up, in and out. Accounts and passwords are the service's
//! (`openfactory_service::auth`): the same rules and throttling as
//! `/api/auth/*`.

use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use maud::{Markup, html};
use openfactory_service::auth::{self, SignInError};
use serde::Deserialize;

use crate::Web;
use crate::form::{Empty, Posted, local_path};
use crate::layout::{self, Nav, csrf};
use crate::session::{self, Viewer};

#[derive(Debug, Default, Deserialize)]
pub struct Next {
    next: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Credentials {
    #[serde(default)]
    email: String,
    #[serde(default)]
    password: String,
    #[serde(default)]
    next: Option<String>,
}

/// What a sign-in or sign-up form shows again after a problem.
#[derive(Default)]
struct Problems {
    email: Option<String>,
    password: Option<String>,
    form: Option<String>,
}

fn field(
    id: &str,
    label: &str,
    kind: &str,
    value: &str,
    autocomplete: &str,
    help: Option<&str>,
    problem: Option<&str>,
) -> Markup {
    let described = match (help, problem) {
        (_, Some(_)) => Some(format!("{id}-error")),
        (Some(_), None) => Some(format!("{id}-help")),
        _ => None,
    };
    html! {
        div.field {
            label for=(id) { (label) }
            input id=(id) name=(id) type=(kind) value=(value) required autocomplete=(autocomplete)
                aria-invalid=[problem.map(|_| "true")] aria-describedby=[described];
            @if let Some(p) = problem {
                p.error id={ (id) "-error" } { (p) }
            } @else if let Some(h) = help {
                p.help id={ (id) "-help" } { (h) }
            }
        }
    }
}

/// The two ways in: signing in (to `next`) and signing up.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Door {
    SignIn,
    SignUp,
}

fn auth_form(viewer: &Viewer, door: Door, email: &str, next: &str, problems: &Problems) -> Markup {
    let (title, lead, action, submit) = match door {
        Door::SignIn => (
            "Sign in",
            "to see your builds, VMs and test runs, and to manage your MCP API keys.",
            "/signin",
            "Sign in",
        ),
        Door::SignUp => (
            "Create your account",
            "An account keeps your builds with you across networks and devices, and gives your MCP clients API keys.",
            "/signup",
            "Create account",
        ),
    };
    let (autocomplete, help) = match door {
        Door::SignIn => ("current-password", None),
        Door::SignUp => (
            "new-password",
            Some("At least 10 characters; a passphrase of a few words works well."),
        ),
    };
    html! {
        div.card.auth-card {
            h1 { (title) }
            p.muted { (lead) }
            @if let Some(p) = &problems.form {
                div.flash.bad role="alert" { (p) }
            }
            form method="post" action=(action) novalidate {
                (csrf(viewer))
                @if next != "/" { input type="hidden" name="next" value=(next); }
                (field("email", "Email", "email", email, "username", None, problems.email.as_deref()))
                (field("password", "Password", "password", "", autocomplete, help, problems.password.as_deref()))
                button.btn.primary type="submit" { (submit) }
            }
            @let carry = if next == "/" { String::new() } else { format!("?next={}", crate::form::encode(next)) };
            @match door {
                Door::SignIn => p.small.muted.mt { "No account yet? " a href={ "/signup" (carry) } { "Create one" } "." },
                Door::SignUp => p.small.muted.mt { "Already have one? " a href={ "/signin" (carry) } { "Sign in" } "." },
            }
        }
    }
}

pub async fn signin_page(viewer: Viewer, Query(q): Query<Next>) -> Response {
    if viewer.account.is_some() {
        return Redirect::to(&local_path(q.next.as_deref())).into_response();
    }
    let next = local_path(q.next.as_deref());
    let body = auth_form(&viewer, Door::SignIn, "", &next, &Problems::default());
    layout::page(&viewer, "Sign in", Nav::None, body)
}

pub async fn signin(State(web): State<Arc<Web>>, posted: Posted<Credentials>) -> Response {
    let Posted { viewer, form } = posted;
    let next = local_path(form.next.as_deref());
    let problem = match auth::login(&web.app, &form.email, &form.password).await {
        Ok(signed) => return session::sign_in(&web, &viewer, &signed.account_id, &next).await,
        Err(SignInError::Wrong) => (
            StatusCode::UNAUTHORIZED,
            "Wrong email or password.".to_owned(),
        ),
        Err(SignInError::Throttled(wait)) => (
            StatusCode::TOO_MANY_REQUESTS,
            format!("Too many sign-ins for this email: wait {wait} seconds and try again."),
        ),
        Err(SignInError::Other(e)) => (e.kind.http_status(), layout::say(&e)),
    };
    let problems = Problems {
        form: Some(problem.1),
        ..Problems::default()
    };
    let body = auth_form(&viewer, Door::SignIn, &form.email, &next, &problems);
    let mut response = layout::page(&viewer, "Sign in", Nav::None, body);
    *response.status_mut() = problem.0;
    response
}

pub async fn signup_page(viewer: Viewer, Query(q): Query<Next>) -> Response {
    if viewer.account.is_some() {
        return Redirect::to("/settings").into_response();
    }
    let next = local_path(q.next.as_deref());
    let body = auth_form(&viewer, Door::SignUp, "", &next, &Problems::default());
    layout::page(&viewer, "Create account", Nav::None, body)
}

pub async fn signup(State(web): State<Arc<Web>>, posted: Posted<Credentials>) -> Response {
    let Posted { viewer, form } = posted;
    // Sent here from elsewhere (a client asking for access): back there after.
    let next = local_path(form.next.as_deref());
    let to = if next == "/" {
        "/settings?welcome=1"
    } else {
        &next
    };
    match auth::register(&web.app.store, &web.app.signer, &form.email, &form.password).await {
        Ok(signed) => session::sign_in(&web, &viewer, &signed.account_id, to).await,
        Err(e) => {
            // The service names the field in each problem: put each by its field.
            let mut problems = Problems::default();
            for part in e.message.split("; ") {
                if let Some(rest) = part.strip_prefix("email: ") {
                    problems.email = Some(capitalise(rest));
                } else if let Some(rest) = part.strip_prefix("password: ") {
                    problems.password = Some(capitalise(rest));
                } else {
                    problems.form = Some(part.to_owned());
                }
            }
            let status = e.kind.http_status();
            let body = auth_form(&viewer, Door::SignUp, &form.email, &next, &problems);
            let mut response = layout::page(&viewer, "Create account", Nav::None, body);
            *response.status_mut() = status;
            response
        }
    }
}

pub async fn signout(State(web): State<Arc<Web>>, posted: Posted<Empty>) -> Response {
    session::sign_out(&web, &posted.viewer).await
}

fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
