//! Sans-IO BGP session state machine (RFC 4271 section 8).
//!
//! A peer owns zero, one or two TCP connections ([`ConnId`]); each runs the OPEN exchange on
//! its own, and collision resolution ([`collision::survivor`]) keeps exactly one. Time never
//! passes inside: the FSM asks for timers with [`Output::StartTimer`] and learns that one
//! expired through [`Input::Timer`]. Sockets never appear either: the driver reports
//! connections and messages and carries out [`Output`]s in order.
//!
//! | peer state  | on                              | does                                               | next        |
//! |-------------|---------------------------------|----------------------------------------------------|-------------|
//! | Idle        | ManualStart / IdleHold expires  | Connect (unless passive), start ConnectRetry       | Connect/Active |
//! | Connect     | connect fails                   | wait for ConnectRetry                              | Active      |
//! | Active      | ConnectRetry expires            | Connect again                                      | Connect     |
//! | Connect/Active | connection up (either way)   | send OPEN, Hold = 4 min                            | OpenSent    |
//! | OpenSent    | valid OPEN                      | negotiate, resolve collision, send KEEPALIVE       | OpenConfirm |
//! | OpenConfirm | KEEPALIVE                       | report Established, start stable-period timer      | Established |
//! | Established | UPDATE / KEEPALIVE              | restart Hold; deliver UPDATE                       | Established |
//! | any         | error, Hold expires, NOTIFICATION | NOTIFICATION (unless received), close, IdleHold (doubling) | Idle |
//! | any         | ManualStop                      | Cease (or close silently for graceful restart)     | Idle        |
//!
//! Deviation, on purpose: RFC 4271 6.8 keeps an Established connection when a colliding OPEN
//! arrives. If the other side saw ours only in OpenConfirm it resolves by identifier and both
//! connections die; we resolve by identifier in every state (OpenSent included, once an OPEN
//! has told us the peer's identifier), so both sides always agree. A new
//! OPEN while Established with graceful restart negotiated is the peer restarting (RFC 4724
//! 4.2): the old connection goes, the new one stays.

pub mod collision;
mod damping;
mod negotiate;

use std::net::Ipv4Addr;
use std::time::Duration;

use bytes::Bytes;

pub use damping::DampingConfig;
pub use negotiate::{local_open, negotiate, Negotiated};

use crate::wire::{AttrError, DecodeError, ErrorCode, Family, GracefulRestart, Message, Notification, Open, RouteRefresh, Update};
use damping::Damping;

/// Names one TCP connection of a peer; chosen by the driver, never reused.
pub type ConnId = u64;

/// Who opened a connection, from our side.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Direction {
    Outgoing,
    Incoming,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum State {
    Idle,
    Connect,
    Active,
    OpenSent,
    OpenConfirm,
    Established,
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TimerKind {
    ConnectRetry,
    IdleHold,
    Hold,
    Keepalive,
    /// Damping: a session Established this long resets the failure count.
    StablePeriod,
}

/// A timer; per-connection timers name their connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Timer {
    pub kind: TimerKind,
    pub conn: Option<ConnId>,
}

impl Timer {
    fn peer(kind: TimerKind) -> Timer {
        Timer { kind, conn: None }
    }
    fn conn(kind: TimerKind, conn: ConnId) -> Timer {
        Timer { kind, conn: Some(conn) }
    }
}

/// How to stop a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StopMode {
    /// Send a Cease NOTIFICATION (RFC 4486 subcode) with an optional RFC 9003 message.
    Cease { code: ErrorCode, communication: Option<String> },
    /// Send this NOTIFICATION (for Cease codes whose data is not text, such as Maximum
    /// Number of Prefixes Reached).
    Notify(Notification),
    /// Close without NOTIFICATION so the peer keeps our routes as stale (RFC 4724 4.1).
    Silent,
}

