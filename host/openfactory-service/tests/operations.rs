//! The service's operations against a real (in-memory SQLite) store: the
//! account, key, web session and claim operations with the store alone, as
//! the CLI calls them; the others with an `App` that has no plugins and a
//! QEMU backend that is never started.

use http::HeaderMap;
mod common;

use common::{app, completed_build, new_build, signer};
use openfactory_service::auth::{self, Auth, SignInError};
use openfactory_service::links::LinkSigner;
use openfactory_service::{Action, ErrorKind, builds, vms};
use openfactory_store::{BuildStatus, Claimed, KeyLookup, OwnerId, Store, VmRow};

const PASSWORD: &str = "correct horse battery";

async fn store() -> Store {
    Store::open("sqlite::memory:").await.unwrap()
}

fn vm(id: &str, build_id: &str) -> VmRow {
    VmRow {
        id: id.into(),
        name: format!("vm-{id}"),
        build_id: build_id.into(),
        memory_mb: 1024,
        vcpus: 1,
        created_at: String::new(),
    }
}

#[tokio::test]
async fn accounts_are_created_with_the_store_alone() {
    let store = store().await;
    let account = auth::create_account(&store, " Ada@Example.org ", PASSWORD)
        .await
        .unwrap();
    assert_eq!(account.email, "ada@example.org");
    assert!(account.password_hash.starts_with("$argon2id$"));
    let found = auth::account_by_email(&store, "ADA@example.org")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, account.id);
    assert!(
        auth::account_by_email(&store, "bob@example.org")
            .await
            .unwrap()
            .is_none()
    );

    let taken = auth::create_account(&store, "ada@example.org", PASSWORD)
        .await
        .unwrap_err();
    assert_eq!(taken.kind, ErrorKind::Conflict, "{taken}");

    // Both problems at once, the email's field first.
    let bad = auth::create_account(&store, "ada", "short")
        .await
        .unwrap_err();
    assert_eq!(bad.field(), Some("email"), "{bad:?}");
    assert!(
        bad.message.contains("email:") && bad.message.contains("password:"),
        "{bad}"
    );

    assert_eq!(
        auth::account(&store, &account.id).await.unwrap().id,
        account.id
    );
    let gone = auth::account(&store, "nobody").await.unwrap_err();
    assert_eq!(gone.kind, ErrorKind::Unauthorized);
}

#[tokio::test]
async fn registering_signs_in_with_a_session_token_for_the_account() {
    let store = store().await;
    let signer = signer();
    let session = auth::register(&store, &signer, "ada@example.org", PASSWORD)
        .await
        .unwrap();
    let mut headers = HeaderMap::new();
    headers.insert(
        http::header::AUTHORIZATION,
        format!("Bearer {}", session.token).parse().unwrap(),
    );
    assert_eq!(
        auth::session_account(&signer, &headers).unwrap(),
        session.account_id
    );
    let other = LinkSigner::new([8; 32]);
    let refused = auth::session_account(&other, &headers).unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Unauthorized);
}

#[tokio::test]
async fn keys_are_created_listed_and_revoked_closing_their_streams() {
    let store = store().await;
    let account = auth::create_account(&store, "ada@example.org", PASSWORD)
        .await
        .unwrap();
    let created = auth::create_key(&store, &account.id, "  Claude Desktop ")
        .await
        .unwrap();
    assert_eq!(created.name, "Claude Desktop");
    assert!(created.key.starts_with(&created.prefix) && created.key.starts_with("of_mcp_"));
    match store
        .key_by_hash(&auth::key_hash(&created.key))
        .await
        .unwrap()
    {
        KeyLookup::Valid(k) => assert_eq!(k.key_id, created.key_id),
        other => panic!("{other:?}"),
    }
    let bad = auth::create_key(&store, &account.id, "").await.unwrap_err();
    assert_eq!(bad.field(), Some("name"));

    let keys = auth::keys(&store, &account.id).await.unwrap();
    assert_eq!(keys.len(), 1);
    assert!(keys[0].revoked_at.is_none());

    let streams = Auth::default();
    let open = streams.streams_of(&auth::Credential::Key(created.key_id.clone()));
    let revoked = auth::revoke_key(&store, &streams, &account.id, &created.key_id)
        .await
        .unwrap();
    assert!(revoked.revoked_at.is_some());
    assert!(open.is_cancelled(), "the key's open streams end");
    assert!(matches!(
        store
            .key_by_hash(&auth::key_hash(&created.key))
            .await
            .unwrap(),
        KeyLookup::Revoked(_)
    ));
    assert!(
        auth::keys(&store, &account.id).await.unwrap()[0]
            .revoked_at
            .is_some()
    );

    // Another account's key, or none, is not found, and says where to look.
    let other = auth::create_account(&store, "bob@example.org", PASSWORD)
        .await
        .unwrap();
    let missing = auth::revoke_key(&store, &streams, &other.id, &created.key_id)
        .await
        .unwrap_err();
    assert_eq!(missing.kind, ErrorKind::NotFound);
    assert_eq!(missing.see, Some(Action::ListKeys));
}

