//! The sandbox: wasmtime components with WASI preview 2 and nothing granted.
//!
//! A plugin gets no network, no environment, no arguments, no clock but a
//! fixed one, deterministic randomness, and no files except its own assets,
//! read-only at `/assets`. Every call runs under a wall-clock CPU budget
//! (epoch interruption) and a memory cap (store limits). A fresh instance
//! serves each planning request, so no state leaks between callers.
//!
//! Epoch interruption only fires while guest code runs, so nothing a plugin
//! can call may block: time stands still for a plugin (its clocks are fixed)
//! and its timers are ready at once, so a plugin that "waits" spins through
//! its CPU budget instead of parking a host thread. The number of plugin
//! evaluations running at once is bounded across the process, so a flood of
//! plans cannot exhaust the threads that serve them.
//!
//! What the host does on a plugin's behalf inside a call (opening and
//! reading its assets, writing its log) runs outside guest code too, where
//! no epoch reaches it: every call therefore runs on a thread of its own
//! that the caller waits for only as long as the call's budget allows
//! ([`Prepared::watched`]). A call the host cannot finish is abandoned with
//! an error; it keeps its turn among the evaluations until it ends, so stuck
//! calls can fill the planner (then callers are told to retry) but never
//! hold a caller.
//!
//! A plugin's files carry one fixed time on disk, but the kernel moves a
//! file's access and change times when it is read or installed: `stat`
//! answers the fixed time for all three ([`shadow_file_times`]).

use std::path::PathBuf;
use std::sync::{Arc, Condvar, LazyLock, Mutex};
use std::time::{Duration, Instant};

use openfactory_core::Diagnostic;
use openfactory_core::plan::{Evaluation, FeatureCheck, FeatureInfo, PlanContext, RuntimeError};
use openfactory_core::recipe::Protocol as CoreProtocol;
use openfactory_core::step::{
    AptSource, CheckKind as CoreCheck, FileStep, Step as CoreStep, UserStep,
};
use wasmtime::component::{Component, HasData, Linker, Resource, ResourceTable};
use wasmtime::{Config, Engine, Store, StoreLimits, StoreLimitsBuilder, Trap};
use wasmtime_wasi::p2::bindings::clocks::monotonic_clock;
use wasmtime_wasi::p2::bindings::sync::filesystem::types as fs;
use wasmtime_wasi::p2::{DynPollable, Pollable};
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

/// Resource limits for plugin calls.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Wall-clock time one call may run.
    pub cpu: Duration,
    /// Wall-clock time all the calls of one evaluation (a feature's
    /// `validate`, `plan` and `checks` for one recipe) may run together.
    pub plan: Duration,
    /// Linear memory one instance may grow to.
    pub memory_bytes: usize,
    /// Most steps or checks one call may return.
    pub max_items: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            cpu: Duration::from_secs(1),
            plan: Duration::from_millis(1500),
            memory_bytes: 64 << 20,
            max_items: 10_000,
        }
    }
}

const EPOCH_TICK: Duration = Duration::from_millis(10);
/// How long past a call's budget its caller waits before abandoning it
/// ([`Prepared::watched`]): a guest stopped at its deadline answers well
/// within this.
const WATCHDOG_GRACE: Duration = Duration::from_millis(100);
/// The native stack of a thread that runs plugin calls: room for the
/// guest's own stack ([`Config::max_wasm_stack`], 1 MiB) and the host's.
const CALL_STACK_BYTES: usize = 4 << 20;
const MAX_LOG_LINES: u32 = 200;

