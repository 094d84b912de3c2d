//! `openfactory serve` and `openfactory mcp --stdio`.

use std::net::{IpAddr, SocketAddr};
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Context as _;
use openfactory_core::catalog::Catalog;
use openfactory_plugin_host::PluginHost;
use openfactory_server::HostPolicy;
use openfactory_service::links::LinkSigner;
use openfactory_service::{Anonymous, App, OwnerPolicy, Planner, Settings, Vms};
use openfactory_store::{LeaseSettings, Store};
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::worker;

#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// A plugin bundle to have installed before the server starts: an
    /// `oci://REGISTRY/REPOSITORY:TAG` (or `@sha256:…`), a `.ofbundle` file
    /// or a bundle directory; repeat for more. One already installed at the
    /// same digest is kept; another version of it is replaced (never by
    /// another signer's). Grants are the operator's, given once with
    /// `openfactory plugin grant`, and kept across replacements.
    #[arg(long = "plugin", value_name = "SOURCE")]
    pub plugins: Vec<String>,
    /// Address to listen on.
    #[arg(long, env = "OPENFACTORY_LISTEN", default_value = "127.0.0.1:8080")]
    pub listen: SocketAddr,
    /// Host names (or host:port) clients may use; repeat or comma-separate. `*` allows any, for
    /// deployments behind a proxy that checks Host itself. Default: localhost, 127.0.0.1, ::1.
    #[arg(
        long = "allowed-host",
        env = "OPENFACTORY_ALLOWED_HOSTS",
        value_delimiter = ','
    )]
    pub allowed_hosts: Vec<String>,
    /// Proxies whose X-Forwarded-For is believed; repeat or comma-separate.
    #[arg(
        long = "trusted-proxy",
        env = "OPENFACTORY_TRUSTED_PROXIES",
        value_delimiter = ','
    )]
    pub trusted_proxies: Vec<IpAddr>,
    /// Base URL clients reach this server at, for download links (default: http://<listen>).
    #[arg(long, env = "OPENFACTORY_PUBLIC_URL", value_name = "URL")]
    pub public_url: Option<String>,
    /// Requests one caller (a verified credential, or a client address) may make a minute,
    /// all at once if it wants; 0: no limits (neither this nor the budget for credentials
    /// that fail to verify: 10 per address, then one every 6 s).
    #[arg(long, env = "OPENFACTORY_REQUESTS_PER_MINUTE", default_value_t = 600)]
    pub requests_per_minute: u32,
    /// A secret /metrics asks for (`Authorization: Bearer TOKEN`, as Prometheus's
    /// `authorization.credentials`). Without it /metrics is open to anyone who passes the
    /// Host check (add the scrape address with --allowed-host).
    #[arg(
        long,
        env = "OPENFACTORY_METRICS_TOKEN",
        value_name = "TOKEN",
        hide_env_values = true
    )]
    pub metrics_token: Option<String>,
    /// MCP callers without a credential: `ip` works as their address's IP session (everyone
    /// behind one address shares it); `off` answers 401 and sends OAuth clients to sign in.
    /// Use `off` wherever hosted clients (Claude.ai), proxies or NATs put many people behind
    /// one address. Default: `ip` when listening on loopback, `off` otherwise.
    #[arg(long, env = "OPENFACTORY_ANONYMOUS", value_name = "ip|off")]
    pub anonymous: Option<AnonymousArg>,
    #[command(flatten)]
    pub oauth: OAuthArgs,
    #[command(flatten)]
    pub service: ServiceArgs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum AnonymousArg {
    Ip,
    Off,
}

