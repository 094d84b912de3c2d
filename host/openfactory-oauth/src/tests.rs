//! The flows end to end against a real store (SQLite, and PostgreSQL when
//! the test server is there), with the attacks the RFCs name.

use super::*;
use openfactory_store::test_databases;

const ISSUER: &str = "http://127.0.0.1:8080";
const REDIRECT: &str = "http://127.0.0.1:33418/callback";
const VERIFIER: &str = "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk";
const CHALLENGE: &str = "ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc";

async fn servers() -> Vec<(&'static str, OAuth, Store)> {
    let mut out = Vec::new();
    for (engine, store) in test_databases::each().await {
        store
            .create_account("acct", "a@example.org", "$argon2id$x")
            .await
            .unwrap();
        let settings = Settings::new(
            ISSUER,
            vec![
                format!("{ISSUER}/api/mcp"),
                format!("{ISSUER}/api/mcp/account"),
            ],
        );
        out.push((engine, OAuth::new(store.clone(), settings).unwrap(), store));
    }
    out
}

async fn public_client(oauth: &OAuth) -> String {
    let body = format!(
        r#"{{"redirect_uris":["{REDIRECT}"],"client_name":"Test client","token_endpoint_auth_method":"none"}}"#
    );
    oauth.register(body.as_bytes()).await.unwrap().client_id
}

fn query(client_id: &str, extra: &str) -> String {
    format!(
        "response_type=code&client_id={client_id}&redirect_uri={}&code_challenge={CHALLENGE}&code_challenge_method=S256&state=xyz&resource={}{extra}",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>(),
        url::form_urlencoded::byte_serialize(format!("{ISSUER}/api/mcp/account").as_bytes())
            .collect::<String>(),
    )
}

fn code_of(redirect: &str) -> String {
    let url = url::Url::parse(redirect).unwrap();
    let pairs: HashMap<_, _> = url.query_pairs().into_owned().collect();
    assert_eq!(
        pairs.get("state").map(String::as_str),
        Some("xyz"),
        "{redirect}"
    );
    assert_eq!(
        pairs.get("iss").map(String::as_str),
        Some(ISSUER),
        "{redirect}"
    );
    pairs["code"].clone()
}

fn exchange(client_id: &str, code: &str, verifier: &str) -> String {
    format!(
        "grant_type=authorization_code&client_id={client_id}&code={code}&code_verifier={verifier}&redirect_uri={}",
        url::form_urlencoded::byte_serialize(REDIRECT.as_bytes()).collect::<String>()
    )
}

#[tokio::test]
async fn code_pkce_token_refresh_and_use() {
    for (engine, oauth, _) in servers().await {
        let client = public_client(&oauth).await;
        let request = oauth
            .check_authorization(&query(&client, ""))
            .await
            .unwrap();
        assert_eq!(request.client.name, "Test client");
        assert_eq!(request.scope, SCOPE);
        let code = code_of(&oauth.approve(&request, "acct").await.unwrap());
        let tokens = oauth
            .token(exchange(&client, &code, VERIFIER).as_bytes(), None)
            .await
            .unwrap();
        assert_eq!(tokens.token_type, "Bearer");
        assert!(
            tokens.access_token.starts_with(ACCESS_TOKEN_PREFIX),
            "{engine}"
        );
        let grant = oauth.access(&tokens.access_token).await.unwrap();
        assert_eq!(grant.account_id, "acct");
        assert_eq!(grant.resource, format!("{ISSUER}/api/mcp/account"));
        // A refresh rotates: the new pair works, the old access token still does until it expires.
        let refreshed = oauth
            .token(
                format!(
                    "grant_type=refresh_token&client_id={client}&refresh_token={}",
                    tokens.refresh_token
                )
                .as_bytes(),
                None,
            )
            .await
            .unwrap();
        assert_ne!(refreshed.refresh_token, tokens.refresh_token);
        oauth.access(&refreshed.access_token).await.unwrap();
        // Denying says so to the client, with its state and our issuer.
        let denied = oauth.deny(&request);
        assert!(
            denied.starts_with(REDIRECT)
                && denied.contains("error=access_denied")
                && denied.contains("state=xyz"),
            "{denied}"
        );
    }
}