#[tokio::test]
async fn web_sessions_are_created_found_and_deleted() {
    let store = store().await;
    let ada = auth::create_account(&store, "ada@example.org", PASSWORD)
        .await
        .unwrap();
    let secret = auth::create_web_session(&store, &ada.id).await.unwrap();
    let other = auth::create_web_session(&store, &ada.id).await.unwrap();
    assert_ne!(secret, other);

    let found = auth::web_session(&store, &secret).await.unwrap().unwrap();
    assert_eq!(found.account.id, ada.id);
    assert_ne!(found.id, secret, "the store keeps a hash, not the secret");
    assert_eq!(found.id.len(), 64);
    assert!(
        auth::web_session(&store, "not a secret")
            .await
            .unwrap()
            .is_none()
    );

    auth::delete_web_session(&store, &found.id).await.unwrap();
    assert!(auth::web_session(&store, &secret).await.unwrap().is_none());
    assert!(auth::web_session(&store, &other).await.unwrap().is_some());
    assert_eq!(auth::delete_web_sessions(&store, &ada.id).await.unwrap(), 1);
    assert!(auth::web_session(&store, &other).await.unwrap().is_none());
}

#[tokio::test]
async fn an_address_is_claimed_into_an_account_whole() {
    let store = store().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(store.clone(), &dir);
    let address = OwnerId::ip("192.0.2.7".parse().unwrap());
    let ada = auth::create_account(&store, "ada@example.org", PASSWORD)
        .await
        .unwrap();
    assert!(
        auth::address_holdings(&store, &address)
            .await
            .unwrap()
            .is_empty()
    );
    store
        .create_build(&address, &new_build("b1"))
        .await
        .unwrap();
    store.insert_vm(&address, &vm("v1", "b1")).await.unwrap();
    let held = auth::address_holdings(&store, &address).await.unwrap();
    assert_eq!(
        (held.recipes, held.builds, held.vms, held.test_runs),
        (0, 1, 1, 0)
    );

    let claimed = auth::claim_address(&store, &address, &ada.id)
        .await
        .unwrap();
    assert_eq!(
        claimed,
        Claimed {
            recipes: 0,
            builds: 1,
            vms: 1,
            test_runs: 0
        }
    );
    assert!(
        auth::address_holdings(&store, &address)
            .await
            .unwrap()
            .is_empty()
    );
    let mine = builds::list(&app, &ada.owner(), None, None).await.unwrap();
    assert_eq!(mine.count, 1);

    // A VM name both hold: nothing moves.
    store
        .create_build(&address, &new_build("b2"))
        .await
        .unwrap();
    let clash = VmRow {
        id: "v2".into(),
        ..vm("v1", "b2")
    };
    store.insert_vm(&address, &clash).await.unwrap();
    let refused = auth::claim_address(&store, &address, &ada.id)
        .await
        .unwrap_err();
    assert_eq!(refused.kind, ErrorKind::Conflict, "{refused}");
    assert_eq!(
        auth::address_holdings(&store, &address)
            .await
            .unwrap()
            .builds,
        1
    );
}

