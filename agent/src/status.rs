//! The status endpoint (`--status-addr`): `/healthz`, `/readyz`, `/metrics`, `/status`. A tiny
//! HTTP/1.1 responder (GET only, one request per connection) is all probes and `ginghamctl`
//! need, without a web framework in the agent.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

use std::time::{Duration, Instant};

use gingham_api::status::{NodeStatus, PeerBfdStatus, PeerStatus};
use gingham_bgp::fsm::State;
use gingham_bgp::speaker::SpeakerHandle;
use ipnetwork::IpNetwork;
use tokio::sync::watch;

use crate::controller::ControllerStatus;
use crate::fib::FibHandle;
use crate::metrics::{Metrics, StateLabel};
use crate::peers::PeerKind;

fn kind_name(kind: PeerKind) -> String {
    serde_json::to_value(kind).ok().and_then(|v| v.as_str().map(String::from)).unwrap_or_default()
}

/// How a running session came to be, as `/status` and the metrics name it; a session the
/// controller does not know (yet) counts as a global peer.
fn peer_kind(controller: &ControllerStatus, addr: &std::net::IpAddr) -> PeerKind {
    controller.peers.get(addr).map_or(PeerKind::Global, |p| p.kind)
}

/// What the endpoint reads from; every part is a handle to a task that owns its state.
pub struct StatusSource {
    pub node: String,
    pub address: IpNetwork,
    pub started: Instant,
    pub speaker: SpeakerHandle,
    pub bfd: gingham_bfd::driver::BfdHandle,
    pub fib: FibHandle,
    pub controller: watch::Receiver<ControllerStatus>,
    pub metrics: Arc<Metrics>,
}

