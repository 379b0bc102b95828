//! Prometheus metrics (`/metrics`): sessions by state, per-peer BGP state, prefixes, UPDATEs
//! and NOTIFICATIONs, routes programmed and FIB operations, CNI latency, IPAM blocks and
//! addresses. Names follow Prometheus' conventions (`promtool check metrics` passes; a test
//! runs it on a live agent).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use gingham_cni::Command;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::{ConstGauge, Gauge};
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

/// One BGP peer as the last scrape saw it.
#[derive(Clone, Debug, Default)]
pub struct PeerRow {
    pub peer: String,
    /// `mesh`, `route-reflector`, `global`, `node`.
    pub kind: String,
    pub state: String,
    pub uptime_seconds: u64,
    pub prefixes_received: u64,
    pub prefixes_accepted: u64,
    pub prefixes_advertised: u64,
    pub updates_received: u64,
    pub updates_sent: u64,
    pub notifications: gingham_bgp::session::Notifications,
}

/// One BFD session as the last scrape saw it.
#[derive(Clone, Debug, Default)]
pub struct BfdRow {
    pub peer: String,
    pub state: String,
    pub downs: u64,
    pub packets_in: u64,
    pub packets_out: u64,
}

/// What is read from the owner tasks at each scrape and written out as constant metrics:
/// per-peer series come and go with the peers, and the counters are the owners' own.
#[derive(Debug, Default)]
pub struct Snapshot {
    pub peers: Vec<PeerRow>,
    pub bfd: Vec<BfdRow>,
    /// Kernel route installs, removals and drift repairs since the agent started.
    pub fib_installed: u64,
    pub fib_removed: u64,
    pub fib_repaired: u64,
    pub fib_regrouped: u64,
}

#[derive(Clone, Debug, Default)]
pub struct SnapshotCollector(pub Arc<Mutex<Snapshot>>);

/// A per-peer metric: name, help, and how to read it from a row.
type PeerMetric = (&'static str, &'static str, fn(&PeerRow) -> u64);

const STATES: [&str; 6] = ["Idle", "Connect", "Active", "OpenSent", "OpenConfirm", "Established"];
const BFD_STATES: [&str; 4] = ["AdminDown", "Down", "Init", "Up"];

/// A gauge family with one series per possible state for each row: 1 for the row's current
/// state, 0 for the others (so a query for a state finds every session, at 0 or 1).
fn encode_states<'a>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    states: &[&str],
    rows: impl Iterator<Item = (Vec<(&'static str, String)>, &'a str)>,
) -> Result<(), std::fmt::Error> {
    let mut family = encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
    for (labels, current) in rows {
        for state in states {
            let mut l = labels.clone();
            l.push(("state", state.to_string()));
            ConstGauge::new(i64::from(current == *state)).encode(family.encode_family(&l)?)?;
        }
    }
    Ok(())
}

