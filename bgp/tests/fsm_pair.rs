//! Two of our FSMs wired back to back over simulated TCP with a virtual clock: every message
//! crosses as real bytes through the codec. Deterministic: one FIFO of events, time advances
//! only to the next timer.

use std::collections::{HashMap, VecDeque};
use std::net::Ipv4Addr;
use std::time::Duration;

use gingham_bgp::fsm::*;
use gingham_bgp::wire::{self, ErrorCode, Message, Notification, SessionCodec};

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
enum Side {
    A,
    B,
}

impl Side {
    fn other(self) -> Side {
        match self {
            Side::A => Side::B,
            Side::B => Side::A,
        }
    }
}

struct Link {
    ends: HashMap<Side, ConnId>,
    open: bool,
}

struct Pair {
    fsm: HashMap<Side, PeerFsm>,
    now: Duration,
    timers: HashMap<(Side, Timer), Duration>,
    links: Vec<Link>,
    queue: VecDeque<(Side, Input)>,
    next_conn: ConnId,
    /// Messages from this side vanish (a dead or partitioned peer).
    mute: Option<Side>,
    log: Vec<(Duration, Side, Output)>,
}

fn config(id: &str, local_as: u32, peer_as: u32) -> FsmConfig {
    let mut c = FsmConfig::new(local_as, id.parse().unwrap(), peer_as);
    c.connect_retry = Duration::from_secs(5);
    c
}

impl Pair {
    fn new(a: FsmConfig, b: FsmConfig) -> Pair {
        Pair {
            fsm: HashMap::from([(Side::A, PeerFsm::new(a)), (Side::B, PeerFsm::new(b))]),
            now: Duration::ZERO,
            timers: HashMap::new(),
            links: Vec::new(),
            queue: VecDeque::new(),
            next_conn: 1,
            mute: None,
            log: Vec::new(),
        }
    }

    fn input(&mut self, side: Side, input: Input) {
        self.queue.push_back((side, input));
        self.settle();
    }

    fn link_of(&self, side: Side, conn: ConnId) -> Option<usize> {
        self.links.iter().position(|l| l.ends.get(&side) == Some(&conn))
    }

    fn settle(&mut self) {
        while let Some((side, input)) = self.queue.pop_front() {
            let outputs = self.fsm.get_mut(&side).unwrap().handle(input);
            for o in outputs {
                self.log.push((self.now, side, o.clone()));
                self.apply(side, o);
            }
        }
    }

    /// Hands the messages in `bytes` to the other end of `conn`.
    fn deliver(&mut self, side: Side, conn: ConnId, bytes: bytes::Bytes) {
        let Some(i) = self.link_of(side, conn) else {
            return;
        };
        if !self.links[i].open || self.mute == Some(side) {
            return;
        }
        let to = side.other();
        let codec = SessionCodec::new(true, false);
        let peer_conn = self.links[i].ends[&to];
        let mut buf = bytes::BytesMut::from(&bytes[..]);
        while let Some(frame) = wire::split_frame(&mut buf).expect("whole messages") {
            let input = match wire::decode(&frame.bytes, &codec) {
                Ok(d) => Input::Received { conn: peer_conn, message: d.message, attr_errors: d.attr_errors },
                Err(error) => Input::ReceiveError { conn: peer_conn, error },
            };
            self.queue.push_back((to, input));
        }
    }

    fn apply(&mut self, side: Side, o: Output) {
        match o {
            Output::Connect => {
                let (mine, theirs) = (self.next_conn, self.next_conn + 1);
                self.next_conn += 2;
                self.links.push(Link { ends: HashMap::from([(side, mine), (side.other(), theirs)]), open: true });
                self.queue.push_back((side, Input::ConnectionUp { conn: mine, direction: Direction::Outgoing }));
                self.queue.push_back((side.other(), Input::ConnectionUp { conn: theirs, direction: Direction::Incoming }));
            }
            Output::Send { conn, message } => {
                let bytes = message.to_bytes(&SessionCodec::new(true, false)).expect("encodes");
                self.deliver(side, conn, bytes);
            }
            Output::SendEncoded { conn, bytes, .. } => self.deliver(side, conn, bytes),
            Output::Close { conn } => {
                self.timers.retain(|(s, t), _| !(*s == side && t.conn == Some(conn)));
                let Some(i) = self.link_of(side, conn) else {
                    return;
                };
                if self.links[i].open {
                    self.links[i].open = false;
                    let peer_conn = self.links[i].ends[&side.other()];
                    self.queue.push_back((side.other(), Input::ConnectionClosed { conn: peer_conn }));
                }
            }
            Output::StartTimer { timer, after } => {
                self.timers.insert((side, timer), self.now + after);
            }
            Output::StopTimer(timer) => {
                self.timers.remove(&(side, timer));
            }
            Output::Established { .. } | Output::Down { .. } | Output::Update { .. } | Output::RouteRefresh(_) => {}
        }
    }

