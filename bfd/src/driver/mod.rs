//! The tokio driver: one task runs every BFD session of a node (RFC 5881 single hop, IPv4 and
//! IPv6). It owns the sockets, the timers and the [`Session`]s; the agent talks to it through a
//! [`BfdHandle`] (the wanted set of sessions, a status snapshot) and hears of state changes on
//! a channel of [`Change`]s.
//!
//! Packets are matched to a session by Your Discriminator, or by source address while the peer
//! does not know ours yet (RFC 5881 section 3), and only when they arrived with TTL 255.
//! Sockets open when the first session of a family or local address needs them.

mod socket;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::hash::{BuildHasher, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use bytes::BytesMut;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

pub use socket::CONTROL_PORT;
use socket::{Receiver, Sender};

use crate::packet::{ControlPacket, Diagnostic, State};
use crate::session::{Input, Output, Session, SessionConfig, Timer};

/// How one session runs: what the agent derives from a BGPPeer's `bfd`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Peering {
    /// Our address on the session; `None` lets the kernel choose.
    pub local: Option<IpAddr>,
    pub min_tx: Duration,
    pub min_rx: Duration,
    pub multiplier: u8,
}

/// A session as [`BfdHandle::sessions`] reports it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SessionStatus {
    pub peer: IpAddr,
    pub peering: Peering,
    pub state: State,
    /// Why the session last changed state.
    pub diagnostic: Diagnostic,
    pub local_disc: u32,
    pub remote_disc: u32,
    /// In the current state for this long.
    pub since: Duration,
    /// The detection time in force, once the peer has been heard.
    pub detection_time: Option<Duration>,
    /// The peer's control-plane-independent bit, from its last packet.
    pub remote_cpi: bool,
    pub packets_in: u64,
    pub packets_out: u64,
    /// Transitions from Up to Down.
    pub downs: u64,
}

/// A state change of one session.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Change {
    pub peer: IpAddr,
    pub from: State,
    pub to: State,
    pub diagnostic: Diagnostic,
    /// The peer took the session down administratively: not a path failure, so a client
    /// protocol must not act on it (RFC 5882 section 3.2).
    pub peer_admin_down: bool,
    /// The peer's C bit: its forwarding does not share fate with its control plane, so a
    /// failure is a forwarding failure even while its BGP restarts (RFC 5882 section 4.3).
    pub remote_cpi: bool,
}

#[derive(Clone, Copy, Debug)]
pub struct DriverConfig {
    /// 3784 in production; tests in a namespace may pick another.
    pub port: u16,
    /// Our C bit. Gingham's BFD runs in the agent and stops with it, so this is false there.
    pub control_plane_independent: bool,
}

impl Default for DriverConfig {
    fn default() -> Self {
        DriverConfig { port: CONTROL_PORT, control_plane_independent: false }
    }
}

enum Command {
    Set(BTreeMap<IpAddr, Peering>, oneshot::Sender<io::Result<()>>),
    Sessions(oneshot::Sender<Vec<SessionStatus>>),
}

/// The way in to the driver task; dropping every handle stops it (sessions go silent, and the
/// peers notice after their detection time).
#[derive(Clone)]
pub struct BfdHandle {
    commands: mpsc::Sender<Command>,
}

#[derive(Debug, thiserror::Error)]
pub enum DriverError {
    #[error("the BFD task has stopped")]
    Stopped,
    #[error("BFD socket: {0}")]
    Socket(#[from] io::Error),
}

impl BfdHandle {
    /// Makes the running sessions exactly `want`: new peers start in Down, removed ones send
    /// AdminDown once (so the peer's BGP does not take it for a failure) and stop, changed
    /// intervals apply through a poll sequence without a flap. On a socket error the sessions
    /// that could not be opened are left out and the error returned; the rest apply.
    pub async fn set(&self, want: BTreeMap<IpAddr, Peering>) -> Result<(), DriverError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Set(want, tx)).await.map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)?.map_err(DriverError::Socket)
    }

    pub async fn sessions(&self) -> Result<Vec<SessionStatus>, DriverError> {
        let (tx, rx) = oneshot::channel();
        self.commands.send(Command::Sessions(tx)).await.map_err(|_| DriverError::Stopped)?;
        rx.await.map_err(|_| DriverError::Stopped)
    }
}

