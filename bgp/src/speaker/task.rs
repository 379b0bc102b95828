//! The speaker's owner task: the RIB, the peer table and the coalescing FIB stream.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use tokio::sync::mpsc;
use tokio::task::JoinHandle;

use super::{Command, MaxPrefixAction, NeighborConfig, PeerStatus, RouteChange, SpeakerConfig};
use crate::fsm::StopMode;
use crate::rib::decision::DecisionConfig;
use crate::rib::{PeerId, PrefixSet, Rib, RibConfig, RibPeer};
use crate::session::{spawn_peer, Listener, PeerCommand, PeerEvent, PeerHandle};
use crate::wire::{AsPath, ErrorCode, Family, Origin, PathAttributes, Update};

/// Prefixes exported per step; bounds the transient memory of a full-table flood.
const EXPORT_CHUNK: usize = 4096;
/// Route changes per FIB stream message.
const FIB_BATCH: usize = 256;

struct Peer {
    id: PeerId,
    config: NeighborConfig,
    handle: PeerHandle,
    join: JoinHandle<()>,
    up: bool,
    /// The max-prefix warning was logged for the current crossing.
    warned: bool,
}

pub(super) struct SpeakerTask {
    config: SpeakerConfig,
    listener: Listener,
    rib: Rib,
    peers: HashMap<IpAddr, Peer>,
    next_id: PeerId,
    events_tx: mpsc::Sender<PeerEvent>,
    events: mpsc::Receiver<PeerEvent>,
    fib: mpsc::Sender<Vec<RouteChange>>,

    /// Prefixes whose best path changed and that the peers have not been told about yet.
    dirty: PrefixSet,
}