    /// Advances virtual time, firing timers in deadline order, until `until`.
    fn run_for(&mut self, d: Duration) {
        let until = self.now + d;
        loop {
            let next = self.timers.iter().min_by_key(|(k, v)| (**v, format!("{k:?}"))).map(|(k, v)| (*k, *v));
            match next {
                Some(((side, timer), at)) if at <= until => {
                    self.timers.remove(&(side, timer));
                    self.now = at;
                    self.input(side, Input::Timer(timer));
                }
                _ => break,
            }
        }
        self.now = until;
    }

    fn state(&self, side: Side) -> State {
        self.fsm[&side].state()
    }

    fn sent_notifications(&self, side: Side) -> Vec<Notification> {
        self.log
            .iter()
            .filter(|(_, s, _)| *s == side)
            .filter_map(|(_, _, o)| match o {
                Output::Send { message: Message::Notification(n), .. } => Some(n.clone()),
                _ => None,
            })
            .collect()
    }

    fn count(&self, side: Side, pred: impl Fn(&Output) -> bool) -> usize {
        self.log.iter().filter(|(_, s, o)| *s == side && pred(o)).count()
    }
}

fn ibgp_pair() -> Pair {
    Pair::new(config("198.18.0.11", 65000, 65000), config("198.18.0.12", 65000, 65000))
}

#[test]
fn sessions_establish_and_survive_many_hold_periods() {
    let mut p = ibgp_pair();
    p.input(Side::B, Input::ManualStart);
    p.input(Side::A, Input::ManualStart);
    assert_eq!((p.state(Side::A), p.state(Side::B)), (State::Established, State::Established));
    p.run_for(Duration::from_secs(90 * 5));
    assert_eq!((p.state(Side::A), p.state(Side::B)), (State::Established, State::Established));
    // Keepalives every 30 s (hold 90 / 3) kept it up.
    let keepalives = p.count(Side::A, |o| matches!(o, Output::Send { message: Message::Keepalive, .. }));
    assert!(keepalives >= 14, "only {keepalives} keepalives in 450 s");
    assert!(p.sent_notifications(Side::A).is_empty());
}

#[test]
fn simultaneous_open_keeps_exactly_one_connection_on_both_sides_and_they_agree() {
    for (a_id, b_id) in [("198.18.0.11", "198.18.0.12"), ("198.18.0.12", "198.18.0.11")] {
        let mut p = Pair::new(config(a_id, 65000, 65000), config(b_id, 65000, 65000));
        // Both start before either processes anything: two TCP connections cross.
        p.queue.push_back((Side::A, Input::ManualStart));
        p.queue.push_back((Side::B, Input::ManualStart));
        p.settle();
        p.run_for(Duration::from_secs(300));
        assert_eq!((p.state(Side::A), p.state(Side::B)), (State::Established, State::Established));
        let (ca, _) = p.fsm[&Side::A].established().unwrap();
        let (cb, _) = p.fsm[&Side::B].established().unwrap();
        let link = p.link_of(Side::A, ca).unwrap();
        assert_eq!(p.links[link].ends[&Side::B], cb, "both sides kept the same TCP connection");
        assert_eq!(p.fsm[&Side::A].connection_count(), 1);
        assert_eq!(p.fsm[&Side::B].connection_count(), 1);
        // The surviving connection is the one opened by the higher identifier.
        let higher = if a_id > b_id { Side::A } else { Side::B };
        let opened_by = p.links[link].ends.keys().find(|s| p.links[link].ends[s] % 2 == 1).copied().unwrap();
        assert_eq!(opened_by, higher);
        let collisions = p
            .sent_notifications(Side::A)
            .into_iter()
            .chain(p.sent_notifications(Side::B))
            .filter(|n| n.error_code() == Some(ErrorCode::ConnectionCollisionResolution))
            .count();
        // Each side may close the losing connection itself; both name the same reason.
        assert!((1..=2).contains(&collisions), "{collisions} Cease/7 sent");
    }
}