/// Starts the driver task. State changes arrive on the receiver, at most one per packet or
/// expired timer; it must be read.
pub fn spawn(config: DriverConfig) -> (BfdHandle, mpsc::UnboundedReceiver<Change>) {
    let (tx, rx) = mpsc::channel(16);
    let (changes_tx, changes) = mpsc::unbounded_channel();
    tokio::spawn(Driver::new(config, changes_tx).run(rx));
    (BfdHandle { commands: tx }, changes)
}

struct Entry {
    peer: IpAddr,
    peering: Peering,
    session: Session,
    /// Key of the socket this session sends from.
    sender: IpAddr,
    deadlines: [Option<Instant>; 2],
    changed_at: Instant,
    remote_cpi: bool,
    packets_in: u64,
    packets_out: u64,
    downs: u64,
}

fn timer_index(t: Timer) -> usize {
    match t {
        Timer::Transmit => 0,
        Timer::Detect => 1,
    }
}

const TIMERS: [Timer; 2] = [Timer::Transmit, Timer::Detect];

struct Driver {
    config: DriverConfig,
    changes: mpsc::UnboundedSender<Change>,
    sessions: HashMap<u32, Entry>,
    by_peer: HashMap<IpAddr, u32>,
    /// Every running timer, earliest first: (deadline, local discriminator, timer index).
    timers: BTreeSet<(Instant, u32, usize)>,
    receivers: [Option<Receiver>; 2],
    senders: HashMap<IpAddr, Sender>,
    next_disc: u32,
    /// Packets refused before reaching a session (bad TTL, malformed, unknown), for debugging.
    dropped: u64,
}

fn random() -> u64 {
    std::collections::hash_map::RandomState::new().build_hasher().finish()
}

impl Driver {
    fn new(config: DriverConfig, changes: mpsc::UnboundedSender<Change>) -> Driver {
        Driver {
            config,
            changes,
            sessions: HashMap::new(),
            by_peer: HashMap::new(),
            timers: BTreeSet::new(),
            receivers: [None, None],
            senders: HashMap::new(),
            // Discriminators start at a random point, so a restarted agent does not reuse the
            // ones its peers still hold for the old sessions.
            next_disc: (random() as u32).max(1),
            dropped: 0,
        }
    }

