//! Prometheus metrics, served at `/metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ToolLabels {
    pub tool: String,
    pub outcome: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabels {
    pub transport: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabels {
    /// A build's or test run's final status.
    pub status: &'static str,
}

pub struct Metrics {
    registry: Registry,
    pub tool_calls: Family<ToolLabels, Counter>,
    pub sessions_opened: Family<TransportLabels, Counter>,
    pub sse_sessions: Gauge,
    pub builds_finished: Family<StatusLabels, Counter>,
    pub builds_running: Gauge,
    /// Sum of finished builds' wall-clock seconds, by status (with the count: the mean).
    pub build_seconds: Family<StatusLabels, Counter<f64>>,
    /// VMs found dead without having been asked to stop.
    pub vms_reaped: Counter,
    pub test_runs_finished: Family<StatusLabels, Counter>,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("openfactory");
        let tool_calls = Family::<ToolLabels, Counter>::default();
        let sessions_opened = Family::<TransportLabels, Counter>::default();
        let sse_sessions = Gauge::default();
        let builds_finished = Family::<StatusLabels, Counter>::default();
        let builds_running = Gauge::default();
        let build_seconds = Family::<StatusLabels, Counter<f64>>::default();
        let vms_reaped = Counter::default();
        let test_runs_finished = Family::<StatusLabels, Counter>::default();
        registry.register(
            "test_runs_finished",
            "Test runs that ended, by status",
            test_runs_finished.clone(),
        );
        registry.register(
            "vms_reaped",
            "VMs found stopped without having been asked to (crashed or killed)",
            vms_reaped.clone(),
        );
        registry.register(
            "builds_finished",
            "Builds that ended, by status",
            builds_finished.clone(),
        );
        registry.register(
            "builds_running",
            "Builds running now",
            builds_running.clone(),
        );
        registry.register(
            "build_seconds",
            "Wall-clock seconds of finished builds, by status",
            build_seconds.clone(),
        );
        registry.register(
            "mcp_tool_calls",
            "MCP tool calls by tool and outcome",
            tool_calls.clone(),
        );
        registry.register(
            "mcp_sessions_opened",
            "MCP sessions opened by transport",
            sessions_opened.clone(),
        );
        registry.register(
            "mcp_sse_sessions",
            "Open legacy SSE sessions",
            sse_sessions.clone(),
        );
        Metrics {
            registry,
            tool_calls,
            sessions_opened,
            sse_sessions,
            builds_finished,
            builds_running,
            build_seconds,
            vms_reaped,
            test_runs_finished,
        }
    }

    pub fn test_run_finished(&self, status: &'static str) {
        self.test_runs_finished
            .get_or_create(&StatusLabels { status })
            .inc();
    }

    pub fn build_finished(&self, status: &'static str, seconds: f64) {
        let labels = StatusLabels { status };
        self.builds_finished.get_or_create(&labels).inc();
        self.build_seconds.get_or_create(&labels).inc_by(seconds);
    }

    pub fn tool(&self, tool: &str, ok: bool) {
        self.tool_calls
            .get_or_create(&ToolLabels {
                tool: tool.into(),
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}