#[test]
fn hold_timer_expiry_sends_4_0_goes_idle_and_recovers_after_idle_hold() {
    let mut p = ibgp_pair();
    p.input(Side::B, Input::ManualStart);
    p.input(Side::A, Input::ManualStart);
    p.mute = Some(Side::B);
    p.run_for(Duration::from_secs(91));
    let n = p.sent_notifications(Side::A);
    assert_eq!(n.last().map(|n| (n.code, n.subcode)), Some((4, 0)));
    assert!(p.count(Side::A, |o| matches!(o, Output::Down { reason: DownReason::HoldTimerExpired })) == 1);
    p.mute = None;
    p.run_for(Duration::from_secs(120));
    assert_eq!((p.state(Side::A), p.state(Side::B)), (State::Established, State::Established));
}

#[test]
fn bad_peer_as_is_refused_with_2_2() {
    let mut p = Pair::new(config("198.18.0.11", 65000, 65001), config("198.18.0.12", 65002, 65000));
    p.input(Side::B, Input::ManualStart);
    p.input(Side::A, Input::ManualStart);
    assert_ne!(p.state(Side::A), State::Established);
    let codes: Vec<_> = p.sent_notifications(Side::A).iter().map(|n| n.error_code()).collect();
    assert!(codes.contains(&Some(ErrorCode::BadPeerAs)), "{codes:?}");
}

#[test]
fn same_identifier_over_ibgp_is_bad_bgp_identifier() {
    let mut p = Pair::new(config("198.18.0.11", 65000, 65000), config("198.18.0.11", 65000, 65000));
    p.input(Side::B, Input::ManualStart);
    p.input(Side::A, Input::ManualStart);
    let codes: Vec<_> = p.sent_notifications(Side::B).iter().map(|n| n.error_code()).collect();
    assert!(codes.contains(&Some(ErrorCode::BadBgpIdentifier)), "{codes:?}");
}

#[test]
fn hold_time_is_the_minimum_and_zero_disables_keepalives() {
    let mut a = config("198.18.0.11", 65000, 65000);
    a.hold_time = 9;
    let mut p = Pair::new(a, config("198.18.0.12", 65000, 65000));
    p.input(Side::B, Input::ManualStart);
    p.input(Side::A, Input::ManualStart);
    assert_eq!(p.fsm[&Side::B].established().unwrap().1.hold_time, 9);

    let mut a = config("198.18.0.11", 65000, 65000);
    a.hold_time = 0;
    let mut p = Pair::new(a, config("198.18.0.12", 65000, 65000));
    p.input(Side::B, Input::ManualStart);
    p.input(Side::A, Input::ManualStart);
    p.run_for(Duration::from_secs(1000));
    assert_eq!(p.state(Side::B), State::Established);
    assert_eq!(p.fsm[&Side::B].established().unwrap().1.hold_time, 0);
    let after_open =
        p.log.iter().filter(|(t, _, o)| *t > Duration::ZERO && matches!(o, Output::Send { message: Message::Keepalive, .. })).count();
    assert_eq!(after_open, 0, "no keepalives with hold time 0");
}

#[test]
fn hold_time_below_local_minimum_is_unacceptable() {
    let mut a = config("198.18.0.11", 65000, 65000);
    a.hold_time = 5;
    let mut b = config("198.18.0.12", 65000, 65000);
    b.min_hold_time = 10;
    let mut p = Pair::new(a, b);
    p.input(Side::B, Input::ManualStart);
    p.input(Side::A, Input::ManualStart);
    let codes: Vec<_> = p.sent_notifications(Side::B).iter().map(|n| n.error_code()).collect();
    assert!(codes.contains(&Some(ErrorCode::UnacceptableHoldTime)), "{codes:?}");
}

