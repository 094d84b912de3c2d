//! The sandbox: wasmtime components with WASI preview 2 and nothing granted.
//!
//! A plugin gets no network, no environment, no arguments, no clock but a
//! fixed one, deterministic randomness, and no files except its own assets,
//! read-only at `/assets`. Every call runs under a wall-clock CPU budget
//! (epoch interruption) and a memory cap (store limits). A fresh instance
//! serves each planning request, so no state leaks between callers.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openfactory_core::Diagnostic;
use openfactory_core::plan::{Evaluation, FeatureCheck, FeatureInfo, PlanContext, RuntimeError};
use openfactory_core::recipe::Protocol as CoreProtocol;
use openfactory_core::step::{
    AptSource, CheckKind as CoreCheck, FileStep, Step as CoreStep, UserStep,
};
use wasmtime::component::{Component, Linker, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::{
    FsPerms, HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView,
};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../../wit",
        world: "openfactory:feature/plugin",
    });
}

use bindings::exports::openfactory::feature::feature as wit;
use bindings::openfactory::feature::host::{self as host_iface, Level};
use bindings::openfactory::feature::types as witt;

/// Resource limits for one plugin call.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time one call may run.
    pub cpu: Duration,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Most steps or checks one call may return.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu: Duration::from_secs(1),
            memory_bytes: 64 << 20,
            max_items: 10_000,
        }
    }
}

const EPOCH_TICK: Duration = Duration::from_millis(10);
const MAX_LOG_LINES: u32 = 200;

/// The shared engine: one Cranelift configuration and an epoch ticker thread.
#[derive(Clone)]
pub struct Runtime {
    engine: Engine,
    linker: Arc<Linker<State>>,
    limits: Limits,
}

impl Runtime {
    pub fn new(limits: Limits) -> wasmtime::Result<Runtime> {
        let mut config = Config::new();
        config.wasm_component_model(true);
        config.epoch_interruption(true);
        config.max_wasm_stack(1 << 20);
        let engine = Engine::new(&config)?;
        let weak = engine.weak();
        std::thread::Builder::new()
            .name("plugin-epoch".into())
            .spawn(move || {
                while let Some(engine) = weak.upgrade() {
                    engine.increment_epoch();
                    drop(engine);
                    std::thread::sleep(EPOCH_TICK);
                }
            })?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker)?;
        bindings::Plugin::add_to_linker::<State, wasmtime::component::HasSelf<State>>(
            &mut linker,
            |s| s,
        )?;
        Ok(Runtime {
            engine,
            linker: Arc::new(linker),
            limits,
        })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    pub fn limits(&self) -> Limits {
        self.limits
    }

    /// Prepare a component for repeated instantiation.
    pub fn prepare(
        &self,
        name: &str,
        component: &Component,
        assets: Option<PathBuf>,
    ) -> wasmtime::Result<Prepared> {
        let pre = self.linker.instantiate_pre(component)?;
        Ok(Prepared {
            name: name.to_owned(),
            pre: bindings::PluginPre::new(pre)?,
            assets,
            runtime: self.clone(),
        })
    }
}

/// A component ready to be instantiated.
pub struct Prepared {
    name: String,
    pre: bindings::PluginPre<State>,
    assets: Option<PathBuf>,
    runtime: Runtime,
}

/// Per-instance state.
pub struct State {
    plugin: String,
    wasi: WasiCtx,
    table: ResourceTable,
    limits: StoreLimits,
    log_lines: u32,
}