/// Events in, named after RFC 4271 8.1.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Input {
    ManualStart,
    ManualStop(StopMode),
    Timer(Timer),
    /// The outgoing attempt asked for by [`Output::Connect`] failed (Event 18).
    ConnectFailed,
    /// A TCP connection is up (Events 16/17).
    ConnectionUp {
        conn: ConnId,
        direction: Direction,
    },
    /// The connection closed or a read/write on it failed (Event 18).
    ConnectionClosed {
        conn: ConnId,
    },
    /// A decoded message (Events 19, 25-27), with any RFC 7606 attribute errors.
    Received {
        conn: ConnId,
        message: Message,
        attr_errors: Vec<AttrError>,
    },
    /// A message that failed to decode (Events 21, 22, 28).
    ReceiveError {
        conn: ConnId,
        error: DecodeError,
    },
    /// Nothing could be written for the send hold time (RFC 9687).
    SendHoldTimerExpires {
        conn: ConnId,
    },
    /// Send an UPDATE on the Established connection; dropped in any other state.
    SendUpdate(Update),
    /// Send UPDATEs encoded already (shared by an update group's members, encoded with the
    /// codec they negotiated); dropped in any other state.
    SendEncoded {
        bytes: Bytes,
        updates: u32,
    },
    SendRouteRefresh(RouteRefresh),
}

/// Why a session left Established.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DownReason {
    HoldTimerExpired,
    SendHoldTimerExpired,
    NotificationReceived(Notification),
    NotificationSent(Notification),
    ConnectionClosed,
    /// The peer opened a new session while the old one was up and graceful restart was
    /// negotiated: it restarted (RFC 4724 4.2).
    PeerRestarted,
    CollisionResolution,
    ManualStop,
}

impl DownReason {
    /// Whether RFC 4724 lets the peer's routes be kept as stale (no NOTIFICATION exchanged,
    /// or a NOTIFICATION under the RFC 8538 N bit other than Hard Reset).
    pub fn allows_graceful_restart(&self, peer_n_bit: bool) -> bool {
        match self {
            DownReason::HoldTimerExpired | DownReason::SendHoldTimerExpired | DownReason::ConnectionClosed | DownReason::PeerRestarted => {
                true
            }
            DownReason::NotificationReceived(n) | DownReason::NotificationSent(n) => {
                peer_n_bit && n.error_code() != Some(ErrorCode::HardReset)
            }
            DownReason::CollisionResolution | DownReason::ManualStop => false,
        }
    }
}

/// Actions out, to be carried out in order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Output {
    /// Open an outgoing TCP connection (abandoning any attempt still pending).
    Connect,
    Send {
        conn: ConnId,
        message: Message,
    },
    /// `updates` UPDATEs encoded already, to go out as they are.
    SendEncoded {
        conn: ConnId,
        bytes: Bytes,
        updates: u32,
    },
    /// Close after flushing what was sent; also cancels the connection's timers.
    Close {
        conn: ConnId,
    },
    StartTimer {
        timer: Timer,
        after: Duration,
    },
    StopTimer(Timer),
    Established {
        conn: ConnId,
        negotiated: Box<Negotiated>,
    },
    Down {
        reason: DownReason,
    },
    /// An UPDATE received while Established; `attr_errors` say what RFC 7606 wants done.
    Update {
        update: Update,
        attr_errors: Vec<AttrError>,
    },
    RouteRefresh(RouteRefresh),
}

/// Everything the FSM needs to know about the peer and ourselves.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FsmConfig {
    pub local_as: u32,
    pub router_id: Ipv4Addr,
    pub peer_as: u32,
    /// Proposed hold time in seconds; 0 disables keepalives.
    pub hold_time: u16,
    /// KEEPALIVE interval in seconds; `None` is a third of the negotiated hold time, and a
    /// configured value is never more than that (RFC 4271 10).
    pub keepalive_time: Option<u16>,
    /// Smallest non-zero hold time we accept from a peer.
    pub min_hold_time: u16,
    pub connect_retry: Duration,
    /// Hold time while waiting for the peer's OPEN (RFC 4271 suggests 4 minutes).
    pub open_hold: Duration,
    /// Never connect out; wait for the peer.
    pub passive: bool,
    pub families: Vec<Family>,
    pub hostname: Option<String>,
    pub graceful_restart: Option<GracefulRestart>,
    pub extended_next_hop: bool,
    pub damping: DampingConfig,
}

