//! The speaker's owner task: the RIB, the peer table and the coalescing FIB stream.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::{BfdSignal, Command, FibUpdate, NeighborConfig, PeerStatus, RouteChange, SpeakerConfig};
use crate::fsm::StopMode;
use crate::procedures::convergence::{Convergence, ConvergenceAction, InitialTable, PeerView};
use crate::procedures::graceful::{GrAction, GrState, GracefulHelper};
use crate::procedures::max_prefix::{LimitAction, PrefixLimit};
use crate::procedures::refresh::{self, InboundRefresh, Reply};
use crate::procedures::TimerOp;
use crate::rib::decision::DecisionConfig;
use crate::rib::Gateway;
use crate::rib::{GroupExport, PeerId, PrefixSet, Rib, RibConfig, RibPeer};
use crate::session::{sleep_until, Listener, PeerCommand, PeerEvent, PeerHandle};
use crate::wire::{AsPath, ErrorCode, Family, Message, Origin, PathAttributes, RefreshSubtype, RouteRefresh, Update};

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
    /// Our graceful restart helper role for this peer: its stale paths while it restarts.
    graceful: GracefulHelper,
    /// The peer's first table, for "synced" and our own restart.
    initial: InitialTable,
    limit: PrefixLimit,
    /// The peer can be asked to send its routes again (RFC 2918).
    route_refresh: bool,
    /// Both sides negotiated enhanced route refresh (RFC 7313).
    enhanced_refresh: bool,
    inbound_refresh: InboundRefresh,
    /// Not started (or stopped) until BFD says Up (`wait_for_bfd`).
    held_for_bfd: bool,
}

/// The procedures' timers, one per kind and peer; a new request replaces the running one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum TimerKind {
    /// Stop waiting for End-of-RIB from peers that have not sent it.
    SyncDeadline,
    /// The peer's stale routes go (restart time, or stale-path time once it is back).
    StaleRoutes(IpAddr),
    /// Start the session the prefix limit closed.
    PrefixLimitRestart(IpAddr),
}

impl TimerKind {
    fn peer(self) -> Option<IpAddr> {
        match self {
            TimerKind::SyncDeadline => None,
            TimerKind::StaleRoutes(addr) | TimerKind::PrefixLimitRestart(addr) => Some(addr),
        }
    }
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
    fib: mpsc::Sender<FibUpdate>,
    /// Gateways no path has any more, not yet told to the FIB because its stream was full; they
    /// go before the next batch of routes, which would otherwise move every prefix off them one
    /// by one.
    gone_pending: Vec<Gateway>,
    /// Prefixes whose best path changed and that the peers have not been told about yet.
    dirty: PrefixSet,
    timers: HashMap<TimerKind, Instant>,
    /// Every peer delivered its table after our start (or the deadline passed): routes of ours
    /// in the kernel that did not come back may go.
    synced: watch::Sender<bool>,
    /// Synced, not said yet: it is said once every route change known by then has been handed
    /// to the FIB stream, so a reader that forwards the stream before acting on "synced" never
    /// removes a route whose news is still on its way.
    synced_due: bool,
    convergence: Convergence,
}

