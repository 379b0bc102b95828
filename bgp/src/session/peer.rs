//! The peer task: sole owner of one peer's [`PeerFsm`], its connections and its timers.
//! Commands come in over a channel, [`PeerEvent`]s go out over another; nothing is shared.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use ipnetwork::IpNetwork;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::Instant;

use super::conn::{ConnEvent, ConnHandle};
use super::socket::Transport;
use crate::fsm::{ConnId, Direction, DownReason, FsmConfig, Input, Negotiated, Output, PeerFsm, State, StopMode, Timer};
use crate::wire::{decode_frame, AttrAction, AttrError, Message, RouteRefresh, SessionCodec, Update};

/// One peer's full configuration.
#[derive(Clone, Debug)]
pub struct PeerConfig {
    pub fsm: FsmConfig,
    pub transport: Transport,
    /// RFC 9687: give up on a peer that takes nothing from us for this long.
    pub send_hold: Duration,
    /// Keep the set of prefixes the peer announces, for `prefixes_received`. The speaker's
    /// RIB already knows them and turns this off rather than hold every prefix twice.
    pub track_prefixes: bool,
}

impl PeerConfig {
    pub fn new(fsm: FsmConfig, transport: Transport) -> PeerConfig {
        PeerConfig { fsm, transport, send_hold: Duration::from_secs(480), track_prefixes: true }
    }
}

/// Requests to a peer task.
#[derive(Debug)]
pub enum PeerCommand {
    Start,
    Stop(StopMode),
    /// A connection the listener accepted from this peer's address.
    Incoming(TcpStream),
    /// UPDATEs to send once Established; dropped otherwise (the table is resent on the next
    /// Established anyway).
    Send(Vec<Update>),
    /// UPDATEs an update group's members share, encoded once with their codec.
    SendEncoded {
        bytes: Bytes,
        updates: u32,
    },
    RouteRefresh(RouteRefresh),
    Snapshot(oneshot::Sender<PeerSnapshot>),
}

/// What the peer task tells its owner.
// Update dominates the stream; see `wire::Message` for why it is not boxed.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum PeerEvent {
    Established {
        peer: SocketAddr,
        /// Our end of the session's TCP connection.
        local: Option<SocketAddr>,
        negotiated: Box<Negotiated>,
    },
    Down {
        peer: SocketAddr,
        reason: DownReason,
    },
    /// An UPDATE after RFC 7606 handling: for treat-as-withdraw, `update` has already been
    /// turned into withdrawals (no NLRI, no attributes).
    Update {
        peer: SocketAddr,
        update: Update,
        attr_errors: Vec<AttrError>,
    },
    RouteRefresh {
        peer: SocketAddr,
        request: RouteRefresh,
    },
}

/// A point-in-time view of the peer for status tables.
#[derive(Clone, Debug)]
pub struct PeerSnapshot {
    pub peer: SocketAddr,
    pub local_as: u32,
    pub peer_as: u32,
    pub state: State,
    pub uptime: Option<Duration>,
    pub last_error: Option<String>,
    pub negotiated: Option<Negotiated>,
    pub messages_received: u64,
    pub messages_sent: u64,
    pub updates_received: u64,
    pub updates_sent: u64,
    /// Prefixes the peer currently announces to us.
    pub prefixes_received: usize,
    pub treat_as_withdraw: u64,
    /// Connections closed with or by Cease / Connection Collision Resolution (RFC 4271 6.8).
    pub collisions: u64,
    pub notifications: Notifications,
}

/// Handle to a running peer task. Dropping every handle stops the peer (silently).
#[derive(Clone)]
pub struct PeerHandle {
    commands: mpsc::Sender<PeerCommand>,
    pub addr: SocketAddr,
}

impl PeerHandle {
    pub fn sender(&self) -> mpsc::Sender<PeerCommand> {
        self.commands.clone()
    }

    /// Sends a command; false when the task has exited.
    pub async fn send(&self, cmd: PeerCommand) -> bool {
        self.commands.send(cmd).await.is_ok()
    }

    pub async fn snapshot(&self) -> Option<PeerSnapshot> {
        let (tx, rx) = oneshot::channel();
        if !self.send(PeerCommand::Snapshot(tx)).await {
            return None;
        }
        rx.await.ok()
    }
}

/// Starts the peer task. The peer stays Idle until [`PeerCommand::Start`].
pub fn spawn_peer(config: PeerConfig, events: mpsc::Sender<PeerEvent>) -> (PeerHandle, JoinHandle<()>) {
    spawn_counted_peer(config, events, Arc::default())
}

