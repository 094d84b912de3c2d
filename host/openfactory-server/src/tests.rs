//! The assembled server, through `oneshot`: a real `App` (in-memory
//! database, no plugins, no templates, a QEMU backend that is never asked
//! to start anything).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ConnectInfo;
use axum::http::{Request, Response, StatusCode, header};
use futures::StreamExt;
use openfactory_core::catalog::Catalog;
use openfactory_plugin_host::{HostConfig, Limits, PluginHost};
use openfactory_service::links::{LinkSigner, unix_now};
use openfactory_service::{App, OwnerPolicy, Planner, Settings, Vms, auth};
use openfactory_store::{BuildEnd, NewBuild, OwnerId};
use openfactory_vm::{AccelSetting, Backend, QemuBackend};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;
use tower::ServiceExt as _;

use crate::{HostPolicy, headers};

struct Fixture {
    app: Arc<App>,
    router: Router,
    _dir: tempfile::TempDir,
}

static NEXT_ACCOUNT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

async fn fixture_with(hosts: HostPolicy, requests_per_minute: u32) -> Fixture {
    fixture_anonymous(
        hosts,
        requests_per_minute,
        openfactory_service::Anonymous::Ip,
    )
    .await
}

async fn fixture_anonymous(
    hosts: HostPolicy,
    requests_per_minute: u32,
    anonymous: openfactory_service::Anonymous,
) -> Fixture {
    fixture_all(hosts, requests_per_minute, anonymous, None).await
}

async fn fixture_all(
    hosts: HostPolicy,
    requests_per_minute: u32,
    anonymous: openfactory_service::Anonymous,
    metrics_token: Option<&str>,
) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let plugins = PluginHost::load(&HostConfig {
        plugins_dir: dir.path().join("plugins"),
        trusted_keys_dir: dir.path().join("keys"),
        cache_dir: None,
        allow_unsigned: false,
        limits: Limits::default(),
    })
    .unwrap();
    let (catalog, _) = Catalog::load(&dir.path().join("recipes"));
    let store = openfactory_store::Store::open("sqlite::memory:")
        .await
        .unwrap();
    let artifacts = openfactory_artifacts::ArtifactStore::open(
        &openfactory_artifacts::Location::Local(dir.path().join("builds")),
        &dir.path().join("artifact-cache"),
    )
    .unwrap();
    let app = App::new(
        store,
        artifacts,
        Planner::new(catalog, plugins),
        LinkSigner::new([7; 32]),
        Vms {
            backend: std::sync::Arc::new(Backend::Qemu(QemuBackend::new(
                &dir.path().join("vms"),
                AccelSetting::Tcg,
            ))),
            max_memory_mb: 1024,
            max_vcpus: 1,
            max_vms: 1,
            novnc_dir: None,
        },
        Settings {
            public_url: Some("http://localhost".into()),
            builds_dir: dir.path().join("builds"),
            max_active_builds: 3,
            max_disk_bytes: 0,
            max_active_test_runs: 1,
            max_test_timeout_seconds: 600,
            oauth: openfactory_oauth::Settings::new("http://localhost", Vec::new()),
        },
    );
    let owners = Arc::new(OwnerPolicy {
        trusted_proxies: Vec::new(),
        requests_per_minute,
        anonymous,
    });
    let router = crate::router(
        app.clone(),
        owners,
        hosts,
        openfactory_web::WebSettings::default(),
        metrics_token,
        CancellationToken::new(),
    );
    Fixture {
        app,
        router,
        _dir: dir,
    }
}

async fn fixture() -> Fixture {
    fixture_with(HostPolicy::default(), 0).await
}

