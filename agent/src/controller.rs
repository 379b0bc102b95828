//! The controller: the owner of what this node has applied. It waits for the cluster cache or
//! the node's own allocations to change, computes the desired state ([`crate::desired`], pure)
//! and sends the difference on: sessions and prefixes to the speaker, blackholes and peer routes
//! to the FIB syncer, the natOutgoing rules to nftables, the log level to the subscriber. It
//! never lists the datastore; a failed pass is retried with a growing delay.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use gingham_api::resources::CommunityValue;
use gingham_bgp::rib::Gateway;
use gingham_bgp::speaker::SpeakerHandle;
use ipnetwork::IpNetwork;
use tokio::sync::watch;

use crate::cluster::ClusterCache;
use crate::desired::{self, Desired, HeldMap, Identity};
use crate::fib::{Class, FibHandle, Target};
use crate::metrics::Metrics;
use crate::peers::{DesiredPeer, PeerKind};

const FIRST_RETRY: Duration = Duration::from_millis(500);
const MAX_RETRY: Duration = Duration::from_secs(30);

/// What `/status` shows of a peer besides the speaker's view.
#[derive(Clone, Debug)]
pub struct ControllerPeer {
    pub kind: PeerKind,
    pub as_number: u32,
    pub problems: Vec<String>,
    /// Why the session is not started at all.
    pub blocked: Option<String>,
}

/// What the controller tells `/status`, readiness and the CNI STATUS command.
#[derive(Clone, Debug)]
pub struct ControllerStatus {
    /// `Err` until the cache is synced and this node's GinghamNode is in it, or while applying
    /// fails.
    pub datastore: Result<(), String>,
    pub peers: BTreeMap<IpAddr, ControllerPeer>,
    pub exports: Vec<IpNetwork>,
    pub nat: Result<(), String>,
}

impl Default for ControllerStatus {
    fn default() -> Self {
        ControllerStatus { datastore: Err("not read yet".into()), peers: BTreeMap::new(), exports: Vec::new(), nat: Ok(()) }
    }
}

pub struct Controller {
    pub id: Identity,
    pub cache: ClusterCache,
    pub held: watch::Receiver<Arc<HeldMap>>,
    pub speaker: SpeakerHandle,
    pub bfd: gingham_bfd::driver::BfdHandle,
    /// Router Advertisements on the links of link-local peers.
    pub adverts: crate::router_adverts::RouterAdverts,
    pub fib: FibHandle,
    pub metrics: Arc<Metrics>,
    pub log_level: Option<crate::LogLevelSetter>,
}

/// What was applied last; only the controller task touches it.
#[derive(Default)]
struct Applied {
    peers: BTreeMap<IpAddr, DesiredPeer>,
    bfd: BTreeMap<IpAddr, gingham_bfd::driver::Peering>,
    advert_links: BTreeSet<String>,
    exports: BTreeMap<IpNetwork, Vec<CommunityValue>>,
    blocks: BTreeSet<IpNetwork>,
    statics: BTreeMap<IpNetwork, IpAddr>,
    listen: Vec<SocketAddr>,
    /// Outer `None` until the first pass: the speaker started with the flag's cluster id.
    cluster_id: Option<Option<std::net::Ipv4Addr>>,
    nat_script: Option<String>,
    nat_error: Option<String>,
    log_filter: &'static str,
}

impl Controller {
    pub fn spawn(self) -> watch::Receiver<ControllerStatus> {
        let (tx, rx) = watch::channel(ControllerStatus::default());
        tokio::spawn(self.run(tx));
        rx
    }

    async fn run(self, status: watch::Sender<ControllerStatus>) {
        let mut applied = Applied::default();
        self.cache.synced().await;
        let mut changes = self.cache.changes();
        let mut held = self.held.clone();
        let mut retry = FIRST_RETRY;
        let mut last_error: Option<String> = None;
        loop {
            let result = self.reconcile(&mut applied).await;
            match &result {
                Ok(()) => {
                    retry = FIRST_RETRY;
                    last_error = None;
                }
                Err(e) => {
                    if last_error.as_ref() != Some(e) {
                        tracing::warn!(error = %e, "reconcile failed; retrying");
                        last_error = Some(e.clone());
                    }
                }
            }
            status.send_replace(ControllerStatus {
                datastore: result.clone(),
                peers: applied
                    .peers
                    .iter()
                    .map(|(a, p)| {
                        let peer = ControllerPeer {
                            kind: p.kind,
                            as_number: p.config.peer_as,
                            problems: p.problems.clone(),
                            blocked: p.blocked.clone(),
                        };
                        (*a, peer)
                    })
                    .collect(),
                exports: applied.exports.keys().copied().collect(),
                nat: applied.nat_error.clone().map_or(Ok(()), Err),
            });
            tokio::select! {
                alive = changes.next() => if !alive { return },
                r = held.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(retry), if result.is_err() => retry = (retry * 2).min(MAX_RETRY),
            }
        }
    }

    async fn reconcile(&self, applied: &mut Applied) -> Result<(), String> {
        let held = self.held.borrow().clone();
        let want: Desired = desired::compute(&self.id, &self.cache.snapshot(), &held)?;
        self.metrics.reconciles.inc();
        self.metrics.set_ipam(want.blocks.len(), held.len());
        self.apply(want, applied).await.map_err(|e| format!("{e:#}"))
    }

