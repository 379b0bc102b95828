//! The speaker: the owner task of peers and RIB, and the only way in for the agent.
//!
//! Commands ([`SpeakerHandle`]) add, change and remove peers, originate and withdraw
//! prefixes, and read status. Out comes a stream of best-path changes ([`RouteChange`]) for
//! a FIB syncer; under load it is coalesced (the latest state per prefix), never lossy.

mod task;

use std::io;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use ipnetwork::IpNetwork;
use thiserror::Error;
use tokio::sync::{mpsc, oneshot, watch};

use crate::fsm::{FsmConfig, Negotiated, State};
pub use crate::procedures::max_prefix::{MaxPrefixAction, MaxPrefixes};
use crate::rib::policy::Policy;
use crate::rib::{BestRoute, Gateway};
use crate::session::{PeerConfig, Transport, TtlMode};
use crate::wire::{Family, GrFamily, GracefulRestart, LargeCommunity};

/// Speaker-wide settings.
#[derive(Clone, Debug)]
pub struct SpeakerConfig {
    pub router_id: Ipv4Addr,
    pub local_as: u32,
    /// Set: this speaker is a route reflector for its clients.
    pub cluster_id: Option<Ipv4Addr>,
    /// Where to accept connections (`0.0.0.0:179`, `[::]:179`).
    pub listen: Vec<SocketAddr>,
    /// ECMP over paths equal up to MED.
    pub multipath: bool,
    pub always_compare_med: bool,
    pub hostname: Option<String>,
    /// We have just restarted with our forwarding state intact (the agent found its routes
    /// in the kernel): the graceful restart capability says so (R and F bits, RFC 4724).
    pub restarting: bool,
    /// How long after start to wait for every peer's End-of-RIB before declaring the
    /// speaker synced anyway (peers that never come up must not hold the agent forever).
    pub sync_deadline: Duration,
}

impl SpeakerConfig {
    pub fn new(router_id: Ipv4Addr, local_as: u32) -> SpeakerConfig {
        SpeakerConfig {
            router_id,
            local_as,
            cluster_id: None,
            listen: vec!["0.0.0.0:179".parse().expect("literal"), "[::]:179".parse().expect("literal")],
            multipath: true,
            always_compare_med: false,
            hostname: None,
            restarting: false,
            sync_deadline: Duration::from_secs(120),
        }
    }
}

/// One neighbour as the agent (or an operator) describes it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NeighborConfig {
    pub address: IpAddr,
    pub port: u16,
    pub peer_as: u32,
    /// Overrides the speaker's AS on this session.
    pub local_as: Option<u32>,
    pub local_address: Option<IpAddr>,
    pub passive: bool,
    pub rr_client: bool,
    pub md5_key: Option<String>,
    pub ttl: TtlMode,
    pub hold_time: u16,
    pub connect_retry: Duration,
    pub families: Vec<Family>,
    pub keep_original_next_hop: bool,
    /// Set ourselves as next hop on every route sent, reflected iBGP routes included.
    pub next_hop_self: bool,
    /// KEEPALIVE interval; `None`: a third of the hold time.
    pub keepalive_time: Option<u16>,
    pub allow_own_as: u8,
    pub max_prefixes: Option<MaxPrefixes>,
    /// Graceful restart (RFC 4724) with this restart time in seconds; on by default, as in
    /// Calico, so an agent upgrade drops no traffic.
    pub graceful_restart: Option<u16>,
    /// Prefix lists and community match/set for what the peer sends.
    pub import: Option<Arc<Policy>>,
    /// The same for what we send the peer, before the iBGP/eBGP rules.
    pub export: Option<Arc<Policy>>,
    /// Routes learned from this peer are external to policies ([`crate::rib::policy::RouteSource`]).
    pub external: bool,
    /// Run the session only while BFD says the path works: not started before the first BFD
    /// Up, stopped on BFD Down ([`SpeakerHandle::bfd_changed`]).
    pub wait_for_bfd: bool,
    /// Offer RFC 8950 on this session: IPv4 unicast with IPv6 next hops, both ways. On an
    /// IPv6 session this also adds IPv4 unicast to the families.
    pub extended_next_hop: bool,
    /// The link of a link-local `address` (an interface name), its scope: connections go out
    /// on it and are accepted only from it. The agent sets it for link-local peers only (the
    /// BGPPeer validation refuses `%IF` on any other address).
    pub interface: Option<String>,
}

impl NeighborConfig {
    pub fn new(address: IpAddr, peer_as: u32) -> NeighborConfig {
        NeighborConfig {
            address,
            port: 179,
            peer_as,
            local_as: None,
            local_address: None,
            passive: false,
            rr_client: false,
            md5_key: None,
            ttl: TtlMode::Send(255),
            hold_time: 90,
            connect_retry: Duration::from_secs(5),
            families: vec![if address.is_ipv4() { Family::IPV4_UNICAST } else { Family::IPV6_UNICAST }],
            keep_original_next_hop: false,
            next_hop_self: false,
            keepalive_time: None,
            allow_own_as: 0,
            max_prefixes: None,
            graceful_restart: Some(120),
            import: None,
            export: None,
            external: false,
            wait_for_bfd: false,
            extended_next_hop: false,
            interface: None,
        }
    }

