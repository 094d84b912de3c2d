//! Telling a client when a resource it subscribed to changes: on 2025-11-25
//! through `resources/subscribe` (a watch per URI for the session's life,
//! [`Subscriptions`]), on 2026-07-28 through `subscriptions/listen` (a watch
//! for the request's life). Each watched resource is looked at once a second
//! in the store, so that any replica serves any subscription, and a change
//! of its version (status, stage, progress, step) is one notification.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use openfactory_service::{App, builds, recipes, test_runs, vms};
use openfactory_store::OwnerId;
use tokio_util::sync::CancellationToken;

use crate::resources::Resource;

/// How often a watched resource is looked at.
pub const POLL: Duration = Duration::from_secs(1);
/// Most resources one session watches at once.
pub const MAX_PER_SESSION: usize = 32;

/// What a resource is now, as a word that changes when it changes; `None`
/// when it is not (or no longer) the owner's (a recipe's is its digest).
pub async fn version(app: &App, owner: &OwnerId, resource: &Resource) -> Option<String> {
    match resource {
        Resource::Build(id) | Resource::BuildLog(id) => builds::find(app, owner, id)
            .await
            .ok()
            .map(|b| format!("{}|{:?}|{}|{}", b.status, b.stage, b.progress, b.message)),
        Resource::TestRun(id) => test_runs::find(app, owner, id)
            .await
            .ok()
            .map(|r| format!("{}|{:?}|{}|{}", r.status, r.stage, r.progress, r.message)),
        Resource::Vm(name) => vms::get(app, owner, name)
            .await
            .ok()
            .map(|v| format!("{:?}|{:?}", v.state, v.stopped_unexpectedly_at)),
        Resource::Recipe(id) => recipes::get(app, Some(owner), id)
            .await
            .ok()
            .map(|r| r.recipe_digest.unwrap_or_default()),
    }
}

/// Watch `resources` for `owner` until `cancel`, calling `send` with the URI
/// of each one whose version changed (once when it disappears); `send`
/// answers whether the client still listens.
pub async fn watch<F, Fut>(
    app: Arc<App>,
    owner: OwnerId,
    resources: Vec<Resource>,
    cancel: CancellationToken,
    mut send: F,
) where
    F: FnMut(String) -> Fut,
    Fut: Future<Output = bool>,
{
    let mut last: HashMap<String, Option<String>> = HashMap::new();
    for r in &resources {
        last.insert(r.uri(), version(&app, &owner, r).await);
    }
    loop {
        tokio::select! {
            () = cancel.cancelled() => return,
            () = tokio::time::sleep(POLL) => {}
        }
        for r in &resources {
            let now = version(&app, &owner, r).await;
            let uri = r.uri();
            let before = last.insert(uri.clone(), now.clone()).flatten();
            let changed = match (&before, &now) {
                (Some(a), Some(b)) => a != b,
                (Some(_), None) | (None, Some(_)) => true,
                (None, None) => false,
            };
            if changed && !send(uri).await {
                return;
            }
        }
    }
}

/// One session's `resources/subscribe` watches. Dropped with the session
/// (the last clone of its server), it ends them all.
#[derive(Default)]
pub struct Subscriptions {
    session: CancellationToken,
    each: Mutex<HashMap<String, CancellationToken>>,
}

impl Drop for Subscriptions {
    fn drop(&mut self) {
        self.session.cancel();
    }
}

impl Subscriptions {
    /// Start watching `resource` for `owner` (again: once), notifying through
    /// `peer`. Refused past [`MAX_PER_SESSION`].
    pub fn add(
        &self,
        app: Arc<App>,
        owner: OwnerId,
        resource: Resource,
        peer: rmcp::Peer<rmcp::RoleServer>,
    ) -> Result<(), String> {
        let uri = resource.uri();
        let mut each = self.each.lock().expect("subscriptions lock");
        if each.contains_key(&uri) {
            return Ok(());
        }
        if each.len() >= MAX_PER_SESSION {
            return Err(format!(
                "this session already watches {MAX_PER_SESSION} resources; unsubscribe from one first"
            ));
        }
        let token = self.session.child_token();
        each.insert(uri, token.clone());
        tokio::spawn(watch(app, owner, vec![resource], token, move |uri| {
            let peer = peer.clone();
            async move {
                peer.notify_resource_updated(rmcp::model::ResourceUpdatedNotificationParam::new(
                    uri,
                ))
                .await
                .is_ok()
            }
        }));
        Ok(())
    }

    /// Stop watching `uri`; nothing when it was not watched.
    pub fn remove(&self, uri: &str) {
        if let Some(token) = self.each.lock().expect("subscriptions lock").remove(uri) {
            token.cancel();
        }
    }
}