/// How OAuth tokens are issued to hosted MCP clients.
#[derive(Debug, clap::Args)]
pub struct OAuthArgs {
    /// Lifetime of an OAuth access token, seconds (refresh tokens last 30 days and rotate).
    #[arg(
        long,
        env = "OPENFACTORY_OAUTH_ACCESS_TOKEN_SECONDS",
        default_value_t = 3600
    )]
    pub oauth_access_token_seconds: u32,
    /// Fetch client metadata documents from loopback and private addresses too (and over
    /// http there): for tests and private networks only; on the internet this lets anyone
    /// make the server fetch from its own network.
    #[arg(long, env = "OPENFACTORY_OAUTH_ALLOW_PRIVATE_CLIENT_METADATA")]
    pub oauth_allow_private_client_metadata: bool,
    /// PEM certificates to trust for client metadata documents, besides the system's.
    #[arg(
        long,
        env = "OPENFACTORY_OAUTH_CLIENT_METADATA_CA",
        value_name = "FILE"
    )]
    pub oauth_client_metadata_ca: Option<std::path::PathBuf>,
}

impl OAuthArgs {
    fn settings(&self, issuer: &str) -> anyhow::Result<openfactory_oauth::Settings> {
        let resources = openfactory_mcp::RESOURCE_PATHS
            .iter()
            .map(|p| format!("{}{p}", issuer.trim_end_matches('/')))
            .collect();
        let mut settings = openfactory_oauth::Settings::new(issuer, resources);
        settings.access_token_seconds = i64::from(self.oauth_access_token_seconds.max(1));
        settings.fetch.allow_private_addresses = self.oauth_allow_private_client_metadata;
        if let Some(path) = &self.oauth_client_metadata_ca {
            let pem = std::fs::read(path).with_context(|| {
                format!("--oauth-client-metadata-ca: reading {}", path.display())
            })?;
            openfactory_oauth::metadata_document::MetadataDocuments::new(
                openfactory_oauth::FetchPolicy {
                    allow_private_addresses: false,
                    extra_roots_pem: Some(pem.clone()),
                },
            )
            .map_err(|e| anyhow::anyhow!("--oauth-client-metadata-ca {}: {e}", path.display()))?;
            settings.fetch.extra_roots_pem = Some(pem);
        }
        Ok(settings)
    }
}

/// What both `serve` and `mcp --stdio` run: the database, the build and test
/// workers, the VMs.
#[derive(Debug, clap::Args)]
pub struct ServiceArgs {
    /// Database URL; default: SQLite in the home directory.
    #[arg(long, env = "OPENFACTORY_DATABASE_URL")]
    pub database_url: Option<String>,
    /// Where builds' outputs (ISOs, logs, manifests, SBOMs) are kept: a directory, or
    /// s3://BUCKET/PREFIX (credentials, region and endpoint from AWS_ACCESS_KEY_ID,
    /// AWS_SECRET_ACCESS_KEY, AWS_REGION, AWS_ENDPOINT_URL). Default: HOME/builds.
    #[arg(long, env = "OPENFACTORY_ARTIFACTS", value_name = "LOCATION")]
    pub artifacts: Option<String>,
    /// Seconds without a heartbeat after which a running build or test run is
    /// requeued (its worker is taken for lost); a job is claimed at most 3 times.
    #[arg(
        long,
        env = "OPENFACTORY_HEARTBEAT_TIMEOUT_SECONDS",
        default_value_t = 120
    )]
    pub heartbeat_timeout_seconds: u64,
    #[command(flatten)]
    pub builds: BuildArgs,
    #[command(flatten)]
    pub vms: VmArgs,
    #[command(flatten)]
    pub tests: TestArgs,
}

#[derive(Debug, clap::Args)]
pub struct BuildArgs {
    /// Builds this process runs at the same time (each uses a core and several
    /// GiB of disk); 0: none (remote workers run them).
    #[arg(long, env = "OPENFACTORY_BUILD_CONCURRENCY", default_value_t = 1)]
    pub build_concurrency: usize,
    /// Queued + running builds one owner may have.
    #[arg(long, env = "OPENFACTORY_MAX_ACTIVE_BUILDS", default_value_t = 3)]
    pub max_active_builds: u32,
    /// Disk one owner's finished builds may keep, in MiB (their ISOs); 0: no limit.
    #[arg(
        long,
        env = "OPENFACTORY_MAX_DISK_MIB_PER_OWNER",
        default_value_t = 20480
    )]
    pub max_disk_mib_per_owner: u64,
}