/// A request from 127.0.0.1 for `localhost`, unless `headers` say otherwise.
fn request(method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> Request<Body> {
    let mut builder = Request::builder().method(method).uri(path);
    if !headers
        .iter()
        .any(|(name, _)| name.eq_ignore_ascii_case("host"))
    {
        builder = builder.header(header::HOST, "localhost");
    }
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let mut request = builder.body(Body::from(body.to_owned())).unwrap();
    request
        .extensions_mut()
        .insert(ConnectInfo(SocketAddr::from(([127, 0, 0, 1], 40000))));
    request
}

impl Fixture {
    async fn send(&self, request: Request<Body>) -> Response<Body> {
        self.router.clone().oneshot(request).await.unwrap()
    }

    async fn get(&self, path: &str) -> Response<Body> {
        self.send(request("GET", path, &[], "")).await
    }

    /// An account, its session token and one API key.
    async fn account(&self) -> (String, String, auth::CreatedKey) {
        let n = NEXT_ACCOUNT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let account = auth::create_account(
            &self.app.store,
            &format!("user{n}@example.org"),
            "a long enough password",
        )
        .await
        .unwrap();
        let id = account.id;
        let (token, _) = auth::session_token(&self.app.signer, &id);
        let key = auth::create_key(&self.app.store, &id, "test")
            .await
            .unwrap();
        (id, token, key)
    }
}

async fn text(response: Response<Body>) -> String {
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    String::from_utf8(bytes.to_vec()).unwrap()
}

async fn json_body(response: Response<Body>) -> Value {
    serde_json::from_str(&text(response).await).unwrap()
}

/// The next chunk of a streamed body, waiting at most a few seconds.
async fn next_chunk(stream: &mut axum::body::BodyDataStream) -> Option<Bytes> {
    tokio::time::timeout(Duration::from_secs(5), stream.next())
        .await
        .expect("the stream answered in time")
        .map(|chunk| chunk.unwrap())
}

const INITIALIZE: &str = r#"{"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "test", "version": "1"}}}"#;

fn assert_secured(what: &str, response: &Response<Body>) {
    let got = response.headers();
    for (name, value, route_may_set) in headers::HEADERS {
        let Some(actual) = got.get(name) else {
            panic!("{what}: no {name} (HTTP {})", response.status());
        };
        if !route_may_set {
            assert_eq!(actual, value, "{what}: {name}");
        }
    }
    assert_eq!(got[header::X_CONTENT_TYPE_OPTIONS], "nosniff", "{what}");
    assert_eq!(got[header::X_FRAME_OPTIONS], "DENY", "{what}");
    let csp = got[header::CONTENT_SECURITY_POLICY].to_str().unwrap();
    assert!(
        csp.contains("default-src 'none'") && csp.contains("frame-ancestors 'none'"),
        "{what}: {csp}"
    );
}

/// Every kind of response the server gives, from every router it merges and
/// every layer that can answer by itself. A route added anywhere below
/// `crate::router` is covered by the same outermost layer; add its kind here.
#[tokio::test]
async fn every_response_carries_the_security_headers() {
    let f = fixture().await;
    let owner = OwnerId::ip("127.0.0.1".parse().unwrap());
    let missing_build = "0123456789ab";
    let iso_token = f
        .app
        .signer
        .sign("iso", missing_build, &owner, unix_now() + 600);
    let iso_link = format!("/api/builds/{missing_build}/iso?token={iso_token}");
    let bad_key = [("authorization", "Bearer of_mcp_0000000000")];
    let streamable = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    let register = [("content-type", "application/json")];
    let cases: Vec<(&str, Request<Body>, StatusCode)> = vec![
        ("a page", request("GET", "/", &[], ""), StatusCode::OK),
        (
            "a page that is not there",
            request("GET", "/no/such/page", &[], ""),
            StatusCode::NOT_FOUND,
        ),
        (
            "the sign-in page",
            request("GET", "/signin", &[], ""),
            StatusCode::OK,
        ),
        (
            "a static asset",
            request("GET", "/assets/web.css", &[], ""),
            StatusCode::OK,
        ),
        (
            "the VM screen's script",
            request("GET", "/console/assets/console.js", &[], ""),
            StatusCode::OK,
        ),
        (
            "a VM screen with a bad token",
            request("GET", "/console/vm1?token=forged", &[], ""),
            StatusCode::FORBIDDEN,
        ),
        (
            "a download of a build that is not there",
            request("GET", &iso_link, &[], ""),
            StatusCode::NOT_FOUND,
        ),
        (
            "a download with a bad token",
            request("GET", "/api/builds/0123456789ab/iso?token=forged", &[], ""),
            StatusCode::FORBIDDEN,
        ),
        (
            "/healthz",
            request("GET", "/healthz", &[], ""),
            StatusCode::OK,
        ),
        (
            "/metrics",
            request("GET", "/metrics", &[], ""),
            StatusCode::OK,
        ),
        (
            "an API error",
            request("GET", "/api/auth/me", &[], ""),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "an API body error",
            request("POST", "/api/auth/register", &register, "[]"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "an API route that is not there",
            request("GET", "/api/nothing", &[], ""),
            StatusCode::NOT_FOUND,
        ),
        (
            "MCP over Streamable HTTP",
            request("POST", "/api/mcp", &streamable, INITIALIZE),
            StatusCode::OK,
        ),
        (
            "an MCP 401 (Streamable HTTP)",
            request(
                "POST",
                "/api/mcp",
                &[streamable[0], streamable[1], bad_key[0]],
                INITIALIZE,
            ),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "an MCP 401 (SSE)",
            request("GET", "/api/mcp/sse", &bad_key, ""),
            StatusCode::UNAUTHORIZED,
        ),
        (
            "an SSE message without a session",
            request("POST", "/api/mcp/messages", &[], "{}"),
            StatusCode::BAD_REQUEST,
        ),
        (
            "a refused Host",
            request("GET", "/", &[("host", "evil.example")], ""),
            StatusCode::FORBIDDEN,
        ),
        (
            "a refused Origin",
            request(
                "POST",
                "/api/mcp",
                &[("origin", "https://evil.example")],
                INITIALIZE,
            ),
            StatusCode::FORBIDDEN,
        ),
    ];
    for (what, request, status) in cases {
        let response = f.send(request).await;
        assert_eq!(response.status(), status, "{what}");
        assert_secured(what, &response);
    }

    // The defaults where a route sets nothing of its own…
    let api = f.get("/api/auth/me").await;
    assert_eq!(api.headers()[header::CACHE_CONTROL], "no-store");
    assert_eq!(api.headers()[header::CONTENT_SECURITY_POLICY], headers::CSP);
    assert_eq!(api.headers()[header::REFERRER_POLICY], "same-origin");
    // …and a route's own, stricter or cacheable, kept.
    let screen = f.get("/console/assets/console.js").await;
    assert_eq!(screen.headers()[header::REFERRER_POLICY], "no-referrer");
    assert!(
        screen.headers()[header::CONTENT_SECURITY_POLICY]
            .to_str()
            .unwrap()
            .contains("form-action 'none'")
    );
    let asset = f.get("/assets/web.css?v=wrong").await;
    assert_eq!(asset.headers()[header::CACHE_CONTROL], "no-cache");
}

#[tokio::test]
async fn a_rate_limited_request_carries_the_security_headers_too() {
    let f = fixture_with(HostPolicy::default(), 1).await;
    assert_eq!(
        f.get("/api/auth/me").await.status(),
        StatusCode::UNAUTHORIZED
    );
    let limited = f.get("/api/auth/me").await;
    assert_eq!(limited.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_secured("a rate-limited request", &limited);
    assert!(limited.headers().contains_key(header::RETRY_AFTER));
    // Health checks and static files are never limited.
    assert_eq!(f.get("/healthz").await.status(), StatusCode::OK);
    assert_eq!(f.get("/assets/web.css").await.status(), StatusCode::OK);
}

/// A Streamable HTTP ping with `authorization`, from `ip`.
fn ping(authorization: &str, ip: [u8; 4]) -> Request<Body> {
    let mut r = request(
        "POST",
        "/api/mcp",
        &[
            ("content-type", "application/json"),
            ("accept", "application/json, text/event-stream"),
            ("mcp-protocol-version", "2025-11-25"),
            ("authorization", authorization),
        ],
        r#"{"jsonrpc":"2.0","id":1,"method":"ping"}"#,
    );
    r.extensions_mut()
        .insert(ConnectInfo(SocketAddr::from((ip, 40000))));
    r
}

#[tokio::test]
async fn made_up_keys_spend_their_addresss_budget_and_a_verified_key_keeps_its_own() {
    let f = fixture_with(HostPolicy::default(), 600).await;
    let (_, _, key) = f.account().await;
    let real = format!("Bearer {}", key.key);
    // The real key is verified once (one of the address's unverified checks)…
    let first = f.send(ping(&real, [127, 0, 0, 1])).await;
    assert_ne!(first.status(), StatusCode::UNAUTHORIZED);
    assert_ne!(first.status(), StatusCode::TOO_MANY_REQUESTS);
    // …then 200 made-up keys from the same address: the budget's rest is
    // answered 401 (each one looked up), the others 429 without a lookup.
    let mut statuses = std::collections::BTreeMap::new();
    for i in 0..200 {
        let made_up = format!("Bearer of_mcp_{i:040x}");
        let status = f.send(ping(&made_up, [127, 0, 0, 1])).await.status();
        *statuses.entry(status.as_u16()).or_insert(0) += 1;
    }
    let budget = crate::limits::UNVERIFIED_BURST as usize - 1;
    assert_eq!(statuses.get(&401), Some(&budget), "{statuses:?}");
    assert_eq!(statuses.get(&429), Some(&(200 - budget)), "{statuses:?}");
    let refused = f.send(ping("Bearer of_mcp_nope", [127, 0, 0, 1])).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(refused.headers().contains_key(header::RETRY_AFTER));
    let said = text(refused).await;
    assert!(said.contains("could not verify"), "{said}");
    // The verified key has its own budget, so the flood does not shut it out…
    let again = f.send(ping(&real, [127, 0, 0, 1])).await;
    assert_ne!(again.status(), StatusCode::TOO_MANY_REQUESTS);
    // …and another address still has all of its budget.
    let other = f.send(ping("Bearer of_mcp_wrong", [127, 0, 0, 2])).await;
    assert_eq!(other.status(), StatusCode::UNAUTHORIZED);
}

#[tokio::test]
async fn metrics_ask_for_their_token_when_there_is_one() {
    let f = fixture_all(
        HostPolicy::default(),
        0,
        openfactory_service::Anonymous::Ip,
        Some("scrape-secret"),
    )
    .await;
    let open = fixture().await;
    assert_eq!(open.get("/metrics").await.status(), StatusCode::OK);
    for sent in [
        None,
        Some("Bearer wrong"),
        Some("scrape-secret"),
        Some("Bearer scrape-secre"),
    ] {
        let headers: Vec<(&str, &str)> = sent.map(|v| ("authorization", v)).into_iter().collect();
        let response = f.send(request("GET", "/metrics", &headers, "")).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{sent:?}");
        assert!(text(response).await.contains("--metrics-token"));
    }
    let response = f
        .send(request(
            "GET",
            "/metrics",
            &[("authorization", "Bearer scrape-secret")],
            "",
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert!(text(response).await.contains("# EOF"));
}

#[tokio::test]
async fn an_sse_stream_streams_through_every_layer() {
    let f = fixture().await;
    let response = f
        .send(request(
            "GET",
            "/api/mcp/sse",
            &[("accept", "text/event-stream")],
            "",
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_secured("an SSE stream", &response);
    assert!(
        response.headers()[header::CONTENT_TYPE]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let mut stream = response.into_body().into_data_stream();
    let first = next_chunk(&mut stream).await.expect("an endpoint event");
    let first = String::from_utf8_lossy(&first);
    assert!(
        first.contains("event: endpoint") && first.contains("/api/mcp/messages?sessionId="),
        "{first}"
    );
    assert_eq!(json_body(f.get("/healthz").await).await["sse_sessions"], 1);
    drop(stream);
    assert_eq!(json_body(f.get("/healthz").await).await["sse_sessions"], 0);
}

#[tokio::test]
async fn the_host_check_refuses_other_hosts_and_origins() {
    let f = fixture().await;
    for (headers, status) in [
        (vec![("host", "localhost:8080")], StatusCode::OK),
        (vec![("host", "127.0.0.1")], StatusCode::OK),
        (vec![("host", "[::1]:8080")], StatusCode::OK),
        (vec![("host", "evil.example")], StatusCode::FORBIDDEN),
        (
            vec![("host", "localhost.evil.example")],
            StatusCode::FORBIDDEN,
        ),
        (
            vec![("host", "localhost"), ("origin", "http://localhost:8080")],
            StatusCode::OK,
        ),
        (
            vec![("host", "localhost"), ("origin", "null")],
            StatusCode::OK,
        ),
        (
            vec![("host", "localhost"), ("origin", "https://evil.example")],
            StatusCode::FORBIDDEN,
        ),
    ] {
        let response = f.send(request("GET", "/signin", &headers, "")).await;
        assert_eq!(response.status(), status, "{headers:?}");
    }
    let refused = text(
        f.send(request("GET", "/", &[("host", "evil.example")], ""))
            .await,
    )
    .await;
    assert!(refused.contains("--allowed-host"), "{refused}");
    // MCP and the API are behind it too; the probes are not.
    for path in ["/api/mcp/sse", "/api/auth/me", "/api/mcp-keys"] {
        let response = f
            .send(request("GET", path, &[("host", "evil.example")], ""))
            .await;
        assert_eq!(response.status(), StatusCode::FORBIDDEN, "{path}");
    }
    // /metrics is too (it shows counts); only the health probe is not.
    let response = f
        .send(request("GET", "/metrics", &[("host", "10.0.0.7:8080")], ""))
        .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    let response = f
        .send(request("GET", "/healthz", &[("host", "10.0.0.7:8080")], ""))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    let any = fixture_with(
        HostPolicy {
            allowed_hosts: vec!["*".into()],
        },
        0,
    )
    .await;
    let response = any
        .send(request(
            "GET",
            "/signin",
            &[("host", "factory.example")],
            "",
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
    // rmcp's own check agrees.
    let response = any
        .send(request(
            "POST",
            "/api/mcp",
            &[
                ("host", "factory.example"),
                ("content-type", "application/json"),
                ("accept", "application/json, text/event-stream"),
            ],
            INITIALIZE,
        ))
        .await;
    assert_eq!(response.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_download_keeps_range_and_its_own_cache_control() {
    let f = fixture().await;
    let owner = OwnerId::ip("127.0.0.1".parse().unwrap());
    let id = "abcdef012345";
    f.app
        .store
        .create_build(
            &owner,
            &NewBuild {
                id,
                recipe_digest: "r",
                recipe_name: "r",
                recipe_json: "{}",
                plan_json: "{}",
                features: &[],
                retry_of: None,
                needs: openfactory_store::Needs {
                    arch: "amd64",
                    disk_bytes: 0,
                },
            },
        )
        .await
        .unwrap();
    let (lease, _) = f
        .app
        .store
        .claim_build(&openfactory_store::Claimer {
            worker: "w",
            arch: "amd64",
            free_disk_bytes: u64::MAX,
        })
        .await
        .unwrap()
        .unwrap();
    let iso = b"0123456789";
    let dir = f.app.settings.build_dir(id);
    std::fs::create_dir_all(&dir).unwrap();
    let file = openfactory_web::downloads::Artifact::Iso.file();
    std::fs::write(dir.join(file), iso).unwrap();
    f.app
        .store
        .finish_build(
            &lease,
            BuildEnd::Completed {
                iso_sha256: "00",
                iso_size_bytes: iso.len() as u64,
                result_json: "{}",
            },
        )
        .await
        .unwrap();
    let token = f.app.signer.sign("iso", id, &owner, unix_now() + 600);
    let link = format!("/api/builds/{id}/iso?token={token}");

    let whole = f.get(&link).await;
    assert_eq!(whole.status(), StatusCode::OK);
    assert_eq!(whole.headers()[header::ACCEPT_RANGES], "bytes");
    assert_eq!(text(whole).await, "0123456789");

    let part = f
        .send(request("GET", &link, &[("range", "bytes=2-5")], ""))
        .await;
    assert_eq!(part.status(), StatusCode::PARTIAL_CONTENT);
    assert_secured("a ranged download", &part);
    assert_eq!(part.headers()[header::CONTENT_RANGE], "bytes 2-5/10");
    assert_eq!(part.headers()[header::CACHE_CONTROL], "private, no-store");
    assert_eq!(text(part).await, "2345");
}

/// What serde says, which must never reach a client.
const SERDE_WORDS: [&str; 5] = [
    "missing field",
    "invalid type",
    "at line",
    "unknown field `",
    "expected value",
];

#[tokio::test]
async fn api_bodies_get_field_errors_never_serdes_wording() {
    let f = fixture().await;
    let (_, token, _) = f.account().await;
    let bearer = format!("Bearer {token}");
    let hostile = [
        "",
        "{",
        "{not json",
        "[]",
        "42",
        "\"text\"",
        "null",
        "{}",
        r#"{"email": 1, "password": true, "name": []}"#,
        r#"{"email": "a@b.org"}"#,
        r#"{"email": "a@b.org", "password": "0123456789x", "admin": true}"#,
        r#"{"name": {"a": 1}}"#,
        r#"{"name": "k", "scope": "all"}"#,
        "{\"email\": \"a@b.org\", \"password\": \"\u{0}\", ",
    ];
    for path in ["/api/auth/register", "/api/auth/login", "/api/mcp-keys"] {
        for body in hostile {
            let headers = [
                ("content-type", "application/json"),
                ("authorization", bearer.as_str()),
            ];
            let headers = if path == "/api/mcp-keys" {
                &headers[..]
            } else {
                &headers[..1]
            };
            let response = f.send(request("POST", path, headers, body)).await;
            assert_eq!(response.status(), StatusCode::BAD_REQUEST, "{path} {body}");
            let error = json_body(response).await["error"]
                .as_str()
                .unwrap()
                .to_owned();
            for word in SERDE_WORDS {
                assert!(!error.contains(word), "{path} {body}: {error}");
            }
            let named = ["body:", "email:", "password:", "name:", "`"];
            assert!(
                error
                    .lines()
                    .all(|line| named.iter().any(|n| line.starts_with(n))),
                "{path} {body}: every line names its field: {error}"
            );
        }
    }
    let missing = f
        .send(request(
            "POST",
            "/api/auth/register",
            &[],
            r#"{"email": "a@b.org"}"#,
        ))
        .await;
    assert_eq!(
        json_body(missing).await["error"],
        "password: required; give 10 to 1024 characters (a passphrase of a few words works well)"
    );
    let mistyped = f
        .send(request(
            "POST",
            "/api/auth/login",
            &[],
            r#"{"email": "a@b.org", "password": 12}"#,
        ))
        .await;
    assert_eq!(
        json_body(mistyped).await["error"],
        "password: expected a string, got a number"
    );
}

#[tokio::test]
async fn api_errors_keep_their_statuses() {
    let f = fixture().await;
    let (_, token, key) = f.account().await;
    let bearer = format!("Bearer {token}");
    let signed_in = [("authorization", bearer.as_str())];
    let cases = [
        ("GET", "/api/mcp-keys", vec![], "", StatusCode::UNAUTHORIZED),
        (
            "GET",
            "/api/mcp-keys",
            vec![("authorization", "Bearer of_mcp_123")],
            "",
            StatusCode::UNAUTHORIZED,
        ),
        (
            "GET",
            "/api/mcp-keys",
            signed_in.to_vec(),
            "",
            StatusCode::OK,
        ),
        (
            "GET",
            "/api/auth/me",
            signed_in.to_vec(),
            "",
            StatusCode::OK,
        ),
        (
            "DELETE",
            "/api/mcp-keys/nope",
            signed_in.to_vec(),
            "",
            StatusCode::NOT_FOUND,
        ),
        (
            "POST",
            "/api/mcp-keys",
            signed_in.to_vec(),
            r#"{"name": ""}"#,
            StatusCode::BAD_REQUEST,
        ),
        (
            "POST",
            "/api/auth/login",
            vec![],
            r#"{"email": "nobody@example.org", "password": "a long passphrase"}"#,
            StatusCode::UNAUTHORIZED,
        ),
        (
            "POST",
            "/api/mcp-keys",
            signed_in.to_vec(),
            r#"{"name": "second"}"#,
            StatusCode::CREATED,
        ),
    ];
    for (method, path, headers, body, status) in cases {
        let response = f.send(request(method, path, &headers, body)).await;
        assert_eq!(response.status(), status, "{method} {path} {body}");
    }
    let revoked = f
        .send(request("DELETE", "/api/mcp-keys/nope", &signed_in, ""))
        .await;
    assert_eq!(
        json_body(revoked).await["error"],
        "key `nope` not found; GET /api/mcp-keys shows yours"
    );
    let gone = f
        .send(request(
            "DELETE",
            &format!("/api/mcp-keys/{}", key.key_id),
            &signed_in,
            "",
        ))
        .await;
    assert_eq!(gone.status(), StatusCode::OK);
}

#[tokio::test]
async fn a_key_is_its_account_on_both_transports_or_nothing() {
    let f = fixture().await;
    let (account, _, key) = f.account().await;
    let bearer = format!("Bearer {}", key.key);
    let with_key = [("authorization", bearer.as_str())];

    // SSE: the session is the account's, so only the key can post to it.
    let response = f.send(request("GET", "/api/mcp/sse", &with_key, "")).await;
    assert_eq!(response.status(), StatusCode::OK);
    let mut stream = response.into_body().into_data_stream();
    let endpoint = next_chunk(&mut stream).await.unwrap();
    let endpoint = String::from_utf8_lossy(&endpoint);
    let messages = endpoint
        .lines()
        .find_map(|line| line.strip_prefix("data: "))
        .unwrap()
        .to_owned();
    let posted = f
        .send(request("POST", &messages, &with_key, INITIALIZE))
        .await;
    assert_eq!(posted.status(), StatusCode::ACCEPTED);
    let as_address = f.send(request("POST", &messages, &[], INITIALIZE)).await;
    assert_eq!(
        as_address.status(),
        StatusCode::NOT_FOUND,
        "another owner's session"
    );
    let reply = next_chunk(&mut stream).await.unwrap();
    assert!(String::from_utf8_lossy(&reply).contains("event: message"));
    // Streamable HTTP with the key.
    let streamable = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("authorization", bearer.as_str()),
    ];
    let response = f
        .send(request("POST", "/api/mcp", &streamable, INITIALIZE))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // Revoked: the open stream ends at once, and the key is refused after.
    auth::revoke_key(&f.app.store, &f.app.auth, &account, &key.key_id)
        .await
        .unwrap();
    assert_eq!(next_chunk(&mut stream).await, None, "the stream ended");
    drop(stream);
    for request in [
        request("GET", "/api/mcp/sse", &with_key, ""),
        request("POST", &messages, &with_key, INITIALIZE),
        request("POST", "/api/mcp", &streamable, INITIALIZE),
    ] {
        let response = f.send(request).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_owned();
        assert!(
            challenge.starts_with(
                "Bearer resource_metadata=\"http://localhost/.well-known/oauth-protected-resource/api/mcp"
            ) && challenge.contains("error=\"invalid_token\""),
            "{challenge}"
        );
        let body = json_body(response).await;
        assert_eq!(body["error"]["code"], -32001);
        assert!(
            body["error"]["message"]
                .as_str()
                .unwrap()
                .contains("this key was revoked"),
            "{body}"
        );
    }

    // A key that is not one, or a header that is not a key: refused, never the IP session.
    for value in [
        "Bearer of_mcp_0123",
        "Bearer something",
        "Basic YTpi",
        "of_mcp_x",
    ] {
        let response = f
            .send(request(
                "GET",
                "/api/mcp/sse",
                &[("authorization", value)],
                "",
            ))
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{value}");
        assert_eq!(
            json_body(response).await,
            json!({
                "jsonrpc": "2.0",
                "id": null,
                "error": {"code": -32001, "message": auth::KeyError::Invalid.message()},
            })
        );
    }
}

#[tokio::test]
async fn hosted_clients_find_the_authorization_server_and_are_sent_to_sign_in() {
    let f = fixture().await;
    let server = json_body(f.get("/.well-known/oauth-authorization-server").await).await;
    assert_eq!(server["issuer"], "http://localhost");
    assert_eq!(server["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(
        server["authorization_endpoint"],
        "http://localhost/oauth/authorize"
    );
    assert_eq!(
        json_body(f.get("/.well-known/openid-configuration").await).await,
        server
    );
    let resource = json_body(
        f.get("/.well-known/oauth-protected-resource/api/mcp/account")
            .await,
    )
    .await;
    assert_eq!(resource["resource"], "http://localhost/api/mcp/account");
    assert_eq!(
        resource["authorization_servers"],
        json!(["http://localhost"])
    );
    let root = json_body(f.get("/.well-known/oauth-protected-resource").await).await;
    assert_eq!(root["resource"], "http://localhost");
    assert_eq!(
        f.get("/.well-known/oauth-protected-resource/etc/passwd")
            .await
            .status(),
        StatusCode::NOT_FOUND
    );

    let streamable = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    // The account endpoints always ask for sign-in, with the challenge that
    // leads to the resource's metadata.
    for (method, path, resource) in [
        ("POST", "/api/mcp/account", "/api/mcp/account"),
        ("GET", "/api/mcp/account/sse", "/api/mcp/account/sse"),
        (
            "POST",
            "/api/mcp/account/messages?sessionId=x",
            "/api/mcp/account/sse",
        ),
    ] {
        let response = f.send(request(method, path, &streamable, INITIALIZE)).await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        let challenge = response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .to_owned();
        assert_eq!(
            challenge,
            format!(
                "Bearer resource_metadata=\"http://localhost/.well-known/oauth-protected-resource{resource}\", scope=\"mcp\""
            ),
        );
        assert_eq!(json_body(response).await["error"]["code"], -32001);
    }
    // The anonymous endpoints stay anonymous by default...
    let response = f
        .send(request("POST", "/api/mcp", &streamable, INITIALIZE))
        .await;
    assert_eq!(response.status(), StatusCode::OK);

    // ...and are not with anonymous callers off; a key still works anywhere.
    let off = fixture_anonymous(
        HostPolicy::default(),
        0,
        openfactory_service::Anonymous::Off,
    )
    .await;
    for (method, path) in [("POST", "/api/mcp"), ("GET", "/api/mcp/sse")] {
        let response = off
            .send(request(method, path, &streamable, INITIALIZE))
            .await;
        assert_eq!(response.status(), StatusCode::UNAUTHORIZED, "{path}");
        assert!(response.headers().contains_key(header::WWW_AUTHENTICATE));
    }
    let (_, _, key) = off.account().await;
    let bearer = format!("Bearer {}", key.key);
    let with_key = [
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
        ("authorization", bearer.as_str()),
    ];
    for path in ["/api/mcp", "/api/mcp/account"] {
        let response = off.send(request("POST", path, &with_key, INITIALIZE)).await;
        assert_eq!(response.status(), StatusCode::OK, "{path}");
    }
    // A forged access token is refused as a token, never taken for anonymous.
    let forged = [
        ("authorization", "Bearer of_oat_forged"),
        ("content-type", "application/json"),
        ("accept", "application/json, text/event-stream"),
    ];
    let response = f
        .send(request("POST", "/api/mcp", &forged, INITIALIZE))
        .await;
    assert_eq!(response.status(), StatusCode::UNAUTHORIZED);
    assert!(
        response.headers()[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
}

#[tokio::test]
async fn the_token_endpoint_answers_in_oauth_terms() {
    let f = fixture().await;
    let form = [("content-type", "application/x-www-form-urlencoded")];
    let response = f
        .send(request(
            "POST",
            "/oauth/token",
            &form,
            "grant_type=password&username=a&password=b",
        ))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(response.headers()[header::CACHE_CONTROL], "no-store");
    let body = json_body(response).await;
    assert_eq!(body["error"], "unsupported_grant_type");
    let response = f
        .send(request(
            "POST",
            "/oauth/token",
            &[("content-type", "application/json")],
            "{}",
        ))
        .await;
    assert_eq!(json_body(response).await["error"], "invalid_request");
    let response = f
        .send(request(
            "POST",
            "/oauth/register",
            &[("content-type", "application/json")],
            r#"{"redirect_uris":["http://127.0.0.1:9/cb"],"token_endpoint_auth_method":"none"}"#,
        ))
        .await;
    assert_eq!(response.status(), StatusCode::CREATED);
    assert_eq!(response.headers()["access-control-allow-origin"], "*");
    let registered = json_body(response).await;
    assert!(
        registered["client_id"]
            .as_str()
            .unwrap()
            .starts_with("of_cli_")
    );
    assert!(registered.get("client_secret").is_none());
    let response = f
        .send(request(
            "POST",
            "/oauth/register",
            &[("content-type", "application/json")],
            "{",
        ))
        .await;
    assert_eq!(response.status(), StatusCode::BAD_REQUEST);
    assert_eq!(json_body(response).await["error"], "invalid_request");
}