/// Most elements one table may hold. A plugin's function table holds its
/// address-taken functions (a few thousand); without a bound one
/// `table.grow` asks the host for gigabytes.
const MAX_TABLE_ELEMENTS: usize = 1 << 17;
/// Most core instances, tables and memories one store may create. A
/// component built by the SDK instantiates a handful of core modules (the
/// plugin and the shims that lower its imports), with one table each at
/// most and one linear memory in all: a second memory would double the
/// memory limit, which applies to each memory on its own.
const MAX_INSTANCES: usize = 16;
const MAX_TABLES: usize = 16;
const MAX_MEMORIES: usize = 1;
/// Most WASI resources (open files, streams, timers) one instance may hold
/// at once. A plugin opens a few assets; without a bound a plugin that
/// never closes what it opens exhausts the host's file descriptors (or, with
/// timers, its memory) within its CPU budget. 256 × the most evaluations
/// at once (32) stays far below the descriptors a server may hold.
pub const MAX_RESOURCES: usize = 256;
/// Most bytes one call may hand the host (its result, or one log line): a
/// plan's steps and checks, files included. wasmtime's default, 128 MiB,
/// let a 1 MiB guest return a 126 MB plan by listing one buffer many times.
pub const MAX_TRANSFER_BYTES: usize = 16 << 20;

/// The store limits every plugin instance runs under.
fn store_limits(limits: &Limits) -> StoreLimits {
    StoreLimitsBuilder::new()
        .memory_size(limits.memory_bytes)
        .table_elements(MAX_TABLE_ELEMENTS)
        .instances(MAX_INSTANCES)
        .tables(MAX_TABLES)
        .memories(MAX_MEMORIES)
        .trap_on_grow_failure(true)
        .build()
}

/// The most plugin evaluations (a `describe`, or the validate, plan and
/// checks of one feature) that run at once in this process. Each holds a
/// thread and up to its memory limit; beyond this a caller waits up to one
/// CPU budget for a turn and is then told to retry, so a few hundred
/// concurrent plans cannot exhaust the blocking pool or the host's memory.
pub fn max_concurrent_evaluations() -> usize {
    GATE.capacity
}

static GATE: LazyLock<Gate> = LazyLock::new(|| {
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    Gate {
        capacity: (cores * 2).clamp(8, 32),
        running: Mutex::new(0),
        freed: Condvar::new(),
    }
});

/// A counting semaphore over plugin evaluations.
struct Gate {
    capacity: usize,
    running: Mutex<usize>,
    freed: Condvar,
}

/// One running evaluation; dropping it lets the next caller in.
struct Turn;

impl Gate {
    fn enter(&self, patience: Duration) -> Result<Turn, RuntimeError> {
        let deadline = Instant::now() + patience;
        let mut running = self.running.lock().unwrap_or_else(|e| e.into_inner());
        while *running >= self.capacity {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(RuntimeError::Busy(format!(
                    "the planner is busy: {} plugin evaluations are running; retry in a moment",
                    *running
                )));
            }
            running = self
                .freed
                .wait_timeout(running, left)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        *running += 1;
        Ok(Turn)
    }
}

impl Drop for Turn {
    fn drop(&mut self) {
        let mut running = GATE.running.lock().unwrap_or_else(|e| e.into_inner());
        *running -= 1;
        GATE.freed.notify_one();
    }
}

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
        config.max_wasm_stack(1 << 20); // within CALL_STACK_BYTES
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
        // WASI's own timers sleep for real, in a host call that epoch
        // interruption cannot stop: replace them with timers that are ready
        // at once.
        linker.allow_shadowing(true);
        monotonic_clock::add_to_linker::<State, TimelessClock>(&mut linker, |s| Timeless {
            table: &mut s.table,
        })?;
        shadow_file_times(&mut linker)?;
        linker.allow_shadowing(false);
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

/// The WASI filesystem interface as wasmtime-wasi registers it.
const FILESYSTEM_TYPES: &str = "wasi:filesystem/types@0.2.12";

