//! Prometheus metrics (`/metrics`): sessions by state, prefixes, routes programmed, CNI
//! latency, IPAM blocks and addresses.

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use gingham_cni::Command;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct CommandLabel {
    pub command: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StateLabel {
    pub state: String,
}

pub struct Metrics {
    registry: Registry,
    cni_latency: Family<CommandLabel, Histogram>,
    pub sessions: Family<StateLabel, Gauge>,
    pub prefixes_received: Gauge,
    pub prefixes_advertised: Gauge,
    pub routes_programmed: Gauge<u64, AtomicU64>,
    ipam_blocks: Gauge,
    ipam_addresses: Gauge,
    pub reconciles: Counter,
    /// Routes the FIB could not install, by reason, counted once per new reason.
    pub route_failures: Family<crate::fib::ReasonLabel, Counter>,
    pub routes_not_installed: Gauge<u64, AtomicU64>,
    /// Addresses released because their pod's interface vanished without a DEL.
    pub reclaimed: Counter,
    /// Configured peers whose session is not started (a password Secret or key is missing).
    pub peers_blocked: Gauge,
    /// Tasks alive in the agent's runtime: flat over time, or something leaks (the soak
    /// benchmark watches it).
    pub runtime_tasks: Gauge,
}

impl Metrics {
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("gingham");
        let cni_latency = Family::<CommandLabel, Histogram>::new_with_constructor(|| {
            Histogram::new([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5])
        });
        registry.register("cni_request_seconds", "CNI request latency in the agent", cni_latency.clone());
        let sessions = Family::<StateLabel, Gauge>::default();
        registry.register("bgp_sessions", "BGP sessions by state", sessions.clone());
        let prefixes_received = Gauge::default();
        registry.register("bgp_prefixes_received", "Prefixes received from all peers", prefixes_received.clone());
        let prefixes_advertised = Gauge::default();
        registry.register("bgp_prefixes_advertised", "Prefixes advertised to all peers", prefixes_advertised.clone());
        let routes_programmed = Gauge::<u64, AtomicU64>::default();
        registry.register("routes_programmed", "Kernel routes the agent wants installed", routes_programmed.clone());
        let ipam_blocks = Gauge::default();
        registry.register("ipam_blocks", "Address blocks affine to this node", ipam_blocks.clone());
        let ipam_addresses = Gauge::default();
        registry.register("ipam_addresses_in_use", "Addresses in use on this node", ipam_addresses.clone());
        let reconciles = Counter::default();
        registry.register("reconciles", "Reconcile passes", reconciles.clone());
        let route_failures = Family::<crate::fib::ReasonLabel, Counter>::default();
        registry.register("route_failures", "Routes that could not be installed, by reason", route_failures.clone());
        let routes_not_installed = Gauge::<u64, AtomicU64>::default();
        registry.register("routes_not_installed", "Wanted kernel routes that are not installed now", routes_not_installed.clone());
        let reclaimed = Counter::default();
        registry.register("ipam_reclaimed_addresses", "Addresses released because their pod vanished without a CNI DEL", reclaimed.clone());
        let peers_blocked = Gauge::default();
        registry.register(
            "bgp_peers_not_started",
            "Configured BGP peers not started because their configuration is incomplete (see ginghamctl node status)",
            peers_blocked.clone(),
        );
        let runtime_tasks = Gauge::default();
        registry.register("runtime_tasks", "Tasks alive in the agent's async runtime", runtime_tasks.clone());
        Metrics {
            runtime_tasks,
            peers_blocked,
            reclaimed,
            registry,
            cni_latency,
            sessions,
            prefixes_received,
            prefixes_advertised,
            routes_programmed,
            ipam_blocks,
            ipam_addresses,
            reconciles,
            route_failures,
            routes_not_installed,
        }
    }

    pub fn observe_cni(&self, command: Command, took: Duration, ok: bool) {
        let label = CommandLabel { command: format!("{command:?}").to_uppercase(), result: if ok { "ok" } else { "error" }.into() };
        self.cni_latency.get_or_create(&label).observe(took.as_secs_f64());
    }

    pub fn set_ipam(&self, blocks: usize, addresses: usize) {
        self.ipam_blocks.set(blocks as i64);
        self.ipam_addresses.set(addresses as i64);
    }

    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry).expect("writing to a String cannot fail");
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}
