//! The speaker's owner task: the RIB, the peer table and the coalescing FIB stream.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::{BfdSignal, Command, MaxPrefixAction, NeighborConfig, PeerStatus, RouteChange, SpeakerConfig};
use crate::fsm::StopMode;
use crate::rib::decision::DecisionConfig;
use crate::rib::{PeerId, PrefixSet, Rib, RibConfig, RibPeer};
use crate::session::{Listener, PeerCommand, PeerEvent, PeerHandle};
use crate::wire::{AsPath, ErrorCode, Family, Origin, PathAttributes, RefreshSubtype, RouteRefresh, Update};

/// Prefixes exported per step; bounds the transient memory of a full-table flood.
const EXPORT_CHUNK: usize = 4096;
/// Route changes per FIB stream message.
const FIB_BATCH: usize = 256;
/// How long a re-established peer's stale routes may wait for its End-of-RIB (FRR's
/// `stalepath-time` default): the restart time no longer applies once the peer is back.
const STALE_PATH_TIME: Duration = Duration::from_secs(360);

struct Peer {
    id: PeerId,
    config: NeighborConfig,
    handle: PeerHandle,
    join: JoinHandle<()>,
    up: bool,
    /// The max-prefix warning was logged for the current crossing.
    warned: bool,
    /// What the current (or last) session negotiated about graceful restart.
    gr: Option<GrState>,
    /// The id of the previous session, whose paths are kept as stale while the peer restarts
    /// (RFC 4724 4.2), and the families whose End-of-RIB is still awaited.
    stale: Option<(PeerId, Vec<Family>)>,
    /// Bumped whenever the stale routes get a new deadline, so an older timer is ignored.
    stale_generation: u64,
    /// Families whose first End-of-RIB is still awaited; `Some(empty)` once all arrived.
    initial_eor: Option<Vec<Family>>,
    /// The peer can be asked to send its routes again (RFC 2918).
    route_refresh: bool,
    /// Both sides negotiated enhanced route refresh (RFC 7313).
    enhanced_refresh: bool,
    /// Between the peer's BoRR and EoRR: its prefixes of that family not re-announced yet.
    refreshing: Option<(Family, PrefixSet)>,
    /// Completed BoRR..EoRR cycles from this peer.
    refresh_cycles: u64,
    /// Not started (or stopped) until BFD says Up (`wait_for_bfd`).
    held_for_bfd: bool,
}

#[derive(Clone, Copy, Debug)]
struct GrState {
    /// The peer's restart time: how long its routes may stay stale.
    restart_time: Duration,
    notification: bool,
    /// The peer set the Restart State bit: it restarted too and defers its own table until it
    /// has ours, so waiting for its End-of-RIB would deadlock (RFC 4724 4.1).
    restarting: bool,
}

/// Timers the owner task set for itself.
#[derive(Debug)]
enum Timer {
    /// The peer did not come back (or finish its table) within its restart time.
    StaleExpired { peer: IpAddr, retired: PeerId, generation: u64 },
    /// Stop waiting for End-of-RIB from peers that have not sent it.
    SyncDeadline,
}

pub(super) struct SpeakerTask {
    config: SpeakerConfig,
    listener: Listener,
    rib: Rib,
    peers: HashMap<IpAddr, Peer>,
    /// Per-address message counters; they outlive the peer tasks a reconfiguration replaces.
    counters: HashMap<IpAddr, std::sync::Arc<crate::session::PeerCounters>>,
    /// BFD's last word per address (absent: never Up). Kept apart from the peers, which a
    /// reconfiguration replaces while the BFD session runs on.
    bfd_up: HashMap<IpAddr, bool>,
    next_id: PeerId,
    events_tx: mpsc::Sender<PeerEvent>,
    events: mpsc::Receiver<PeerEvent>,
    fib: mpsc::Sender<Vec<RouteChange>>,
    /// Prefixes whose best path changed and that the peers have not been told about yet.
    dirty: PrefixSet,
    timers_tx: mpsc::UnboundedSender<Timer>,
    timers: mpsc::UnboundedReceiver<Timer>,
    /// Every peer delivered its table after our start (or the deadline passed): routes of ours
    /// in the kernel that did not come back may go.
    synced: watch::Sender<bool>,
    /// After our own restart, route selection is final (RFC 4724 4.1): End-of-RIB from every
    /// peer except those restarting too and those without graceful restart. Until then only
    /// our own prefixes go out, without End-of-RIB.
    selection_final: bool,
}