#[tokio::test]
async fn a_replayed_refresh_token_revokes_the_whole_family() {
    for (engine, oauth, _) in servers().await {
        let client = public_client(&oauth).await;
        let request = oauth
            .check_authorization(&query(&client, ""))
            .await
            .unwrap();
        let code = code_of(&oauth.approve(&request, "acct").await.unwrap());
        let first = oauth
            .token(exchange(&client, &code, VERIFIER).as_bytes(), None)
            .await
            .unwrap();
        let refresh =
            |t: &str| format!("grant_type=refresh_token&client_id={client}&refresh_token={t}");
        let second = oauth
            .token(refresh(&first.refresh_token).as_bytes(), None)
            .await
            .unwrap();
        // The attacker (or a confused client) replays the first refresh token.
        let e = oauth
            .token(refresh(&first.refresh_token).as_bytes(), None)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidGrant, "{engine}");
        assert!(
            e.revoked_grant.is_some(),
            "the caller must close the family's streams"
        );
        // Every token of the family is dead: the newest access and refresh tokens too.
        assert_eq!(
            oauth.access(&second.access_token).await.unwrap_err(),
            AccessError::Revoked
        );
        assert_eq!(
            oauth.access(&first.access_token).await.unwrap_err(),
            AccessError::Revoked
        );
        let e = oauth
            .token(refresh(&second.refresh_token).as_bytes(), None)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidGrant);
        assert!(e.description.contains("revoked"), "{e}");
    }
}

#[tokio::test]
async fn codes_are_single_use_and_bound_to_their_verifier_client_and_redirect() {
    for (engine, oauth, _) in servers().await {
        let client = public_client(&oauth).await;
        let other = public_client(&oauth).await;
        let approve = || async {
            let request = oauth
                .check_authorization(&query(&client, ""))
                .await
                .unwrap();
            code_of(&oauth.approve(&request, "acct").await.unwrap())
        };
        // A wrong verifier, or none: refused, and the code is spent.
        let code = approve().await;
        let wrong = "x".repeat(43);
        let e = oauth
            .token(exchange(&client, &code, &wrong).as_bytes(), None)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidGrant, "{engine}: {e}");
        assert!(e.description.contains("code_verifier"));
        let e = oauth
            .token(exchange(&client, &code, VERIFIER).as_bytes(), None)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidGrant);
        let no_verifier = format!(
            "grant_type=authorization_code&client_id={client}&code={}",
            approve().await
        );
        assert!(
            oauth
                .token(no_verifier.as_bytes(), None)
                .await
                .unwrap_err()
                .description
                .contains("code_verifier: required")
        );

        // Used twice: the second use revokes what the first issued.
        let code = approve().await;
        let tokens = oauth
            .token(exchange(&client, &code, VERIFIER).as_bytes(), None)
            .await
            .unwrap();
        let e = oauth
            .token(exchange(&client, &code, VERIFIER).as_bytes(), None)
            .await
            .unwrap_err();
        assert!(e.description.contains("already used"), "{e}");
        assert_eq!(
            oauth.access(&tokens.access_token).await.unwrap_err(),
            AccessError::Revoked
        );

        // Another client cannot redeem it.
        let code = approve().await;
        let e = oauth
            .token(exchange(&other, &code, VERIFIER).as_bytes(), None)
            .await
            .unwrap_err();
        assert_eq!(e.code, ErrorCode::InvalidGrant);

        // Nor with another redirect URI.
        let code = approve().await;
        let form = exchange(&client, &code, VERIFIER).replace("callback", "callbacK");
        assert!(
            oauth
                .token(form.as_bytes(), None)
                .await
                .unwrap_err()
                .description
                .contains("redirect_uri")
        );
    }
}