    fn peer_config(&self, speaker: &SpeakerConfig) -> PeerConfig {
        let mut fsm = FsmConfig::new(self.local_as.unwrap_or(speaker.local_as), speaker.router_id, self.peer_as);
        fsm.hold_time = self.hold_time;
        fsm.keepalive_time = self.keepalive_time;
        fsm.connect_retry = self.connect_retry;
        fsm.passive = self.passive;
        fsm.families = self.families.clone();
        if self.extended_next_hop {
            fsm.extended_next_hop = true;
            if !fsm.families.contains(&Family::IPV4_UNICAST) {
                fsm.families.insert(0, Family::IPV4_UNICAST);
            }
        }
        fsm.hostname = speaker.hostname.clone();
        fsm.graceful_restart = self.graceful_restart.map(|restart_time| GracefulRestart {
            restart_state: speaker.restarting,
            notification: false,
            restart_time: restart_time.min(4095),
            families: fsm.families.iter().map(|f| GrFamily { family: *f, forwarding_preserved: speaker.restarting }).collect(),
        });
        let mut t = Transport::new(SocketAddr::new(self.address, self.port));
        t.local_addr = self.local_address;
        t.md5_key = self.md5_key.clone();
        t.ttl = self.ttl;
        t.interface = self.interface.clone();
        let mut config = PeerConfig::new(fsm, t);
        config.track_prefixes = false;
        config
    }
}

/// A peer as `peers` reports it.
#[derive(Clone, Debug)]
pub struct PeerStatus {
    pub config: NeighborConfig,
    pub state: State,
    pub uptime: Option<Duration>,
    pub last_error: Option<String>,
    pub negotiated: Option<Negotiated>,
    /// Prefixes the peer announces to us now. Import checks that refuse a route (loops, our
    /// own next hop) keep it out of `prefixes_accepted` only.
    pub prefixes_received: usize,
    pub prefixes_accepted: usize,
    pub prefixes_advertised: usize,
    /// Enhanced route refresh cycles (BoRR..EoRR) the peer completed.
    pub refresh_cycles: u64,
    pub updates_received: u64,
    pub updates_sent: u64,
    pub notifications: crate::session::Notifications,
    /// Not started, or stopped, until BFD reports the path Up (`wait_for_bfd`).
    pub waiting_for_bfd: bool,
}

/// What BFD says about the path to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BfdSignal {
    Up,
    /// The path failed (not an administrative down). `remote_cpi`: the peer's BFD does not
    /// share fate with its control plane (RFC 5882 4.3), so this is a forwarding failure even
    /// while the peer's BGP is restarting.
    Down {
        remote_cpi: bool,
    },
}

/// What the speaker tells the FIB, in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum FibUpdate {
    Routes(Vec<RouteChange>),
    /// A session ended and no path has these next hops any more. The route changes that follow
    /// move every prefix off them; a FIB that keeps one kernel object per next hop can drop it
    /// first, in one operation instead of one per prefix.
    GatewaysGone(Vec<Gateway>),
}

/// A best-path change: `None` means the prefix is gone.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RouteChange {
    pub prefix: IpNetwork,
    pub best: Option<BestRoute>,
}

