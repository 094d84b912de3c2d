//! Settings: MCP API keys (created and shown once, with ready-to-paste
//! client configurations; listed; revoked, which closes their connections
//! at once), connected clients (hosted clients signed in with OAuth:
//! listed with their last use, removed, which closes their connections at
//! once) and the account (bringing in an address's work, signing out
//! everywhere). Keys and claims are the service's, as for `/api/mcp-keys`.

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::{Path, Query, State};
use axum::response::Response;
use maud::{Markup, html};
use openfactory_service::auth;
use openfactory_store::{McpKey, OAuthGrant, OwnerId};
use serde::Deserialize;

use crate::form::{Empty, SignedForm};
use crate::layout::{self, Nav, action, csrf, snippet, when};
use crate::session::{SignedIn, Viewer, redirect_with};
use crate::{Reveal, Web};

/// How long a new key waits for the page that shows it.
const REVEAL_FOR: Duration = Duration::from_secs(300);

#[derive(Debug, Default, Deserialize)]
pub struct Welcome {
    welcome: Option<String>,
}

/// The client configurations of the reference documentation, with `key`.
pub fn client_snippets(web: &Web, key: &str) -> Markup {
    let url = web.sse_url();
    // Written out rather than serialised, to keep the reference's key order.
    let quoted = |v: &str| serde_json::to_string(v).unwrap_or_default();
    let json = format!(
        "{{\n  \"mcpServers\": {{\n    \"openfactory\": {{\n      \"url\": {},\n      \"headers\": {{ \"Authorization\": {} }}\n    }}\n  }}\n}}",
        quoted(&url),
        quoted(&format!("Bearer {key}"))
    );
    let claude_code = format!(
        "claude mcp remove openfactory\nclaude mcp add openfactory \\\n  --transport sse \\\n  --url \"{url}\" \\\n  --header \"Authorization: Bearer {key}\""
    );
    html! {
        (snippet("claude-desktop", "Claude Desktop: ~/.claude/claude_desktop_config.json", &json))
        (snippet("cursor", "Cursor: .cursor/mcp.json", &json))
        (snippet("claude-code", "Claude Code", &claude_code))
        p.small.muted { "Restart the client after changing its configuration; Claude Desktop and Cursor may need a full restart." }
    }
}

fn take_reveal(web: &Web, session: Option<&str>) -> Option<Reveal> {
    let mut reveals = web.reveals.lock().expect("reveals lock");
    reveals.retain(|_, r| r.made.elapsed() < REVEAL_FOR);
    reveals.remove(session?)
}

fn key_row(viewer: &Viewer, k: &McpKey) -> Markup {
    html! {
        tr {
            td { strong { (k.name) } }
            td { code { (k.prefix) "…" } }
            td.small.nowrap { (when(&k.created_at)) }
            td.small.nowrap { @match &k.last_used_at { Some(t) => (when(t)), None => span.muted { "never" } } }
            td {
                @match &k.revoked_at {
                    Some(t) => { span.badge.s-cancelled { "revoked" } " " span.small.muted { (when(t)) } }
                    None => { span.badge.s-completed { "active" } }
                }
            }
            td {
                @if k.revoked_at.is_none() {
                    (action(viewer, &format!("/settings/keys/{}/revoke", k.key_id), "Revoke", "danger",
                        Some("Revoke this key? Clients using it are disconnected at once and cannot reconnect with it.")))
                }
            }
        }
    }
}

fn connection_row(viewer: &Viewer, g: &OAuthGrant) -> Markup {
    html! {
        tr {
            td { strong { (g.client_name) } br; span.small.muted.break { (g.client_id) } }
            td.small.nowrap { (when(&g.created_at)) }
            td.small.nowrap { @match &g.last_used_at { Some(t) => (when(t)), None => span.muted { "never" } } }
            td {
                @match &g.revoked_at {
                    Some(t) => { span.badge.s-cancelled { "removed" } " " span.small.muted { (when(t)) } }
                    None => { span.badge.s-completed { "connected" } }
                }
            }
            td {
                @if g.revoked_at.is_none() {
                    (action(viewer, &format!("/settings/connections/{}/remove", g.grant_id), "Disconnect", "danger",
                        Some("Disconnect this client? It is signed out at once and must ask again to reconnect.")))
                }
            }
        }
    }
}