#[test]
fn no_common_family_is_unsupported_capability() {
    let mut b = config("198.18.0.12", 65000, 65000);
    b.families = vec![wire::Family::IPV6_UNICAST];
    let mut p = Pair::new(config("198.18.0.11", 65000, 65000), b);
    p.input(Side::B, Input::ManualStart);
    p.input(Side::A, Input::ManualStart);
    let n = p.sent_notifications(Side::A);
    assert!(n.iter().any(|n| n.error_code() == Some(ErrorCode::UnsupportedCapability) && n.data.as_ref() == [1, 4, 0, 1, 0, 1]), "{n:?}");
}

#[test]
fn repeated_failures_double_idle_hold_and_a_stable_session_resets_it() {
    let mut a = config("198.18.0.11", 65000, 65000);
    a.damping = DampingConfig {
        initial_idle_hold: Duration::from_secs(2),
        max_idle_hold: Duration::from_secs(60),
        stable_period: Duration::from_secs(100),
    };
    let mut p = Pair::new(a, config("198.18.0.12", 65001, 65000));
    // B is configured for the wrong AS: every attempt A makes fails with Bad Peer AS.
    p.input(Side::B, Input::ManualStart);
    p.input(Side::A, Input::ManualStart);
    p.run_for(Duration::from_secs(200));
    let holds: Vec<u64> = p
        .log
        .iter()
        .filter(|(_, s, _)| *s == Side::A)
        .filter_map(|(_, _, o)| match o {
            Output::StartTimer { timer: Timer { kind: TimerKind::IdleHold, .. }, after } => Some(after.as_secs()),
            _ => None,
        })
        .collect();
    assert!(holds.len() >= 5, "{holds:?}");
    assert_eq!(&holds[..5], &[2, 4, 8, 16, 32]);
    assert!(holds.iter().all(|&h| h <= 60));
}

#[test]
fn unexpected_update_in_open_confirm_is_fsm_error() {
    let mut fsm = PeerFsm::new(config("198.18.0.11", 65000, 65000));
    let _ = fsm.handle(Input::ManualStart);
    let _ = fsm.handle(Input::ConnectionUp { conn: 7, direction: Direction::Outgoing });
    let open = local_open(&config("198.18.0.12", 65000, 65000));
    let _ = fsm.handle(Input::Received { conn: 7, message: Message::Open(open), attr_errors: vec![] });
    assert_eq!(fsm.state(), State::OpenConfirm);
    let out = fsm.handle(Input::Received { conn: 7, message: Message::Update(Default::default()), attr_errors: vec![] });
    assert!(
        out.iter().any(|o| matches!(o, Output::Send { message: Message::Notification(n), .. } if (n.code, n.subcode) == (5, 2))),
        "{out:?}"
    );
    assert_eq!(fsm.state(), State::Idle);
}