/// Where VMs run and how big they may be.
#[derive(Debug, clap::Args)]
pub struct VmArgs {
    /// What runs VMs: qemu (supervised by this host) or libvirt (needs a build with the
    /// `libvirt` feature, which `cargo xtask` enables).
    #[arg(long, env = "OPENFACTORY_VM_BACKEND", default_value = "qemu")]
    pub vm_backend: crate::vms::BackendKind,
    /// libvirt connection URI: this machine (qemu:///system) or another (qemu+ssh://host/system).
    #[arg(
        long,
        env = "OPENFACTORY_LIBVIRT_URI",
        default_value = "qemu:///system"
    )]
    pub libvirt_uri: String,
    /// libvirt directory pool for VM volumes (ISO copies, disks, serial logs); created if missing.
    #[arg(long, env = "OPENFACTORY_LIBVIRT_POOL", default_value = "openfactory")]
    pub libvirt_pool: String,
    /// The pool's directory on the libvirt host, used when the pool is created.
    #[arg(
        long,
        env = "OPENFACTORY_LIBVIRT_POOL_PATH",
        default_value = "/var/lib/libvirt/images/openfactory"
    )]
    pub libvirt_pool_path: String,
    /// VM accelerator: auto (KVM if a guest really runs under it, else TCG), kvm or tcg.
    #[arg(long, env = "OPENFACTORY_ACCEL", default_value = "auto")]
    pub accel: openfactory_vm::AccelSetting,
    /// Most memory one VM may have, in MiB.
    #[arg(long, env = "OPENFACTORY_MAX_VM_MEMORY_MB", default_value_t = 4096)]
    pub max_vm_memory_mb: u32,
    /// Most vCPUs one VM may have.
    #[arg(long, env = "OPENFACTORY_MAX_VM_VCPUS", default_value_t = 2)]
    pub max_vm_vcpus: u32,
    /// VMs one owner may have (running or stopped).
    #[arg(long, env = "OPENFACTORY_MAX_VMS", default_value_t = 2)]
    pub max_vms: u32,
    /// The noVNC package directory (npm `@novnc/novnc`) for the browser console;
    /// `cargo xtask run` installs it and sets this.
    #[arg(long, env = "OPENFACTORY_NOVNC_DIR", value_name = "DIR")]
    pub novnc_dir: Option<std::path::PathBuf>,
}

/// How many test runs, and how long.
#[derive(Debug, clap::Args)]
pub struct TestArgs {
    /// Test runs this process runs at the same time (each boots a VM); 0: none.
    #[arg(long, env = "OPENFACTORY_TEST_CONCURRENCY", default_value_t = 1)]
    pub test_concurrency: usize,
    /// Queued + running test runs one owner may have.
    #[arg(long, env = "OPENFACTORY_MAX_ACTIVE_TEST_RUNS", default_value_t = 2)]
    pub max_active_test_runs: u32,
    /// Longest budget a test run may ask for (boot and checks), in seconds.
    #[arg(
        long,
        env = "OPENFACTORY_MAX_TEST_TIMEOUT_SECONDS",
        default_value_t = 1800
    )]
    pub max_test_timeout_seconds: u32,
}

#[derive(Debug, clap::Args)]
pub struct McpArgs {
    /// Serve one MCP session on stdin/stdout (for clients that launch a command).
    #[arg(long)]
    pub stdio: bool,
    #[command(flatten)]
    pub service: ServiceArgs,
}

