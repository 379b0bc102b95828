//! Two sessions wired to each other on a simulated clock (no sockets, no sleeping): they come
//! Up, stay Up while packets flow whatever the intervals, notice a cut link within the
//! detection time, follow an administrative shutdown, and change intervals with a poll sequence
//! without flapping.

use std::collections::HashMap;
use std::time::Duration;

use gingham_bfd::{ControlPacket, Diagnostic, Input, Output, Session, SessionConfig, State, Timer};
use proptest::prelude::*;

/// Simulated time in microseconds.
type Micros = u64;

struct Side {
    session: Session,
    timers: HashMap<Timer, Micros>,
    /// (time, from, to, diag) of every state change.
    changes: Vec<(Micros, State, State, Diagnostic)>,
    sent: Vec<(Micros, ControlPacket)>,
}

struct Pair {
    now: Micros,
    sides: [Side; 2],
    /// Packets in flight: (arrival, to side, packet).
    wire: Vec<(Micros, usize, ControlPacket)>,
    delay: Micros,
    /// Packets from side i are dropped while cut[i].
    cut: [bool; 2],
}

fn config(disc: u32, tx_ms: u64, rx_ms: u64, mult: u8, seed: u64) -> SessionConfig {
    SessionConfig {
        local_disc: disc,
        desired_min_tx: Duration::from_millis(tx_ms),
        required_min_rx: Duration::from_millis(rx_ms),
        detect_mult: mult,
        control_plane_independent: true,
        jitter_seed: seed,
    }
}

impl Pair {
    fn new(a: SessionConfig, b: SessionConfig, delay: Micros) -> Pair {
        let mut pair = Pair { now: 0, sides: [Side::new(a), Side::new(b)], wire: Vec::new(), delay, cut: [false; 2] };
        for i in 0..2 {
            let out = std::mem::take(&mut pair.sides[i].sent);
            for (_, p) in out {
                pair.post(i, p);
            }
        }
        pair
    }

    fn post(&mut self, from: usize, p: ControlPacket) {
        if !self.cut[from] {
            self.wire.push((self.now + self.delay, 1 - from, p));
        }
    }

    fn apply(&mut self, i: usize, outputs: Vec<Output>) {
        for o in outputs {
            match o {
                Output::Send(p) => {
                    self.sides[i].sent.push((self.now, p));
                    self.post(i, p);
                }
                Output::StartTimer { timer, after } => {
                    self.sides[i].timers.insert(timer, self.now + after.as_micros() as Micros);
                }
                Output::StopTimer(t) => {
                    self.sides[i].timers.remove(&t);
                }
                Output::StateChanged { from, to, diag } => self.sides[i].changes.push((self.now, from, to, diag)),
            }
        }
    }

    fn input(&mut self, i: usize, input: Input) {
        let out = self.sides[i].session.handle(input);
        self.apply(i, out);
    }