/// [`spawn_peer`] counting into `counters`, which outlive the task.
pub fn spawn_counted_peer(
    config: PeerConfig,
    events: mpsc::Sender<PeerEvent>,
    counters: Arc<PeerCounters>,
) -> (PeerHandle, JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(256);
    let addr = config.transport.peer;
    let task = PeerTask::new(config, events, counters);
    let join = tokio::spawn(task.run(rx));
    (PeerHandle { commands: tx, addr }, join)
}

/// An outgoing attempt's number and outcome; stale attempts are recognised by number.
type ConnectResult = (u64, std::io::Result<TcpStream>);

struct Conn {
    handle: ConnHandle,
    codec: SessionCodec,
    out: BytesMut,
    /// Our end of the connection: the next hop we offer when we are the next hop.
    local: Option<SocketAddr>,
}

struct PeerTask {
    config: PeerConfig,
    fsm: PeerFsm,
    events: mpsc::Sender<PeerEvent>,
    conns: HashMap<ConnId, Conn>,
    conn_events_tx: mpsc::Sender<ConnEvent>,
    conn_events: mpsc::Receiver<ConnEvent>,
    connect: Option<JoinHandle<()>>,
    connect_attempt: u64,
    connect_results: (mpsc::Sender<ConnectResult>, mpsc::Receiver<ConnectResult>),
    timers: HashMap<Timer, Instant>,
    next_conn: ConnId,
    established_at: Option<Instant>,
    stats: Stats,
    counters: Arc<PeerCounters>,
    received: HashSet<IpNetwork>,
}

#[derive(Default)]
struct Stats {
    messages_received: u64,
    messages_sent: u64,
    treat_as_withdraw: u64,
    collisions: u64,
}

/// The counters metrics show per peer. They belong to the peer's address, not to one task:
/// a configuration change replaces the task (and is itself announced with a Cease), and the
/// counts must go on rather than fall back to zero and lose that Cease.
#[derive(Debug, Default)]
pub struct PeerCounters {
    updates_received: AtomicU64,
    updates_sent: AtomicU64,
    notifications: Mutex<Notifications>,
}

impl PeerCounters {
    fn notification(&self, sent: bool, n: &crate::wire::Notification) {
        let mut all = self.notifications.lock().expect("counter lock");
        let map = if sent { &mut all.sent } else { &mut all.received };
        *map.entry((n.code, n.subcode)).or_default() += 1;
    }
}

/// NOTIFICATIONs by (code, subcode), in each direction, over the peer's lifetime.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Notifications {
    pub sent: std::collections::BTreeMap<(u8, u8), u64>,
    pub received: std::collections::BTreeMap<(u8, u8), u64>,
}

impl PeerTask {
    fn new(config: PeerConfig, events: mpsc::Sender<PeerEvent>, counters: Arc<PeerCounters>) -> PeerTask {
        let (ctx, crx) = mpsc::channel(64);
        PeerTask {
            fsm: PeerFsm::new(config.fsm.clone()),
            config,
            events,
            conns: HashMap::new(),
            conn_events_tx: ctx,
            conn_events: crx,
            connect: None,
            connect_attempt: 0,
            connect_results: mpsc::channel(4),
            timers: HashMap::new(),
            next_conn: 1,
            established_at: None,
            stats: Stats::default(),
            counters,
            received: HashSet::new(),
        }
    }

    fn peer(&self) -> SocketAddr {
        self.config.transport.peer
    }

    async fn run(mut self, mut commands: mpsc::Receiver<PeerCommand>) {
        loop {
            let deadline = self.timers.values().min().copied();
            tokio::select! {
                cmd = commands.recv() => match cmd {
                    Some(cmd) => self.command(cmd).await,
                    None => {
                        // Every handle dropped: leave quietly, as for a graceful restart.
                        self.input(Input::ManualStop(StopMode::Silent)).await;
                        break;
                    }
                },
                Some(ev) = self.conn_events.recv() => self.conn_event(ev).await,
                Some((attempt, result)) = self.connect_results.1.recv() => {
                    if attempt == self.connect_attempt {
                        self.connect = None;
                        match result {
                            Ok(stream) => self.new_connection(stream, Direction::Outgoing).await,
                            Err(e) => {
                                tracing::debug!(peer = %self.peer(), error = %e, "connect failed");
                                self.input(Input::ConnectFailed).await;
                            }
                        }
                    }
                }
                () = sleep_until(deadline) => self.fire_timers().await,
            }
            self.flush();
        }
        if let Some(c) = self.connect.take() {
            c.abort();
        }
        self.flush();
        self.conns.clear();
    }