    async fn apply(&self, want: Desired, applied: &mut Applied) -> anyhow::Result<()> {
        if applied.nat_script.as_ref() != Some(&want.nat_script) {
            let script = want.nat_script.clone();
            match tokio::task::spawn_blocking(move || crate::nat::apply(&script)).await? {
                Ok(()) => {
                    tracing::info!("natOutgoing rules up to date");
                    applied.nat_script = Some(want.nat_script);
                    applied.nat_error = None;
                }
                Err(e) => {
                    let e = format!("{e:#}");
                    if applied.nat_error.as_ref() != Some(&e) {
                        tracing::warn!(error = %e, "natOutgoing rules not written; retrying at each pass");
                    }
                    applied.nat_error = Some(e);
                }
            }
        }
        if let Some(set) = self.log_level.as_ref().filter(|_| applied.log_filter != want.log_filter) {
            match set(want.log_filter) {
                Ok(()) => tracing::info!(level = want.log_filter, "log level from BGPConfiguration logSeverityScreen"),
                Err(e) => tracing::warn!(error = %e, "could not change the log level"),
            }
            applied.log_filter = want.log_filter;
        }
        if applied.listen != want.listen {
            self.speaker.listen(want.listen.clone()).await?;
            applied.listen = want.listen;
        }
        if applied.cluster_id != Some(want.cluster_id) {
            // A new role changes what every session was sent: restart each once, with its new
            // configuration.
            if applied.cluster_id.is_some() {
                for (addr, p) in std::mem::take(&mut applied.peers) {
                    if p.blocked.is_none() {
                        self.speaker.remove_peer(addr).await?;
                    }
                }
            }
            tracing::info!(cluster_id = ?want.cluster_id, "route reflector role");
            self.speaker.set_cluster_id(want.cluster_id).await?;
            applied.cluster_id = Some(want.cluster_id);
        }
        // BFD first: a session that waits for it then starts as soon as it can.
        let bfd: BTreeMap<IpAddr, gingham_bfd::driver::Peering> =
            want.peers.iter().filter(|(_, p)| p.blocked.is_none()).filter_map(|(a, p)| Some((*a, p.bfd?))).collect();
        if applied.bfd != bfd {
            match self.bfd.set(bfd.clone()).await {
                Ok(()) => applied.bfd = bfd,
                // A socket BFD could not open (no IPv6 on the node, say) leaves those sessions
                // out, not the node's routing: logged, and tried again at the next pass.
                Err(e) => tracing::warn!(error = %e, "BFD sessions not all started"),
            }
        }
        // Before the sessions: an unnumbered router accepts us once it has seen an RA.
        let links: BTreeSet<String> =
            want.peers.values().filter(|p| p.blocked.is_none()).filter_map(|p| p.config.interface.clone()).collect();
        if applied.advert_links != links {
            self.adverts.set(links.clone()).await;
            applied.advert_links = links;
        }
        let running = |p: Option<&DesiredPeer>| p.filter(|p| p.blocked.is_none()).cloned();
        for (addr, old) in &applied.peers {
            if old.blocked.is_none() && running(want.peers.get(addr)).is_none() {
                tracing::info!(peer = %addr, kind = ?old.kind, "removing BGP peer");
                self.speaker.remove_peer(*addr).await?;
            }
        }
        for (addr, p) in &want.peers {
            if applied.peers.get(addr) == Some(p) {
                continue;
            }
            match &p.blocked {
                Some(why) => tracing::warn!(peer = %addr, kind = ?p.kind, reason = %why, "BGP peer not started"),
                None => {
                    tracing::info!(peer = %addr, kind = ?p.kind, passive = p.config.passive, "configuring BGP peer");
                    self.speaker.add_peer(p.config.clone()).await?;
                }
            }
        }
        self.metrics.peers_blocked.set(want.peers.values().filter(|p| p.blocked.is_some()).count() as i64);
        applied.peers = want.peers;
        for gone in applied.exports.keys().filter(|p| !want.exports.contains_key(p)) {
            self.speaker.withdraw(*gone).await?;
        }
        for (prefix, tags) in &want.exports {
            if applied.exports.get(prefix) != Some(tags) {
                tracing::info!(%prefix, ?tags, "advertising");
                let (standard, large) = split_communities(tags);
                self.speaker.originate_tagged(*prefix, standard, large).await?;
            }
        }
        applied.exports = want.exports;
        let mut blackholes: Vec<(IpNetwork, Option<Target>)> = applied.blocks.difference(&want.blocks).map(|b| (*b, None)).collect();
        blackholes.extend(want.blocks.difference(&applied.blocks).map(|b| (*b, Some(Target::Blackhole))));
        self.fib.set_class(Class::Blackhole, blackholes).await;
        applied.blocks = want.blocks;
        let mut statics: Vec<(IpNetwork, Option<Target>)> =
            applied.statics.keys().filter(|k| !want.statics.contains_key(k)).map(|k| (*k, None)).collect();
        statics.extend(
            want.statics
                .iter()
                .filter(|(k, gw)| applied.statics.get(k) != Some(gw))
                .map(|(k, gw)| (*k, Some(Target::Gateways(Arc::from([Gateway::new(*gw)]))))),
        );
        self.fib.set_class(Class::Static, statics).await;
        applied.statics = want.statics;
        tracing::debug!(peers = applied.peers.len(), exports = applied.exports.len(), "reconciled");
        Ok(())
    }
}

fn split_communities(tags: &[CommunityValue]) -> (Vec<u32>, Vec<gingham_bgp::wire::LargeCommunity>) {
    let mut standard = Vec::new();
    let mut large = Vec::new();
    for t in tags {
        match *t {
            CommunityValue::Standard(c) => standard.push(c),
            CommunityValue::Large(global, local1, local2) => large.push(gingham_bgp::wire::LargeCommunity { global, local1, local2 }),
        }
    }
    (standard, large)
}