/// Plugins, catalog and database, shared by every transport.
async fn app(
    config: &Config,
    service: &ServiceArgs,
    public_url: Option<String>,
    oauth: openfactory_oauth::Settings,
) -> anyhow::Result<Arc<App>> {
    let (builds, vm_args, test_args) = (&service.builds, &service.vms, &service.tests);
    let host_config = config.host();
    let plugins = tokio::task::spawn_blocking(move || PluginHost::load(&host_config))
        .await?
        .context("loading plugins")?;
    for p in plugins.problems() {
        tracing::warn!(bundle = %p.bundle, reason = %p.reason, "plugin not loaded");
    }
    if plugins.stats().plugins == 0 {
        tracing::warn!(dir = %config.plugins_dir().display(), "no feature plugins are installed; recipes with features will not validate");
    }
    let (catalog, problems) = Catalog::load(&config.recipes_dir);
    for p in &problems {
        tracing::warn!("catalog: {p}");
    }
    std::fs::create_dir_all(&config.home)
        .with_context(|| format!("creating {}", config.home.display()))?;
    let url = service
        .database_url
        .clone()
        .unwrap_or_else(|| format!("sqlite://{}", config.home.join("openfactory.db").display()));
    let store = Store::open(&url)
        .await
        .with_context(|| format!("opening the database {url}"))?;
    tracing::info!(features = plugins.stats().plugins, templates = catalog.templates.len(), database = %url, "ready");
    let signer = LinkSigner::load_or_create(&config.home.join("secrets/link-signing.key"))
        .context("loading the download-link key")?;
    let settings = Settings {
        public_url,
        builds_dir: config.builds_dir(),
        max_active_builds: builds.max_active_builds.max(1),
        max_disk_bytes: builds.max_disk_mib_per_owner.saturating_mul(1 << 20),
        max_active_test_runs: test_args.max_active_test_runs.max(1),
        max_test_timeout_seconds: test_args
            .max_test_timeout_seconds
            .max(openfactory_service::test_runs::MIN_TIMEOUT_SECONDS),
        oauth,
    };
    let vms = Vms {
        backend: Arc::new(crate::vms::backend(vm_args, &config.home.join("vms")).await?),
        max_memory_mb: vm_args.max_vm_memory_mb.max(256),
        max_vcpus: vm_args.max_vm_vcpus.max(1),
        max_vms: vm_args.max_vms,
        novnc_dir: vm_args
            .novnc_dir
            .clone()
            .filter(|dir| dir.join("core/rfb.js").is_file()),
    };
    if vms.novnc_dir.is_none() {
        tracing::warn!("noVNC is not installed (--novnc-dir): get_vm_console_url will say so");
    }
    let location: openfactory_artifacts::Location = match &service.artifacts {
        Some(text) => text
            .parse()
            .map_err(|e| anyhow::anyhow!("--artifacts: {e}"))?,
        None => openfactory_artifacts::Location::Local(config.builds_dir()),
    };
    let artifacts =
        openfactory_artifacts::ArtifactStore::open(&location, &config.home.join("cache/artifacts"))
            .map_err(|e| anyhow::anyhow!("--artifacts {location}: {e}"))?;
    artifacts
        .check()
        .await
        .map_err(|e| anyhow::anyhow!("--artifacts {location}: {e}"))?;
    Ok(App::new(
        store,
        artifacts,
        Planner::new(catalog, plugins),
        signer,
        vms,
        settings,
    ))
}