impl StatusSource {
    pub async fn status(&self) -> NodeStatus {
        let statuses = self.speaker.peers().await.unwrap_or_default();
        let bfd = self.bfd_sessions().await;
        let controller = self.controller.borrow().clone();
        let mut peers: Vec<PeerStatus> = statuses
            .iter()
            .map(|s| {
                let problems = controller.peers.get(&s.config.address).map(|p| p.problems.clone()).unwrap_or_default();
                PeerStatus {
                    address: s.config.address.to_string(),
                    as_number: s.config.peer_as,
                    kind: kind_name(peer_kind(&controller, &s.config.address)),
                    state: format!("{:?}", s.state),
                    since_seconds: s.uptime.map(|u| u.as_secs()),
                    info: s.last_error.clone().unwrap_or_default(),
                    prefixes_received: s.prefixes_received as u64,
                    prefixes_accepted: s.prefixes_accepted as u64,
                    prefixes_advertised: s.prefixes_advertised as u64,
                    problems,
                    bfd: bfd.get(&s.config.address).map(|b| PeerBfdStatus {
                        state: format!("{:?}", b.state),
                        diagnostic: b.diagnostic.to_string(),
                        since_seconds: b.since.as_secs(),
                        detection_time_ms: b.detection_time.map(|d| d.as_millis() as u64),
                        downs: b.downs,
                        holding_bgp: s.waiting_for_bfd,
                    }),
                }
            })
            .collect();
        // Peers the speaker does not run, with the reason: an operator looks for them here.
        for (addr, p) in &controller.peers {
            let Some(why) = &p.blocked else { continue };
            peers.push(PeerStatus {
                address: addr.to_string(),
                as_number: p.as_number,
                kind: kind_name(p.kind),
                state: "Idle".into(),
                info: format!("not started: {why}"),
                problems: p.problems.clone(),
                ..PeerStatus::default()
            });
        }
        peers.sort_by_key(|p| p.address.parse::<std::net::IpAddr>().ok());
        NodeStatus {
            node: self.node.clone(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            address: self.address.to_string(),
            ready: ready(self.started, &statuses, &controller),
            datastore: controller.datastore.clone().err().unwrap_or_else(|| "ok".into()),
            synced: self.speaker.is_synced(),
            peers,
            exports: controller.exports.iter().map(|p| p.to_string()).collect(),
            routes: self.fib.stats().await,
            nat_outgoing: controller.nat.clone().err().unwrap_or_else(|| "ok".into()),
        }
    }

    async fn bfd_sessions(&self) -> std::collections::HashMap<std::net::IpAddr, gingham_bfd::driver::SessionStatus> {
        self.bfd.sessions().await.unwrap_or_default().into_iter().map(|s| (s.peer, s)).collect()
    }

    pub async fn ready(&self) -> bool {
        let statuses = self.speaker.peers().await.unwrap_or_default();
        ready(self.started, &statuses, &self.controller.borrow())
    }

    /// Brings the BGP and route gauges up to date before a scrape.
    pub async fn refresh_metrics(&self) {
        let statuses = self.speaker.peers().await.unwrap_or_default();
        self.metrics.sessions.clear();
        for s in &statuses {
            self.metrics.sessions.get_or_create(&StateLabel { state: format!("{:?}", s.state) }).inc();
        }
        self.metrics.prefixes_received.set(statuses.iter().map(|s| s.prefixes_received as i64).sum());
        self.metrics.prefixes_advertised.set(statuses.iter().map(|s| s.prefixes_advertised as i64).sum());
        let fib = self.fib.stats().await;
        let bfd = self
            .bfd
            .sessions()
            .await
            .unwrap_or_default()
            .into_iter()
            .map(|b| crate::metrics::BfdRow {
                peer: b.peer.to_string(),
                state: format!("{:?}", b.state),
                downs: b.downs,
                packets_in: b.packets_in,
                packets_out: b.packets_out,
            })
            .collect();
        let controller = self.controller.borrow();
        let rows = statuses
            .iter()
            .map(|s| crate::metrics::PeerRow {
                peer: s.config.address.to_string(),
                kind: kind_name(peer_kind(&controller, &s.config.address)),
                state: format!("{:?}", s.state),
                uptime_seconds: s.uptime.map_or(0, |u| u.as_secs()),
                prefixes_received: s.prefixes_received as u64,
                prefixes_accepted: s.prefixes_accepted as u64,
                prefixes_advertised: s.prefixes_advertised as u64,
                updates_received: s.updates_received,
                updates_sent: s.updates_sent,
                notifications: s.notifications.clone(),
            })
            .collect();
        drop(controller);
        {
            let mut snapshot = self.metrics.snapshot.0.lock().expect("metrics lock");
            snapshot.peers = rows;
            snapshot.bfd = bfd;
            (snapshot.fib_installed, snapshot.fib_removed, snapshot.fib_repaired, snapshot.fib_regrouped) =
                (fib.programmed, fib.removed, fib.repaired, fib.regrouped);
        }
        self.metrics.routes_programmed.set(fib.wanted);
        self.metrics.routes_not_installed.set(fib.not_installed);
        self.metrics.runtime_tasks.set(tokio::runtime::Handle::current().metrics().num_alive_tasks() as i64);
    }
}

/// How often the reporter looks for a change worth writing.
const REPORT_CHECK: Duration = Duration::from_secs(5);
/// A report is rewritten at least this often, so its age tells a dead agent from a quiet one.
const REPORT_REFRESH: Duration = Duration::from_secs(300);

/// Keeps this node's GinghamNodeStatus current: written when what an operator looks at changes
/// (checked every 5 s) and every 5 minutes besides. Nothing watches the kind, so a write costs
/// the datastore one request, never a fan-out to the other nodes.
pub async fn report<D: gingham_api::datastore::Datastore>(source: Arc<StatusSource>, store: gingham_api::datastore::Store<D>) {
    use gingham_api::status::GinghamNodeStatus;
    let mut last: Option<(NodeStatus, Instant)> = None;
    let mut warned = false;
    loop {
        let status = source.status().await;
        let significant = status.significant();
        let due = match &last {
            None => true,
            Some((s, at)) => *s != significant || at.elapsed() >= REPORT_REFRESH,
        };
        if due {
            let mut report = GinghamNodeStatus::report(status);
            let written = match store.get::<GinghamNodeStatus>(&source.node).await {
                Ok(Some(old)) => {
                    report.metadata.resource_version = old.metadata.resource_version;
                    store.update(&report).await.map(|_| ())
                }
                Ok(None) => store.create(&report).await.map(|_| ()),
                Err(e) => Err(e),
            };
            match written {
                Ok(()) => {
                    last = Some((significant, Instant::now()));
                    warned = false;
                }
                // A conflict or an outage: the next round writes again.
                Err(e) if !warned => {
                    tracing::warn!(error = %e, "could not write this node's GinghamNodeStatus; retrying");
                    warned = true;
                }
                Err(_) => {}
            }
        }
        tokio::time::sleep(REPORT_CHECK).await;
    }
}

/// Calico's readiness rule: during the first 30 s every peer must be Established, afterwards
/// at least one (when there are any); the datastore must be usable.
fn ready(started: Instant, statuses: &[gingham_bgp::speaker::PeerStatus], controller: &ControllerStatus) -> bool {
    if controller.datastore.is_err() {
        return false;
    }
    let up = statuses.iter().filter(|s| s.state == State::Established).count();
    if statuses.is_empty() {
        return true;
    }
    if started.elapsed() < Duration::from_secs(30) {
        up == statuses.len()
    } else {
        up > 0
    }
}

pub async fn serve(addr: SocketAddr, agent: Arc<StatusSource>) -> anyhow::Result<()> {
    serve_paths(addr, agent, Paths::All).await
}

/// `--metrics-addr`: `/metrics` alone, for an address Prometheus can reach; status and health
/// stay on the status address.
pub async fn serve_metrics(addr: SocketAddr, agent: Arc<StatusSource>) {
    if let Err(e) = serve_paths(addr, agent, Paths::MetricsOnly).await {
        tracing::error!(error = %e, "metrics endpoint stopped");
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Paths {
    All,
    MetricsOnly,
}

async fn serve_paths(addr: SocketAddr, agent: Arc<StatusSource>, paths: Paths) -> anyhow::Result<()> {
    let what = if paths == Paths::All { "status" } else { "metrics" };
    let listener = TcpListener::bind(addr).await.map_err(|e| anyhow::anyhow!("{what} endpoint {addr}: {e}"))?;
    tracing::info!(%addr, "{what} endpoint listening");
    loop {
        let (mut conn, _) = listener.accept().await?;
        let agent = agent.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            let mut len = 0;
            while len < buf.len() {
                match conn.read(&mut buf[len..]).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => len += n,
                }
                if buf[..len].windows(4).any(|w| w == b"\r\n\r\n") {
                    break;
                }
            }
            let request = String::from_utf8_lossy(&buf[..len]);
            let path = request.split_whitespace().nth(1).unwrap_or("/");
            let openmetrics = request
                .lines()
                .any(|l| l.to_ascii_lowercase().starts_with("accept:") && l.to_ascii_lowercase().contains("application/openmetrics-text"));
            let (status, content_type, body) = match (paths, path) {
                (Paths::MetricsOnly, p) if p != "/metrics" => ("404 Not Found", "text/plain", "only /metrics here\n".into()),
                _ => route(&agent, path, openmetrics).await,
            };
            let response = format!(
                "HTTP/1.1 {status}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = conn.write_all(response.as_bytes()).await;
            let _ = conn.shutdown().await;
        });
    }
}

/// `openmetrics`: the client's Accept header asks for OpenMetrics (Prometheus does); others
/// (promtool, curl, older scrapers) get the Prometheus text format.
async fn route(agent: &StatusSource, path: &str, openmetrics: bool) -> (&'static str, &'static str, String) {
    match path {
        "/healthz" => ("200 OK", "text/plain", "ok\n".into()),
        "/readyz" => {
            if agent.ready().await {
                ("200 OK", "text/plain", "ready\n".into())
            } else {
                ("503 Service Unavailable", "text/plain", "not ready\n".into())
            }
        }
        "/metrics" => {
            agent.refresh_metrics().await;
            match openmetrics {
                true => ("200 OK", "application/openmetrics-text; version=1.0.0; charset=utf-8", agent.metrics.encode()),
                false => ("200 OK", "text/plain; version=0.0.4; charset=utf-8", crate::metrics::prometheus_text(&agent.metrics.encode())),
            }
        }
        "/status" => {
            let body = serde_json::to_string_pretty(&agent.status().await).expect("a status serialises");
            ("200 OK", "application/json", format!("{body}\n"))
        }
        _ => ("404 Not Found", "text/plain", "try /healthz, /readyz, /metrics or /status\n".into()),
    }
}