impl WasiView for State {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl host_iface::Host for State {
    fn log(&mut self, level: Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES {
            return;
        }
        let message: String = message.chars().take(2000).collect();
        match level {
            Level::Debug => tracing::debug!(plugin = %self.plugin, "{message}"),
            Level::Info => tracing::info!(plugin = %self.plugin, "{message}"),
            Level::Warn => tracing::warn!(plugin = %self.plugin, "{message}"),
        }
    }
}

impl witt::Host for State {}

struct FixedClock;

impl HostWallClock for FixedClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FixedClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

impl Prepared {
    fn instantiate(&self) -> Result<(Store<State>, bindings::Plugin), RuntimeError> {
        let mut wasi = WasiCtxBuilder::new();
        wasi.allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .wall_clock(FixedClock)
            .monotonic_clock(FixedClock)
            .secure_random(wasmtime_wasi::Deterministic::new(vec![4, 2]))
            .insecure_random(wasmtime_wasi::Deterministic::new(vec![4, 2]))
            .insecure_random_seed(42)
            // Plugin calls already run on a blocking thread: let asset reads run
            // inline instead of hopping to a thread pool (10× faster for small files).
            .allow_blocking_current_thread(true);
        if let Some(assets) = &self.assets {
            wasi.preopened_dir(assets, "/assets", FsPerms::ReadOnly)
                .map_err(|e| RuntimeError(format!("cannot open its assets: {e}")))?;
        }
        let limits = self.runtime.limits;
        let state = State {
            plugin: self.name.clone(),
            wasi: wasi.build(),
            table: ResourceTable::new(),
            limits: StoreLimitsBuilder::new()
                .memory_size(limits.memory_bytes)
                .instances(16)
                .tables(64)
                .memories(4)
                .trap_on_grow_failure(true)
                .build(),
            log_lines: 0,
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limits);
        self.arm(&mut store);
        let plugin = self.pre.instantiate(&mut store).map_err(|e| self.trap(e))?;
        Ok((store, plugin))
    }