#[tokio::test]
async fn hostile_authorization_requests_are_refused_without_granting() {
    for (engine, oauth, store) in servers().await {
        let client = public_client(&oauth).await;
        // Shown, never redirected: an unknown client, a redirect that differs by one character.
        for (q, says) in [
            (
                query("of_cli_000000000000000000000000", ""),
                "not registered",
            ),
            (
                query(&client, "").replace("callback", "callbacc"),
                "redirect_uri",
            ),
            (
                query(&client, "").replace("33418", "33418.evil.example"),
                "redirect_uri",
            ),
            (query(&client, "&state=again"), "more than once"),
            (query("javascript:alert(1)", ""), "client_id"),
        ] {
            match oauth.check_authorization(&q).await {
                Err(AuthorizeError::Show(e)) => {
                    assert!(e.description.contains(says), "{engine} {q}: {e}")
                }
                other => panic!("{q}: {other:?}"),
            }
        }
        // Redirected with the RFC's error code.
        for (q, code) in [
            (
                query(&client, "")
                    .replace("code_challenge_method=S256", "code_challenge_method=plain"),
                "invalid_request",
            ),
            (
                query(&client, "").replace(&format!("code_challenge={CHALLENGE}&"), ""),
                "invalid_request",
            ),
            (
                query(&client, "").replace("response_type=code", "response_type=token"),
                "unsupported_response_type",
            ),
            (query(&client, "&scope=admin"), "invalid_scope"),
            (
                query(&client, "").replace("127.0.0.1%3A8080%2Fapi", "evil.example%2Fapi"),
                "invalid_target",
            ),
        ] {
            match oauth.check_authorization(&q).await {
                Err(AuthorizeError::Redirect(to)) => {
                    assert!(to.starts_with(REDIRECT), "{to}");
                    assert!(to.contains(&format!("error={code}")), "{engine} {q}: {to}");
                    assert!(to.contains("state=xyz") && to.contains("iss="), "{to}");
                }
                other => panic!("{q}: {other:?}"),
            }
        }
        assert!(
            store.oauth_grants("acct").await.unwrap().is_empty(),
            "nothing was granted"
        );
        // An access token is only ever ours.
        assert_eq!(
            oauth.access("of_mcp_notatoken").await.unwrap_err(),
            AccessError::Invalid
        );
        assert_eq!(
            oauth
                .access(&format!("{ACCESS_TOKEN_PREFIX}forged"))
                .await
                .unwrap_err(),
            AccessError::Invalid
        );
    }
}

#[tokio::test]
async fn confidential_clients_authenticate_and_revocation_ends_the_grant() {
    for (engine, oauth, _) in servers().await {
        let body = format!(
            r#"{{"redirect_uris":["{REDIRECT}"],"token_endpoint_auth_method":"client_secret_basic"}}"#
        );
        let registered = oauth.register(body.as_bytes()).await.unwrap();
        let (id, secret) = (
            registered.client_id.clone(),
            registered.client_secret.clone().unwrap(),
        );
        let request = oauth.check_authorization(&query(&id, "")).await.unwrap();
        let code = code_of(&oauth.approve(&request, "acct").await.unwrap());
        let form = exchange(&id, &code, VERIFIER);
        let basic = format!("Basic {}", STANDARD.encode(format!("{id}:{secret}")));
        let bad = format!("Basic {}", STANDARD.encode(format!("{id}:of_cls_wrong")));
        assert_eq!(
            oauth
                .token(form.as_bytes(), Some(&bad))
                .await
                .unwrap_err()
                .code,
            ErrorCode::InvalidClient,
            "{engine}"
        );
        // The failed attempt spent nothing: the code still redeems with the right secret.
        let tokens = oauth.token(form.as_bytes(), Some(&basic)).await.unwrap();
        let revoked = oauth
            .revoke(
                format!("token={}", tokens.refresh_token).as_bytes(),
                Some(&basic),
            )
            .await
            .unwrap()
            .unwrap();
        assert!(revoked.is_revoked());
        assert_eq!(
            oauth.access(&tokens.access_token).await.unwrap_err(),
            AccessError::Revoked
        );
        // The account removes a connection: only its own.
        assert!(
            oauth
                .revoke_grant("someone-else", &revoked.grant_id)
                .await
                .unwrap()
                .is_none()
        );
        assert_eq!(oauth.grants("acct").await.unwrap().len(), 1);
    }
}