    async fn command(&mut self, cmd: PeerCommand) {
        match cmd {
            PeerCommand::Start => self.input(Input::ManualStart).await,
            PeerCommand::Stop(mode) => self.input(Input::ManualStop(mode)).await,
            PeerCommand::Incoming(stream) => self.new_connection(stream, Direction::Incoming).await,
            PeerCommand::Send(updates) => {
                for u in updates {
                    self.input(Input::SendUpdate(u)).await;
                }
            }
            PeerCommand::SendEncoded { bytes, updates } => self.input(Input::SendEncoded { bytes, updates }).await,
            PeerCommand::RouteRefresh(rr) => self.input(Input::SendRouteRefresh(rr)).await,
            PeerCommand::Snapshot(reply) => {
                // The requester may have given up waiting; that is its business.
                let _ignored = reply.send(self.snapshot());
            }
        }
    }

    fn snapshot(&self) -> PeerSnapshot {
        let established = self.fsm.established();
        PeerSnapshot {
            peer: self.peer(),
            local_as: self.config.fsm.local_as,
            peer_as: self.config.fsm.peer_as,
            state: self.fsm.state(),
            uptime: self.established_at.map(|t| t.elapsed()),
            last_error: self.fsm.last_error().map(str::to_owned),
            negotiated: established.map(|(_, n)| n.clone()),
            messages_received: self.stats.messages_received,
            messages_sent: self.stats.messages_sent,
            updates_received: self.counters.updates_received.load(Ordering::Relaxed),
            updates_sent: self.counters.updates_sent.load(Ordering::Relaxed),
            prefixes_received: self.received.len(),
            treat_as_withdraw: self.stats.treat_as_withdraw,
            collisions: self.stats.collisions,
            notifications: self.counters.notifications.lock().expect("counter lock").clone(),
        }
    }

    async fn new_connection(&mut self, stream: TcpStream, direction: Direction) {
        let id = self.next_conn;
        self.next_conn += 1;
        let local = stream.local_addr().ok();
        let handle = ConnHandle::spawn(id, stream, self.conn_events_tx.clone(), self.config.send_hold);
        self.conns.insert(id, Conn { handle, codec: SessionCodec::default(), out: BytesMut::new(), local });
        self.input(Input::ConnectionUp { conn: id, direction }).await;
    }

    async fn conn_event(&mut self, ev: ConnEvent) {
        match ev {
            ConnEvent::Frames(conn, frames) => {
                for frame in frames {
                    // An earlier frame of this batch may have closed the connection.
                    let Some(c) = self.conns.get(&conn) else {
                        return;
                    };
                    self.stats.messages_received += 1;
                    let input = match decode_frame(&frame, &c.codec) {
                        Ok(d) => {
                            if let Message::Notification(n) = &d.message {
                                self.counters.notification(false, n);
                            }
                            Input::Received { conn, message: d.message, attr_errors: d.attr_errors }
                        }
                        Err(error) => Input::ReceiveError { conn, error },
                    };
                    self.input(input).await;
                }
            }
            ConnEvent::BadHeader(conn, error) => self.input(Input::ReceiveError { conn, error }).await,
            ConnEvent::Closed(conn) => {
                if self.conns.remove(&conn).is_some() {
                    self.input(Input::ConnectionClosed { conn }).await;
                }
            }
            ConnEvent::SendStalled(conn) => self.input(Input::SendHoldTimerExpires { conn }).await,
        }
    }

    async fn fire_timers(&mut self) {
        let now = Instant::now();
        let due: Vec<Timer> = self.timers.iter().filter(|(_, at)| **at <= now).map(|(t, _)| *t).collect();
        for t in due {
            self.timers.remove(&t);
            self.input(Input::Timer(t)).await;
        }
    }

    async fn input(&mut self, input: Input) {
        let outputs = self.fsm.handle(input);
        for o in outputs {
            self.output(o).await;
        }
    }