    async fn run(mut self, mut commands: mpsc::Receiver<Command>) {
        let mut buf4 = [0u8; 512];
        let mut buf6 = [0u8; 512];
        loop {
            let next = self.timers.first().map(|(at, _, _)| *at);
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(Command::Set(want, reply)) => {
                        let _gone = reply.send(self.set(want));
                    }
                    Some(Command::Sessions(reply)) => {
                        let _gone = reply.send(self.status());
                    }
                    None => return,
                },
                r = recv(self.receivers[0].as_ref(), &mut buf4) => self.datagram(r, &buf4),
                r = recv(self.receivers[1].as_ref(), &mut buf6) => self.datagram(r, &buf6),
                _ = tokio::time::sleep_until(next.unwrap_or_else(Instant::now)), if next.is_some() => self.expire(),
            }
        }
    }

    fn set(&mut self, want: BTreeMap<IpAddr, Peering>) -> io::Result<()> {
        let gone: Vec<IpAddr> = self.by_peer.keys().filter(|p| !want.contains_key(p)).copied().collect();
        for peer in gone {
            self.remove(peer);
        }
        let mut result = Ok(());
        for (peer, peering) in want {
            if let Some(disc) = self.by_peer.get(&peer).copied() {
                let entry = &self.sessions[&disc];
                if entry.peering == peering {
                    continue;
                }
                if entry.peering.local != peering.local {
                    self.remove(peer);
                } else {
                    let input = Input::Configure {
                        desired_min_tx: peering.min_tx,
                        required_min_rx: peering.min_rx,
                        detect_mult: peering.multiplier,
                    };
                    if let Some(e) = self.sessions.get_mut(&disc) {
                        e.peering = peering;
                    }
                    self.input(disc, input);
                    continue;
                }
            }
            if let Err(e) = self.add(peer, peering) {
                tracing::warn!(%peer, error = %e, "BFD session not started");
                result = Err(e);
            }
        }
        result
    }

    fn add(&mut self, peer: IpAddr, peering: Peering) -> io::Result<()> {
        let family = usize::from(peer.is_ipv6());
        if self.receivers[family].is_none() {
            self.receivers[family] = Some(Receiver::bind(peer.is_ipv6(), self.config.port)?);
        }
        let sender =
            peering.local.unwrap_or(if peer.is_ipv6() { IpAddr::V6(Ipv6Addr::UNSPECIFIED) } else { IpAddr::V4(Ipv4Addr::UNSPECIFIED) });
        if let std::collections::hash_map::Entry::Vacant(slot) = self.senders.entry(sender) {
            let s = Sender::bind(sender)?;
            tracing::debug!(local = %sender, port = s.local_port(), "BFD source socket");
            slot.insert(s);
        }
        let local_disc = self.fresh_disc();
        let (session, outputs) = Session::new(SessionConfig {
            local_disc,
            desired_min_tx: peering.min_tx,
            required_min_rx: peering.min_rx,
            detect_mult: peering.multiplier.max(1),
            control_plane_independent: self.config.control_plane_independent,
            jitter_seed: random(),
        });
        tracing::info!(%peer, local_disc, "BFD session added");
        self.sessions.insert(
            local_disc,
            Entry {
                peer,
                peering,
                session,
                sender,
                deadlines: [None, None],
                changed_at: Instant::now(),
                remote_cpi: false,
                packets_in: 0,
                packets_out: 0,
                downs: 0,
            },
        );
        self.by_peer.insert(peer, local_disc);
        self.carry_out(local_disc, outputs, false);
        Ok(())
    }

    fn fresh_disc(&mut self) -> u32 {
        loop {
            let d = self.next_disc;
            self.next_disc = self.next_disc.wrapping_add(1).max(1);
            if !self.sessions.contains_key(&d) {
                return d;
            }
        }
    }

    fn remove(&mut self, peer: IpAddr) {
        let Some(disc) = self.by_peer.remove(&peer) else { return };
        // One AdminDown packet, so the peer knows this is deconfiguration, not a failure.
        self.input(disc, Input::AdminDown);
        if let Some(e) = self.sessions.remove(&disc) {
            for (i, at) in e.deadlines.iter().enumerate() {
                if let Some(at) = at {
                    self.timers.remove(&(*at, disc, i));
                }
            }
            tracing::info!(%peer, "BFD session removed");
        }
        if !self.sessions.values().any(|e| e.peer.is_ipv6() == peer.is_ipv6()) {
            self.receivers[usize::from(peer.is_ipv6())] = None;
        }
        self.senders.retain(|local, _| self.sessions.values().any(|e| e.sender == *local));
    }

    fn input(&mut self, disc: u32, input: Input) {
        let Some(e) = self.sessions.get_mut(&disc) else { return };
        let admin = matches!(input, Input::Received(p) if p.state == State::AdminDown);
        if let Input::Received(p) = input {
            e.packets_in += 1;
            e.remote_cpi = p.cpi;
        }
        let outputs = e.session.handle(input);
        self.carry_out(disc, outputs, admin);
    }

    fn carry_out(&mut self, disc: u32, outputs: Vec<Output>, peer_admin_down: bool) {
        let Some(e) = self.sessions.get_mut(&disc) else { return };
        for out in outputs {
            match out {
                Output::Send(p) => {
                    tracing::trace!(peer = %e.peer, state = ?p.state, poll = p.poll, fin = p.fin, tx = p.desired_min_tx, rx = p.required_min_rx, "BFD send");
                    let mut buf = BytesMut::with_capacity(crate::packet::LEN);
                    p.encode(&mut buf);
                    let to = SocketAddr::new(e.peer, self.config.port);
                    match self.senders.get(&e.sender).map(|s| s.send(&buf, to)) {
                        Some(Ok(())) => e.packets_out += 1,
                        Some(Err(err)) => tracing::debug!(peer = %e.peer, error = %err, "BFD packet not sent"),
                        None => {}
                    }
                }
                Output::StartTimer { timer, after } => {
                    let i = timer_index(timer);
                    if let Some(old) = e.deadlines[i].take() {
                        self.timers.remove(&(old, disc, i));
                    }
                    let at = Instant::now() + after;
                    e.deadlines[i] = Some(at);
                    self.timers.insert((at, disc, i));
                }
                Output::StopTimer(timer) => {
                    let i = timer_index(timer);
                    if let Some(old) = e.deadlines[i].take() {
                        self.timers.remove(&(old, disc, i));
                    }
                }
                Output::StateChanged { from, to, diag } => {
                    e.changed_at = Instant::now();
                    if from == State::Up {
                        e.downs += 1;
                    }
                    tracing::info!(peer = %e.peer, ?from, ?to, ?diag, "BFD session state");
                    let change = Change { peer: e.peer, from, to, diagnostic: diag, peer_admin_down, remote_cpi: e.remote_cpi };
                    // Nobody listening means the agent is stopping.
                    let _ignored = self.changes.send(change);
                }
            }
        }
    }

    fn expire(&mut self) {
        let now = Instant::now();
        while let Some(&(at, disc, i)) = self.timers.first() {
            if at > now {
                break;
            }
            self.timers.remove(&(at, disc, i));
            if let Some(e) = self.sessions.get_mut(&disc) {
                e.deadlines[i] = None;
            }
            self.input(disc, Input::Timer(TIMERS[i]));
        }
    }

    fn datagram(&mut self, r: io::Result<socket::Datagram>, buf: &[u8]) {
        let d = match r {
            Ok(d) => d,
            Err(e) => {
                tracing::debug!(error = %e, "BFD receive");
                return;
            }
        };
        // RFC 5881 section 5: only packets no router has forwarded.
        if d.ttl != Some(255) {
            self.drop_packet(d.from, "TTL is not 255");
            return;
        }
        let packet = match ControlPacket::decode(&buf[..d.len]) {
            Ok(p) => p,
            Err(e) => {
                self.drop_packet(d.from, &e.to_string());
                return;
            }
        };
        let disc = match packet.your_disc {
            0 => self.by_peer.get(&d.from.ip()).copied(),
            theirs => Some(theirs).filter(|t| self.sessions.get(t).is_some_and(|e| e.peer == d.from.ip())),
        };
        tracing::trace!(from = %d.from, state = ?packet.state, poll = packet.poll, fin = packet.fin, tx = packet.desired_min_tx, rx = packet.required_min_rx, "BFD received");
        match disc {
            Some(disc) => self.input(disc, Input::Received(packet)),
            None => self.drop_packet(d.from, "no session for it"),
        }
    }

    fn drop_packet(&mut self, from: SocketAddr, why: &str) {
        self.dropped += 1;
        tracing::debug!(%from, why, dropped = self.dropped, "BFD packet dropped");
    }

    fn status(&self) -> Vec<SessionStatus> {
        let now = Instant::now();
        let mut out: Vec<SessionStatus> = self
            .sessions
            .iter()
            .map(|(disc, e)| SessionStatus {
                peer: e.peer,
                peering: e.peering,
                state: e.session.state(),
                diagnostic: e.session.diagnostic(),
                local_disc: *disc,
                remote_disc: e.session.remote_disc(),
                since: now - e.changed_at,
                detection_time: e.session.detection_time(),
                remote_cpi: e.remote_cpi,
                packets_in: e.packets_in,
                packets_out: e.packets_out,
                downs: e.downs,
            })
            .collect();
        out.sort_by_key(|s| s.peer);
        out
    }
}

async fn recv(r: Option<&Receiver>, buf: &mut [u8]) -> io::Result<socket::Datagram> {
    match r {
        Some(r) => r.recv(buf).await,
        None => std::future::pending().await,
    }
}