impl Collector for SnapshotCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let snapshot = self.0.lock().expect("metrics lock");
        let labels = |r: &PeerRow| vec![("peer", r.peer.clone()), ("peer_type", r.kind.clone())];
        encode_states(
            &mut encoder,
            "bgp_peer_state",
            "BGP session state per peer: 1 for the current state",
            &STATES,
            snapshot.peers.iter().map(|r| (labels(r), r.state.as_str())),
        )?;
        let gauges: [PeerMetric; 4] = [
            ("bgp_peer_uptime_seconds", "Seconds the session has been Established (0 when it is not)", |r| r.uptime_seconds),
            ("bgp_peer_prefixes_received", "Prefixes the peer announces to us now", |r| r.prefixes_received),
            ("bgp_peer_prefixes_accepted", "Prefixes received from the peer that passed import checks and policy", |r| r.prefixes_accepted),
            ("bgp_peer_prefixes_advertised", "Prefixes advertised to the peer now", |r| r.prefixes_advertised),
        ];
        for (name, help, value) in gauges {
            let mut family = encoder.encode_descriptor(name, help, None, ConstGauge::new(0i64).metric_type())?;
            for r in &snapshot.peers {
                ConstGauge::new(value(r) as i64).encode(family.encode_family(&labels(r))?)?;
            }
        }
        let counters: [PeerMetric; 2] = [
            ("bgp_peer_updates_received", "UPDATE messages received from the peer", |r| r.updates_received),
            ("bgp_peer_updates_sent", "UPDATE messages sent to the peer", |r| r.updates_sent),
        ];
        for (name, help, value) in counters {
            let mut family = encoder.encode_descriptor(name, help, None, ConstCounter::new(0u64).metric_type())?;
            for r in &snapshot.peers {
                ConstCounter::new(value(r)).encode(family.encode_family(&labels(r))?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "bgp_peer_notifications",
                "NOTIFICATION messages by direction, error code and subcode (RFC 4271 4.5)",
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for r in &snapshot.peers {
                for (direction, counts) in [("sent", &r.notifications.sent), ("received", &r.notifications.received)] {
                    for ((code, subcode), n) in counts {
                        let mut l = labels(r);
                        l.extend([("direction", direction.to_string()), ("code", code.to_string()), ("subcode", subcode.to_string())]);
                        ConstCounter::new(*n).encode(family.encode_family(&l)?)?;
                    }
                }
            }
        }
        encode_states(
            &mut encoder,
            "bfd_session_state",
            "BFD session state per peer: 1 for the current state",
            &BFD_STATES,
            snapshot.bfd.iter().map(|r| (vec![("peer", r.peer.clone())], r.state.as_str())),
        )?;
        {
            let mut family = encoder.encode_descriptor(
                "bfd_session_downs",
                "BFD sessions going from Up to Down (path failures and administrative downs)",
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for r in &snapshot.bfd {
                ConstCounter::new(r.downs).encode(family.encode_family(&[("peer", r.peer.clone())])?)?;
            }
        }
        {
            let mut family = encoder.encode_descriptor(
                "bfd_control_packets",
                "BFD control packets by direction (received: accepted by the session)",
                None,
                ConstCounter::new(0u64).metric_type(),
            )?;
            for r in &snapshot.bfd {
                for (direction, n) in [("received", r.packets_in), ("sent", r.packets_out)] {
                    ConstCounter::new(n)
                        .encode(family.encode_family(&[("peer", r.peer.clone()), ("direction", direction.to_string())])?)?;
                }
            }
        }
        let mut family = encoder.encode_descriptor(
            "fib_route_operations",
            "Kernel route operations by kind: install, remove (with the routes the kernel removed with a gone gateway's nexthop object), repair (drift corrected), regroup (routes that gained gateways through their nexthop group, no route written)",
            None,
            ConstCounter::new(0u64).metric_type(),
        )?;
        for (operation, n) in [
            ("install", snapshot.fib_installed),
            ("remove", snapshot.fib_removed),
            ("repair", snapshot.fib_repaired),
            ("regroup", snapshot.fib_regrouped),
        ] {
            ConstCounter::new(n).encode(family.encode_family(&[("operation", operation)])?)?;
        }
        Ok(())
    }
}

pub struct Metrics {
    registry: Registry,
    /// Filled before each scrape from the speaker's and the FIB's snapshots.
    pub snapshot: SnapshotCollector,
    cni_latency: Family<CommandLabel, Histogram>,
    ipam_assign: Histogram,
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
        let ipam_assign = Histogram::new([0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0]);
        registry.register(
            "ipam_assign_seconds",
            "Time a CNI ADD waits for its addresses: the IPAM writer's queue and the datastore writes",
            ipam_assign.clone(),
        );
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
        for reason in crate::fib::resolve::Refusal::LABELS {
            drop(route_failures.get_or_create(&crate::fib::ReasonLabel { reason: reason.to_string() }));
        }
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
        let snapshot = SnapshotCollector::default();
        registry.register_collector(Box::new(snapshot.clone()));
        Metrics {
            snapshot,
            runtime_tasks,
            peers_blocked,
            reclaimed,
            registry,
            cni_latency,
            ipam_assign,
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

    pub fn observe_ipam_assign(&self, took: Duration) {
        self.ipam_assign.observe(took.as_secs_f64());
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

/// OpenMetrics text as the Prometheus text format (0.0.4): there a counter's HELP and TYPE
/// name the series itself (`x_total`), not the family (`x`), and there is no `# EOF`.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> =
        openmetrics.lines().filter_map(|l| l.strip_prefix("# TYPE ")?.strip_suffix(" counter")).collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let header = ["# HELP ", "# TYPE "].into_iter().find_map(|h| Some((h, line.strip_prefix(h)?)));
        match header {
            Some((h, rest)) => {
                let (name, tail) = rest.split_once(' ').unwrap_or((rest, ""));
                let suffix = if counters.contains(name) { "_total" } else { "" };
                out.push_str(&format!("{h}{name}{suffix} {tail}"));
            }
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_series_in_the_prometheus_text_format() {
        let m = Metrics::new();
        m.reconciles.inc();
        let text = prometheus_text(&m.encode());
        assert!(
            text.contains(
                "# HELP gingham_reconciles_total Reconcile passes.\n# TYPE gingham_reconciles_total counter\ngingham_reconciles_total 1\n"
            ),
            "{text}"
        );
        assert!(text.contains("# TYPE gingham_runtime_tasks gauge\n"), "gauges keep their names: {text}");
        assert!(!text.contains("# EOF"));
    }
}