impl SpeakerTask {
    pub(super) fn new(config: SpeakerConfig, listener: Listener, fib: mpsc::Sender<FibUpdate>, synced: watch::Sender<bool>) -> SpeakerTask {
        let rib = Rib::new(RibConfig {
            router_id: config.router_id,
            cluster_id: config.cluster_id,
            multipath: config.multipath,
            decision: DecisionConfig { always_compare_med: config.always_compare_med },
        });
        // Bounded: a speaker that falls behind slows the peers' readers, and TCP slows the
        // senders, instead of queueing without limit.
        let (events_tx, events) = mpsc::channel(4096);
        let convergence = Convergence::new(config.restarting, config.sync_deadline);
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
            gone_pending: Vec::new(),
            dirty: PrefixSet::default(),
            timers: HashMap::new(),
            synced,
            synced_due: false,
            convergence,
        }
    }

    pub(super) async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let start = self.convergence.start();
        self.apply_convergence(start).await;
        loop {
            let fib = self.fib.clone();
            let next_timer = self.timers.values().min().copied();
            tokio::select! {
                // The FIB stream first: while a table floods in, its queue would otherwise grow
                // towards the whole table before the reader gets a turn. The RIB queues changed
                // prefixes (once each) and the route is read as a batch leaves, so a slow reader
                // gets the latest state per prefix and nothing is lost.
                biased;
                Ok(permit) = fib.reserve(), if self.rib.fib_pending() || !self.gone_pending.is_empty() => {
                    let gone = std::mem::take(&mut self.gone_pending);
                    let gone = if gone.is_empty() { gone } else { self.rib.unused_gateways(gone) };
                    if !gone.is_empty() {
                        permit.send(FibUpdate::GatewaysGone(gone));
                    } else if self.rib.fib_pending() {
                        let batch = self.rib.take_fib(FIB_BATCH).into_iter().map(|prefix| RouteChange { prefix, best: self.rib.best(&prefix) }).collect();
                        permit.send(FibUpdate::Routes(batch));
                    }
                }
                () = sleep_until(next_timer) => self.fire_timers().await,
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
            }
            self.propagate().await;
            if self.fib.is_closed() && (self.rib.fib_pending() || !self.gone_pending.is_empty()) {
                // Queued before the reader went; nobody will take it.
                self.rib.take_fib(usize::MAX);
                self.gone_pending.clear();
            }
            if self.synced_due && self.dirty.is_empty() && !self.rib.fib_pending() && self.gone_pending.is_empty() {
                self.synced_due = false;
                self.synced.send_replace(true);
            }
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
                self.converge().await;
            }
            Command::Listen(addrs, reply) => {
                let _gone = reply.send(self.rebind(&addrs).await);
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
                            p.inbound_refresh.cycles(),
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
        let (address, max_prefixes) = (n.address, n.max_prefixes);
        self.peers.insert(
            address,
            Peer {
                id,
                config: n,
                handle,
                join,
                up: false,
                graceful: GracefulHelper::default(),
                initial: InitialTable::default(),
                limit: PrefixLimit::new(max_prefixes),
                route_refresh: false,
                enhanced_refresh: false,
                inbound_refresh: InboundRefresh::default(),
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
                    let flush = p.graceful.flush();
                    if !flush.is_empty() {
                        tracing::warn!(peer = %addr, "BFD down while the peer restarts, and its forwarding is control-plane independent: flushing its stale routes");
                    }
                    self.apply_graceful(addr, flush).await;
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
    /// before they accept.
    async fn rebind(&mut self, addrs: &[SocketAddr]) -> std::io::Result<()> {
        if self.listener.local_addrs() == addrs {
            return Ok(());
        }
        self.listener.listen(addrs.to_vec()).await?;
        tracing::info!(?addrs, "listening");
        Ok(())
    }

    async fn remove_peer(&mut self, addr: IpAddr, why: ErrorCode) -> bool {
        let Some(p) = self.peers.remove(&addr) else {
            return false;
        };
        self.listener.remove_peer(addr);
        self.timers.retain(|kind, _| kind.peer() != Some(addr));
        if let Some(old) = p.graceful.stale() {
            self.peer_down(old).await;
        }
        p.handle.send(PeerCommand::Stop(StopMode::Cease { code: why, communication: None })).await;
        self.peer_down(p.id).await;
        true
    }

    async fn event(&mut self, ev: PeerEvent) {
        match ev {
            PeerEvent::Established { peer, local, negotiated } => {
                let addr = peer.ip();
                let Some(p) = self.peers.get_mut(&addr) else {
                    return;
                };
                p.up = true;
                let gr = negotiated.graceful_restart().then(|| {
                    let peer_gr = negotiated.peer_graceful_restart.as_ref();
                    GrState {
                        restart_time: Duration::from_secs(u64::from(peer_gr.map_or(0, |g| g.restart_time))),
                        notification: peer_gr.is_some_and(|g| g.notification),
                        restarting: peer_gr.is_some_and(|g| g.restart_state),
                    }
                });
                let graceful = p.graceful.established(gr);
                p.initial.established(&negotiated.families);
                p.route_refresh = negotiated.route_refresh;
                p.enhanced_refresh = negotiated.enhanced_route_refresh;
                p.inbound_refresh.reset();
                let (id, cfg, handle) = (p.id, p.config.clone(), p.handle.clone());
                self.apply_graceful(addr, graceful).await;
                let local_address = cfg.local_address.or(local.map(|l| l.ip())).unwrap_or(IpAddr::V4(self.config.router_id));
                let rib_peer = RibPeer {
                    address: addr,
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
                    link: match local {
                        Some(SocketAddr::V6(l)) if l.ip().is_unicast_link_local() => Some(l.scope_id()),
                        _ => None,
                    },
                };
                self.rib.peer_up(id, rib_peer);
                // After our own restart the table goes out only once selection is final
                // (RFC 4724 4.1); our own prefixes are final already and go at once, so a pod
                // made meanwhile is reachable.
                if !self.convergence.deferring() {
                    send_table(&mut self.rib, id, &negotiated.families, &handle).await;
                } else {
                    let own = self.rib.local_prefixes();
                    let updates = self.rib.export_to(id, &own);
                    if !updates.is_empty() {
                        handle.send(PeerCommand::Send(updates)).await;
                    }
                }
                self.converge().await;
            }
            PeerEvent::Down { peer, reason } => {
                let addr = peer.ip();
                let Some(p) = self.peers.get_mut(&addr) else {
                    return;
                };
                p.up = false;
                let id = p.id;
                let families = self.rib.peer(id).map(|r| r.families.clone()).unwrap_or_default();
                let actions = p.graceful.down(id, families, &reason);
                if p.graceful.stale() == Some(id) {
                    tracing::info!(%peer, ?reason, "peer restarting: keeping its routes as stale");
                } else {
                    tracing::debug!(%peer, ?reason, "withdrawing the peer's routes");
                }
                self.apply_graceful(addr, actions).await;
            }
            PeerEvent::Update { peer, update, .. } => {
                let addr = peer.ip();
                let Some(p) = self.peers.get_mut(&addr) else {
                    return;
                };
                let id = p.id;
                let end_of_rib = update.end_of_rib_family();
                p.inbound_refresh.seen(update.announced().chain(update.withdrawn_prefixes()));
                let stale = p.graceful.stale();
                let result = self.rib.apply_update(id, &update);
                self.dirty.extend(result.changed);
                if let Some(old) = stale {
                    // Fresh routes replace their stale copies at once.
                    for prefix in update.announced() {
                        if self.rib.withdraw_path(prefix, old) {
                            self.dirty.insert(prefix);
                        }
                    }
                }
                self.check_prefix_limit(addr, &update).await;
                if let Some(family) = end_of_rib {
                    let Some(p) = self.peers.get_mut(&addr) else { return };
                    p.initial.end_of_rib(family);
                    let graceful = p.graceful.end_of_rib(family);
                    if !graceful.is_empty() {
                        tracing::info!(%peer, "peer finished its restart; flushing what did not come back");
                    }
                    self.apply_graceful(addr, graceful).await;
                    self.converge().await;
                }
            }
            PeerEvent::RouteRefresh { peer, request } => self.route_refresh(peer, request).await,
        }
    }

    /// Removes a peer's paths. The FIB hears first which gateways no path will have (it can
    /// move the traffic off them in one step), then gets the changed prefixes as usual.
    async fn peer_down(&mut self, id: PeerId) {
        let gone = self.rib.gateways_only_of(id);
        if !gone.is_empty() {
            // Never wait for the FIB here (a full stream means it is busy with a table): the
            // hint then waits, ahead of the route changes, for the stream to take it.
            match self.fib.try_send(FibUpdate::GatewaysGone(gone)) {
                Ok(()) => {
                    // The reader woken by the send waits in this worker's next-task slot, which
                    // other workers cannot take, until this task yields: without this it would
                    // wait out the removal of every path below (170 ms for 100k, measured).
                    tokio::task::yield_now().await;
                }
                Err(mpsc::error::TrySendError::Full(FibUpdate::GatewaysGone(gone))) => {
                    tracing::debug!(gateways = gone.len(), "the FIB stream is full: the gone-gateway hint waits");
                    self.gone_pending.extend(gone);
                    // Two sessions may go while the stream is full, through the same gateway.
                    self.gone_pending.sort_by_key(|g| (g.addr, g.ifindex));
                    self.gone_pending.dedup();
                }
                Err(_) => {}
            }
        }
        self.dirty.extend(self.rib.peer_down(id));
    }

    /// Carries out what the graceful restart helper of the peer at `addr` asked for.
    async fn apply_graceful(&mut self, addr: IpAddr, actions: Vec<GrAction>) {
        for action in actions {
            match action {
                GrAction::Retain(id) => {
                    self.rib.peer_retire(id);
                    let next = self.next_id;
                    self.next_id += 1;
                    if let Some(p) = self.peers.get_mut(&addr) {
                        p.id = next;
                    }
                }
                GrAction::Flush(id) => self.peer_down(id).await,
                GrAction::Timer(op) => self.set_timer(TimerKind::StaleRoutes(addr), op),
            }
        }
    }

    /// RFC 2918 / RFC 7313 ([`refresh`] says what each step does).
    async fn route_refresh(&mut self, peer: SocketAddr, request: RouteRefresh) {
        let Some(p) = self.peers.get_mut(&peer.ip()) else { return };
        let (id, handle) = (p.id, p.handle.clone());
        let family = request.family;
        match request.subtype {
            RefreshSubtype::Request => {
                for step in refresh::answer(p.enhanced_refresh) {
                    match step {
                        Reply::Marker(subtype) => {
                            handle.send(PeerCommand::RouteRefresh(RouteRefresh { family, subtype })).await;
                        }
                        Reply::Table => {
                            handle.send(PeerCommand::Send(self.rib.export_all(id))).await;
                        }
                    }
                }
            }
            RefreshSubtype::Begin => p.inbound_refresh.begin(family, self.rib.prefixes_from(id, family)),
            RefreshSubtype::End => {
                let Some(stale) = p.inbound_refresh.end(family) else { return };
                tracing::debug!(%peer, %family, stale = stale.len(), "enhanced route refresh done");
                for prefix in stale.iter() {
                    if self.rib.withdraw_path(prefix, id) {
                        self.dirty.insert(prefix);
                    }
                }
            }
            // RFC 7313 5: unknown subtypes are ignored.
            RefreshSubtype::Other(_) => {}
        }
    }

    /// Re-evaluates "synced" and, after our restart, whether selection is final.
    async fn converge(&mut self) {
        let views: Vec<PeerView> = self
            .peers
            .values()
            .map(|p| PeerView {
                up: p.up,
                gr_restarting: p.graceful.negotiated().map(|gr| gr.restarting),
                initial_table_complete: p.initial.complete(),
            })
            .collect();
        let actions = self.convergence.evaluate(&views);
        self.apply_convergence(actions).await;
    }

    async fn apply_convergence(&mut self, actions: Vec<ConvergenceAction>) {
        for action in actions {
            match action {
                ConvergenceAction::Synced => {
                    tracing::info!("synced: every peer sent End-of-RIB, or the deadline passed");
                    self.synced_due = true;
                }
                ConvergenceAction::SelectionFinal => {
                    tracing::info!("route selection final (RFC 4724 4.1): sending our full tables");
                    let up: Vec<(PeerId, PeerHandle)> = self.peers.values().filter(|p| p.up).map(|p| (p.id, p.handle.clone())).collect();
                    for (id, handle) in up {
                        let families = self.rib.peer(id).map(|r| r.families.clone()).unwrap_or_default();
                        send_table(&mut self.rib, id, &families, &handle).await;
                    }
                }
                ConvergenceAction::Timer(op) => self.set_timer(TimerKind::SyncDeadline, op),
            }
        }
    }

    fn set_timer(&mut self, kind: TimerKind, op: TimerOp) {
        match op {
            TimerOp::Start(after) => {
                self.timers.insert(kind, Instant::now() + after);
            }
            TimerOp::Stop => {
                self.timers.remove(&kind);
            }
        }
    }

    async fn fire_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<TimerKind> = self.timers.iter().filter(|(_, at)| **at <= now).map(|(kind, _)| *kind).collect();
        for kind in due {
            self.timers.remove(&kind);
            match kind {
                TimerKind::SyncDeadline => {
                    let actions = self.convergence.timer_expired();
                    if !actions.is_empty() {
                        tracing::info!("sync deadline passed: synced without every peer's End-of-RIB");
                    }
                    self.apply_convergence(actions).await;
                }
                TimerKind::StaleRoutes(addr) => {
                    let Some(p) = self.peers.get_mut(&addr) else { continue };
                    let actions = p.graceful.timer_expired();
                    if !actions.is_empty() {
                        tracing::info!(peer = %addr, "restart time over: flushing stale routes");
                    }
                    self.apply_graceful(addr, actions).await;
                }
                TimerKind::PrefixLimitRestart(addr) => {
                    // Removed meanwhile, or BFD holds it: nothing to restart.
                    if let Some(p) = self.peers.get(&addr).filter(|p| !p.held_for_bfd) {
                        p.handle.send(PeerCommand::Start).await;
                    }
                }
            }
        }
    }

    async fn check_prefix_limit(&mut self, addr: IpAddr, update: &Update) {
        let Some(p) = self.peers.get_mut(&addr) else { return };
        let family = update.attributes.mp_reach.as_ref().map_or(Family::IPV4_UNICAST, |m| m.family);
        let count = self.rib.accepted_family(p.id, family == Family::IPV4_UNICAST);
        let actions = p.limit.check(family, count);
        let handle = p.handle.clone();
        for action in actions {
            match action {
                LimitAction::Warn { count, limit } => tracing::warn!(peer = %addr, count, limit, "peer exceeds its prefix limit"),
                LimitAction::TearDown(n) => {
                    tracing::warn!(peer = %addr, count, "peer exceeds its prefix limit; closing the session");
                    handle.send(PeerCommand::Stop(StopMode::Notify(n))).await;
                }
                LimitAction::Timer(op) => self.set_timer(TimerKind::PrefixLimitRestart(addr), op),
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
        let deferring = self.convergence.deferring();
        let targets: HashMap<PeerId, PeerHandle> = self.peers.values().filter(|p| p.up).map(|p| (p.id, p.handle.clone())).collect();
        while !self.dirty.is_empty() {
            let mut chunk = self.dirty.take(EXPORT_CHUNK);
            // A stream nobody reads any more (a route reflector out of the forwarding path
            // drops it) would only queue changes that are never taken.
            if !self.fib.is_closed() {
                for p in &chunk {
                    self.rib.mark_fib(*p);
                }
            }
            if deferring {
                chunk.retain(|p| self.rib.best(p).is_none_or(|b| b.peer == crate::rib::LOCAL));
            }
            for group in self.rib.export(&chunk) {
                send_group(group, &targets).await;
            }
        }
        // A session that dropped a full table marked all of it at once.
        self.dirty.shrink_to(EXPORT_CHUNK);
        self.rib.collect_garbage();
    }
}

/// An update group's UPDATEs: encoded once and shared (the buffer is reference-counted) by
/// every member that gets the common set, and one set of its own for each source member.
async fn send_group(group: GroupExport, targets: &HashMap<PeerId, PeerHandle>) {
    for (member, updates) in group.individual.iter().filter(|(_, u)| !u.is_empty()) {
        if let Some(handle) = targets.get(member) {
            handle.send(PeerCommand::Send(updates.clone())).await;
        }
    }
    if group.common.is_empty() {
        return;
    }
    let shared: Vec<&PeerHandle> =
        group.members.iter().filter(|m| !group.individual.iter().any(|(i, _)| i == *m)).filter_map(|m| targets.get(m)).collect();
    if shared.is_empty() {
        return;
    }
    let mut buf = BytesMut::new();
    let mut updates = 0;
    for u in group.common {
        match Message::Update(u).encode(&group.codec, &mut buf) {
            Ok(()) => updates += 1,
            Err(e) => tracing::error!(error = %e, "an UPDATE for an update group does not encode; not sent"),
        }
    }
    let bytes = buf.freeze();
    for handle in shared {
        handle.send(PeerCommand::SendEncoded { bytes: bytes.clone(), updates }).await;
    }
}

/// The whole table for a peer that just came up, then End-of-RIB for each family (RFC 4724 2).
async fn send_table(rib: &mut Rib, id: PeerId, families: &[Family], handle: &PeerHandle) {
    let mut updates = rib.export_all(id);
    updates.extend(families.iter().map(|f| Update::end_of_rib(*f)));
    handle.send(PeerCommand::Send(updates)).await;
}
