//! The OAuth consent page (`/oauth/authorize`): a client asks to act as
//! the signed-in account. The person sees who asks (its name, which proves
//! nothing, and where the answer goes, which does), for what, and approves
//! or denies. Signing in (or up) comes first when needed, and returns here.
//!
//! The request is checked by `openfactory_oauth` on the way in and again
//! when the form comes back (the form posts to the same URL, query and
//! all), so nothing the page carries can widen it. A request whose client
//! or redirect URI cannot be trusted is shown as an error here and never
//! redirected.

use std::sync::Arc;

use axum::extract::{RawQuery, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use maud::html;
use openfactory_oauth::{AuthorizationRequest, AuthorizeError, ClientKind};
use serde::Deserialize;

use crate::Web;
use crate::form::SignedForm;
use crate::layout::{self, Nav, csrf};
use crate::session::Viewer;

/// The server's policy for every page, but for `form-action`, which must
/// let the approval go to the client.
const CSP_BEFORE_FORM_ACTION: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; connect-src 'self';";

/// A checked request, or the page or redirect that says why not.
async fn checked(
    web: &Web,
    viewer: &Viewer,
    query: &str,
) -> Result<AuthorizationRequest, Response> {
    match web.app.oauth.check_authorization(query).await {
        Ok(request) => Ok(request),
        Err(AuthorizeError::Redirect(to)) => Err(Redirect::to(&to).into_response()),
        Err(AuthorizeError::Show(e)) => Err(layout::error_page(
            viewer,
            StatusCode::BAD_REQUEST,
            "This sign-in request cannot be used",
            &format!(
                "{} ({}). Nothing was shared. Start again from your MCP client; if it keeps happening, tell its developers.",
                e.description, e.code
            ),
        )),
    }
}

/// Where the answer goes, as people read it.
fn destination(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            format!("{}://{}", u.scheme(), u.host_str().unwrap_or(""))
                + &u.port().map(|p| format!(":{p}")).unwrap_or_default()
        }
        Ok(u) => format!("the app that handles {}: links", u.scheme()),
        Err(_) => uri.to_owned(),
    }
}

/// The consent page may send its answer off-site: to the client's redirect
/// URI only.
fn form_action_for(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(u) if u.scheme() == "http" || u.scheme() == "https" => {
            let origin = u.origin().ascii_serialization();
            // Loopback clients listen on any port (RFC 8252): allow any.
            if openfactory_oauth::redirect::is_loopback(&u) {
                format!("{}://{}:*", u.scheme(), u.host_str().unwrap_or(""))
            } else {
                origin
            }
        }
        Ok(u) => format!("{}:", u.scheme()),
        Err(_) => String::new(),
    }
}

pub async fn page(
    State(web): State<Arc<Web>>,
    viewer: Viewer,
    RawQuery(query): RawQuery,
) -> Response {
    let query = query.unwrap_or_default();
    let request = match checked(&web, &viewer, &query).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let Some(account) = viewer.account.clone() else {
        return Redirect::to(&format!(
            "/signin?next={}",
            crate::form::encode(&viewer.path)
        ))
        .into_response();
    };
    let action = format!("/oauth/authorize?{query}");
    let client = &request.client;
    let body = html! {
        div.card.auth-card {
            h1 { "Connect " (client.name) "?" }
            p {
                strong { (client.name) } " asks to use OpenFactory as " strong { (account.email) } "."
            }
            dl.kv {
                dt { "It may" }
                dd { "see, create and delete your recipes, builds, VMs and test runs, over MCP (scope " code { (request.scope) } ")" }
                dt { "Answer goes to" }
                dd { code.break { (destination(&request.redirect_uri)) } }
                dt { "Client" }
                dd.small.break {
                    @match client.kind {
                        ClientKind::MetadataDocument => { "described by " code { (client.client_id) } }
                        ClientKind::Registered => { "registered here as " code { (client.client_id) } }
                    }
                }
            }
            p.small.muted { "Only approve a client you just asked to connect. You can disconnect it at any time in Settings." }
            div.actions.mt {
                form.inline method="post" action=(action) {
                    (csrf(&viewer))
                    input type="hidden" name="decision" value="approve";
                    button.btn.primary type="submit" #approve { "Approve" }
                }
                form.inline method="post" action=(action) {
                    (csrf(&viewer))
                    input type="hidden" name="decision" value="deny";
                    button.btn type="submit" #deny { "Deny" }
                }
            }
        }
    };
    let mut response = layout::page(&viewer, "Connect a client", Nav::None, body);
    let csp = format!(
        "{CSP_BEFORE_FORM_ACTION} form-action 'self' {}; base-uri 'none'; frame-ancestors 'none'",
        form_action_for(&request.redirect_uri)
    );
    if let Ok(value) = HeaderValue::from_str(&csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

#[derive(Debug, Deserialize)]
pub struct Decision {
    #[serde(default)]
    decision: String,
}

pub async fn decide(
    State(web): State<Arc<Web>>,
    RawQuery(query): RawQuery,
    SignedForm { user, form }: SignedForm<Decision>,
) -> Response {
    let query = query.unwrap_or_default();
    let request = match checked(&web, &user.viewer, &query).await {
        Ok(r) => r,
        Err(answer) => return answer,
    };
    let to = match form.decision.as_str() {
        "approve" => match web.app.oauth.approve(&request, &user.account.id).await {
            Ok(to) => to,
            Err(e) => {
                return layout::error_page(
                    &user.viewer,
                    StatusCode::SERVICE_UNAVAILABLE,
                    "Could not connect the client",
                    &format!(
                        "{}. Nothing was shared; try again from your client.",
                        e.description
                    ),
                );
            }
        },
        "deny" => web.app.oauth.deny(&request),
        _ => {
            return layout::error_page(
                &user.viewer,
                StatusCode::BAD_REQUEST,
                "No decision",
                "The form said neither approve nor deny. Go back and press one of the buttons.",
            );
        }
    };
    // 303: the browser follows with a GET, to the client.
    Redirect::to(&to).into_response()
}
