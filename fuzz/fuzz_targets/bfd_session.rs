//! Arbitrary BFD control packets (what anyone on the link can send to UDP 3784), interleaved
//! with expired timers and configuration changes, fed to one session. Properties: no panic;
//! whatever decodes re-encodes and decodes back to the same packet; every packet the session
//! sends decodes.
#![no_main]

use std::time::Duration;

use bytes::BytesMut;
use gingham_bfd::{ControlPacket, Input, Output, Session, SessionConfig, Timer};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (mut session, _) = Session::new(SessionConfig {
        local_disc: 1,
        desired_min_tx: Duration::from_millis(300),
        required_min_rx: Duration::from_millis(300),
        detect_mult: 3,
        control_plane_independent: false,
        jitter_seed: 7,
    });
    let mut rest = data;
    while let Some((&op, tail)) = rest.split_first() {
        rest = tail;
        let input = match op % 6 {
            0 => {
                let (packet, tail) = rest.split_at(rest.len().min(24));
                rest = tail;
                let Ok(p) = ControlPacket::decode(packet) else { continue };
                let mut buf = BytesMut::new();
                p.encode(&mut buf);
                assert_eq!(ControlPacket::decode(&buf), Ok(p), "re-encoded packet decodes to itself");
                Input::Received(p)
            }
            1 => Input::Timer(Timer::Transmit),
            2 => Input::Timer(Timer::Detect),
            3 => Input::AdminDown,
            4 => Input::AdminUp,
            _ => {
                let Some((&[tx, rx, mult], tail)) = rest.split_first_chunk::<3>() else { return };
                rest = tail;
                Input::Configure {
                    desired_min_tx: Duration::from_millis(u64::from(tx) * 10),
                    required_min_rx: Duration::from_millis(u64::from(rx) * 10),
                    detect_mult: mult,
                }
            }
        };
        for out in session.handle(input) {
            if let Output::Send(p) = out {
                let mut buf = BytesMut::new();
                p.encode(&mut buf);
                assert_eq!(ControlPacket::decode(&buf), Ok(p), "what we send decodes");
            }
        }
    }
});