/// Replace `stat` and `stat-at` with WASI's own answers in which every time
/// is the bundle's fixed time ([`crate::bundle::FIXED_TIME_SECS`]): the
/// kernel sets a file's change time when it is installed and its access time
/// when it is read, and either would give a plugin a clock.
fn shadow_file_times(linker: &mut Linker<State>) -> wasmtime::Result<()> {
    use wasmtime_wasi::filesystem::WasiFilesystemView;
    let mut types = linker.instance(FILESYSTEM_TYPES)?;
    types.func_wrap(
        "[method]descriptor.stat",
        |mut store, (fd,): (Resource<fs::Descriptor>,)| {
            let mut view = store.data_mut().filesystem();
            let stat = fs::HostDescriptor::stat(&mut view, fd);
            Ok((fixed_times(&mut view, stat)?,))
        },
    )?;
    types.func_wrap(
        "[method]descriptor.stat-at",
        |mut store, (fd, flags, path): (Resource<fs::Descriptor>, fs::PathFlags, String)| {
            let mut view = store.data_mut().filesystem();
            let stat = fs::HostDescriptor::stat_at(&mut view, fd, flags, path);
            Ok((fixed_times(&mut view, stat)?,))
        },
    )?;
    Ok(())
}

fn fixed_times(
    view: &mut wasmtime_wasi::filesystem::WasiFilesystemCtxView<'_>,
    stat: wasmtime_wasi::p2::FsResult<fs::DescriptorStat>,
) -> wasmtime::Result<Result<fs::DescriptorStat, fs::ErrorCode>> {
    match stat {
        Ok(mut stat) => {
            let fixed = Some(fs::Datetime {
                seconds: crate::bundle::FIXED_TIME_SECS,
                nanoseconds: 0,
            });
            stat.data_access_timestamp = fixed;
            stat.data_modification_timestamp = fixed;
            stat.status_change_timestamp = fixed;
            Ok(Ok(stat))
        }
        Err(e) => Ok(Err(fs::Host::convert_error_code(view, e)?)),
    }
}

/// A component ready to be instantiated.
#[derive(Clone)]
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
        // The plugin's words reach a terminal or a log file: escaped.
        let message = openfactory_core::rules::printable(&message, 2000);
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

/// `wasi:clocks/monotonic-clock` for plugins: the fixed clock, and timers
/// that are due the moment they are set. A plugin's time does not pass, so
/// waiting for it never blocks the host; a plugin that keeps waiting spins
/// and is stopped by its CPU budget like any other loop.
struct Timeless<'a> {
    table: &'a mut ResourceTable,
}

/// The [`HasData`] marker that binds [`Timeless`] into the linker.
struct TimelessClock;

impl HasData for TimelessClock {
    type Data<'a> = Timeless<'a>;
}

/// A timer that is already due.
struct Due;

#[wasmtime_wasi::async_trait]
impl Pollable for Due {
    async fn ready(&mut self) {}
}

impl Timeless<'_> {
    fn due(&mut self) -> wasmtime::Result<Resource<DynPollable>> {
        let timer = self.table.push(Due)?;
        wasmtime_wasi::p2::subscribe(self.table, timer)
    }
}