    /// Runs every event up to `until`.
    fn run_until(&mut self, until: Micros) {
        loop {
            let packet = self.wire.iter().enumerate().min_by_key(|(_, w)| w.0).map(|(k, w)| (w.0, k));
            let timer = (0..2).flat_map(|i| self.sides[i].timers.iter().map(move |(t, at)| (*at, i, *t))).min_by_key(|(at, _, _)| *at);
            let next = match (packet, timer) {
                (Some((pa, _)), Some((ta, _, _))) => pa.min(ta),
                (Some((pa, _)), None) => pa,
                (None, Some((ta, _, _))) => ta,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = next;
            match (packet, timer) {
                (Some((pa, k)), _) if pa == next => {
                    let (_, to, p) = self.wire.remove(k);
                    self.input(to, Input::Received(p));
                }
                (_, Some((_, i, t))) => {
                    self.sides[i].timers.remove(&t);
                    self.input(i, Input::Timer(t));
                }
                _ => unreachable!(),
            }
        }
        self.now = until;
    }

    fn states(&self) -> (State, State) {
        (self.sides[0].session.state(), self.sides[1].session.state())
    }
}

impl Side {
    fn new(config: SessionConfig) -> Side {
        let (session, out) = Session::new(config);
        let mut side = Side { session, timers: HashMap::new(), changes: Vec::new(), sent: Vec::new() };
        for o in out {
            match o {
                Output::Send(p) => side.sent.push((0, p)),
                Output::StartTimer { timer, after } => {
                    side.timers.insert(timer, after.as_micros() as Micros);
                }
                _ => {}
            }
        }
        side
    }
}

const SEC: Micros = 1_000_000;

#[test]
fn two_sessions_come_up_and_the_packets_say_so() {
    let mut pair = Pair::new(config(1, 300, 300, 3, 7), config(2, 300, 300, 3, 9), 100);
    pair.run_until(3 * SEC);
    assert_eq!(pair.states(), (State::Up, State::Up));
    let last = pair.sides[0].sent.last().unwrap().1;
    assert_eq!((last.state, last.my_disc, last.your_disc, last.cpi), (State::Up, 1, 2, true));
    assert_eq!(last.desired_min_tx, 300_000, "the configured rate once Up");
}

#[test]
fn a_cut_link_is_noticed_within_the_detection_time() {
    let mut pair = Pair::new(config(1, 300, 300, 3, 7), config(2, 300, 300, 3, 9), 100);
    pair.run_until(5 * SEC);
    assert_eq!(pair.states(), (State::Up, State::Up));
    let last_heard = pair.sides[1].sent.last().unwrap().0 + pair.delay;
    pair.cut[1] = true;
    pair.run_until(7 * SEC);
    let down = pair.sides[0].changes.iter().find(|c| c.2 == State::Down).expect("side 0 went Down");
    assert_eq!(down.3, Diagnostic::ControlDetectionTimeExpired);
    let took = down.0 - last_heard;
    assert!(took <= 900_000 + 1, "detection after {took} µs, more than 3 x 300 ms");
    assert!(took >= 3 * 300_000 * 75 / 100 / 3, "not before the peer could have spoken again: {took} µs");
    // Side 1 still hears side 0: it follows side 0's Down with diag 3, then sits in Init, since
    // side 0, hearing nothing, stays Down.
    let followed = pair.sides[1].changes.iter().find(|c| c.1 == State::Up).expect("side 1 left Up");
    assert_eq!((followed.2, followed.3), (State::Down, Diagnostic::NeighborSignaledSessionDown));
    assert_eq!(pair.states(), (State::Down, State::Init));
}

#[test]
fn admin_down_takes_the_peer_down_and_admin_up_brings_both_back() {
    let mut pair = Pair::new(config(1, 50, 50, 3, 7), config(2, 50, 50, 3, 9), 100);
    pair.run_until(4 * SEC);
    pair.input(0, Input::AdminDown);
    pair.run_until(5 * SEC);
    assert_eq!(pair.states(), (State::AdminDown, State::Down));
    assert_eq!(pair.sides[1].changes.last().unwrap().3, Diagnostic::NeighborSignaledSessionDown);
    assert_eq!(pair.sides[0].sent.last().unwrap().1.diag, Diagnostic::AdministrativelyDown);
    pair.input(0, Input::AdminUp);
    pair.run_until(8 * SEC);
    assert_eq!(pair.states(), (State::Up, State::Up));
}

#[test]
fn an_interval_change_runs_a_poll_sequence_without_a_flap() {
    let mut pair = Pair::new(config(1, 50, 50, 3, 7), config(2, 50, 50, 3, 9), 100);
    pair.run_until(4 * SEC);
    let before = pair.sides[0].changes.len() + pair.sides[1].changes.len();
    // Slower on both sides: the new detection time must be in force before the slow packets.
    pair.input(
        0,
        Input::Configure { desired_min_tx: Duration::from_millis(500), required_min_rx: Duration::from_millis(500), detect_mult: 3 },
    );
    pair.input(
        1,
        Input::Configure { desired_min_tx: Duration::from_millis(500), required_min_rx: Duration::from_millis(500), detect_mult: 3 },
    );
    assert!(pair.sides[0].session.polling());
    pair.run_until(20 * SEC);
    assert_eq!(pair.states(), (State::Up, State::Up));
    assert_eq!(pair.sides[0].changes.len() + pair.sides[1].changes.len(), before, "no state change during the switch");
    assert!(!pair.sides[0].session.polling() && !pair.sides[1].session.polling(), "both polls answered");
    assert!(pair.sides[0].sent.iter().any(|(_, p)| p.poll) && pair.sides[1].sent.iter().any(|(_, p)| p.fin));
    let gaps: Vec<Micros> = pair.sides[0].sent.windows(2).rev().take(5).map(|w| w[1].0 - w[0].0).collect();
    assert!(gaps.iter().all(|g| *g >= 375_000), "sending at the new rate: {gaps:?}");
}

/// FRR's bfdd asks for packets every second until Up, then lowers its RequiredMinRx with a
/// poll and shortens its detection time once our F arrives. Our next packet must follow the F
/// within the new interval; at the old schedule FRR declared the session down (seen in the
/// interop test before this was fixed).
#[test]
fn a_peer_lowering_its_required_rx_by_poll_gets_the_next_packet_within_the_new_interval() {
    let (mut s, _) = Session::new(config(1, 300, 300, 3, 5));
    let from_peer = |state, poll, rx_ms: u32| ControlPacket {
        diag: Diagnostic::None,
        state,
        poll,
        fin: false,
        cpi: false,
        demand: false,
        detect_mult: 3,
        my_disc: 77,
        your_disc: if state == State::Down { 0 } else { 1 },
        desired_min_tx: 1_000_000,
        required_min_rx: rx_ms * 1000,
        required_min_echo_rx: 0,
    };
    let out = s.handle(Input::Received(from_peer(State::Init, false, 1000)));
    assert_eq!(s.state(), State::Up);
    let scheduled = |out: &[Output]| {
        out.iter().rev().find_map(|o| match o {
            Output::StartTimer { timer: Timer::Transmit, after } => Some(*after),
            _ => None,
        })
    };
    assert!(scheduled(&out).unwrap() > Duration::from_millis(700), "the peer asked for one packet a second");
    let out = s.handle(Input::Received(from_peer(State::Up, true, 300)));
    assert!(out.iter().any(|o| matches!(o, Output::Send(p) if p.fin)), "the poll is answered");
    let next = scheduled(&out).expect("the transmit timer is rescheduled");
    assert!(next <= Duration::from_millis(300), "next packet within the new 300 ms, not {next:?}");
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Whatever the intervals, multipliers and jitter seeds, two sessions come Up and never
    /// leave Up while every packet arrives.
    #[test]
    fn sessions_stay_up_while_packets_flow(
        tx in (10u64..2000, 10u64..2000),
        rx in (10u64..2000, 10u64..2000),
        mult in (1u8..10, 1u8..10),
        seeds in (any::<u64>(), any::<u64>()),
        delay in 0u64..5_000,
    ) {
        let mut pair = Pair::new(config(1, tx.0, rx.0, mult.0, seeds.0), config(2, tx.1, rx.1, mult.1, seeds.1), delay);
        pair.run_until(10 * SEC);
        prop_assert_eq!(pair.states(), (State::Up, State::Up));
        let ups = pair.sides.iter().map(|s| s.changes.iter().filter(|c| c.2 == State::Down).count()).sum::<usize>();
        prop_assert_eq!(ups, 0, "a session went Down: {:?} {:?}", pair.sides[0].changes, pair.sides[1].changes);
        pair.run_until(60 * SEC);
        prop_assert_eq!(pair.states(), (State::Up, State::Up));
    }

    /// Every packet we send decodes to itself.
    #[test]
    fn packets_round_trip(disc in 1u32.., your in any::<u32>(), tx in any::<u32>(), rx in any::<u32>(), mult in 1u8.., poll: bool, cpi: bool) {
        let p = ControlPacket {
            diag: Diagnostic::ControlDetectionTimeExpired,
            state: if your == 0 { State::Down } else { State::Up },
            poll, fin: !poll, cpi, demand: false, detect_mult: mult,
            my_disc: disc, your_disc: your, desired_min_tx: tx, required_min_rx: rx, required_min_echo_rx: 0,
        };
        let mut buf = bytes::BytesMut::new();
        p.encode(&mut buf);
        prop_assert_eq!(ControlPacket::decode(&buf), Ok(p));
    }
}