impl SpeakerTask {
    pub(super) fn new(
        config: SpeakerConfig,
        listener: Listener,
        fib: mpsc::Sender<Vec<RouteChange>>,
        synced: watch::Sender<bool>,
    ) -> SpeakerTask {
        let rib = Rib::new(RibConfig {
            router_id: config.router_id,
            cluster_id: config.cluster_id,
            multipath: config.multipath,
            decision: DecisionConfig { always_compare_med: config.always_compare_med },
        });
        // Bounded: a speaker that falls behind slows the peers' readers, and TCP slows the
        // senders, instead of queueing without limit.
        let (events_tx, events) = mpsc::channel(4096);
        // Unbounded: at most one pending timer per peer.
        let (timers_tx, timers) = mpsc::unbounded_channel();
        SpeakerTask {
            config,
            listener,
            rib,
            peers: HashMap::new(),
            counters: HashMap::new(),
            bfd_up: HashMap::new(),
            next_id: 1,
            events_tx,
            events,
            fib,
            dirty: PrefixSet::default(),
            timers_tx,
            timers,
            synced,
            selection_final: false,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let tx = self.timers_tx.clone();
        let deadline = self.config.sync_deadline;
        tokio::spawn(async move {
            tokio::time::sleep(deadline).await;
            // Gone means the speaker stopped first.
            let _stopped = tx.send(Timer::SyncDeadline);
        });
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
                    // burst of UPDATEs as a few packed messages; stop at a chunk's worth of
                    // changes so the dirty set stays small and the peers see progress early.
                    while self.dirty.len() < EXPORT_CHUNK {
                        match self.events.try_recv() {
                            Ok(ev) => self.event(ev).await,
                            Err(_) => break,
                        }
                    }
                }
                // The RIB queues changed prefixes (once each) and the route is read as a batch
                // leaves, so a slow reader gets the latest state per prefix and nothing is lost.
                                                Some(timer) = self.timers.recv() => self.timer(timer).await,
                Ok(permit) = fib.reserve(), if self.rib.fib_pending() => {
                    let batch = self.rib.take_fib(FIB_BATCH).into_iter().map(|prefix| RouteChange { prefix, best: self.rib.best(&prefix) }).collect();
                    permit.send(batch);
                }
            }
            self.propagate().await;
        }
        // Every handle is gone: close the sessions without NOTIFICATION, so peers that
        // negotiated graceful restart keep our routes while we are away (RFC 4724 4.1).
        let SpeakerTask { peers, listener, .. } = self;
        for (addr, p) in &peers {
            p.handle.send(PeerCommand::Stop(StopMode::Silent)).await;
            listener.remove_peer(*addr);
        }
        // The listener holds senders to the peer tasks; they end when the last one goes.
        drop(listener);
        for (_, p) in peers {
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
                self.counters.remove(&addr);
                let _gone = reply.send(existed);
                // The peer we were waiting for may be the one removed.
                self.check_selection().await;
                self.check_synced().await;
            }
            Command::Listen(addrs, reply) => {
                let _gone = reply.send(self.rebind(&addrs));
            }
            Command::SetClusterId(cluster_id, reply) => {
                if self.rib.config().cluster_id != cluster_id {
                    tracing::info!(?cluster_id, "route reflector cluster id changed; restarting sessions");
                    self.rib.set_cluster_id(cluster_id);
                    let configs: Vec<NeighborConfig> = self.peers.values().map(|p| p.config.clone()).collect();
                    for n in configs {
                        self.remove_peer(n.address, ErrorCode::OtherConfigurationChange).await;
                        self.add_peer(n).await;
                    }
                }
                let _gone = reply.send(());
            }
            Command::Originate { prefix, communities, large, reply } => {
                let attrs = PathAttributes {
                    origin: Some(Origin::Igp),
                    as_path: Some(AsPath::default()),
                    communities,
                    large_communities: large,
                    ..Default::default()
                };
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
            Command::Bfd(addr, signal, reply) => {
                self.bfd(addr, signal).await;
                let _gone = reply.send(());
            }
            Command::Routes(family, reply) => {
                let _gone = reply.send(self.rib.routes(family));
            }
            Command::Refresh(addr, reply) => {
                let mut asked = false;
                if let Some(p) = self.peers.get(&addr).filter(|p| p.up) {
                    for family in self.rib.peer(p.id).map(|r| r.families.clone()).unwrap_or_default() {
                        asked |= p.handle.send(PeerCommand::RouteRefresh(RouteRefresh { family, subtype: RefreshSubtype::Request })).await;
                    }
                }
                let _gone = reply.send(asked);
            }
            Command::Peers(reply) => {
                // Peer tasks answer on their own time; gather off the owner task.
                let peers: Vec<(NeighborConfig, PeerHandle, usize, usize, usize, u64, bool)> = self
                    .peers
                    .values()
                    .map(|p| {
                        (
                            p.config.clone(),
                            p.handle.clone(),
                            self.rib.received(p.id),
                            self.rib.accepted(p.id),
                            self.rib.advertised(p.id),
                            p.refresh_cycles,
                            p.held_for_bfd,
                        )
                    })
                    .collect();
                tokio::spawn(async move {
                    let mut out = Vec::new();
                    for (config, handle, received, accepted, advertised, refresh_cycles, waiting_for_bfd) in peers {
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
                            refresh_cycles,
                            updates_received: s.updates_received,
                            updates_sent: s.updates_sent,
                            notifications: s.notifications,
                            waiting_for_bfd,
                        });
                    }
                    out.sort_by_key(|p| p.config.address);
                    let _gone = reply.send(out);
                });
            }
        }
    }

    async fn add_peer(&mut self, n: NeighborConfig) {
        if let Some(existing) = self.peers.get_mut(&n.address) {
            if existing.config == n {
                return;
            }
            let import_changed = existing.config.import != n.import || existing.config.external != n.external;
            let policy_only = NeighborConfig { import: None, export: None, external: false, ..existing.config.clone() }
                == NeighborConfig { import: None, export: None, external: false, ..n.clone() };
            // A policy change is applied in place, as routers do with soft reconfiguration: what
            // we send is re-evaluated at once; what the peer sent, after a route refresh.
            if policy_only && (!import_changed || !existing.up || existing.route_refresh) {
                existing.config = n.clone();
                if existing.up {
                    let (id, handle) = (existing.id, existing.handle.clone());
                    if let Some(rp) = self.rib.peer_mut(id) {
                        rp.external = n.external;
                    }
                    let updates = self.rib.set_policies(id, n.import.clone(), n.export.clone());
                    if !updates.is_empty() {
                        handle.send(PeerCommand::Send(updates)).await;
                    }
                    if import_changed {
                        for family in self.rib.peer(id).map(|r| r.families.clone()).unwrap_or_default() {
                            let refresh = RouteRefresh { family, subtype: RefreshSubtype::Request };
                            handle.send(PeerCommand::RouteRefresh(refresh)).await;
                        }
                    }
                }
                return;
            }
            self.remove_peer(n.address, ErrorCode::OtherConfigurationChange).await;
        }
        let config = n.peer_config(&self.config);
        let transport = config.transport.clone();
        let counters = self.counters.entry(n.address).or_default().clone();
        let (handle, join) = crate::session::spawn_counted_peer(config, self.events_tx.clone(), counters);
        self.listener.add_peer(transport, handle.sender());
        let id = self.next_id;
        self.next_id += 1;
        let held_for_bfd = n.wait_for_bfd && self.bfd_up.get(&n.address) != Some(&true);
        if held_for_bfd {
            tracing::info!(peer = %n.address, "waiting for BFD Up before starting the session");
        } else if !handle.send(PeerCommand::Start).await {
            tracing::error!(peer = %n.address, "peer task exited at start");
        }
        self.peers.insert(
            n.address,
            Peer {
                id,
                config: n,
                handle,
                join,
                up: false,
                warned: false,
                gr: None,
                stale: None,
                stale_generation: 0,
                initial_eor: None,
                route_refresh: false,
                enhanced_refresh: false,
                refreshing: None,
                refresh_cycles: 0,
                held_for_bfd,
            },
        );
    }

    /// BFD's verdict on a path ([`super::SpeakerHandle::bfd_changed`] says what it does).
    async fn bfd(&mut self, addr: IpAddr, signal: BfdSignal) {
        self.bfd_up.insert(addr, signal == BfdSignal::Up);
        let Some(p) = self.peers.get_mut(&addr) else { return };
        match signal {
            BfdSignal::Up => {
                if p.held_for_bfd {
                    p.held_for_bfd = false;
                    tracing::info!(peer = %addr, "BFD Up: starting the session");
                    p.handle.send(PeerCommand::Start).await;
                }
            }
            BfdSignal::Down { remote_cpi } => {
                let (handle, was_up) = (p.handle.clone(), p.up);
                if was_up {
                    tracing::warn!(peer = %addr, "BFD down: closing the session and withdrawing its routes");
                    // A manual stop: the Down event that follows withdraws the routes, no stale phase.
                    handle.send(PeerCommand::Stop(StopMode::Cease { code: ErrorCode::BfdDown, communication: None })).await;
                } else if remote_cpi {
                    if let Some((old, _)) = p.stale.take() {
                        tracing::warn!(peer = %addr, "BFD down while the peer restarts, and its forwarding is control-plane independent: flushing its stale routes");
                        self.dirty.extend(self.rib.peer_down(old));
                    }
                }
                let Some(p) = self.peers.get_mut(&addr) else { return };
                if p.config.wait_for_bfd {
                    if !p.held_for_bfd && !was_up {
                        // No more connection attempts until BFD is Up again.
                        handle.send(PeerCommand::Stop(StopMode::Silent)).await;
                    }
                    p.held_for_bfd = true;
                } else if was_up {
                    // Reconnects when it can, as after any other failure.
                    handle.send(PeerCommand::Start).await;
                }
            }
        }
    }

    /// Moves the listening sockets; every peer (and its MD5 key) is registered with the new ones
    /// before the old ones close.
    fn rebind(&mut self, addrs: &[SocketAddr]) -> std::io::Result<()> {
        if self.listener.local_addrs() == addrs {
            return Ok(());
        }
        let listener = crate::session::Listener::bind(addrs, Vec::new(), None)?;
        for p in self.peers.values() {
            listener.add_peer(p.config.peer_config(&self.config).transport, p.handle.sender());
        }
        tracing::info!(?addrs, "listening");
        self.listener = listener;
        Ok(())
    }

    async fn remove_peer(&mut self, addr: IpAddr, why: ErrorCode) -> bool {
        let Some(p) = self.peers.remove(&addr) else {
            return false;
        };
        self.listener.remove_peer(addr);
        if let Some((old, _)) = p.stale {
            self.dirty.extend(self.rib.peer_down(old));
        }
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
                let timers_tx = self.timers_tx.clone();
                let Some(p) = self.peer_by_addr(peer) else {
                    return;
                };
                p.up = true;
                p.gr = negotiated.graceful_restart().then(|| {
                    let peer_gr = negotiated.peer_graceful_restart.as_ref();
                    GrState {
                        restart_time: Duration::from_secs(u64::from(peer_gr.map_or(0, |g| g.restart_time))),
                        notification: peer_gr.is_some_and(|g| g.notification),
                        restarting: peer_gr.is_some_and(|g| g.restart_state),
                    }
                });
                // Back with stale routes of its last session: they now wait for its End-of-RIB
                // (fresh routes replace them one by one), no longer for the restart time.
                if let Some((retired, _)) = p.stale {
                    p.stale_generation += 1;
                    let generation = p.stale_generation;
                    let (tx, addr) = (timers_tx, peer.ip());
                    tokio::spawn(async move {
                        tokio::time::sleep(STALE_PATH_TIME).await;
                        let _stopped = tx.send(Timer::StaleExpired { peer: addr, retired, generation });
                    });
                }
                p.route_refresh = negotiated.route_refresh;
                p.enhanced_refresh = negotiated.enhanced_route_refresh;
                p.refreshing = None;
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
                    next_hop_self: cfg.next_hop_self,
                    allow_own_as: cfg.allow_own_as,
                    families: negotiated.families.clone(),
                    codec: negotiated.codec(),
                    import: cfg.import.clone(),
                    export: cfg.export.clone(),
                    external: cfg.external,
                    extended_next_hop: negotiated.extended_next_hop_v4,
                };
                self.rib.peer_up(id, rib_peer);
                if let Some(p) = self.peer_by_addr(peer) {
                    p.initial_eor.get_or_insert_with(|| negotiated.families.clone());
                }
                // After our own restart the table goes out only once selection is final
                // (RFC 4724 4.1); our own prefixes are final already and go at once, so a pod
                // made meanwhile is reachable.
                if !self.deferring() {
                    send_table(&mut self.rib, id, &negotiated.families, &handle).await;
                } else {
                    let own = self.rib.local_prefixes();
                    let updates = self.rib.export(id, &own);
                    if !updates.is_empty() {
                        handle.send(PeerCommand::Send(updates)).await;
                    }
                    self.check_selection().await;
                }
            }
            PeerEvent::Down { peer, reason } => {
                let Some(p) = self.peer_by_addr(peer) else {
                    return;
                };
                let id = p.id;
                p.up = false;
                // RFC 4724 4.2: a peer that negotiated graceful restart and went down without
                // a NOTIFICATION (or with one under the N bit) keeps its routes, marked stale,
                // for its restart time. The next session gets a new id; the old id's paths
                // are the stale ones.
                let helper = p.gr.filter(|gr| reason.allows_graceful_restart(gr.notification));
                let previous = p.stale.take();
                if let Some((old, _)) = previous {
                    self.dirty.extend(self.rib.peer_down(old));
                }
                match helper {
                    Some(gr) => {
                        let families = self.rib.peer(id).map(|r| r.families.clone()).unwrap_or_default();
                        let new_id = self.next_id;
                        self.next_id += 1;
                        let Some(p) = self.peer_by_addr(peer) else {
                            return;
                        };
                        p.id = new_id;
                        p.stale = Some((id, families));
                        p.stale_generation += 1;
                        let generation = p.stale_generation;
                        self.rib.peer_retire(id);
                        tracing::info!(%peer, ?reason, restart_time = ?gr.restart_time, "peer restarting: keeping its routes as stale");
                        let tx = self.timers_tx.clone();
                        let addr = peer.ip();
                        tokio::spawn(async move {
                            tokio::time::sleep(gr.restart_time).await;
                            // The owner task may have stopped; nothing to expire then.
                            let _stopped = tx.send(Timer::StaleExpired { peer: addr, retired: id, generation });
                        });
                    }
                    None => {
                        tracing::debug!(%peer, ?reason, "withdrawing the peer's routes");
                        self.dirty.extend(self.rib.peer_down(id));
                    }
                }
            }
            PeerEvent::Update { peer, update, .. } => {
                let Some(p) = self.peer_by_addr(peer) else {
                    return;
                };
                let id = p.id;
                if let (Some(waiting), Some(family)) = (p.initial_eor.as_mut(), update.end_of_rib_family()) {
                    waiting.retain(|f| *f != family);
                }
                if let Some((_, pending)) = p.refreshing.as_mut() {
                    for prefix in update.announced().chain(update.withdrawn_prefixes()) {
                        pending.remove(&prefix);
                    }
                }
                let stale = p.stale.clone();
                let result = self.rib.apply_update(id, &update);
                self.dirty.extend(result.changed);
                if let Some((old, mut waiting)) = stale {
                    // Fresh routes replace their stale copies at once; End-of-RIB for every
                    // family flushes the stale routes that did not come back.
                    for prefix in update.announced() {
                        if self.rib.withdraw_path(prefix, old) {
                            self.dirty.insert(prefix);
                        }
                    }
                    if let Some(family) = update.end_of_rib_family() {
                        waiting.retain(|f| *f != family);
                    }
                    let done = waiting.is_empty();
                    if let Some(p) = self.peer_by_addr(peer) {
                        p.stale = if done { None } else { Some((old, waiting)) };
                    }
                    if done {
                        tracing::info!(%peer, "peer finished its restart; flushing what did not come back");
                        self.dirty.extend(self.rib.peer_down(old));
                    }
                }
                self.check_max_prefixes(peer, &update).await;
                if update.end_of_rib_family().is_some() {
                    self.check_synced().await;
                    self.check_selection().await;
                }
            }
            PeerEvent::RouteRefresh { peer, request } => self.route_refresh(peer, request).await,
        }
    }

    /// RFC 2918 / RFC 7313: answer a request with the table (between BoRR and EoRR when both
    /// sides speak enhanced route refresh); a peer's BoRR..EoRR replaces its routes of that
    /// family, and what it did not resend by EoRR is withdrawn.
    async fn route_refresh(&mut self, peer: SocketAddr, request: RouteRefresh) {
        let Some(p) = self.peers.get_mut(&peer.ip()) else { return };
        let (id, handle, enhanced) = (p.id, p.handle.clone(), p.enhanced_refresh);
        let family = request.family;
        match request.subtype {
            RefreshSubtype::Request => {
                self.rib.reset_adj_out(id);
                let updates = self.rib.export_all(id);
                let marker = |subtype| PeerCommand::RouteRefresh(RouteRefresh { family, subtype });
                if enhanced {
                    handle.send(marker(RefreshSubtype::Begin)).await;
                }
                handle.send(PeerCommand::Send(updates)).await;
                if enhanced {
                    handle.send(marker(RefreshSubtype::End)).await;
                }
            }
            RefreshSubtype::Begin => {
                let mut pending = PrefixSet::default();
                pending.extend(self.rib.prefixes_from(id, family));
                p.refreshing = Some((family, pending));
            }
            RefreshSubtype::End => {
                let Some((f, pending)) = p.refreshing.take().filter(|(f, _)| *f == family) else { return };
                p.refresh_cycles += 1;
                tracing::debug!(%peer, family = %f, stale = pending.len(), "enhanced route refresh done");
                for prefix in pending.iter() {
                    if self.rib.withdraw_path(prefix, id) {
                        self.dirty.insert(prefix);
                    }
                }
            }
            // RFC 7313 5: unknown subtypes are ignored.
            RefreshSubtype::Other(_) => {}
        }
    }

    /// We restarted and our selection is not final yet: only our own prefixes go out.
    fn deferring(&self) -> bool {
        self.config.restarting && !self.selection_final
    }

    /// RFC 4724 4.1: selection is final once every peer is back and has sent End-of-RIB,
    /// except peers that restarted too (they wait for ours) and peers without graceful restart
    /// (they promise none).
    async fn check_selection(&mut self) {
        if !self.deferring() {
            return;
        }
        let waited_for = |p: &Peer| match (p.up, p.gr) {
            (false, _) => true,
            (true, None) => false,
            (true, Some(gr)) => !gr.restarting && !p.initial_eor.as_ref().is_some_and(Vec::is_empty),
        };
        if !self.peers.values().any(waited_for) {
            tracing::info!("route selection final (RFC 4724 4.1): sending our full tables");
            self.end_deferral().await;
        }
    }

    /// Every Established peer gets its table and End-of-RIB.
    async fn end_deferral(&mut self) {
        if !self.deferring() {
            return;
        }
        self.selection_final = true;
        let up: Vec<(PeerId, PeerHandle)> = self.peers.values().filter(|p| p.up).map(|p| (p.id, p.handle.clone())).collect();
        for (id, handle) in up {
            let families = self.rib.peer(id).map(|r| r.families.clone()).unwrap_or_default();
            send_table(&mut self.rib, id, &families, &handle).await;
        }
    }

    /// Synced once every configured peer delivered its first full table.
    async fn check_synced(&mut self) {
        if *self.synced.borrow() || self.peers.is_empty() {
            return;
        }
        if self.peers.values().all(|p| p.initial_eor.as_ref().is_some_and(Vec::is_empty)) {
            tracing::info!("every peer sent End-of-RIB: synced");
            self.set_synced().await;
        }
    }

    async fn set_synced(&mut self) {
        self.synced.send_replace(true);
        // Everything came back (or the deadline passed): selection is final too.
        self.end_deferral().await;
    }

    async fn timer(&mut self, timer: Timer) {
        match timer {
            Timer::SyncDeadline => {
                if !*self.synced.borrow() {
                    tracing::info!("sync deadline passed: synced without every peer's End-of-RIB");
                    self.set_synced().await;
                }
            }
            Timer::StaleExpired { peer, retired, generation } => {
                let Some(p) = self.peers.get_mut(&peer) else { return };
                if p.stale_generation == generation && p.stale.as_ref().is_some_and(|(old, _)| *old == retired) {
                    p.stale = None;
                    tracing::info!(%peer, "restart time over: flushing stale routes");
                    self.dirty.extend(self.rib.peer_down(retired));
                }
            }
        }
    }

    /// RFC 4486 / common router practice: warn, or tear the session down and maybe restart.
    async fn check_max_prefixes(&mut self, peer: SocketAddr, update: &Update) {
        let Some(p) = self.peers.get_mut(&peer.ip()) else { return };
        let Some(max) = p.config.max_prefixes else { return };
        let family = update.attributes.mp_reach.as_ref().map_or(Family::IPV4_UNICAST, |m| m.family);
        let count = self.rib.accepted_family(p.id, family == Family::IPV4_UNICAST);
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
        // While deferring, peers hear only about our own prefixes; the whole table goes out
        // once selection is final.
        let deferring = self.deferring();
        let targets: Vec<(PeerId, PeerHandle)> = self.peers.values().filter(|p| p.up).map(|p| (p.id, p.handle.clone())).collect();
        while !self.dirty.is_empty() {
            let mut chunk = self.dirty.take(EXPORT_CHUNK);
            for p in &chunk {
                self.rib.mark_fib(*p);
            }
            if deferring {
                chunk.retain(|p| self.rib.best(p).is_none_or(|b| b.peer == crate::rib::LOCAL));
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

/// The whole table for a peer that just came up, then End-of-RIB for each family (RFC 4724 2).
async fn send_table(rib: &mut Rib, id: PeerId, families: &[Family], handle: &PeerHandle) {
    let mut updates = rib.export_all(id);
    updates.extend(families.iter().map(|f| Update::end_of_rib(*f)));
    handle.send(PeerCommand::Send(updates)).await;
}