impl SpeakerTask {
    pub(super) fn new(config: SpeakerConfig, listener: Listener, fib: mpsc::Sender<Vec<RouteChange>>) -> SpeakerTask {
        let rib = Rib::new(RibConfig {
            router_id: config.router_id,
            cluster_id: config.cluster_id,
            multipath: config.multipath,
            decision: DecisionConfig { always_compare_med: config.always_compare_med },
        });
        // Bounded: a speaker that falls behind slows the peers' readers, and TCP slows the
        // senders, instead of queueing without limit.
        let (events_tx, events) = mpsc::channel(4096);
        SpeakerTask { config, listener, rib, peers: HashMap::new(), next_id: 1, events_tx, events, fib, dirty: PrefixSet::default() }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        loop {
            let fib = self.fib.clone();
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => break,
                },
                Some(ev) = self.events.recv() => {
                    self.event(ev).await;
                    // Take what else is queued before propagating, so one flush carries a
                    // burst of UPDATEs as a few packed messages.
                                        // Stop at a chunk's worth of changes: the dirty set stays small and the peers
                    // see progress early.
                    while self.dirty.len() < EXPORT_CHUNK {
                        match self.events.try_recv() {
                            Ok(ev) => self.event(ev).await,
                            Err(_) => break,
                        }
                    }
                }
                                                // The RIB queues changed prefixes (once each) and the route is read as a batch
                // leaves, so a slow reader gets the latest state per prefix and nothing is lost.
                Ok(permit) = fib.reserve(), if self.rib.fib_pending() => {
                    let batch = self.rib.take_fib(FIB_BATCH).into_iter().map(|prefix| RouteChange { prefix, best: self.rib.best(&prefix) }).collect();
                    permit.send(batch);
                }
            }
            self.propagate().await;
        }
        for (_, p) in self.peers.drain() {
            // Dropping the handle stops the peer silently (graceful restart friendly).
            drop(p.handle);
            let _finished = p.join.await;
        }
    }

    async fn command(&mut self, cmd: Command) {
        match cmd {
            Command::AddPeer(n, reply) => {
                self.add_peer(n).await;
                let _gone = reply.send(());
            }
            Command::RemovePeer(addr, reply) => {
                let existed = self.remove_peer(addr, ErrorCode::PeerDeconfigured).await;
                let _gone = reply.send(existed);
            }
            Command::Originate { prefix, communities, reply } => {
                let attrs =
                    PathAttributes { origin: Some(Origin::Igp), as_path: Some(AsPath::default()), communities, ..Default::default() };
                if self.rib.originate(prefix, attrs) {
                    self.dirty.insert(prefix);
                }
                let _gone = reply.send(());
            }
            Command::Withdraw { prefix, reply } => {
                let changed = self.rib.withdraw_local(prefix);
                if changed {
                    self.dirty.insert(prefix);
                }
                let _gone = reply.send(changed);
            }
            Command::Routes(family, reply) => {
                let _gone = reply.send(self.rib.routes(family));
            }
            Command::Peers(reply) => {
                // Peer tasks answer on their own time; gather off the owner task.
                let peers: Vec<(NeighborConfig, PeerHandle, usize, usize, usize)> = self
                    .peers
                    .values()
                    .map(|p| {
                        (p.config.clone(), p.handle.clone(), self.rib.received(p.id), self.rib.accepted(p.id), self.rib.advertised(p.id))
                    })
                    .collect();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for (config, handle, received, accepted, advertised) in peers {
                        let Some(s) = handle.snapshot().await else {
                            continue;
                        };
                        out.push(PeerStatus {
                            config,
                            state: s.state,
                            uptime: s.uptime,
                            last_error: s.last_error,
                            negotiated: s.negotiated,
                            prefixes_received: received,
                            prefixes_accepted: accepted,
                            prefixes_advertised: advertised,
                        });
                    }
                    out.sort_by_key(|p| p.config.address);
                    let _gone = reply.send(out);
                });
            }
        }
    }

    async fn add_peer(&mut self, n: NeighborConfig) {
        if let Some(existing) = self.peers.get(&n.address) {
            if existing.config == n {
                return;
            }
            self.remove_peer(n.address, ErrorCode::OtherConfigurationChange).await;
        }
        let config = n.peer_config(&self.config);
        let transport = config.transport.clone();
        let (handle, join) = spawn_peer(config, self.events_tx.clone());
        self.listener.add_peer(transport, handle.sender());
        let id = self.next_id;
        self.next_id += 1;
        if !handle.send(PeerCommand::Start).await {
            tracing::error!(peer = %n.address, "peer task exited at start");
        }
        self.peers.insert(n.address, Peer { id, config: n, handle, join, up: false, warned: false });
    }

    async fn remove_peer(&mut self, addr: IpAddr, why: ErrorCode) -> bool {
        let Some(p) = self.peers.remove(&addr) else {
            return false;
        };
        self.listener.remove_peer(addr);
        p.handle.send(PeerCommand::Stop(StopMode::Cease { code: why, communication: None })).await;
        self.dirty.extend(self.rib.peer_down(p.id));
        true
    }

    fn peer_by_addr(&mut self, addr: SocketAddr) -> Option<&mut Peer> {
        self.peers.get_mut(&addr.ip())
    }

    async fn event(&mut self, ev: PeerEvent) {
        match ev {
            PeerEvent::Established { peer, local, negotiated } => {
                let Some(p) = self.peer_by_addr(peer) else {
                    return;
                };
                p.up = true;
                let (id, cfg, handle) = (p.id, p.config.clone(), p.handle.clone());
                let local_address = cfg.local_address.or(local.map(|l| l.ip())).unwrap_or(IpAddr::V4(self.config.router_id));
                let rib_peer = RibPeer {
                    address: peer.ip(),
                    local_address,
                    router_id: negotiated.peer_id,
                    local_as: cfg.local_as.unwrap_or(self.config.local_as),
                    peer_as: negotiated.peer_as,
                    rr_client: cfg.rr_client,
                    keep_original_next_hop: cfg.keep_original_next_hop,
                    allow_own_as: cfg.allow_own_as,
                    families: negotiated.families.clone(),
                    codec: negotiated.codec(),
                    import: cfg.import.clone(),
                };
                self.rib.peer_up(id, rib_peer);
                let mut updates = self.rib.export_all(id);
                // RFC 4724 2: End-of-RIB after the initial table, for every family.
                updates.extend(negotiated.families.iter().map(|f| Update::end_of_rib(*f)));
                handle.send(PeerCommand::Send(updates)).await;
            }
            PeerEvent::Down { peer, reason } => {
                let Some(p) = self.peer_by_addr(peer) else {
                    return;
                };
                let id = p.id;
                p.up = false;
                tracing::debug!(%peer, ?reason, "withdrawing the peer's routes");
                self.dirty.extend(self.rib.peer_down(id));
            }
            PeerEvent::Update { peer, update, .. } => {
                let Some(p) = self.peer_by_addr(peer) else {
                    return;
                };
                let id = p.id;
                let result = self.rib.apply_update(id, &update);
                self.dirty.extend(result.changed);
                self.check_max_prefixes(peer, &update).await;
            }
            PeerEvent::RouteRefresh { peer, .. } => {
                let Some(p) = self.peer_by_addr(peer) else {
                    return;
                };
                let (id, handle) = (p.id, p.handle.clone());
                self.rib.reset_adj_out(id);
                let updates = self.rib.export_all(id);
                handle.send(PeerCommand::Send(updates)).await;
            }
        }
    }

    /// RFC 4486 / common router practice: warn, or tear the session down and maybe restart.
    async fn check_max_prefixes(&mut self, peer: SocketAddr, update: &Update) {
        let Some(p) = self.peers.get_mut(&peer.ip()) else { return };
        let Some(max) = p.config.max_prefixes else { return };
        let count = self.rib.accepted(p.id);
        if count <= max.limit {
            p.warned = false;
            return;
        }
        match max.action {
            MaxPrefixAction::WarnOnly => {
                if !p.warned {
                    tracing::warn!(%peer, count, limit = max.limit, "peer exceeds its prefix limit");
                    p.warned = true;
                }
            }
            MaxPrefixAction::TearDown { restart } => {
                tracing::warn!(%peer, count, limit = max.limit, "peer exceeds its prefix limit; closing the session");
                // RFC 4486 section 4: AFI, SAFI and the configured upper bound.
                let family = update.attributes.mp_reach.as_ref().map_or(Family::IPV4_UNICAST, |m| m.family);
                let mut data = Vec::with_capacity(7);
                data.extend_from_slice(&family.afi.to_be_bytes());
                data.push(family.safi);
                data.extend_from_slice(&u32::try_from(max.limit).unwrap_or(u32::MAX).to_be_bytes());
                let n = ErrorCode::MaximumPrefixesReached.notification(data);
                let handle = p.handle.clone();
                handle.send(PeerCommand::Stop(StopMode::Notify(n))).await;
                if let Some(after) = restart {
                    tokio::spawn(async move {
                        tokio::time::sleep(after).await;
                        // The peer may have been removed meanwhile; then there is nothing to restart.
                        handle.send(PeerCommand::Start).await;
                    });
                }
            }
        }
    }

    /// Sends what changed to every Established peer and queues it for the FIB stream, in
    /// bounded steps so a full table does not become one huge transient batch.
    async fn propagate(&mut self) {
        if self.dirty.is_empty() {
            return;
        }
        let targets: Vec<(PeerId, PeerHandle)> = self.peers.values().filter(|p| p.up).map(|p| (p.id, p.handle.clone())).collect();
        while !self.dirty.is_empty() {
            let chunk = self.dirty.take(EXPORT_CHUNK);
            for p in &chunk {
                self.rib.mark_fib(*p);
            }
            for (id, handle) in &targets {
                let updates = self.rib.export(*id, &chunk);
                if !updates.is_empty() {
                    handle.send(PeerCommand::Send(updates)).await;
                }
            }
        }
        self.rib.collect_garbage();
    }
}