impl FsmConfig {
    pub fn new(local_as: u32, router_id: Ipv4Addr, peer_as: u32) -> FsmConfig {
        FsmConfig {
            local_as,
            router_id,
            peer_as,
            hold_time: 90,
            keepalive_time: None,
            min_hold_time: 3,
            connect_retry: Duration::from_secs(10),
            open_hold: Duration::from_secs(240),
            passive: false,
            families: vec![Family::IPV4_UNICAST],
            hostname: None,
            graceful_restart: None,
            extended_next_hop: false,
            damping: DampingConfig::default(),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum ConnState {
    OpenSent,
    OpenConfirm,
    Established,
}

#[derive(Debug)]
struct Connection {
    id: ConnId,
    direction: Direction,
    state: ConnState,
    negotiated: Option<Negotiated>,
}

/// Peer-level state when no connection carries the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    Idle,
    Connect,
    Active,
}

#[derive(Debug)]
pub struct PeerFsm {
    config: FsmConfig,
    open: Open,
    started: bool,
    phase: Phase,
    conns: Vec<Connection>,
    damping: Damping,
    last_error: Option<String>,
}

type Out = Vec<Output>;

impl PeerFsm {
    pub fn new(config: FsmConfig) -> PeerFsm {
        let open = local_open(&config);
        let damping = Damping::new(config.damping);
        PeerFsm { config, open, started: false, phase: Phase::Idle, conns: Vec::new(), damping, last_error: None }
    }

    pub fn config(&self) -> &FsmConfig {
        &self.config
    }

    /// The RFC state: the most advanced connection's, else the peer-level phase.
    pub fn state(&self) -> State {
        match self.conns.iter().map(|c| c.state).max() {
            Some(ConnState::Established) => State::Established,
            Some(ConnState::OpenConfirm) => State::OpenConfirm,
            Some(ConnState::OpenSent) => State::OpenSent,
            None => match self.phase {
                Phase::Idle => State::Idle,
                Phase::Connect => State::Connect,
                Phase::Active => State::Active,
            },
        }
    }

    /// The Established connection and what it negotiated.
    pub fn established(&self) -> Option<(ConnId, &Negotiated)> {
        self.conns.iter().find(|c| c.state == ConnState::Established).and_then(|c| c.negotiated.as_ref().map(|n| (c.id, n)))
    }

    pub fn last_error(&self) -> Option<&str> {
        self.last_error.as_deref()
    }

    pub fn connection_count(&self) -> usize {
        self.conns.len()
    }

    /// Feeds one input; returns the actions to carry out, in order.
    #[must_use]
    pub fn handle(&mut self, input: Input) -> Vec<Output> {
        let mut out = Vec::new();
        match input {
            Input::ManualStart => self.manual_start(&mut out),
            Input::ManualStop(mode) => self.manual_stop(mode, &mut out),
            Input::Timer(timer) => self.timer(timer, &mut out),
            Input::ConnectFailed => {
                if self.phase == Phase::Connect {
                    self.phase = Phase::Active;
                }
            }
            Input::ConnectionUp { conn, direction } => self.connection_up(conn, direction, &mut out),
            Input::ConnectionClosed { conn } => {
                if let Some(c) = self.remove(conn) {
                    self.last_error = Some("connection closed by peer".into());
                    self.closed(c, DownReason::ConnectionClosed, &mut out);
                }
            }
            Input::Received { conn, message, attr_errors } => self.received(conn, message, attr_errors, &mut out),
            Input::ReceiveError { conn, error } => {
                self.last_error = Some(format!("received malformed message: {error}"));
                let n = error.notification();
                self.fail_conn(conn, n.clone(), DownReason::NotificationSent(n), &mut out);
            }
            Input::SendHoldTimerExpires { conn } => {
                self.last_error = Some("send hold timer expired".into());
                let n = ErrorCode::SendHoldTimerExpired.notification(bytes::Bytes::new());
                self.fail_conn(conn, n, DownReason::SendHoldTimerExpired, &mut out);
            }
            Input::SendUpdate(update) => self.send_established(Message::Update(update), &mut out),
            Input::SendEncoded { bytes, updates } => {
                if let Some((conn, _)) = self.established() {
                    out.push(Output::SendEncoded { conn, bytes, updates });
                    self.restart_keepalive(&mut out);
                }
            }
            Input::SendRouteRefresh(rr) => self.send_established(Message::RouteRefresh(rr), &mut out),
        }
        out
    }

    fn manual_start(&mut self, out: &mut Out) {
        if self.started {
            return;
        }
        self.started = true;
        self.damping.reset();
        self.start_connecting(out);
    }

    fn start_connecting(&mut self, out: &mut Out) {
        if self.config.passive {
            self.phase = Phase::Active;
        } else {
            self.phase = Phase::Connect;
            out.push(Output::Connect);
            out.push(Output::StartTimer { timer: Timer::peer(TimerKind::ConnectRetry), after: self.config.connect_retry });
        }
    }

    fn manual_stop(&mut self, mode: StopMode, out: &mut Out) {
        self.started = false;
        self.phase = Phase::Idle;
        for kind in [TimerKind::ConnectRetry, TimerKind::IdleHold, TimerKind::StablePeriod] {
            out.push(Output::StopTimer(Timer::peer(kind)));
        }
        let was_established = self.established().is_some();
        for c in std::mem::take(&mut self.conns) {
            let n = match &mode {
                StopMode::Cease { code, communication: Some(text) } => Some(Notification::cease_with_communication(*code, text)),
                StopMode::Cease { code, communication: None } => Some(code.notification(bytes::Bytes::new())),
                StopMode::Notify(n) => Some(n.clone()),
                StopMode::Silent => None,
            };
            if let Some(n) = n {
                self.last_error = Some(format!("sent NOTIFICATION {n}"));
                out.push(Output::Send { conn: c.id, message: Message::Notification(n) });
            }
            out.push(Output::Close { conn: c.id });
        }
        if was_established {
            out.push(Output::Down { reason: DownReason::ManualStop });
        }
    }

    fn timer(&mut self, timer: Timer, out: &mut Out) {
        match (timer.kind, timer.conn) {
            (TimerKind::ConnectRetry, _) => {
                if self.started && self.conns.is_empty() && !self.config.passive && self.phase != Phase::Idle {
                    self.phase = Phase::Connect;
                    out.push(Output::Connect);
                    out.push(Output::StartTimer { timer, after: self.config.connect_retry });
                }
            }
            (TimerKind::IdleHold, _) => {
                // AutomaticStart (Event 3) once the damping delay is over.
                if self.started && self.phase == Phase::Idle && self.conns.is_empty() {
                    self.start_connecting(out);
                }
            }
            (TimerKind::StablePeriod, _) => {
                if self.established().is_some() {
                    self.damping.reset();
                }
            }
            (TimerKind::Hold, Some(conn)) => {
                if self.find(conn).is_some() {
                    self.last_error = Some("hold timer expired".into());
                    let n = ErrorCode::HoldTimerExpired.notification(bytes::Bytes::new());
                    self.fail_conn(conn, n, DownReason::HoldTimerExpired, out);
                }
            }
            (TimerKind::Keepalive, Some(conn)) => {
                if let Some(c) = self.find(conn) {
                    if c.state >= ConnState::OpenConfirm {
                        self.send_keepalive(conn, out);
                    }
                }
            }
            (TimerKind::Hold | TimerKind::Keepalive, None) => {}
        }
    }

    fn connection_up(&mut self, conn: ConnId, direction: Direction, out: &mut Out) {
        // Idle refuses connections (RFC 4271 8.2.2); so does a peer already holding two.
        if !self.started || self.phase == Phase::Idle || self.conns.len() >= 2 {
            out.push(Output::Close { conn });
            return;
        }
        if direction == Direction::Outgoing && self.phase == Phase::Connect {
            self.phase = Phase::Active;
        }
        out.push(Output::StopTimer(Timer::peer(TimerKind::ConnectRetry)));
        self.conns.push(Connection { id: conn, direction, state: ConnState::OpenSent, negotiated: None });
        out.push(Output::Send { conn, message: Message::Open(self.open.clone()) });
        out.push(Output::StartTimer { timer: Timer::conn(TimerKind::Hold, conn), after: self.config.open_hold });
    }

    fn received(&mut self, conn: ConnId, message: Message, attr_errors: Vec<AttrError>, out: &mut Out) {
        let Some(state) = self.find(conn).map(|c| c.state) else {
            return;
        };
        let unexpected = match state {
            ConnState::OpenSent => ErrorCode::FsmUnexpectedInOpenSent,
            ConnState::OpenConfirm => ErrorCode::FsmUnexpectedInOpenConfirm,
            ConnState::Established => ErrorCode::FsmUnexpectedInEstablished,
        };
        match (state, message) {
            (_, Message::Notification(n)) => {
                self.last_error = Some(format!("received NOTIFICATION {n}"));
                if let Some(c) = self.remove(conn) {
                    out.push(Output::Close { conn });
                    self.closed(c, DownReason::NotificationReceived(n), out);
                }
            }
            (ConnState::OpenSent, Message::Open(open)) => self.open_received(conn, open, out),
            (ConnState::OpenConfirm, Message::Keepalive) => {
                self.restart_hold(conn, out);
                self.established_on(conn, out);
            }
            (ConnState::Established, Message::Keepalive) => self.restart_hold(conn, out),
            (ConnState::Established, Message::Update(update)) => {
                self.restart_hold(conn, out);
                out.push(Output::Update { update, attr_errors });
            }
            (ConnState::Established, Message::RouteRefresh(rr)) => out.push(Output::RouteRefresh(rr)),
            (_, other) => {
                self.last_error = Some(format!("unexpected message type {} in {state:?}", other.kind()));
                let n = unexpected.notification(bytes::Bytes::new());
                self.fail_conn(conn, n.clone(), DownReason::NotificationSent(n), out);
            }
        }
    }

    fn open_received(&mut self, conn: ConnId, open: Open, out: &mut Out) {
        let negotiated = match negotiate(&self.config, &open) {
            Ok(n) => n,
            Err(n) => {
                self.last_error = Some(format!("refused OPEN: {n}"));
                self.fail_conn(conn, n.clone(), DownReason::NotificationSent(n), out);
                return;
            }
        };
        if !self.resolve_collision(conn, &negotiated, out) {
            return;
        }
        let hold = negotiated.hold_time;
        let keepalive = negotiated.keepalive_time;
        let Some(c) = self.find_mut(conn) else { return };
        c.state = ConnState::OpenConfirm;
        c.negotiated = Some(negotiated);
        out.push(Output::Send { conn, message: Message::Keepalive });
        if hold == 0 {
            // RFC 4271 4.4: a zero hold time means neither keepalives nor a hold timer.
            out.push(Output::StopTimer(Timer::conn(TimerKind::Hold, conn)));
        } else {
            out.push(Output::StartTimer { timer: Timer::conn(TimerKind::Hold, conn), after: secs(hold) });
            out.push(Output::StartTimer { timer: Timer::conn(TimerKind::Keepalive, conn), after: secs(keepalive) });
        }
    }

    /// Returns whether `conn` survives.
    fn resolve_collision(&mut self, conn: ConnId, negotiated: &Negotiated, out: &mut Out) -> bool {
        let Some(direction) = self.find(conn).map(|c| c.direction) else {
            return false;
        };
        let Some(other) = self
            .conns
            .iter()
            // RFC 4271 6.8 lets a speaker also resolve against a connection in OpenSent when
            // it knows the peer's identifier, which the OPEN just received tells us. Resolving
            // that early keeps the losing connection from reaching Established and flapping.
            .find(|c| c.id != conn)
        else {
            return true;
        };
        let (other_id, other_state) = (other.id, other.state);
        let restarted = other_state == ConnState::Established && other.negotiated.as_ref().is_some_and(|n| n.graceful_restart());
        let loser = if restarted {
            other_id
        } else {
            let keep = collision::survivor(self.config.router_id, self.config.local_as, negotiated.peer_id, negotiated.peer_as);
            if keep == direction {
                other_id
            } else {
                conn
            }
        };
        let Some(lost) = self.remove(loser) else {
            return true;
        };
        if !restarted {
            let n = ErrorCode::ConnectionCollisionResolution.notification(bytes::Bytes::new());
            out.push(Output::Send { conn: loser, message: Message::Notification(n) });
        }
        out.push(Output::Close { conn: loser });
        if lost.state == ConnState::Established {
            let reason = if restarted { DownReason::PeerRestarted } else { DownReason::CollisionResolution };
            out.push(Output::Down { reason });
            out.push(Output::StopTimer(Timer::peer(TimerKind::StablePeriod)));
        }
        loser != conn
    }

    fn established_on(&mut self, conn: ConnId, out: &mut Out) {
        let Some(c) = self.find_mut(conn) else { return };
        c.state = ConnState::Established;
        let Some(negotiated) = c.negotiated.clone() else {
            return;
        };
        self.last_error = None;
        out.push(Output::Established { conn, negotiated: Box::new(negotiated) });
        out.push(Output::StartTimer { timer: Timer::peer(TimerKind::StablePeriod), after: self.damping.stable_period() });
    }

    fn restart_hold(&self, conn: ConnId, out: &mut Out) {
        let hold = self.find(conn).and_then(|c| c.negotiated.as_ref()).map(|n| n.hold_time).unwrap_or(0);
        if hold != 0 {
            out.push(Output::StartTimer { timer: Timer::conn(TimerKind::Hold, conn), after: secs(hold) });
        }
    }

    fn send_keepalive(&self, conn: ConnId, out: &mut Out) {
        out.push(Output::Send { conn, message: Message::Keepalive });
        if let Some(n) = self.find(conn).and_then(|c| c.negotiated.as_ref()) {
            if n.keepalive_time != 0 {
                out.push(Output::StartTimer { timer: Timer::conn(TimerKind::Keepalive, conn), after: secs(n.keepalive_time) });
            }
        }
    }

    fn send_established(&self, message: Message, out: &mut Out) {
        let Some((conn, _)) = self.established() else {
            return;
        };
        out.push(Output::Send { conn, message });
        self.restart_keepalive(out);
    }

    /// RFC 4271 8.2.2: every UPDATE sent restarts the KeepaliveTimer.
    fn restart_keepalive(&self, out: &mut Out) {
        let Some((conn, n)) = self.established() else { return };
        if n.keepalive_time != 0 {
            out.push(Output::StartTimer { timer: Timer::conn(TimerKind::Keepalive, conn), after: secs(n.keepalive_time) });
        }
    }

    /// Sends `notification` on `conn`, closes it and handles the consequences.
    fn fail_conn(&mut self, conn: ConnId, notification: Notification, reason: DownReason, out: &mut Out) {
        if let Some(c) = self.remove(conn) {
            out.push(Output::Send { conn, message: Message::Notification(notification) });
            out.push(Output::Close { conn });
            self.closed(c, reason, out);
        }
    }

    /// A connection has gone; decide what the peer does next.
    fn closed(&mut self, c: Connection, reason: DownReason, out: &mut Out) {
        if c.state == ConnState::Established {
            out.push(Output::Down { reason: reason.clone() });
            out.push(Output::StopTimer(Timer::peer(TimerKind::StablePeriod)));
        }
        if !self.conns.is_empty() || !self.started {
            return;
        }
        // A connection lost before it carried anything (refused, reset during OPEN without
        // a NOTIFICATION) is retried on the ConnectRetry schedule; real failures are damped.
        let quiet = c.state == ConnState::OpenSent && reason == DownReason::ConnectionClosed;
        if quiet {
            self.phase = Phase::Active;
            if !self.config.passive {
                out.push(Output::StartTimer { timer: Timer::peer(TimerKind::ConnectRetry), after: self.config.connect_retry });
            }
            return;
        }
        self.phase = Phase::Idle;
        out.push(Output::StopTimer(Timer::peer(TimerKind::ConnectRetry)));
        let delay = self.damping.on_failure();
        out.push(Output::StartTimer { timer: Timer::peer(TimerKind::IdleHold), after: delay });
    }

    fn find(&self, conn: ConnId) -> Option<&Connection> {
        self.conns.iter().find(|c| c.id == conn)
    }

    fn find_mut(&mut self, conn: ConnId) -> Option<&mut Connection> {
        self.conns.iter_mut().find(|c| c.id == conn)
    }

    fn remove(&mut self, conn: ConnId) -> Option<Connection> {
        let i = self.conns.iter().position(|c| c.id == conn)?;
        Some(self.conns.swap_remove(i))
    }
}

fn secs(s: u16) -> Duration {
    Duration::from_secs(u64::from(s))
}