/// The background tasks of a running service: the build worker, the test
/// worker and the VM reaper. Each cleans up after an interrupted run first.
struct Workers {
    shutdown: CancellationToken,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Workers {
    async fn start(app: &Arc<App>, config: &Config, args: &ServiceArgs) -> anyhow::Result<Self> {
        let shutdown = CancellationToken::new();
        let builder = Arc::new(config.builder());
        let worker = worker::worker_id(&config.home);
        let leases = LeaseSettings {
            heartbeat_timeout: std::time::Duration::from_secs(
                args.heartbeat_timeout_seconds.max(5),
            ),
            ..LeaseSettings::default()
        };
        worker::recover(app, &builder, &worker, leases).await?;
        // SAFETY: geteuid has no preconditions.
        if unsafe { libc::geteuid() } != 0 {
            tracing::warn!(
                "not running as root: builds will fail (they mount an overlay and use chroot)"
            );
        }
        let missing = openfactory_build::cache::missing_tools();
        if !missing.is_empty() {
            tracing::warn!(
                ?missing,
                "build tools are missing: builds will fail until they are installed"
            );
        }
        let mut tasks = vec![
            tokio::spawn(worker::sweep_leases(app.clone(), leases, shutdown.clone())),
            tokio::spawn(worker::relay_job_changes(app.clone(), shutdown.clone())),
            tokio::spawn(crate::vms::reaper(app.clone(), shutdown.clone())),
        ];
        tasks.extend(worker::run_local(
            app,
            builder,
            worker,
            args.builds.build_concurrency,
            args.tests.test_concurrency,
            &shutdown,
        ));
        Ok(Workers { shutdown, tasks })
    }

    /// Stop: running builds and test runs are cancelled, and cleaned up before this returns.
    async fn stop(self) {
        self.shutdown.cancel();
        for task in self.tasks {
            let _ = task.await;
        }
    }
}

pub fn serve(args: ServeArgs, config: &Config) -> anyhow::Result<ExitCode> {
    for source in &args.plugins {
        let done = super::plugin::ensure_installed(source, config)
            .with_context(|| format!("--plugin {source}"))?;
        eprintln!("{done}");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let public_url = args
            .public_url
            .clone()
            .unwrap_or_else(|| format!("http://{}", args.listen));
        let oauth = args.oauth.settings(&public_url)?;
        let app = app(config, &args.service, Some(public_url), oauth).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        let hosts = if args.allowed_hosts.is_empty() {
            HostPolicy::default()
        } else {
            HostPolicy {
                allowed_hosts: args.allowed_hosts,
            }
        };
        let anonymous = match args.anonymous {
            Some(AnonymousArg::Ip) => Anonymous::Ip,
            Some(AnonymousArg::Off) => Anonymous::Off,
            None if args.listen.ip().is_loopback() => Anonymous::Ip,
            None => Anonymous::Off,
        };
        let owners = Arc::new(OwnerPolicy {
            trusted_proxies: args.trusted_proxies,
            requests_per_minute: args.requests_per_minute,
            anonymous,
        });
        let secure_cookies = app
            .settings
            .public_url
            .as_deref()
            .is_some_and(|u| u.starts_with("https://"));
        let web = openfactory_web::WebSettings { secure_cookies };
        let address = listener.local_addr()?;
        eprintln!("OpenFactory is listening on http://{address}");
        eprintln!("  Web console:           http://{address}/");
        eprintln!("  MCP (SSE):             http://{address}/api/mcp/sse");
        eprintln!("  MCP (Streamable HTTP): http://{address}/api/mcp");
        eprintln!("  MCP for hosted clients (OAuth sign-in): http://{address}/api/mcp/account");
        if anonymous == Anonymous::Off {
            eprintln!("  Anonymous MCP callers are refused (--anonymous off): clients sign in with a key or OAuth");
        }
        let workers = Workers::start(&app, config, &args.service).await?;
        let shutdown = workers.shutdown.clone();
        let signal = shutdown.clone();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down: closing streams and finishing requests");
            signal.cancel();
        });
        openfactory_server::serve(
            app.clone(),
            listener,
            owners,
            hosts,
            web,
            args.metrics_token.as_deref(),
            shutdown,
        )
        .await?;
        workers.stop().await;
        app.store.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub fn mcp(args: McpArgs, config: &Config) -> anyhow::Result<ExitCode> {
    anyhow::ensure!(
        args.stdio,
        "give --stdio (the HTTP transports are served by `openfactory serve`)"
    );
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        // Over stdio nobody signs in: the OAuth server is never reached.
        let oauth = openfactory_oauth::Settings::new("http://127.0.0.1", Vec::new());
        let app = app(config, &args.service, None, oauth).await?;
        let workers = Workers::start(&app, config, &args.service).await?;
        let served = openfactory_mcp::serve_stdio(app.clone()).await;
        workers.stop().await;
        served.map_err(|e| anyhow::anyhow!("{e}"))?;
        app.store.close().await;
        Ok(ExitCode::SUCCESS)
    })
}

pub async fn wait_for_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
            .expect("installing a SIGTERM handler");
        tokio::select! {
            _ = ctrl_c => {}
            _ = term.recv() => {}
        }
    }
    #[cfg(not(unix))]
    let _ = ctrl_c.await;
}