#[test]
fn manual_stop_sends_cease_with_shutdown_communication() {
    let mut p = ibgp_pair();
    p.input(Side::B, Input::ManualStart);
    p.input(Side::A, Input::ManualStart);
    p.input(
        Side::A,
        Input::ManualStop(StopMode::Cease { code: ErrorCode::AdministrativeShutdown, communication: Some("upgrade to 2.0".into()) }),
    );
    let received: Vec<_> = p
        .log
        .iter()
        .filter_map(|(_, s, o)| match (s, o) {
            (Side::B, Output::Down { reason: DownReason::NotificationReceived(n) }) => Some(n.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(received.len(), 1);
    assert_eq!(received[0].shutdown_communication(), Some("upgrade to 2.0"));
    assert_eq!(p.state(Side::A), State::Idle);
}

#[test]
fn silent_stop_for_graceful_restart_sends_no_notification() {
    let mut p = ibgp_pair();
    p.input(Side::B, Input::ManualStart);
    p.input(Side::A, Input::ManualStart);
    p.input(Side::A, Input::ManualStop(StopMode::Silent));
    assert!(p.sent_notifications(Side::A).is_empty());
    assert!(p.count(Side::B, |o| matches!(o, Output::Down { reason: DownReason::ConnectionClosed })) == 1);
}

#[test]
fn new_open_while_established_with_graceful_restart_replaces_the_old_session() {
    let gr = wire::GracefulRestart { restart_state: false, notification: false, restart_time: 120, families: vec![] };
    let mut a = config("198.18.0.11", 65000, 65000);
    a.graceful_restart = Some(gr.clone());
    let mut b = config("198.18.0.12", 65000, 65000);
    b.graceful_restart = Some(gr);
    let mut p = Pair::new(a, b.clone());
    p.input(Side::A, Input::ManualStart);
    p.input(Side::B, Input::ManualStart);
    assert_eq!(p.state(Side::A), State::Established);
    // B restarts without closing its TCP connection (a crash A has not noticed yet).
    p.fsm.insert(Side::B, PeerFsm::new(b));
    p.mute = None;
    p.input(Side::B, Input::ManualStart);
    assert!(p.count(Side::A, |o| matches!(o, Output::Down { reason: DownReason::PeerRestarted })) == 1);
    assert_eq!((p.state(Side::A), p.state(Side::B)), (State::Established, State::Established));
    assert_eq!(p.fsm[&Side::A].connection_count(), 1);
}

#[test]
fn incoming_connection_is_refused_while_idle() {
    let mut fsm = PeerFsm::new(config("198.18.0.11", 65000, 65000));
    let out = fsm.handle(Input::ConnectionUp { conn: 1, direction: Direction::Incoming });
    assert_eq!(out, vec![Output::Close { conn: 1 }]);
}

#[test]
fn passive_peer_never_connects_but_accepts() {
    let mut c = config("198.18.0.11", 65000, 65000);
    c.passive = true;
    let mut fsm = PeerFsm::new(c);
    let out = fsm.handle(Input::ManualStart);
    assert!(!out.contains(&Output::Connect));
    assert_eq!(fsm.state(), State::Active);
    let out = fsm.handle(Input::ConnectionUp { conn: 1, direction: Direction::Incoming });
    assert!(matches!(out[1], Output::Send { message: Message::Open(_), .. }), "{out:?}");
    assert_eq!(fsm.state(), State::OpenSent);
}

#[test]
fn ipv4_address_helper() {
    // Keeps the identifiers used above honest: higher dotted quad is the higher identifier.
    assert!(u32::from("198.18.0.12".parse::<Ipv4Addr>().unwrap()) > u32::from("198.18.0.11".parse::<Ipv4Addr>().unwrap()));
}

#[test]
fn add_path_graceful_restart_and_extended_next_hop_from_the_peer_negotiate_cleanly() {
    use gingham_bgp::wire::*;
    let ours = config("198.18.0.11", 65000, 65000);
    let peer = Open::new(
        65000,
        90,
        "198.18.0.12".parse().unwrap(),
        vec![
            Capability::Multiprotocol(Family::IPV4_UNICAST),
            Capability::AddPath(vec![AddPathFamily { family: Family::IPV4_UNICAST, mode: AddPathMode::Both }]),
            Capability::GracefulRestart(GracefulRestart { restart_state: true, notification: true, restart_time: 120, families: vec![] }),
            Capability::ExtendedNextHop(vec![ExtendedNextHop { family: Family::IPV4_UNICAST, next_hop_afi: 2 }]),
            Capability::Unknown { code: 250, value: bytes::Bytes::from_static(b"x") },
        ],
    );
    let n = negotiate(&ours, &peer).expect("negotiates");
    // We never advertise add-path, so NLRI carry no path identifiers: the codec is plain.
    assert_eq!(n.codec(), SessionCodec::new(true, false));
    assert!(!local_open(&ours).capabilities.iter().any(|c| matches!(c, Capability::AddPath(_))));
    assert_eq!(n.peer_graceful_restart.as_ref().map(|g| g.restart_time), Some(120));
    assert!(!n.graceful_restart(), "we did not offer graceful restart");
    assert!(!n.extended_next_hop_v4, "we did not offer extended next hop");
    assert_eq!(n.families, vec![Family::IPV4_UNICAST]);
}