#[tokio::test]
async fn usage_counts_active_builds_and_disk_against_the_limits() {
    let store = store().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(store.clone(), &dir);
    let owner = OwnerId::ip("192.0.2.8".parse().unwrap());
    let usage = builds::usage(&app, &owner).await.unwrap();
    assert_eq!(
        usage,
        builds::Usage {
            active: 0,
            max_active: 2,
            disk_bytes: 0,
            max_disk_bytes: 1 << 30
        }
    );
    let done = completed_build(&store, &owner, "b1").await;
    assert_eq!(done.status, BuildStatus::Completed);
    store.create_build(&owner, &new_build("b2")).await.unwrap();
    let usage = builds::usage(&app, &owner).await.unwrap();
    assert_eq!((usage.active, usage.disk_bytes), (1, 4096));
    let other = OwnerId::ip("192.0.2.9".parse().unwrap());
    assert_eq!(builds::usage(&app, &other).await.unwrap().active, 0);
}

#[tokio::test]
async fn a_vm_by_id_is_its_owners_alone() {
    let store = store().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(store.clone(), &dir);
    let ada = OwnerId::ip("192.0.2.10".parse().unwrap());
    let bob = OwnerId::ip("192.0.2.11".parse().unwrap());
    store.create_build(&ada, &new_build("b1")).await.unwrap();
    store.insert_vm(&ada, &vm("v1", "b1")).await.unwrap();
    assert_eq!(vms::by_id(&app, &ada, "v1").await.unwrap().name, "vm-v1");
    for (owner, id) in [(&bob, "v1"), (&ada, "v2")] {
        let e = vms::by_id(&app, owner, id).await.unwrap_err();
        assert_eq!(e.kind, ErrorKind::NotFound, "{owner} {id}");
        assert_eq!(e.see, Some(Action::ListVms));
    }
}

#[tokio::test]
async fn sign_in_works_for_a_created_account_and_throttles_failures() {
    let store = store().await;
    let dir = tempfile::tempdir().unwrap();
    let app = app(store.clone(), &dir);
    let ada = auth::create_account(&store, "ada@example.org", PASSWORD)
        .await
        .unwrap();
    let session = match auth::login(&app, "Ada@example.org", PASSWORD).await {
        Ok(s) => s,
        Err(_) => panic!("the password is right"),
    };
    assert_eq!(session.account_id, ada.id);
    // The email's budget: the sign-in above and these wrong ones; then even the right
    // password waits, and another email does not.
    for _ in 1..auth::SIGN_IN_BURST {
        assert!(matches!(
            auth::login(&app, "ada@example.org", "wrong horse battery").await,
            Err(SignInError::Wrong)
        ));
    }
    assert!(matches!(
        auth::login(&app, "ada@example.org", PASSWORD).await,
        Err(SignInError::Throttled(wait)) if (1..=180).contains(&wait)
    ));
    assert!(matches!(
        auth::login(&app, "grace@example.org", PASSWORD).await,
        Err(SignInError::Wrong)
    ));
}

/// Planning runs plugins, which are CPU-bound: it must leave the async
/// runtime free. On a one-thread runtime the planner's closure waits for a
/// task on that runtime; run inline, it would wait forever (here: 10 s).
#[test]
fn run_planner_leaves_the_runtime_free() {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open("sqlite::memory:").await.unwrap();
        let app = app(store, &dir);
        let (tx, rx) = std::sync::mpsc::channel();
        tokio::spawn(async move {
            tokio::task::yield_now().await;
            tx.send(()).unwrap();
        });
        let outcome = app
            .planner
            .run(move |set| {
                let reached = rx.recv_timeout(std::time::Duration::from_secs(10));
                assert!(reached.is_ok(), "the planner blocked the runtime");
                openfactory_core::plan::plan_value(
                    serde_json::json!({"name": "free", "base_image": "debian-bookworm"}),
                    set,
                    true,
                )
            })
            .await
            .unwrap();
        assert!(outcome.plan.is_some(), "{:?}", outcome.diagnostics);
    });
}