pub async fn page(
    State(web): State<Arc<Web>>,
    user: SignedIn,
    Query(q): Query<Welcome>,
) -> Response {
    let SignedIn {
        viewer, account, ..
    } = user;
    let keys = auth::keys(&web.app.store, &account.id).await;
    let connections = auth::connected_clients(&web.app, &account.id).await;
    let reveal = take_reveal(&web, viewer.session.as_deref());
    let ip_owner = OwnerId::ip(viewer.ip);
    let work = auth::address_holdings(&web.app.store, &ip_owner).await.ok();
    let body = html! {
        div.page-head {
            div {
                h1 { "Settings" }
                p { "API keys link your MCP clients to this account, so what they build shows up here, from any network." }
            }
        }
        @if q.welcome.is_some() && reveal.is_none() {
            div.flash.info role="status" {
                strong { "Welcome to OpenFactory. " }
                "Create an API key below and paste the configuration into your MCP client: what it builds will appear in this console."
            }
        }
        @if let Some(r) = &reveal {
            section.card.warn-edge #new-key aria-labelledby="new-key-title" {
                h2 #new-key-title { "Your new key: " (r.name) }
                p { strong { "Copy it now." } " It is shown only this once: OpenFactory keeps only its hash." }
                div.secret {
                    code #new-key-value { (r.secret) }
                    button.btn.small type="button" data-copy="#new-key-value" hidden { "Copy key" }
                }
                (client_snippets(&web, &r.secret))
            }
        }
        section.card aria-labelledby="keys-title" {
                    h2 #keys-title { "MCP API keys" }
                    form method="post" action="/settings/keys" {
                        (csrf(&viewer))
                        div.row {
                            div.field {
                                label for="key-name" { "New key name" }
                                input #key-name name="name" type="text" required maxlength="64"
                                    placeholder="Claude Desktop on my laptop" aria-describedby="key-name-help";
                            }
                            button.btn.primary type="submit" { "Create key" }
                        }
                        p.help #key-name-help { "A name to tell your keys apart. The key itself is shown once, after you create it." }
                    }
                    @match &keys {
                        Err(_) => div.flash.bad { "The keys could not be read; try again in a moment." }
                        Ok(keys) if keys.is_empty() => p.muted.mt { "No keys yet." }
                        Ok(keys) => div.table-wrap.mt role="region" aria-label="API keys" tabindex="0" { table.data {
                            caption.sr-only { "Your API keys" }
                            thead { tr {
                                th scope="col" { "Name" } th scope="col" { "Key" } th scope="col" { "Created" }
                                th scope="col" { "Last used" } th scope="col" { "Status" } th scope="col" { span.sr-only { "Actions" } }
                            } }
                            tbody { @for k in keys { (key_row(&viewer, k)) } }
                        } }
                    }
        }
        section.card aria-labelledby="connections-title" {
            h2 #connections-title { "Connected clients" }
            p.small.muted {
                "Clients that signed in with OAuth (Claude.ai connectors and other hosted clients): add "
                code { (web.account_url()) } " as a connector and approve it here when it asks."
            }
            @match &connections {
                Err(_) => div.flash.bad { "The connected clients could not be read; try again in a moment." }
                Ok(list) if list.is_empty() => p.muted { "No connected clients yet." }
                Ok(list) => div.table-wrap.mt role="region" aria-label="Connected clients" tabindex="0" { table.data #connections {
                    caption.sr-only { "Your connected clients" }
                    thead { tr {
                        th scope="col" { "Client" } th scope="col" { "Connected" } th scope="col" { "Last used" }
                        th scope="col" { "Status" } th scope="col" { span.sr-only { "Actions" } }
                    } }
                    tbody { @for g in list { (connection_row(&viewer, g)) } }
                } }
            }
        }
        div.grid.grid-2 {
            div {
                section.card aria-labelledby="connect-title" {
                    h2 #connect-title { "Connect a client" }
                    p.small.muted { "The SSE endpoint. Without a key a client works as its IP address; with one, as this account." }
                    (snippet("sse-url", "SSE endpoint", &web.sse_url()))
                    (snippet("curl", "Test the connection", &format!("curl -H \"Accept: text/event-stream\" {}", web.sse_url())))
                    p.small.muted { "Hosted clients (Claude.ai) cannot send a key: give them the account endpoint, which signs them in with OAuth." }
                    (snippet("account-url", "Account endpoint (OAuth)", &web.account_url()))
                }
            }
            div {
                section.card aria-labelledby="account-title" {
                    h2 #account-title { "Account" }
                    dl.kv {
                        dt { "Email" } dd { (account.email) }
                        dt { "Created" } dd { (when(&account.created_at)) }
                        @if account.operator { dt { "Role" } dd { span.chip { "operator" } } }
                    }
                    div.actions.mt {
                        (action(&viewer, "/settings/sign-out-everywhere", "Sign out of every browser", "",
                            Some("Sign out of every browser, this one included?")))
                    }
                }
                section.card aria-labelledby="claim-title" {
                    h2 #claim-title { "Work from this address" }
                    p.small {
                        "Before you had a key, your clients worked as this address, " code { (viewer.ip.to_string()) }
                        ". Bring what it made into your account: everything moves, or, if a name clashes, nothing does."
                    }
                    @match &work {
                        None => p.muted { "What this address holds could not be read; try again in a moment." }
                        Some(w) if w.is_empty() => p.muted { "This address holds nothing to bring in." }
                        Some(w) => {
                            p { (w.recipes) " recipes, " (w.builds) " builds, " (w.vms) " VMs, " (w.test_runs) " test runs." }
                            (action(&viewer, "/settings/claim", "Move them into my account", "primary", None))
                        }
                    }
                }
            }
        }
    };
    layout::page(&viewer, "Settings", Nav::Settings, body)
}

