//! FSM invariants under arbitrary input sequences. Each property can fail: it checks what the
//! FSM emitted against what it must have emitted.

use std::collections::HashSet;
use std::time::Duration;

use gingham_bgp::fsm::*;
use gingham_bgp::wire::{ErrorCode, Message, Notification};
use proptest::prelude::*;

fn cfg() -> FsmConfig {
    FsmConfig::new(65000, "198.18.0.11".parse().unwrap(), 65000)
}

fn peer_open(hold: u16) -> Message {
    let mut c = FsmConfig::new(65000, "198.18.0.12".parse().unwrap(), 65000);
    c.hold_time = hold;
    Message::Open(local_open(&c))
}

fn input() -> impl Strategy<Value = Input> {
    let conn = 1u64..4;
    let kind = prop_oneof![
        Just(TimerKind::ConnectRetry),
        Just(TimerKind::IdleHold),
        Just(TimerKind::Hold),
        Just(TimerKind::Keepalive),
        Just(TimerKind::StablePeriod)
    ];
    let message = prop_oneof![
        prop_oneof![Just(0u16), Just(9u16), Just(90u16)].prop_map(peer_open),
        Just(Message::Keepalive),
        Just(Message::Update(Default::default())),
        Just(Message::Notification(Notification { code: 6, subcode: 2, data: Default::default() })),
    ];
    prop_oneof![
        Just(Input::ManualStart),
        Just(Input::ManualStop(StopMode::Cease { code: ErrorCode::AdministrativeShutdown, communication: None })),
        (kind, proptest::option::of(conn.clone())).prop_map(|(kind, conn)| Input::Timer(Timer { kind, conn })),
        Just(Input::ConnectFailed),
        (conn.clone(), any::<bool>())
            .prop_map(|(conn, out)| Input::ConnectionUp { conn, direction: if out { Direction::Outgoing } else { Direction::Incoming } }),
        conn.clone().prop_map(|conn| Input::ConnectionClosed { conn }),
        (conn.clone(), message.clone()).prop_map(|(conn, message)| Input::Received { conn, message, attr_errors: vec![] }),
        (conn.clone(), message).prop_map(|(conn, message)| Input::Received { conn, message, attr_errors: vec![] }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(3000))]

    #[test]
    fn invariants_hold_for_any_input_sequence(inputs in proptest::collection::vec(input(), 1..60)) {
        let mut fsm = PeerFsm::new(cfg());
        let mut open_conns: HashSet<ConnId> = HashSet::new();
        let mut used_ids: HashSet<ConnId> = HashSet::new();
        let mut running: HashSet<Timer> = HashSet::new();
        for input in inputs {
            // The driver never reuses a connection id.
            if let Input::ConnectionUp { conn, .. } = &input {
                if !used_ids.insert(*conn) { continue; }
            }
            let hold_fired_on = match &input {
                Input::Timer(Timer { kind: TimerKind::Hold, conn: Some(c) }) if open_conns.contains(c) => Some(*c),
                _ => None,
            };
            let was_established = fsm.state() == State::Established;
            if let Input::ConnectionUp { conn, .. } = &input { open_conns.insert(*conn); }
            if let Input::ConnectionClosed { conn } = &input { open_conns.remove(conn); }
            let out = fsm.handle(input);
            let mut downs = 0;
            for o in &out {
                match o {
                    Output::Send { conn, .. } => prop_assert!(open_conns.contains(conn), "send on unknown connection {conn}"),
                    Output::Close { conn } => {
                        open_conns.remove(conn);
                        running.retain(|t| t.conn != Some(*conn));
                    }
                    Output::StartTimer { timer, .. } => { running.insert(*timer); }
                    Output::StopTimer(timer) => { running.remove(timer); }
                    Output::Down { .. } => downs += 1,
                    _ => {}
                }
            }
            prop_assert!(fsm.connection_count() <= 2);
            // A session goes down at most once per input and only if it was up.
            prop_assert!(downs <= 1);
            if downs == 1 { prop_assert!(was_established); }
            // Established implies a negotiated session and a running hold timer unless 0.
            prop_assert_eq!(fsm.state() == State::Established, fsm.established().is_some());
            if let Some((conn, n)) = fsm.established() {
                if n.hold_time != 0 {
                    prop_assert!(running.contains(&Timer { kind: TimerKind::Hold, conn: Some(conn) }), "no hold timer while Established");
                }
            }
            // Hold expiry on a live connection always sends 4/0 and closes it.
            if let Some(c) = hold_fired_on {
                prop_assert!(out.iter().any(|o| matches!(o, Output::Send { conn, message: Message::Notification(n) } if *conn == c && (n.code, n.subcode) == (4, 0))), "{:?}", out);
                prop_assert!(out.contains(&Output::Close { conn: c }), "hold expiry did not close {}", c);
                if fsm.connection_count() == 0 {
                    prop_assert_eq!(fsm.state(), State::Idle);
                }
            }
        }
    }
}

#[test]
fn hold_timer_in_every_state_sends_4_0_and_ends_idle() {
    for steps in 0..3 {
        let mut fsm = PeerFsm::new(cfg());
        let _ = fsm.handle(Input::ManualStart);
        let _ = fsm.handle(Input::ConnectionUp { conn: 1, direction: Direction::Outgoing });
        if steps >= 1 {
            let _ = fsm.handle(Input::Received { conn: 1, message: peer_open(90), attr_errors: vec![] });
        }
        if steps >= 2 {
            let _ = fsm.handle(Input::Received { conn: 1, message: Message::Keepalive, attr_errors: vec![] });
        }
        let before = fsm.state();
        let out = fsm.handle(Input::Timer(Timer { kind: TimerKind::Hold, conn: Some(1) }));
        assert!(
            out.iter().any(|o| matches!(o, Output::Send { message: Message::Notification(n), .. } if (n.code, n.subcode) == (4, 0))),
            "{before:?}: {out:?}"
        );
        assert_eq!(fsm.state(), State::Idle, "after hold expiry in {before:?}");
        assert!(out.iter().any(|o| matches!(o, Output::StartTimer { timer: Timer { kind: TimerKind::IdleHold, .. }, after } if *after >= Duration::from_secs(1))));
    }
}