    async fn output(&mut self, o: Output) {
        match o {
            Output::Connect => self.start_connect(),
            Output::Send { conn, message } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                if let Message::Update(_) = message {
                    self.counters.updates_sent.fetch_add(1, Ordering::Relaxed);
                }
                if is_collision(&message) {
                    self.stats.collisions += 1;
                }
                if let Message::Notification(n) = &message {
                    self.counters.notification(true, n);
                }
                match message.encode(&c.codec, &mut c.out) {
                    Ok(()) => self.stats.messages_sent += 1,
                    Err(e) => {
                        tracing::error!(peer = %self.config.transport.peer, error = %e, "message not sent")
                    }
                }
            }
            Output::SendEncoded { conn, bytes, updates } => {
                let Some(c) = self.conns.get_mut(&conn) else {
                    return;
                };
                self.counters.updates_sent.fetch_add(u64::from(updates), Ordering::Relaxed);
                self.stats.messages_sent += u64::from(updates);
                // What is queued goes first; the shared buffer then goes to the writer as it is.
                if !c.out.is_empty() {
                    c.handle.send(c.out.split().freeze());
                }
                c.handle.send(bytes);
            }
            Output::Close { conn } => {
                if let Some(mut c) = self.conns.remove(&conn) {
                    if !c.out.is_empty() {
                        c.handle.send(c.out.split().freeze());
                    }
                }
                self.timers.retain(|t, _| t.conn != Some(conn));
            }
            Output::StartTimer { timer, after } => {
                self.timers.insert(timer, Instant::now() + after);
            }
            Output::StopTimer(timer) => {
                self.timers.remove(&timer);
            }
            Output::Established { conn, negotiated } => {
                let mut local = None;
                if let Some(c) = self.conns.get_mut(&conn) {
                    c.codec = negotiated.codec();
                    local = c.local;
                }
                self.established_at = Some(Instant::now());
                tracing::info!(peer = %self.peer(), peer_as = negotiated.peer_as, hold = negotiated.hold_time, "session established");
                // A link-local address keeps its scope: the link is part of the address.
                let local = local.map(|a| match a {
                    SocketAddr::V6(v6) if v6.ip().is_unicast_link_local() => a,
                    _ => SocketAddr::new(a.ip().to_canonical(), a.port()),
                });
                self.emit(PeerEvent::Established { peer: self.peer(), local, negotiated }).await;
            }
            Output::Down { reason } => {
                self.established_at = None;
                self.received.clear();
                tracing::info!(peer = %self.peer(), ?reason, "session down");
                self.emit(PeerEvent::Down { peer: self.peer(), reason }).await;
            }
            Output::Update { update, attr_errors } => self.update_received(update, attr_errors).await,
            Output::RouteRefresh(request) => self.emit(PeerEvent::RouteRefresh { peer: self.peer(), request }).await,
        }
    }

    async fn update_received(&mut self, update: Update, attr_errors: Vec<AttrError>) {
        self.counters.updates_received.fetch_add(1, Ordering::Relaxed);
        let action = attr_errors.iter().map(|e| e.action).max();
        for e in &attr_errors {
            tracing::warn!(peer = %self.peer(), type_code = e.type_code, action = ?e.action, reason = e.reason, "malformed attribute (RFC 7606)");
        }
        let update = if action == Some(AttrAction::TreatAsWithdraw) {
            self.stats.treat_as_withdraw += 1;
            let mut withdrawn_v4 = Vec::new();
            let mut other = Vec::new();
            for p in update.into_withdraw_all() {
                match p {
                    IpNetwork::V4(v4) => withdrawn_v4.push(v4),
                    p => other.push(p),
                }
            }
            let mut u = Update { withdrawn: withdrawn_v4, ..Default::default() };
            if !other.is_empty() {
                u.attributes.mp_unreach = Some(crate::wire::MpUnreach { family: crate::wire::Family::IPV6_UNICAST, withdrawn: other });
            }
            u
        } else {
            update
        };
        if self.config.track_prefixes {
            for p in update.withdrawn_prefixes() {
                self.received.remove(&p);
            }
            self.received.extend(update.announced());
        }
        self.emit(PeerEvent::Update { peer: self.peer(), update, attr_errors }).await;
    }

    async fn emit(&self, ev: PeerEvent) {
        // Bounded: a slow owner slows this peer (and, through TCP, the remote sender) rather
        // than growing memory. A vanished owner means we are shutting down.
        if self.events.send(ev).await.is_err() {
            tracing::debug!(peer = %self.peer(), "event receiver gone");
        }
    }

    fn start_connect(&mut self) {
        if let Some(c) = self.connect.take() {
            c.abort();
        }
        self.connect_attempt += 1;
        let attempt = self.connect_attempt;
        let transport = self.config.transport.clone();
        let tx = self.connect_results.0.clone();
        self.connect = Some(tokio::spawn(async move {
            let result = transport.connect().await;
            let _stale_if_gone = tx.send((attempt, result)).await;
        }));
    }

    /// Hands every connection's pending bytes to its writer as one buffer.
    fn flush(&mut self) {
        for c in self.conns.values_mut() {
            if !c.out.is_empty() {
                c.handle.send(c.out.split().freeze());
            }
        }
    }
}

fn is_collision(m: &Message) -> bool {
    matches!(m, Message::Notification(n) if n.error_code() == Some(crate::wire::ErrorCode::ConnectionCollisionResolution))
}

/// Waits for the earliest of a driver's timers; forever, without one. (Every owner task that
/// keeps its deadlines in a map selects on this.)
pub async fn sleep_until(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}