#[derive(Debug, Deserialize)]
pub struct NewKey {
    #[serde(default)]
    name: String,
}

pub async fn create_key(
    State(web): State<Arc<Web>>,
    SignedForm { user, form }: SignedForm<NewKey>,
) -> Response {
    match auth::create_key(&web.app.store, &user.account.id, &form.name).await {
        Ok(created) => {
            if let Some(session) = &user.viewer.session {
                web.reveals.lock().expect("reveals lock").insert(
                    session.clone(),
                    Reveal {
                        name: created.name.clone(),
                        secret: created.key,
                        made: Instant::now(),
                    },
                );
            }
            redirect_with(
                &web,
                "/settings#new-key",
                true,
                &format!("Key “{}” created.", created.name),
            )
        }
        Err(e) => redirect_with(&web, "/settings", false, &layout::say(&e)),
    }
}

pub async fn revoke_key(
    State(web): State<Arc<Web>>,
    Path(key_id): Path<String>,
    SignedForm { user, .. }: SignedForm<Empty>,
) -> Response {
    match auth::revoke_key(&web.app.store, &web.app.auth, &user.account.id, &key_id).await {
        Ok(key) => redirect_with(
            &web,
            "/settings",
            true,
            &format!(
                "Key “{}” is revoked: its clients were disconnected and cannot use it again.",
                key.name
            ),
        ),
        Err(e) if e.is_not_found() => layout::service_error(&user.viewer, "Key", &e),
        Err(e) => redirect_with(&web, "/settings", false, &layout::say(&e)),
    }
}

pub async fn remove_connection(
    State(web): State<Arc<Web>>,
    Path(grant_id): Path<String>,
    SignedForm { user, .. }: SignedForm<Empty>,
) -> Response {
    match auth::remove_connected_client(&web.app, &user.account.id, &grant_id).await {
        Ok(g) => redirect_with(
            &web,
            "/settings",
            true,
            &format!(
                "“{}” is disconnected: its connections were closed and its tokens no longer work.",
                g.client_name
            ),
        ),
        Err(e) if e.is_not_found() => layout::service_error(&user.viewer, "Connected client", &e),
        Err(e) => redirect_with(&web, "/settings", false, &layout::say(&e)),
    }
}

pub async fn claim(
    State(web): State<Arc<Web>>,
    SignedForm { user, .. }: SignedForm<Empty>,
) -> Response {
    let from = OwnerId::ip(user.viewer.ip);
    match auth::claim_address(&web.app.store, &from, &user.account.id).await {
        Ok(c) => redirect_with(
            &web,
            "/settings",
            true,
            &format!(
                "Moved into your account: {} recipes, {} builds, {} VMs, {} test runs.",
                c.recipes, c.builds, c.vms, c.test_runs
            ),
        ),
        Err(e) => redirect_with(&web, "/settings", false, &e.message),
    }
}

pub async fn sign_out_everywhere(
    State(web): State<Arc<Web>>,
    SignedForm { user, .. }: SignedForm<Empty>,
) -> Response {
    match auth::delete_web_sessions(&web.app.store, &user.account.id).await {
        Ok(n) => redirect_with(
            &web,
            "/signin",
            true,
            &format!("Signed out of {n} browser session(s). Sign in again to continue."),
        ),
        Err(e) => redirect_with(&web, "/settings", false, &e.message),
    }
}