#[derive(Debug, Error)]
pub enum SpeakerError {
    #[error("the speaker has stopped")]
    Stopped,
    #[error("cannot listen: {0}")]
    Listen(#[from] io::Error),
}

pub(crate) enum Command {
    AddPeer(NeighborConfig, oneshot::Sender<()>),
    RemovePeer(IpAddr, oneshot::Sender<bool>),
    Originate { prefix: IpNetwork, communities: Vec<u32>, large: Vec<LargeCommunity>, reply: oneshot::Sender<()> },
    Listen(Vec<SocketAddr>, oneshot::Sender<io::Result<()>>),
    Withdraw { prefix: IpNetwork, reply: oneshot::Sender<bool> },
    Peers(oneshot::Sender<Vec<PeerStatus>>),
    Routes(Family, oneshot::Sender<Vec<(IpNetwork, BestRoute)>>),
    Refresh(IpAddr, oneshot::Sender<bool>),
    SetClusterId(Option<Ipv4Addr>, oneshot::Sender<()>),
    Bfd(IpAddr, BfdSignal, oneshot::Sender<()>),
}

/// The agent's grip on the speaker. Dropping every handle stops it: sessions close without
/// NOTIFICATION, so peers keep our routes if graceful restart was negotiated.
#[derive(Clone)]
pub struct SpeakerHandle {
    commands: mpsc::Sender<Command>,
    synced: watch::Receiver<bool>,
}

impl SpeakerHandle {
    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Command) -> Result<T, SpeakerError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(make(tx)).await.map_err(|_| SpeakerError::Stopped)?;
        rx.await.map_err(|_| SpeakerError::Stopped)
    }

    /// Waits until every peer has sent End-of-RIB for all its families once (or the sync
    /// deadline passed). After a restart the agent removes only then the kernel routes that
    /// did not come back (RFC 4724 4.1).
    pub async fn wait_synced(&self) -> Result<(), SpeakerError> {
        let mut rx = self.synced.clone();
        rx.wait_for(|s| *s).await.map(|_| ()).map_err(|_| SpeakerError::Stopped)
    }

    pub fn is_synced(&self) -> bool {
        *self.synced.borrow()
    }

    /// Adds a peer, or replaces the configuration of the peer at that address.
    pub async fn add_peer(&self, n: NeighborConfig) -> Result<(), SpeakerError> {
        self.ask(|tx| Command::AddPeer(n, tx)).await
    }

    /// Returns whether such a peer existed.
    pub async fn remove_peer(&self, address: IpAddr) -> Result<bool, SpeakerError> {
        self.ask(|tx| Command::RemovePeer(address, tx)).await
    }

    pub async fn originate(&self, prefix: IpNetwork, communities: Vec<u32>) -> Result<(), SpeakerError> {
        self.originate_tagged(prefix, communities, Vec::new()).await
    }

    /// Originates `prefix` with standard and large communities (RFC 1997, RFC 8092); called
    /// again with other communities it replaces them.
    pub async fn originate_tagged(&self, prefix: IpNetwork, communities: Vec<u32>, large: Vec<LargeCommunity>) -> Result<(), SpeakerError> {
        self.ask(|reply| Command::Originate { prefix, communities, large, reply }).await
    }

    /// Listens on these addresses instead; sessions stay up. On error the old sockets stay.
    pub async fn listen(&self, addrs: Vec<SocketAddr>) -> Result<(), SpeakerError> {
        self.ask(|reply| Command::Listen(addrs, reply)).await?.map_err(SpeakerError::Listen)
    }

    /// Makes the speaker a route reflector with this cluster id, or an ordinary speaker with
    /// `None`. Every existing session restarts (what it was sent depended on the role); remove
    /// the peers first to restart them only once.
    pub async fn set_cluster_id(&self, cluster_id: Option<Ipv4Addr>) -> Result<(), SpeakerError> {
        self.ask(|reply| Command::SetClusterId(cluster_id, reply)).await
    }

    /// BFD's verdict on the path to `peer`. Down closes an Established session at once with
    /// Cease / BFD Down (RFC 9384) and withdraws its routes, without graceful restart: the
    /// forwarding path is gone. A session the peer already closed itself (its BGP restarting,
    /// routes kept as stale) is left alone unless the peer's BFD is control-plane independent
    /// (RFC 5882 4.3.2); a Gingham agent's is not, so an agent restart stays lossless.
    pub async fn bfd_changed(&self, peer: IpAddr, signal: BfdSignal) -> Result<(), SpeakerError> {
        self.ask(|reply| Command::Bfd(peer, signal, reply)).await
    }

    pub async fn withdraw(&self, prefix: IpNetwork) -> Result<bool, SpeakerError> {
        self.ask(|reply| Command::Withdraw { prefix, reply }).await
    }

    pub async fn peers(&self) -> Result<Vec<PeerStatus>, SpeakerError> {
        self.ask(Command::Peers).await
    }

    /// Asks the peer to resend its routes (ROUTE-REFRESH for each negotiated family). Returns
    /// false when the peer is unknown or not Established.
    pub async fn refresh(&self, address: IpAddr) -> Result<bool, SpeakerError> {
        self.ask(|tx| Command::Refresh(address, tx)).await
    }

    pub async fn routes(&self, family: Family) -> Result<Vec<(IpNetwork, BestRoute)>, SpeakerError> {
        self.ask(|tx| Command::Routes(family, tx)).await
    }
}

/// Starts the speaker: binds the listeners and spawns the owner task.
///
/// Returns the handle and the stream of best-path changes. The stream must be read; while it
/// is not, changes are coalesced per prefix inside the speaker. A caller that installs nothing
/// (a route reflector out of the forwarding path) drops it, and no change is queued for it.
pub fn spawn(config: SpeakerConfig) -> Result<(SpeakerHandle, mpsc::Receiver<FibUpdate>), SpeakerError> {
    let listener = crate::session::Listener::bind(&config.listen, Vec::new(), None)?;
    let (cmd_tx, cmd_rx) = mpsc::channel(64);
    // Shallow on purpose: changes wait in the RIB's compact queue, not as built messages here.
    let (fib_tx, fib_rx) = mpsc::channel(4);
    let (synced_tx, synced) = watch::channel(false);
    tokio::spawn(task::SpeakerTask::new(config, listener, fib_tx, synced_tx).run(cmd_rx));
    Ok((SpeakerHandle { commands: cmd_tx, synced }, fib_rx))
}