    /// Give the next call a fresh CPU budget.
    fn arm(&self, store: &mut Store<State>) {
        let ticks = (self.runtime.limits.cpu.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
    }

    fn trap(&self, error: wasmtime::Error) -> RuntimeError {
        let limits = self.runtime.limits;
        if let Some(trap) = error.downcast_ref::<Trap>() {
            return RuntimeError(match trap {
                Trap::Interrupt => format!(
                    "it ran longer than its CPU budget of {} ms and was stopped",
                    limits.cpu.as_millis()
                ),
                Trap::StackOverflow => "it overflowed its stack".into(),
                Trap::UnreachableCodeReached => "it panicked (reached unreachable code)".into(),
                other => format!("it trapped: {other}"),
            });
        }
        let text = format!("{error:#}");
        if text.contains("memory")
            && (text.contains("grow") || text.contains("limit") || text.contains("exceed"))
        {
            return RuntimeError(format!(
                "it asked for more than its memory limit of {} MiB",
                limits.memory_bytes >> 20
            ));
        }
        RuntimeError(format!(
            "it failed: {}",
            text.chars().take(500).collect::<String>()
        ))
    }

    pub fn describe(&self) -> Result<FeatureInfo, RuntimeError> {
        let (mut store, plugin) = self.instantiate()?;
        let info = plugin
            .openfactory_feature_feature()
            .call_describe(&mut store)
            .map_err(|e| self.trap(e))?;
        let options_schema = serde_json::from_str(&info.options_schema)
            .map_err(|e| RuntimeError(format!("its options schema is not JSON: {e}")))?;
        Ok(FeatureInfo {
            name: info.name,
            version: info.version,
            summary: info.summary,
            category: info.category,
            options_schema,
            reads: info.reads,
            requires: info.requires,
            conflicts: info.conflicts,
        })
    }

    pub fn evaluate(&self, ctx: &PlanContext, plan: bool) -> Result<Evaluation, RuntimeError> {
        let (mut store, plugin) = self.instantiate()?;
        let api = plugin.openfactory_feature_feature();
        let wit_ctx = wit::PlanContext {
            recipe: ctx.recipe.to_string(),
            options: ctx.options.to_string(),
        };
        let max = self.runtime.limits.max_items;

        let found = api
            .call_validate(&mut store, &wit_ctx)
            .map_err(|e| self.trap(e))?;
        let too_many = |what: &str, n: usize| {
            RuntimeError(format!("it returned {n} {what}; the limit is {max}"))
        };
        if found.len() > max {
            return Err(too_many("diagnostics", found.len()));
        }
        let mut evaluation = Evaluation {
            diagnostics: found.into_iter().map(diagnostic).collect(),
            ..Default::default()
        };
        if !plan || evaluation.diagnostics.iter().any(Diagnostic::is_error) {
            return Ok(evaluation);
        }

        self.arm(&mut store);
        match api
            .call_plan(&mut store, &wit_ctx)
            .map_err(|e| self.trap(e))?
        {
            Ok(steps) if steps.len() > max => return Err(too_many("steps", steps.len())),
            Ok(steps) => evaluation.steps = steps.into_iter().map(step).collect(),
            Err(problems) => {
                evaluation
                    .diagnostics
                    .extend(problems.into_iter().take(max).map(diagnostic));
                return Ok(evaluation);
            }
        }
        self.arm(&mut store);
        let checks = api
            .call_checks(&mut store, &wit_ctx)
            .map_err(|e| self.trap(e))?;
        if checks.len() > max {
            return Err(too_many("checks", checks.len()));
        }
        evaluation.checks = checks
            .into_iter()
            .map(|c| FeatureCheck {
                name: c.name,
                description: c.description,
                kind: check(c.kind),
                timeout_seconds: c.timeout_seconds,
            })
            .collect();
        Ok(evaluation)
    }
}

fn diagnostic(d: witt::Diagnostic) -> Diagnostic {
    let mut out = match d.severity {
        witt::Severity::Error => Diagnostic::error(&d.code, d.path, d.message),
        witt::Severity::Warning => Diagnostic::warning(&d.code, d.path, d.message),
    };
    out.code = out.code.chars().take(100).collect();
    out.path = out.path.chars().take(256).collect();
    out.suggestion = d.suggestion.map(|s| s.chars().take(1000).collect());
    out
}

fn protocol(p: witt::Protocol) -> CoreProtocol {
    match p {
        witt::Protocol::Tcp => CoreProtocol::Tcp,
        witt::Protocol::Udp => CoreProtocol::Udp,
    }
}

fn step(s: witt::Step) -> CoreStep {
    use witt::Step as W;
    match s {
        W::InstallPackages(packages) => CoreStep::InstallPackages { packages },
        W::RemovePackages(packages) => CoreStep::RemovePackages { packages },
        W::WriteFile(f) => CoreStep::WriteFile(FileStep {
            path: f.path,
            mode: f.mode,
            owner: f.owner,
            group: f.group,
            content: f.content,
        }),
        W::EnableService(unit) => CoreStep::EnableService { unit },
        W::DisableService(unit) => CoreStep::DisableService { unit },
        W::MaskService(unit) => CoreStep::MaskService { unit },
        W::AddGroup(g) => CoreStep::AddGroup {
            name: g.name,
            system: g.system,
        },
        W::AddUser(u) => CoreStep::AddUser(UserStep {
            name: u.name,
            groups: u.groups,
            shell: u.shell,
            system: u.system,
            password_hash: None,
        }),
        W::SetSysctl(s) => CoreStep::SetSysctl {
            key: s.key,
            value: s.value,
        },
        W::OpenPort(p) => CoreStep::OpenPort {
            port: p.port,
            protocol: protocol(p.protocol),
        },
        W::AddKernelArg(arg) => CoreStep::AddKernelArg { arg },
        W::AddAptSource(a) => CoreStep::AddAptSource(AptSource {
            name: a.name,
            uris: a.uris,
            suites: a.suites,
            components: a.components,
            signed_by: a.signed_by,
        }),
        W::Run(c) => CoreStep::Run {
            argv: c.argv,
            description: c.description,
        },
    }
}

fn check(k: witt::CheckKind) -> CoreCheck {
    use witt::CheckKind as W;
    match k {
        W::UnitActive(unit) => CoreCheck::UnitActive { unit },
        W::CommandSucceeds(argv) => CoreCheck::CommandSucceeds { argv },
        W::PortOpen(p) => CoreCheck::PortOpen {
            port: p.port,
            protocol: protocol(p.protocol),
        },
        W::FileExists(path) => CoreCheck::FileExists { path },
        W::PackageInstalled(package) => CoreCheck::PackageInstalled { package },
    }
}

/// Compile (or load from cache) and prepare a component.
pub fn load(
    runtime: &Runtime,
    cache: &crate::cache::CompiledCache,
    name: &str,
    digest: &str,
    wasm: &std::path::Path,
    assets: Option<PathBuf>,
) -> Result<(Prepared, bool), RuntimeError> {
    let (component, cached) = cache.load(runtime.engine(), digest, wasm).map_err(|e| {
        RuntimeError(format!(
            "its component does not compile: {}",
            format!("{e:#}").chars().take(500).collect::<String>()
        ))
    })?;
    let prepared = runtime.prepare(name, &component, assets).map_err(|e| {
        RuntimeError(format!(
            "its component does not match the `openfactory:feature` world this host provides: {}",
            format!("{e:#}").chars().take(500).collect::<String>()
        ))
    })?;
    Ok((prepared, cached))
}