impl monotonic_clock::Host for Timeless<'_> {
    fn now(&mut self) -> wasmtime::Result<monotonic_clock::Instant> {
        Ok(HostMonotonicClock::now(&FixedClock))
    }
    fn resolution(&mut self) -> wasmtime::Result<monotonic_clock::Duration> {
        Ok(HostMonotonicClock::resolution(&FixedClock))
    }
    fn subscribe_instant(
        &mut self,
        _when: monotonic_clock::Instant,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.due()
    }
    fn subscribe_duration(
        &mut self,
        _when: monotonic_clock::Duration,
    ) -> wasmtime::Result<Resource<DynPollable>> {
        self.due()
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
                .map_err(|e| RuntimeError::Failed(format!("cannot open its assets: {e}")))?;
        }
        let limits = self.runtime.limits;
        let state = State {
            plugin: self.name.clone(),
            wasi: wasi.build(),
            table: {
                let mut table = ResourceTable::new();
                table.set_max_capacity(MAX_RESOURCES);
                table
            },
            limits: store_limits(&limits),
            log_lines: 0,
        };
        let mut store = Store::new(self.runtime.engine(), state);
        store.limiter(|s| &mut s.limits);
        store.set_hostcall_fuel(MAX_TRANSFER_BYTES);
        self.arm(&mut store, self.runtime.limits.cpu);
        let plugin = self.pre.instantiate(&mut store).map_err(|e| self.trap(e))?;
        Ok((store, plugin))
    }

    /// Give the next call `budget` of wall-clock time.
    fn arm(&self, store: &mut Store<State>, budget: Duration) {
        let ticks = (budget.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();
    }

    /// Arm the next call of an evaluation that started at `started`: one
    /// call's budget, or what is left of the evaluation's, whichever is less.
    fn arm_within(&self, store: &mut Store<State>, started: Instant) -> Result<(), RuntimeError> {
        let limits = self.runtime.limits;
        let left = limits.plan.saturating_sub(started.elapsed());
        if left < EPOCH_TICK {
            return Err(self.over_plan_budget());
        }
        self.arm(store, left.min(limits.cpu));
        Ok(())
    }

    fn over_plan_budget(&self) -> RuntimeError {
        RuntimeError::Failed(format!(
            "its calls for one plan ran longer than their budget of {} ms together and were stopped",
            self.runtime.limits.plan.as_millis()
        ))
    }

    fn trap(&self, error: wasmtime::Error) -> RuntimeError {
        let limits = self.runtime.limits;
        if let Some(trap) = error.downcast_ref::<Trap>() {
            return RuntimeError::Failed(match trap {
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
        if text.contains("fuel allocated for hostcalls") {
            return RuntimeError::Failed(format!(
                "it handed the host more than {} MiB in one call",
                MAX_TRANSFER_BYTES >> 20
            ));
        }
        if text.contains("resource table has no free keys") {
            return RuntimeError::Failed(format!(
                "it held more than {MAX_RESOURCES} resources (open files, streams, timers) at once"
            ));
        }
        if text.contains("table") && text.contains("grow") {
            return RuntimeError::Failed(format!(
                "it asked for a table larger than its limit of {MAX_TABLE_ELEMENTS} elements"
            ));
        }
        if text.contains("memory")
            && (text.contains("grow") || text.contains("limit") || text.contains("exceed"))
        {
            return RuntimeError::Failed(format!(
                "it asked for more than its memory limit of {} MiB",
                limits.memory_bytes >> 20
            ));
        }
        RuntimeError::Failed(format!(
            "it failed: {}",
            text.chars().take(500).collect::<String>()
        ))
    }

    /// A turn among the evaluations running in this process: waited for at
    /// most a tenth of the CPU budget, so
    /// that a call ends within its budget and that tenth even when every
    /// turn is taken (beyond that the caller is told to retry).
    fn turn(&self) -> Result<Turn, RuntimeError> {
        GATE.enter(self.runtime.limits.cpu / 10)
    }

    /// Run `call` on a thread of its own, holding `turn` until it ends, and
    /// wait for its answer at most `budget` and [`WATCHDOG_GRACE`]. Guest
    /// code is stopped within the budget by epoch interruption; this bounds
    /// the rest, the host's own work inside the call.
    fn watched<T: Send + 'static>(
        &self,
        turn: Turn,
        budget: Duration,
        call: impl FnOnce(&Prepared) -> Result<T, RuntimeError> + Send + 'static,
    ) -> Result<T, RuntimeError> {
        let (answer, answered) = std::sync::mpsc::sync_channel(1);
        let this = self.clone();
        std::thread::Builder::new()
            .name("plugin-call".into())
            .stack_size(CALL_STACK_BYTES)
            .spawn(move || {
                let _turn = turn;
                let _ = answer.send(call(&this));
            })
            .map_err(|e| {
                RuntimeError::Busy(format!(
                    "the planner cannot start a thread ({e}); retry in a moment"
                ))
            })?;
        let limit = budget + WATCHDOG_GRACE;
        answered.recv_timeout(limit).unwrap_or_else(|_| {
            tracing::warn!(plugin = %self.name, "a plugin call did not end within {limit:?}; abandoned");
            Err(RuntimeError::Failed(format!(
                "it did not answer within {} ms: the host's work on its behalf (opening or reading its assets, writing its log) did not finish, and the call was abandoned",
                limit.as_millis()
            )))
        })
    }

    pub fn describe(&self) -> Result<FeatureInfo, RuntimeError> {
        let turn = self.turn()?;
        self.watched(turn, self.runtime.limits.cpu, Prepared::describe_now)
    }

    fn describe_now(&self) -> Result<FeatureInfo, RuntimeError> {
        let (mut store, plugin) = self.instantiate()?;
        let info = plugin
            .openfactory_feature_feature()
            .call_describe(&mut store)
            .map_err(|e| self.trap(e))?;
        let options_schema = serde_json::from_str(&info.options_schema)
            .map_err(|e| RuntimeError::Failed(format!("its options schema is not JSON: {e}")))?;
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

    /// Run `validate` and, when asked and it found no error, `plan` and
    /// `checks`, on one fresh instance, within one evaluation budget
    /// ([`Limits::plan`]) as well as each call's own ([`Limits::cpu`]).
    pub fn evaluate(&self, ctx: &PlanContext, plan: bool) -> Result<Evaluation, RuntimeError> {
        let turn = self.turn()?;
        let ctx = ctx.clone();
        self.watched(turn, self.runtime.limits.plan, move |this| {
            this.evaluate_now(&ctx, plan)
        })
    }

    fn evaluate_now(&self, ctx: &PlanContext, plan: bool) -> Result<Evaluation, RuntimeError> {
        let started = Instant::now();
        let (mut store, plugin) = self.instantiate()?;
        self.arm_within(&mut store, started)?;
        let over = |e: RuntimeError| {
            if started.elapsed() + EPOCH_TICK >= self.runtime.limits.plan {
                self.over_plan_budget()
            } else {
                e
            }
        };
        let api = plugin.openfactory_feature_feature();
        let wit_ctx = wit::PlanContext {
            recipe: ctx.recipe.to_string(),
            options: ctx.options.to_string(),
        };
        let max = self.runtime.limits.max_items;

        let found = api
            .call_validate(&mut store, &wit_ctx)
            .map_err(|e| over(self.trap(e)))?;
        let too_many = |what: &str, n: usize| {
            RuntimeError::Failed(format!("it returned {n} {what}; the limit is {max}"))
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

        self.arm_within(&mut store, started)?;
        match api
            .call_plan(&mut store, &wit_ctx)
            .map_err(|e| over(self.trap(e)))?
        {
            Ok(steps) if steps.len() > max => return Err(too_many("steps", steps.len())),
            Ok(steps) => evaluation.steps = steps.into_iter().map(step).collect(),
            Err(problems) => {
                evaluation
                    .diagnostics
                    .extend(problems.into_iter().take(max).map(diagnostic));
                // A refusal is an error even when the plugin called every
                // problem a warning: otherwise the plan would be valid with
                // this feature's steps silently missing.
                if !evaluation.diagnostics.iter().any(Diagnostic::is_error) {
                    evaluation.diagnostics.push(Diagnostic::error(
                        "plan-refused",
                        "",
                        "the plugin refused to plan this recipe without saying why as an error (it reported only warnings)",
                    ).suggest("this is a fault in the plugin; read its warnings, and report it to the plugin's author"));
                }
                return Ok(evaluation);
            }
        }
        self.arm_within(&mut store, started)?;
        let checks = api
            .call_checks(&mut store, &wit_ctx)
            .map_err(|e| over(self.trap(e)))?;
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
        RuntimeError::Failed(format!(
            "its component does not compile: {}",
            format!("{e:#}").chars().take(500).collect::<String>()
        ))
    })?;
    let prepared = runtime.prepare(name, &component, assets).map_err(|e| {
        RuntimeError::Failed(format!(
            "its component does not match the `openfactory:feature` world this host provides: {}",
            format!("{e:#}").chars().take(500).collect::<String>()
        ))
    })?;
    Ok((prepared, cached))
}

#[cfg(test)]
mod tests {
    //! The store limits, against raw core modules: the SDK cannot emit
    //! `table.grow` or a second memory, so the hostile fixture cannot try
    //! these; a hand-assembled module can.

    use super::*;

    /// A module of one `() -> i32` function `run` with `body`, after the
    /// given table and memory sections.
    fn module(engine: &Engine, tables: &[u8], memories: &[u8], body: &[u8]) -> wasmtime::Module {
        fn section(id: u8, content: &[u8]) -> Vec<u8> {
            assert!(content.len() < 128);
            [&[id, content.len() as u8][..], content].concat()
        }
        let code = [&[body.len() as u8 + 1, 0][..], body].concat();
        let mut wasm = b"\0asm\x01\0\0\0".to_vec();
        wasm.extend(section(1, &[1, 0x60, 0, 1, 0x7f]));
        wasm.extend(section(3, &[1, 0]));
        if !tables.is_empty() {
            wasm.extend(section(4, tables));
        }
        if !memories.is_empty() {
            wasm.extend(section(5, memories));
        }
        wasm.extend(section(7, &[1, 3, b'r', b'u', b'n', 0, 0]));
        wasm.extend(section(10, &[&[1][..], &code].concat()));
        wasmtime::Module::new(engine, &wasm).expect("the module is valid")
    }

    fn run(module: &wasmtime::Module) -> Result<i32, String> {
        let limits = Limits::default();
        let mut store = Store::new(module.engine(), store_limits(&limits));
        store.limiter(|s| s);
        store.set_epoch_deadline(1000);
        let instance = wasmtime::Instance::new(&mut store, module, &[])
            .map_err(|e| format!("instantiation: {e:#}"))?;
        let run = instance
            .get_typed_func::<(), i32>(&mut store, "run")
            .unwrap();
        run.call(&mut store, ()).map_err(|e| format!("{e:#}"))
    }

    #[test]
    fn one_table_grow_cannot_cost_gigabytes() {
        let runtime = Runtime::new(Limits::default()).unwrap();
        // (table 0 funcref) (func (result i32)
        //   (table.grow 0 (ref.null func) (i32.const 100_000_000)))
        let grow = module(
            runtime.engine(),
            &[1, 0x70, 0, 0],
            &[],
            &[
                0xd0, 0x70, 0x41, 0x80, 0xc2, 0xd7, 0x2f, 0xfc, 0x0f, 0, 0x0b,
            ],
        );
        let started = Instant::now();
        let result = run(&grow);
        let error = result.expect_err("the table grew to 100 million elements");
        println!(
            "a table.grow of 100 million elements was refused after {:?}",
            started.elapsed()
        );
        assert!(error.contains("table"), "{error}");
        // A table within the bound still grows.
        let small = module(
            runtime.engine(),
            &[1, 0x70, 0, 0],
            &[],
            &[0xd0, 0x70, 0x41, 0x80, 0x20, 0xfc, 0x0f, 0, 0x0b],
        );
        assert_eq!(run(&small), Ok(0));
    }

    #[test]
    fn one_linear_memory_in_all() {
        let runtime = Runtime::new(Limits::default()).unwrap();
        // Two memories of 64 MiB (1024 pages) each: twice the memory limit.
        let two = module(
            runtime.engine(),
            &[],
            &[2, 0, 0x80, 0x08, 0, 0x80, 0x08],
            &[0x41, 0, 0x0b],
        );
        let error = run(&two).expect_err("a second memory was accepted");
        assert!(error.contains("memor"), "{error}");
        let one = module(runtime.engine(), &[], &[1, 0, 0x80, 0x08], &[0x41, 0, 0x0b]);
        assert_eq!(run(&one), Ok(0));
    }
}
